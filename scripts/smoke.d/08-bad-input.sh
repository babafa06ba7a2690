# Scenario 8: bad input, each a clear one-line error, nothing leaked, the
# other VMs untouched: unknown image, duplicate name, invalid names, memory
# and vcpus out of range, a full disk (a second, development daemon whose
# StateDir is a small loop-mounted filesystem).
source "$(dirname "$0")/lib.sh"
n=$(vm_name bystander)
fs="$WORK/full-$RUN"; mnt="$fs.d"
cleanup() {
  set +e; trap - ERR
  [ -n "${dev:-}" ] && kill "$dev" 2>/dev/null && wait "$dev" 2>/dev/null
  mountpoint -q "$mnt" && umount "$mnt"
  rm -rf "$fs" "$mnt"
  b vm rm --force "$n" >/dev/null 2>&1; return 0
}
trap cleanup EXIT
b vm create "$n" --image "$BASE_IMAGE" --vcpus 1 --memory 512 >/dev/null
pid=$(vm_field "$n" pid)
vms_before=$(b vm ls --json | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
expect_one_line_error "no image" b vm create "$(vm_name x1)" --image "no-such-image-$RUN"
expect_one_line_error "exists already" b vm create "$n" --image "$BASE_IMAGE"
for bad in "UPPER" "trail-" "a_b" "$(printf 'x%.0s' $(seq 1 70))" "../x"; do
  expect_one_line_error "" b vm create "$bad" --image "$BASE_IMAGE"
done
vms_after=$(b vm ls --json | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
[ "$vms_before" = "$vms_after" ] || fail "refused creates changed the VM list"
[ "$(vm_field "$n" state)" = running ] && [ "$(vm_field "$n" pid)" = "$pid" ] || fail "bystander disturbed"
# A full disk: StateDir on a 24 MiB filesystem, an image that cannot fit.
mkdir -p "$mnt"; truncate -s 24M "$fs.img"; mkfs.ext4 -q -F "$fs.img"; mount -o loop "$fs.img" "$mnt"
mkdir -p "$fs.big/etc"; head -c 40M /dev/urandom >"$fs.big/blob"
mkfs.ext4 -q -F -d "$fs.big" "$fs.rootfs" 64M
BANGER_STATE_DIR="$mnt/state" BANGER_RUNTIME_DIR="$mnt/run" BANGER_NO_NETWORK=1 BANGER_LOG=error \
  /usr/local/bin/bangerd --dev >/dev/null 2>&1 & dev=$!
wait_for 20 "$BANGER" --socket "$mnt/run/bangerd.sock" version || fail "dev daemon on the small disk"
kernel=$(ls /var/lib/banger/images/*/vmlinux | head -n1)
expect_one_line_error "" "$BANGER" --socket "$mnt/run/bangerd.sock" image import big --rootfs "$fs.rootfs" --kernel "$kernel"
left=$(find "$mnt/state/images" -mindepth 1 2>/dev/null | wc -l)
[ "$left" -eq 0 ] || fail "a failed import left $left files"
"$BANGER" --socket "$mnt/run/bangerd.sock" image ls --json | grep -q '"big"' && fail "failed import recorded"
rm -rf "$fs.big" "$fs.rootfs" "$fs.img"
[ "$(vm_field "$n" state)" = running ] || fail "bystander disturbed by the full disk"
# Out of range, low and high (the daemon must bound what the CLI lets by).
expect_one_line_error "memory" b vm create "$(vm_name x2)" --image "$BASE_IMAGE" --memory 64
expect_one_line_error "memory" b vm create "$(vm_name x4)" --image "$BASE_IMAGE" --memory 99999999
expect_one_line_error "vcpus" b vm create "$(vm_name x3)" --image "$BASE_IMAGE" --vcpus 0
expect_one_line_error "vcpus" b vm create "$(vm_name x5)" --image "$BASE_IMAGE" --vcpus 255
[ "$(vm_field "$n" state)" = running ] || fail "bystander disturbed by the range checks"
# The daemon bounds them itself (a client other than the CLI): 400, one line.
for body in '{"vcpus":255}' '{"vcpus":0}' '{"memory_mib":64}' '{"memory_mib":4000000}'; do
  out=$(python3 - "$(vm_name x6)" "$body" <<'PY'
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect("/run/banger/bangerd.sock")
req = dict(json.loads(sys.argv[2]), name=sys.argv[1], image="no-such-image", start=False)
c = C("localhost"); c.request("POST", "/v1/vms", json.dumps(req), {"Content-Type": "application/json"})
r = c.getresponse(); print(r.status, json.loads(r.read())["message"])
PY
)
  case "$out" in "400 vcpus "*|"400 memory "*) ;; *) fail "API create $body: $out";; esac
  [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || fail "API create $body: not one line: $out"
done
b vm inspect "$(vm_name x6)" >/dev/null 2>&1 && fail "an out-of-range API create was recorded"
[ "$(vm_field "$n" state)" = running ] || fail "bystander disturbed by the API range checks"
exit 0
