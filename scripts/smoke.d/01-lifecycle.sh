# Scenario 1: create → vm ssh -- CMD → stop → start → ssh → restart → rm.
source "$(dirname "$0")/lib.sh"
n=$(vm_name life)
b vm create "$n" --image "$BASE_IMAGE" --vcpus 1 --memory 512 >/dev/null
id=$(vm_field "$n" id)
[ "$(vssh "$n" cat /etc/hostname)" = "$n" ] || fail "hostname over ssh"
b vm stop "$n" >/dev/null
[ "$(vm_field "$n" state)" = stopped ] || fail "not stopped after stop"
b vm start "$n" >/dev/null
[ "$(vssh "$n" echo up)" = up ] || fail "ssh after start"
b vm restart "$n" >/dev/null
[ "$(vssh "$n" echo again)" = again ] || fail "ssh after restart"
b vm rm --force "$n" >/dev/null
assert_vm_gone "$id" "$n"
