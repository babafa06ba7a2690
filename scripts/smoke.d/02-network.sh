# Scenario 2: guest → guest by NAME.vm, host → NAME.vm through banger's DNS
# on the bridge, guest → an outside stand-in (a netns behind the host's
# NAT) by address.
source "$(dirname "$0")/lib.sh"
a=$(vm_name neta); c=$(vm_name netb)
ns="bgtest-smk${RUN}-out"; ho="bgsmk${RUN}o0"; no="bgsmk${RUN}o1"
outside=198.51.100.2
cleanup() {
  set +e; trap - ERR
  [ -n "${web:-}" ] && kill "$web" 2>/dev/null
  ip link del "$ho" 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  b vm rm --force "$a" >/dev/null 2>&1
  b vm rm --force "$c" >/dev/null 2>&1
  return 0
}
trap cleanup EXIT
b vm create "$a" --image "$BASE_IMAGE" --vcpus 1 --memory 512 >/dev/null &
p1=$!
b vm create "$c" --image "$BASE_IMAGE" --vcpus 1 --memory 512 >/dev/null
wait "$p1" || fail "create $a"
ip_c=$(vm_field "$c" ip)
gw=$(python3 -c "import ipaddress,sys; n=ipaddress.ip_network(sys.argv[1]); print(n.network_address+1)" \
  "$(sed -n 's/^subnet *= *"\(.*\)"/\1/p' /etc/banger/install.toml)")
# Host → NAME.vm through banger's DNS on the bridge address.
got=$(python3 - "$gw" "$c.vm" <<'PY'
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x5a5a, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(q, (server, 53)); r, _ = s.recvfrom(512)
print(".".join(str(b) for b in r[-4:]) if struct.unpack(">H", r[6:8])[0] else "")
PY
)
[ "$got" = "$ip_c" ] || fail "host: $c.vm is '$got', expected $ip_c"
# Guest → guest by name: the peer's sshd answers on NAME.vm:22.
banner=$(vssh "$a" "exec 3<>/dev/tcp/$c.vm/22; head -c 7 <&3")
[ "$banner" = "SSH-2.0" ] || fail "guest→guest $c.vm:22 gave '$banner'"
# Guest → outside stand-in through NAT.
ip netns add "$ns"
ip link add "$ho" type veth peer name "$no" netns "$ns"
ip addr add 198.51.100.1/30 dev "$ho"; ip link set "$ho" up
ip -n "$ns" addr add "$outside/30" dev "$no"; ip -n "$ns" link set "$no" up
ip -n "$ns" link set lo up; ip -n "$ns" route add default via 198.51.100.1
ip netns exec "$ns" /usr/bin/python3 -m http.server 8080 --bind "$outside" >/dev/null 2>&1 &
web=$!
wait_for 60 ip netns exec "$ns" /usr/bin/python3 -c "import socket; socket.create_connection(('$outside',8080),1)"
line=$(vssh "$a" "exec 3<>/dev/tcp/$outside/8080; printf 'GET / HTTP/1.0\r\n\r\n' >&3; head -n1 <&3" | tr -d '\r')
case "$line" in HTTP/1.0\ 200*) ;; *) fail "guest→outside: '$line'";; esac
