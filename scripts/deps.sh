#!/usr/bin/env bash
# Install everything banger and its tests need on Debian/Ubuntu (idempotent).
# Needs root (re-runs itself with sudo when it can).
set -euo pipefail

PACKAGES=(
  # host operations banger drives
  iproute2 nftables e2fsprogs util-linux kmod sudo passwd
  # the units test: systemd-analyze verify/security, man for Documentation=
  systemd man-db
  # scripts/module-cycles.py (the import-circle check)
  python3
  # VM SSH host keys (ssh-keygen)
  openssh-client
  # images: kernels, initramfs, rootfs builds, registry tests
  lz4 zstd xz-utils bzip2 cpio busybox-static fakeroot debootstrap mmdebstrap uidmap docker-registry
  linux-image-cloud-amd64
  # the QEMU microvm backend (and guest tests without Firecracker)
  qemu-system-x86
  # scripts/smoke: dm snapshots (dmsetup), pgrep, setpriv/losetup (util-linux)
  dmsetup procps
  # building
  gcc pkg-config ca-certificates curl
)

if [ "$(id -u)" -ne 0 ]; then
  exec sudo -- "$0" "$@"
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The /dev/net/tun node for taps (absent in some containers).
if [ ! -c /dev/net/tun ]; then
  mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun
fi
# Loop devices for image and disk tests.
modprobe loop 2>/dev/null || true

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
  echo "deps: no Rust toolchain; install one with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi
echo "deps: ok"
