# Scenario 5: `banger system restart`, then a daemon restart and a helper
# restart on their own, with VMs running: they stay up (same VMM pid) and
# stay controllable (ssh, stop). Needs VMMs that outlive the daemon.
source "$(dirname "$0")/lib.sh"
n=$(vm_name keep)
trap 'b vm rm --force "$n" >/dev/null 2>&1 || true' EXIT
b vm create "$n" --image "$BASE_IMAGE" --vcpus 1 --memory 512 >/dev/null
pid=$(vm_field "$n" pid)
check_alive() {
  wait_for 60 b version || fail "daemon not back after $1"
  [ "$(vm_field "$n" state)" = running ] || fail "$n not running after $1"
  [ "$(vm_field "$n" pid)" = "$pid" ] || fail "$n's VMM changed after $1"
  [ "$(vssh "$n" echo alive)" = alive ] || fail "no ssh into $n after $1"
}
if [ "${SMOKE_NO_START:-}" = 1 ]; then
  # No systemd: the supervisors of scripts/smoke restart what stops.
  kill -TERM "$(daemon_pid)" "$(helper_pid)"
else
  b system restart >/dev/null
fi
check_alive "system restart"
kill -TERM "$(daemon_pid)"; sleep 1; check_alive "a daemon restart"
kill -TERM "$(helper_pid)"; sleep 1; check_alive "a helper restart"
b vm stop "$n" >/dev/null
[ "$(vm_field "$n" state)" = stopped ] || fail "stop after the restarts"
