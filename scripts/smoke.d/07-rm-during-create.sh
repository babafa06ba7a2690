# Scenario 7: `vm rm --force` while that VM's create still runs: the create
# is cancelled and everything it made is undone.
source "$(dirname "$0")/lib.sh"
n=$(vm_name cancel)
trap 'b vm rm --force "$n" >/dev/null 2>&1 || true' EXIT
b vm create "$n" --image "$BASE_IMAGE" --vcpus 1 --memory 512 >/dev/null 2>&1 & c=$!
wait_for 30 b vm inspect "$n" || fail "create never recorded $n"
id=$(vm_field "$n" id)
sleep 2
b vm rm --force "$n" >/dev/null || fail "rm --force during create refused"
wait "$c" && fail "the create finished although its VM was removed"
assert_vm_gone "$id" "$n"
