//! Network gates: interface names, banger taps, guest IPv4s, the bridge CIDR,
//! resolver addresses and DNS domains.

use super::Refused;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Prefix every banger tap carries (`banger-` + 8 hex chars in production).
pub const TAP_PREFIX: &str = "banger-";

/// The kernel's limit: `IFNAMSIZ` (16) minus the NUL.
pub const IFNAME_MAX: usize = 15;

/// An IPv4 network: address and prefix length, the address being the
/// network address (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Parse `A.B.C.D/N` with `N` in 8..=30 and no host bits set.
    pub fn parse(s: &str) -> Result<Self, Refused> {
        let bad = || {
            Refused::new(format!(
                "subnet must be A.B.C.D/N with N in 8..=30 and no host bits set (got {s:?})"
            ))
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let network = parse_ipv4(a).ok_or_else(bad)?;
        let prefix = parse_prefix(p)
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(bad)?;
        let net = Subnet { network, prefix };
        if u32::from(network) & !net.mask() != 0 {
            return Err(bad());
        }
        Ok(net)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// The bridge's address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Whether `net/prefix` shares any address with this subnet.
    pub fn overlaps(&self, net: Ipv4Addr, prefix: u8) -> bool {
        let p = self.prefix.min(prefix);
        let m = if p == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(p))
        };
        u32::from(self.network) & m == u32::from(net) & m
    }

    /// Inside the subnet and neither its network nor its broadcast address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.network && ip != self.broadcast()
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Strict dotted-quad IPv4: four decimal octets, no leading zeros (which
/// some tools read as octal), no surrounding space.
pub fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if p.len() > 1 && p.starts_with('0') {
            return None;
        }
        *o = p.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

fn parse_prefix(p: &str) -> Option<u8> {
    if p.is_empty()
        || p.len() > 2
        || !p.bytes().all(|b| b.is_ascii_digit())
        || (p.len() > 1 && p.starts_with('0'))
    {
        return None;
    }
    p.parse().ok()
}

/// A Linux interface name as banger accepts it: 1–15 bytes of
/// `[A-Za-z0-9_.-]`, not `.` or `..` and without `..` anywhere. Stricter
/// than the kernel (which refuses only `/`, `:`, whitespace and NUL).
pub fn iface_name<'a>(what: &str, name: &'a str) -> Result<&'a str, Refused> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !name.contains("..")
        && name != ".";
    if ok {
        Ok(name)
    } else {
        Err(Refused::new(format!(
            "{what} must be an interface name: 1-{IFNAME_MAX} chars of [A-Za-z0-9_.-], no whitespace, '/', ':' or '..'"
        )))
    }
}

/// A banger tap: an interface name starting with [`TAP_PREFIX`] and
/// something after it.
pub fn tap_name(name: &str) -> Result<&str, Refused> {
    let name = iface_name("tap", name)?;
    if name.len() > TAP_PREFIX.len() && name.starts_with(TAP_PREFIX) {
        Ok(name)
    } else {
        Err(Refused::new(format!("tap must start with {TAP_PREFIX}")))
    }
}

/// A guest's address: parsable IPv4, a host address inside banger's subnet
/// and not the gateway (the bridge).
pub fn guest_ipv4(s: &str, subnet: &Subnet) -> Result<Ipv4Addr, Refused> {
    let ip =
        parse_ipv4(s).ok_or_else(|| Refused::new("guest_ip must be a parsable IPv4 address"))?;
    if !subnet.is_host(ip) || ip == subnet.gateway() {
        return Err(Refused::new(format!(
            "guest_ip must be a host address inside {subnet} other than the gateway {}",
            subnet.gateway()
        )));
    }
    Ok(ip)
}

/// The bridge address `A.B.C.D/N`: a host address inside banger's subnet,
/// with the subnet's own prefix length.
pub fn bridge_cidr(s: &str, subnet: &Subnet) -> Result<(Ipv4Addr, u8), Refused> {
    let refuse = || {
        Refused::new(format!(
            "address must be a CIDR A.B.C.D/{} with a host address inside {subnet}",
            subnet.prefix
        ))
    };
    let (a, p) = s.split_once('/').ok_or_else(refuse)?;
    let ip = parse_ipv4(a).ok_or_else(refuse)?;
    let prefix = parse_prefix(p).ok_or_else(refuse)?;
    if prefix != subnet.prefix || !subnet.is_host(ip) {
        return Err(refuse());
    }
    Ok((ip, prefix))
}

/// A resolver `ADDR` or `ADDR:PORT` (IPv4, port 1–65535) inside banger's
/// subnet: the daemon's DNS server listens on the bridge.
pub fn resolver_addr(s: &str, subnet: &Subnet) -> Result<SocketAddrV4, Refused> {
    let refuse = || {
        Refused::new(format!(
            "resolver must be an IPv4 address inside {subnet}, optionally with :PORT (1-65535)"
        ))
    };
    let (a, port) = match s.split_once(':') {
        None => (s, 53),
        Some((a, p)) => {
            let port: u16 = (!p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && !p.starts_with('0'))
            .then(|| p.parse().ok())
            .flatten()
            .ok_or_else(refuse)?;
            (a, port)
        }
    };
    let ip = parse_ipv4(a).ok_or_else(refuse)?;
    if !subnet.is_host(ip) {
        return Err(refuse());
    }
    Ok(SocketAddrV4::new(ip, port))
}

/// The daemon's DNS port on the bridge: unprivileged (1024-65535), so a
/// redirect can never point guests at a root service such as sshd.
pub fn dns_port(port: u16) -> Result<u16, Refused> {
    if port >= 1024 {
        Ok(port)
    } else {
        Err(Refused::new("port must be in 1024-65535"))
    }
}

/// The bridge named in a request (field `what`) must be the configured
/// bridge: no other name may be created, used or re-pointed, so the daemon
/// cannot squat `docker0`, `virbr0`, `cni0`, `wg0`… before their owners.
pub fn configured_bridge<'a>(
    what: &str,
    name: &'a str,
    configured: &str,
) -> Result<&'a str, Refused> {
    let name = iface_name(what, name)?;
    if name == configured {
        Ok(name)
    } else {
        Err(Refused::new(format!(
            "{what} must be the configured bridge {configured}"
        )))
    }
}

/// The domain named in a request must be the configured domain (itself a
/// well-formed DNS domain; compared as the daemon uses it: lower case, no
/// trailing dot): any other suffix would route host lookups outside
/// banger's names (`com`, `internal`…) to the daemon.
pub fn configured_domain<'a>(s: &'a str, configured: &str) -> Result<&'a str, Refused> {
    let s = dns_domain(s)?;
    let configured = configured.trim_end_matches('.').to_ascii_lowercase();
    if s == configured {
        Ok(s)
    } else {
        Err(Refused::new(format!(
            "domain must be the configured domain {configured}"
        )))
    }
}

/// Another banger tap may be made while fewer than `max` exist (`max_taps`
/// from install metadata).
pub fn tap_count(existing: usize, max: u32) -> Result<(), Refused> {
    if existing < max as usize {
        Ok(())
    } else {
        Err(Refused::new(format!(
            "taps must number at most max_taps = {max} (install.toml); {existing} exist"
        )))
    }
}

/// A DNS domain of one or more labels: each 1–63 chars of `[a-z0-9-]`, not
/// starting or ending with `-`; 253 chars at most; no trailing dot.
pub fn dns_domain(s: &str) -> Result<&str, Refused> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok) {
        Ok(s)
    } else {
        Err(Refused::new(
            "domain must be DNS labels of [a-z0-9-] (1-63 chars each, no leading/trailing '-'), 253 chars at most",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net() -> Subnet {
        Subnet::parse("172.30.0.0/24").unwrap()
    }

    #[test]
    fn subnets() {
        let n = net();
        assert_eq!(n.gateway(), Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(n.broadcast(), Ipv4Addr::new(172, 30, 0, 255));
        assert_eq!(n.to_string(), "172.30.0.0/24");
        for bad in [
            "172.30.0.1/24",
            "172.30.0.0",
            "172.30.0.0/31",
            "172.30.0.0/7",
            "172.30.0.0/024",
            "x/24",
            "172.30.0.0/24 ",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlaps() {
        let n = net();
        assert!(n.overlaps(Ipv4Addr::new(172, 16, 0, 0), 12));
        assert!(n.overlaps(Ipv4Addr::new(172, 30, 0, 128), 25));
        assert!(!n.overlaps(Ipv4Addr::new(172, 30, 1, 0), 24));
        assert!(n.overlaps(Ipv4Addr::UNSPECIFIED, 0));
    }

    #[test]
    fn ipv4_is_strict() {
        assert_eq!(parse_ipv4("172.30.0.2"), Some(Ipv4Addr::new(172, 30, 0, 2)));
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.256",
            " 1.2.3.4",
            "1.2.3.4 ",
            "1.2.3.-4",
            "1.2.3.+4",
            "::1",
            "1.2.3.4/32",
            "１.2.3.4",
        ] {
            assert_eq!(parse_ipv4(bad), None, "{bad}");
        }
    }

    #[test]
    fn iface_names() {
        for good in [
            "banger0",
            "a",
            "bgtest-br12345",
            "eth0.100",
            "x_y-z",
            "123456789012345",
        ] {
            assert_eq!(iface_name("bridge", good), Ok(good));
        }
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            "1234567890123456",
            "br 0",
            "br/0",
            "br:0",
            "br\0",
            "br\t",
            "brü",
            "br\n",
            "../x",
        ] {
            let e = iface_name("bridge", bad).unwrap_err();
            assert!(
                e.0.starts_with("bridge must be an interface name"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn taps() {
        assert!(tap_name("banger-0a1b2c3d").is_ok());
        assert!(tap_name("banger-tab12").is_ok());
        assert_eq!(
            tap_name("banger-").unwrap_err().0,
            "tap must start with banger-"
        );
        assert_eq!(
            tap_name("eth0").unwrap_err().0,
            "tap must start with banger-"
        );
        assert_eq!(
            tap_name("xbanger-1").unwrap_err().0,
            "tap must start with banger-"
        );
        assert!(tap_name("banger-0a1b2c3d4").is_err(), "16 chars");
        assert!(tap_name("banger-a/b").is_err());
    }

    #[test]
    fn guest_ips() {
        assert_eq!(
            guest_ipv4("172.30.0.2", &net()),
            Ok(Ipv4Addr::new(172, 30, 0, 2))
        );
        assert_eq!(
            guest_ipv4("172.30.0.254", &net()),
            Ok(Ipv4Addr::new(172, 30, 0, 254))
        );
        assert_eq!(
            guest_ipv4("nope", &net()).unwrap_err().0,
            "guest_ip must be a parsable IPv4 address"
        );
        for bad in [
            "172.30.0.0",
            "172.30.0.1",
            "172.30.0.255",
            "172.30.1.2",
            "10.0.0.2",
            "0.0.0.0",
        ] {
            let e = guest_ipv4(bad, &net()).unwrap_err();
            assert!(e.0.contains("inside 172.30.0.0/24"), "{bad}: {e}");
        }
    }

    #[test]
    fn bridge_cidrs() {
        assert_eq!(
            bridge_cidr("172.30.0.1/24", &net()),
            Ok((Ipv4Addr::new(172, 30, 0, 1), 24))
        );
        for bad in [
            "172.30.0.1",
            "172.30.0.1/16",
            "10.0.0.1/24",
            "172.30.0.0/24",
            "172.30.0.255/24",
            "172.30.0.1/",
            "172.30.0.1/24/1",
        ] {
            assert!(bridge_cidr(bad, &net()).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolvers() {
        assert_eq!(
            resolver_addr("172.30.0.1", &net()),
            Ok("172.30.0.1:53".parse().unwrap())
        );
        assert_eq!(
            resolver_addr("172.30.0.1:5353", &net()),
            Ok("172.30.0.1:5353".parse().unwrap())
        );
        for bad in [
            "",
            "172.30.0.1:",
            "172.30.0.1:0",
            "172.30.0.1:65536",
            "172.30.0.1:053",
            "172.30.0.1:53:1",
            "8.8.8.8",
            "[::1]:53",
            "172.30.0.1 ",
            "172.30.0.1:x",
        ] {
            let e = resolver_addr(bad, &net()).unwrap_err();
            assert!(e.0.starts_with("resolver must be"), "{bad}");
        }
    }

    #[test]
    fn domains() {
        for good in ["vm", "banger.internal", "a-1.b2", "x"] {
            assert_eq!(dns_domain(good), Ok(good));
        }
        for bad in [
            "",
            ".",
            "vm.",
            ".vm",
            "-vm",
            "vm-",
            "VM",
            "v m",
            "~vm",
            "a..b",
            "vm/x",
            &"a".repeat(64),
        ] {
            assert!(dns_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tap_counts() {
        assert!(tap_count(0, 1).is_ok());
        assert!(tap_count(1023, 1024).is_ok());
        assert_eq!(
            tap_count(2, 2).unwrap_err().0,
            "taps must number at most max_taps = 2 (install.toml); 2 exist"
        );
        assert!(tap_count(0, 0).is_err(), "max_taps = 0 allows none");
    }

    #[test]
    fn configured_names() {
        assert_eq!(configured_domain("vm", "vm"), Ok("vm"));
        assert_eq!(configured_domain("dev.vm", "Dev.VM."), Ok("dev.vm"));
        for bad in ["com", "m", "vm.com", "x.vm"] {
            assert_eq!(
                configured_domain(bad, "vm").unwrap_err().0,
                "domain must be the configured domain vm",
                "{bad}"
            );
        }
        assert!(configured_domain("~.", "vm")
            .unwrap_err()
            .0
            .starts_with("domain must be DNS labels"));
        assert_eq!(
            configured_bridge("bridge", "banger0", "banger0"),
            Ok("banger0")
        );
        for bad in ["docker0", "virbr0", "cni0", "wg0", "banger1", "banger00"] {
            assert_eq!(
                configured_bridge("bridge", bad, "banger0").unwrap_err().0,
                "bridge must be the configured bridge banger0",
                "{bad}"
            );
        }
        assert_eq!(
            configured_bridge("name", "docker0", "banger0")
                .unwrap_err()
                .0,
            "name must be the configured bridge banger0"
        );
        assert!(configured_bridge("name", "a b", "a b")
            .unwrap_err()
            .0
            .starts_with("name must be an interface name"));
    }

    proptest! {
        #[test]
        fn accepted_iface_names_are_safe(s in "\\PC{0,20}|[a-z0-9./: \\t-]{0,20}") {
            if iface_name("x", &s).is_ok() {
                prop_assert!(!s.contains('/') && !s.contains("..") && !s.contains('\0'));
                prop_assert!(!s.chars().any(char::is_whitespace));
                prop_assert!(s.is_ascii() && !s.is_empty() && s.len() <= IFNAME_MAX);
            }
            if tap_name(&s).is_ok() {
                prop_assert!(s.starts_with(TAP_PREFIX) && s.len() <= IFNAME_MAX);
            }
        }

        #[test]
        fn accepted_domains_are_safe(s in "\\PC{0,40}|[a-z0-9.~ -]{0,40}") {
            if dns_domain(&s).is_ok() {
                prop_assert!(s.is_ascii() && !s.contains("..") && !s.contains('/') && !s.contains('~'));
                prop_assert!(!s.chars().any(char::is_whitespace));
            }
        }

        #[test]
        fn accepted_guest_ips_are_inside(a in any::<u32>()) {
            let ip = Ipv4Addr::from(a);
            if let Ok(g) = guest_ipv4(&ip.to_string(), &net()) {
                prop_assert!(net().contains(g) && g != net().gateway());
            } else {
                prop_assert!(!net().is_host(ip) || ip == net().gateway());
            }
        }
    }
}
