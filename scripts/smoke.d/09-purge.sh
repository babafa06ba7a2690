# Scenario 9 (runs last, alone): `system uninstall --purge` leaves nothing
# of banger: links, nft table, loops, dm devices, mounts, chroots, users
# and ranges it made, files, units.
source "$(dirname "$0")/lib.sh"
# (scripts/smoke stopped its supervised services first where there is no systemd.)
# The VMs' ids before: dm devices are recognised by them (other fc-rootfs-*
# devices on the host, tests' for one, are not banger's install's).
ids=$(ls /var/lib/banger/vms 2>/dev/null || true)
"$BANGER" system uninstall --purge >/dev/null
left=()
for l in $(ip -o link | awk -F': ' '{print $2}' | cut -d@ -f1); do
  case "$l" in banger0|banger-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) left+=("link $l");; esac
done
nft list table inet banger >/dev/null 2>&1 && left+=("nft table inet banger")
losetup -l -n -O BACK-FILE | grep -q '^/var/lib/banger' && left+=("loops")
for id in $ids; do dmsetup ls 2>/dev/null | grep -q "^fc-rootfs-$id" && left+=("dm device of $id"); done
grep -qE ' /(var/lib/banger|srv/jailer)' /proc/self/mountinfo && left+=("mounts")
for p in /etc/banger /var/lib/banger /run/banger /srv/jailer /usr/local/bin/banger /usr/local/bin/bangerd \
         /usr/local/bin/banger-helper /etc/systemd/system/bangerd.service /etc/systemd/system/banger-helper.service; do
  [ -e "$p" ] && left+=("$p")
done
getent passwd | grep -q '^banger-jail' && left+=("jail users")
grep -q '^banger' /etc/subuid 2>/dev/null && left+=("subuid ranges")
[ "${#left[@]}" -eq 0 ] || fail "left after purge: ${left[*]}"
