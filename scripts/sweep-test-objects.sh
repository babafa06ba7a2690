#!/usr/bin/env bash
# Remove host objects a crashed test run left behind. Every test object
# carries the marker bgtest- (taps made by tests: banger-t*).
set -u
[ "$(id -u)" -eq 0 ] || exit 0
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^bgtest-'); do ip netns del "$ns"; done
for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(bgtest-|banger-t)'); do
  ip link del "$l" 2>/dev/null
done
# A banger0 bridge left by the system-install test (only if banger made it).
if ip -d link show banger0 2>/dev/null | grep -q 'alias banger-managed'; then ip link del banger0; fi
if command -v nft >/dev/null; then
  nft list tables 2>/dev/null | awk '$3 ~ /^bgtest/ {print $2, $3}' | while read -r fam t; do nft delete table "$fam" "$t"; done
fi
for u in $(getent passwd | cut -d: -f1 | grep '^bgtest-'); do userdel "$u" 2>/dev/null; done
grep ' /tmp/bgtest-' /proc/self/mountinfo 2>/dev/null | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m"; done
losetup -a 2>/dev/null | grep bgtest- | cut -d: -f1 | while read -r d; do losetup -d "$d"; done
exit 0
