# Scenario 3: file_sync: a file and a directory from the owner's home
# appear in the guest; a symlink pointing outside the home is refused.
# The owner's config is $OWNER_HOME/.config/banger/config.toml:
#   [[file_sync]] host = "~/..." guest = "/..."
# It applies to every create of the owner, so scripts/smoke runs this
# scenario alone.
source "$(dirname "$0")/lib.sh"
n=$(vm_name sync); bad=$(vm_name syncbad)
src="$OWNER_HOME/smoke-sync-$RUN"; cfg="$OWNER_HOME/.config/banger/config.toml"
cleanup() {
  set +e; trap - ERR
  b vm rm --force "$n" >/dev/null 2>&1; b vm rm --force "$bad" >/dev/null 2>&1
  rm -rf "$src"
  if [ -e "$cfg.smoke-$RUN" ]; then mv "$cfg.smoke-$RUN" "$cfg"; else rm -f "$cfg"; fi
  return 0
}
trap cleanup EXIT
mkdir -p "$src/dir/sub" "$(dirname "$cfg")"
echo "file $RUN" >"$src/file.txt"; echo "deep $RUN" >"$src/dir/sub/deep.txt"
chown -R "$OWNER" "$src" "$(dirname "$cfg")"
[ -e "$cfg" ] && cp "$cfg" "$cfg.smoke-$RUN"
cat >"$cfg" <<TOML
[[file_sync]]
host = "~/smoke-sync-$RUN/file.txt"
guest = "/root/file.txt"
[[file_sync]]
host = "~/smoke-sync-$RUN/dir"
guest = "/root/dir"
TOML
chown "$OWNER" "$cfg"
b vm create "$n" --image "$BASE_IMAGE" --vcpus 1 --memory 512 >/dev/null
[ "$(vssh "$n" cat /root/file.txt)" = "file $RUN" ] || fail "synced file"
[ "$(vssh "$n" cat /root/dir/sub/deep.txt)" = "deep $RUN" ] || fail "synced directory"
ln -s /etc/shadow "$src/escape"
cat >"$cfg" <<TOML
[[file_sync]]
host = "~/smoke-sync-$RUN/escape"
guest = "/root/escape"
TOML
expect_one_line_error "outside the owner's home" b vm create "$bad" --image "$BASE_IMAGE" --vcpus 1 --memory 512
b vm inspect "$bad" >/dev/null 2>&1 && fail "refused VM $bad was recorded"
exit 0
