//! What banger writes into a guest's root disk before first boot, rendered
//! as text: hostname, hosts, network config (systemd-networkd and ifupdown),
//! resolver, machine-id; and the lines of banger's own `known_hosts`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The guest's static network configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNet {
    pub ip: Ipv4Addr,
    /// Prefix length of the VM subnet (e.g. 24).
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// Resolvers, in order (normally banger's DNS on the bridge address).
    pub dns: Vec<Ipv4Addr>,
    /// The NIC's MAC (`02:xx:xx:xx:xx:xx`), matched by networkd.
    pub mac: String,
    /// Interface name for ifupdown (Firecracker's first virtio-net is `eth0`).
    pub iface: String,
}

/// Who the guest is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestIdentity {
    /// A DNS label (the VM name).
    pub hostname: String,
    /// banger's domain (`vm`): the guest is `<hostname>.<domain>`.
    pub domain: String,
    pub net: GuestNet,
}

/// Why a rendering was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    #[error("hostname must be a DNS label (1-63 of a-z, 0-9, '-'): {0:?}")]
    Hostname(String),
    #[error("domain must be dot-separated DNS labels: {0:?}")]
    Domain(String),
    #[error("MAC must be six colon-separated hex bytes: {0:?}")]
    Mac(String),
    #[error("interface name must be 1-15 of a-z, 0-9, '.', '_', '-': {0:?}")]
    Iface(String),
    #[error("prefix must be 1..=32: {0}")]
    Prefix(u8),
    #[error("an SSH public key line must be `<type> <base64> [comment]`")]
    PublicKey,
}

fn label_ok(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

impl GuestIdentity {
    /// Check every field that ends up in a config file: no newline, `#`,
    /// space or other syntax can be smuggled into one.
    pub fn validate(&self) -> Result<(), GuestError> {
        if !label_ok(&self.hostname) {
            return Err(GuestError::Hostname(self.hostname.clone()));
        }
        if self.domain.len() > 190 || !self.domain.split('.').all(label_ok) {
            return Err(GuestError::Domain(self.domain.clone()));
        }
        let n = &self.net;
        let mac_ok = n.mac.len() == 17
            && n.mac
                .split(':')
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
        if !mac_ok {
            return Err(GuestError::Mac(n.mac.clone()));
        }
        let iface_ok = !n.iface.is_empty()
            && n.iface.len() <= 15
            && n.iface.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if !iface_ok {
            return Err(GuestError::Iface(n.iface.clone()));
        }
        if !(1..=32).contains(&n.prefix) {
            return Err(GuestError::Prefix(n.prefix));
        }
        Ok(())
    }

    /// `<hostname>.<domain>`.
    pub fn fqdn(&self) -> String {
        format!("{}.{}", self.hostname, self.domain)
    }

    /// `/etc/hostname`.
    pub fn hostname_file(&self) -> String {
        format!("{}\n", self.hostname)
    }

    /// `/etc/hosts`: loopback names, and the VM's own name on its address.
    pub fn hosts(&self) -> String {
        format!(
            "127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             ff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n\
             {}\t{} {}\n",
            self.net.ip,
            self.fqdn(),
            self.hostname
        )
    }

    /// `/etc/systemd/network/10-banger.network`, matched by MAC.
    pub fn networkd(&self) -> String {
        let n = &self.net;
        let mut s = String::new();
        s.push_str("# Written by banger before first boot.\n[Match]\n");
        let _ = writeln!(s, "MACAddress={}", n.mac.to_ascii_lowercase());
        s.push_str("\n[Network]\n");
        let _ = writeln!(s, "Address={}/{}", n.ip, n.prefix);
        let _ = writeln!(s, "Gateway={}", n.gateway);
        for d in &n.dns {
            let _ = writeln!(s, "DNS={d}");
        }
        let _ = writeln!(s, "Domains={}", self.domain);
        s.push_str("LinkLocalAddressing=no\nIPv6AcceptRA=no\n");
        s
    }

    /// `/etc/network/interfaces` for ifupdown / busybox images.
    pub fn interfaces(&self) -> String {
        let n = &self.net;
        let mut s = String::new();
        s.push_str("# Written by banger before first boot.\nauto lo\niface lo inet loopback\n\n");
        let _ = writeln!(s, "auto {}", n.iface);
        let _ = writeln!(s, "iface {} inet static", n.iface);
        let _ = writeln!(s, "    address {}/{}", n.ip, n.prefix);
        let _ = writeln!(s, "    gateway {}", n.gateway);
        if !n.dns.is_empty() {
            let dns: Vec<String> = n.dns.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(s, "    dns-nameservers {}", dns.join(" "));
            let _ = writeln!(s, "    dns-search {}", self.domain);
        }
        s
    }

    /// `/etc/resolv.conf`.
    pub fn resolv_conf(&self) -> String {
        let mut s = String::from("# Written by banger before first boot.\n");
        for d in &self.net.dns {
            let _ = writeln!(s, "nameserver {d}");
        }
        let _ = writeln!(s, "search {}", self.domain);
        s
    }
}

/// `/etc/machine-id`: 32 lowercase hex chars from 16 random bytes, as a
/// version-4 UUID (what systemd-machine-id-setup writes), and a newline.
pub fn machine_id(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.push('\n');
    s
}

/// Split an OpenSSH public key line into `(type, base64)`, refusing
/// anything else (options, extra lines, markers).
pub fn parse_public_key(line: &str) -> Result<(&str, &str), GuestError> {
    let line = line.trim_end_matches('\n');
    if line.contains('\n') || line.contains('\r') {
        return Err(GuestError::PublicKey);
    }
    let mut it = line.split_ascii_whitespace();
    let (Some(kind), Some(b64)) = (it.next(), it.next()) else {
        return Err(GuestError::PublicKey);
    };
    let kind_ok =
        (kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
            && kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'@'));
    let b64_ok = b64.len() >= 16
        && b64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if kind_ok && b64_ok {
        Ok((kind, b64))
    } else {
        Err(GuestError::PublicKey)
    }
}

/// The `authorized_keys` content for the owner's public keys (one per
/// line, comments kept only when they are plain text).
pub fn authorized_keys(keys: &[String]) -> Result<String, GuestError> {
    let mut s = String::new();
    for k in keys {
        let (kind, b64) = parse_public_key(k)?;
        let _ = writeln!(s, "{kind} {b64}");
    }
    Ok(s)
}

/// One `known_hosts` line pinning `host_key` (a public key line) for
/// `names` (e.g. `dev.vm` and the VM's IP): `dev.vm,172.30.0.5 ssh-ed25519 AAAA…`.
pub fn known_hosts_line(names: &[String], host_key: &str) -> Result<String, GuestError> {
    let (kind, b64) = parse_public_key(host_key)?;
    for n in names {
        let ok = !n.is_empty()
            && n.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            });
        if !ok {
            return Err(GuestError::Domain(n.clone()));
        }
    }
    Ok(format!("{} {kind} {b64}\n", names.join(",")))
}

/// `existing` with every line naming any of `names` dropped, then `add`
/// (a full line) appended. Comments and other hosts' lines are kept.
pub fn known_hosts_replace(existing: &str, names: &[String], add: Option<&str>) -> String {
    let mut out = String::new();
    for line in existing.lines() {
        let hosts = line.split_ascii_whitespace().next().unwrap_or("");
        let ours = !line.starts_with('#') && hosts.split(',').any(|h| names.iter().any(|n| n == h));
        if !ours && !line.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(a) = add {
        out.push_str(a);
        if !a.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident() -> GuestIdentity {
        GuestIdentity {
            hostname: "dev".into(),
            domain: "vm".into(),
            net: GuestNet {
                ip: "172.30.0.5".parse().unwrap(),
                prefix: 24,
                gateway: "172.30.0.1".parse().unwrap(),
                dns: vec!["172.30.0.1".parse().unwrap()],
                mac: "02:AB:cd:00:11:22".into(),
                iface: "eth0".into(),
            },
        }
    }

    #[test]
    fn renders_every_file() {
        let g = ident();
        g.validate().unwrap();
        assert_eq!(g.hostname_file(), "dev\n");
        assert!(g.hosts().contains("172.30.0.5\tdev.vm dev\n"));
        assert!(g.hosts().starts_with("127.0.0.1\tlocalhost\n"));
        assert_eq!(
            g.networkd(),
            "# Written by banger before first boot.\n[Match]\nMACAddress=02:ab:cd:00:11:22\n\n\
             [Network]\nAddress=172.30.0.5/24\nGateway=172.30.0.1\nDNS=172.30.0.1\nDomains=vm\n\
             LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        );
        assert_eq!(
            g.interfaces(),
            "# Written by banger before first boot.\nauto lo\niface lo inet loopback\n\n\
             auto eth0\niface eth0 inet static\n    address 172.30.0.5/24\n    gateway 172.30.0.1\n\
             \x20   dns-nameservers 172.30.0.1\n    dns-search vm\n"
        );
        assert_eq!(
            g.resolv_conf(),
            "# Written by banger before first boot.\nnameserver 172.30.0.1\nsearch vm\n"
        );
    }

    #[test]
    fn smuggled_syntax_is_refused() {
        let mut g = ident();
        g.hostname = "dev\nevil".into();
        assert!(matches!(g.validate(), Err(GuestError::Hostname(_))));
        let mut g = ident();
        g.domain = "vm\n[Network]".into();
        assert!(matches!(g.validate(), Err(GuestError::Domain(_))));
        let mut g = ident();
        g.net.mac = "02:ab:cd:00:11:2\n".into();
        assert!(matches!(g.validate(), Err(GuestError::Mac(_))));
        let mut g = ident();
        g.net.iface = "eth0 up".into();
        assert!(matches!(g.validate(), Err(GuestError::Iface(_))));
        let mut g = ident();
        g.net.prefix = 33;
        assert!(matches!(g.validate(), Err(GuestError::Prefix(33))));
        let mut g = ident();
        g.domain = "corp.example".into();
        g.validate().unwrap();
    }

    #[test]
    fn machine_id_is_a_v4_uuid_in_hex() {
        let m = machine_id([0xff; 16]);
        assert_eq!(m.len(), 33);
        assert!(m.ends_with('\n'));
        assert_eq!(&m[12..13], "4");
        assert_eq!(&m[16..17], "b");
        assert_ne!(machine_id([1; 16]), machine_id([2; 16]));
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBr0c4kq0Yq3Yl0p8m7sC1Yt9cBZ4Q7b1f5dN0x8yVwF";

    #[test]
    fn known_hosts_lines_pin_names_to_the_key() {
        let line = known_hosts_line(
            &["dev.vm".into(), "172.30.0.5".into()],
            &format!("{KEY} root@h\n"),
        )
        .unwrap();
        assert_eq!(line, format!("dev.vm,172.30.0.5 {KEY}\n"));
        assert!(known_hosts_line(&["a b".into()], KEY).is_err());
        assert!(known_hosts_line(&["dev.vm".into()], "ssh-ed25519\n").is_err());
        assert!(known_hosts_line(&["dev.vm".into()], &format!("{KEY}\nx y")).is_err());
        assert!(known_hosts_line(&["dev.vm".into()], "command=\"x\" ssh-ed25519 AAAA").is_err());
    }

    #[test]
    fn known_hosts_replace_drops_only_the_vms_lines() {
        let old = format!(
            "# banger\ndev.vm,172.30.0.5 {KEY}\nother.vm,172.30.0.6 {KEY}\n172.30.0.5 {KEY}\n"
        );
        let names = vec!["dev.vm".to_string(), "172.30.0.5".to_string()];
        let new = known_hosts_replace(&old, &names, Some("dev.vm,172.30.0.5 ssh-ed25519 NEW\n"));
        assert_eq!(
            new,
            format!("# banger\nother.vm,172.30.0.6 {KEY}\ndev.vm,172.30.0.5 ssh-ed25519 NEW\n")
        );
        assert_eq!(
            known_hosts_replace(&new, &names, None),
            format!("# banger\nother.vm,172.30.0.6 {KEY}\n")
        );
    }

    #[test]
    fn authorized_keys_keeps_type_and_key_only() {
        let k = authorized_keys(&[format!("{KEY} me@laptop"), KEY.into()]).unwrap();
        assert_eq!(k, format!("{KEY}\n{KEY}\n"));
        assert!(authorized_keys(&["from=\"*\" ssh-rsa AAAA".into()]).is_err());
    }
}
