# shellcheck shell=bash
# What every smoke scenario shares. Sourced by scripts/smoke and by each
# scenario (run as `bash NN-name.sh` with the environment scripts/smoke
# exports: OWNER, OWNER_HOME, BASE_IMAGE, RUN, WORK, SMOKE_DIR).
set -Eeuo pipefail
# A command that fails under set -e names itself in the FAIL line.
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR

BANGER=/usr/local/bin/banger

# banger as the owner (the daemon admits root and the owner).
b() {
  setpriv --reuid "$OWNER" --regid "$(id -g "$OWNER")" --clear-groups \
    env HOME="$OWNER_HOME" "$BANGER" "$@"
}

fail() { echo "FAIL: $*" >&2; exit 1; }

# A VM name of this run: smk<run>-<scenario>-<what>.
vm_name() { echo "s${RUN}-$1"; }

# `vm ssh NAME -- CMD...` as the owner, its stdout.
vssh() { local n=$1; shift; b vm ssh "$n" -- "$@"; }

# Field of `vm inspect --json`.
vm_field() { b vm inspect "$1" --json | python3 -c "import json,sys; print(json.load(sys.stdin).get('$2') or '')"; }

# Run CMD expecting failure with exactly one line on stderr containing TEXT.
expect_one_line_error() {
  local text=$1; shift
  local err rc=0
  err=$("$@" 2>&1 >/dev/null) || rc=$?
  [ "$rc" -ne 0 ] || fail "$* succeeded; expected: $text"
  # Progress lines (`copy rootfs: 26% (17.0 MiB)`) go to stderr too.
  err=$(printf '%s\n' "$err" | grep -vE '^[A-Za-z0-9 ._/-]+: [0-9]+% \(' || true)
  [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] || fail "$*: not one line: $err"
  printf '%s' "$err" | grep -qF -- "$text" || fail "$*: '$err' lacks '$text'"
}

# Host objects of the VM with id $1: none may remain after its rm.
assert_vm_gone() {
  local id=$1 name=$2
  b vm inspect "$name" >/dev/null 2>&1 && fail "VM $name still listed"
  [ ! -e "/var/lib/banger/vms/$id" ] || fail "VM dir of $name left"
  [ ! -e "/run/banger/vms/$id" ] || fail "runtime dir of $name left"
  if dmsetup ls 2>/dev/null | grep -q "fc-rootfs-$id"; then fail "dm device of $name left"; fi
  if losetup -l -n -O BACK-FILE | grep -q "/vms/$id/"; then fail "loop of $name left"; fi
  if pgrep -f -- "$id" >/dev/null; then fail "a process naming $name's id is left"; fi
  if [ -e /var/lib/banger/known_hosts ] && grep -q "^$name\." /var/lib/banger/known_hosts; then
    fail "known_hosts pin of $name left"
  fi
  return 0
}

# Wait up to $1 s for CMD to succeed.
wait_for() {
  local t=$1; shift
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 1
  done
}

# The install's daemon / helper pid: systemd's MainPID, or what the smoke
# supervisor recorded (never looked up by name: other bangers are not ours).
service_pid() {
  if [ "${SMOKE_NO_START:-}" = 1 ]; then
    cat "$PIDS/$1.pid"
  else
    local unit=bangerd.service
    [ "$1" = helper ] && unit=banger-helper.service
    systemctl show -p MainPID --value "$unit"
  fi
}
daemon_pid() { service_pid daemon; }
helper_pid() { service_pid helper; }
