# Scenario 6: kill -9 of the daemon in the middle of a create, restart (by
# systemd or the smoke supervisor): after rm --force, no leftovers.
source "$(dirname "$0")/lib.sh"
n=$(vm_name killed)
trap 'b vm rm --force "$n" >/dev/null 2>&1 || true' EXIT
b vm create "$n" --image "$BASE_IMAGE" --vcpus 1 --memory 512 >/dev/null 2>&1 & c=$!
wait_for 30 b vm inspect "$n" || fail "create never recorded $n"
id=$(vm_field "$n" id)
sleep "$((RUN % 3 + 1))"
kill -9 "$(daemon_pid)"
wait "$c" && fail "the create survived the daemon's death"
wait_for 60 b version || fail "daemon not back"
b vm rm --force "$n" >/dev/null
assert_vm_gone "$id" "$n"
tap=$(python3 -c "
import sys
h=0xcbf29ce484222325
for b in sys.argv[1].encode(): h=((h^b)*0x100000001b3)&0xffffffffffffffff
print('banger-%08x' % (h>>32))" "$id")
ip link show "$tap" >/dev/null 2>&1 && fail "tap $tap left"
exit 0
