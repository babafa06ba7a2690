# Scenario 4: image import, OCI layout build, `image pull` from a local
# registry (docker-registry on loopback, started here), Debian build (the
# base image: a development daemon's build, imported; the installed daemon
# refuses it clearly); a VM from each answers ssh.
source "$(dirname "$0")/lib.sh"
tag="s${RUN}"; w="$OWNER_HOME/smoke-img-$RUN"; port=$((5100 + RUN % 800))
names=(); vms=()
cleanup() {
  set +e; trap - ERR
  for v in "${vms[@]}"; do b vm rm --force "$v" >/dev/null 2>&1; done
  for i in "${names[@]}"; do b image rm "$i" >/dev/null 2>&1; done
  [ -n "${reg:-}" ] && kill "$reg" 2>/dev/null
  rm -rf "$w"; return 0
}
trap cleanup EXIT
mkdir -p "$w/root"
base_id=$(b image inspect "$BASE_IMAGE" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
src=/var/lib/banger/images/$base_id
kernel=$(ls "$src"/vmlinux* | head -n1)
# 1. import: the base image's own files, copied into the owner's home.
cp "$src/rootfs.ext4" "$w/rootfs.ext4"; cp "$kernel" "$w/vmlinux"
[ -e "$src/initrd.img" ] && cp "$src/initrd.img" "$w/initrd.img"
chown -R "$OWNER" "$w"
args=(--rootfs "$w/rootfs.ext4" --kernel "$w/vmlinux")
[ -e "$w/initrd.img" ] && args+=(--initrd "$w/initrd.img")
b image import "$tag-imp" "${args[@]}" >/dev/null; names+=("$tag-imp")
# 2. an OCI layout made from the base rootfs (one gzip layer).
mnt=$(mktemp -d); mount -o ro,loop "$w/rootfs.ext4" "$mnt"
tar -C "$mnt" --numeric-owner -czf "$w/layer.tar.gz" . ; umount "$mnt"; rmdir "$mnt"
python3 - "$w" <<'PY'
import hashlib, json, os, sys
w = sys.argv[1]; lay = os.path.join(w, "layout"); blobs = os.path.join(lay, "blobs/sha256")
os.makedirs(blobs, exist_ok=True)
def put(data):
    d = hashlib.sha256(data).hexdigest(); open(os.path.join(blobs, d), "wb").write(data); return d, len(data)
import gzip
layer = open(os.path.join(w, "layer.tar.gz"), "rb").read()
diff = hashlib.sha256(gzip.decompress(layer)).hexdigest()
ld, ll = put(layer)
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff]}}).encode()
cd, cl = put(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cd, "size": cl},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + ld, "size": ll}]}).encode()
md, ml = put(man)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:" + md, "size": ml}]}, open(os.path.join(lay, "index.json"), "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(lay, "oci-layout"), "w"))
PY
chown -R "$OWNER" "$w"
b image build "$tag-oci" --from "$w/layout" >/dev/null; names+=("$tag-oci")
# 3. the same layout pushed to a local registry, then pulled.
mkdir -p "$w/registry"
cat >"$w/registry.yml" <<YML
version: 0.1
storage: { filesystem: { rootdirectory: $w/registry } }
http: { addr: 127.0.0.1:$port }
YML
docker-registry serve "$w/registry.yml" >"$w/registry.log" 2>&1 & reg=$!
wait_for 20 python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')"
python3 - "$w/layout" "$port" <<'PY'
import json, os, sys, urllib.request
lay, port = sys.argv[1], sys.argv[2]; base = f"http://127.0.0.1:{port}/v2/smoke/base"
idx = json.load(open(os.path.join(lay, "index.json")))["manifests"][0]
blob = lambda d: open(os.path.join(lay, "blobs/sha256", d.split(":")[1]), "rb").read()
man = json.loads(blob(idx["digest"]))
for d in [man["config"]["digest"]] + [l["digest"] for l in man["layers"]]:
    r = urllib.request.urlopen(urllib.request.Request(base + "/blobs/uploads/", method="POST"))
    loc = r.headers["Location"]; loc = loc if loc.startswith("http") else f"http://127.0.0.1:{port}{loc}"
    sep = "&" if "?" in loc else "?"
    urllib.request.urlopen(urllib.request.Request(loc + sep + "digest=" + d, data=blob(d), method="PUT",
        headers={"Content-Type": "application/octet-stream"}))
urllib.request.urlopen(urllib.request.Request(base + "/manifests/1", data=blob(idx["digest"]), method="PUT",
    headers={"Content-Type": idx["mediaType"]}))
PY
b image pull "127.0.0.1:$port/smoke/base:1" --name "$tag-pull" >/dev/null; names+=("$tag-pull")
# 4. Debian: the installed daemon runs under NoNewPrivileges, so the
# setuid newuidmap that mmdebstrap needs is disarmed: refused up front with
# a clear error, nothing recorded. The Debian build is the base image,
# built by a development daemon as root and imported (scripts/smoke).
dargs=(--debian bookworm)
[ -n "${BANGER_SMOKE_MIRROR:-}" ] && dargs+=(--mirror "$BANGER_SMOKE_MIRROR")
rc=0; err=$(b image build "$tag-deb" "${dargs[@]}" 2>&1 >/dev/null) || rc=$?
[ "$rc" -ne 0 ] || { names+=("$tag-deb"); fail "a Debian build in the installed daemon succeeded (NoNewPrivileges?)"; }
printf '%s\n' "$err" | tail -n1 | grep -q "NoNewPrivileges" || fail "Debian build refusal unclear: $err"
b image inspect "$tag-deb" >/dev/null 2>&1 && fail "a refused Debian build was recorded"
# A VM from each.
for i in "${names[@]}" "$BASE_IMAGE"; do
  v=$(vm_name "img-${i#"$tag"-}"); [ "$i" = "$BASE_IMAGE" ] && v=$(vm_name img-deb); vms+=("$v")
  b vm create "$v" --image "$i" --vcpus 1 --memory 512 >/dev/null || fail "VM from $i"
  [ "$(vssh "$v" cat /etc/hostname)" = "$v" ] || fail "ssh into the VM from $i"
  b vm rm --force "$v" >/dev/null
done
