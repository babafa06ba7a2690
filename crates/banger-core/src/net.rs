//! Network decisions: subnet parsing, guest IP allocation, MAC and tap names
//! derived from a VM id, and the check that banger's subnet does not collide
//! with the host's routes.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Prefix of every banger tap; the rest is 8 lowercase hex chars.
pub const TAP_PREFIX: &str = "banger-";

/// An IPv4 network `A.B.C.D/N` (no host bits set, `N` in 8..=30).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a subnet string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subnet must be A.B.C.D/N with N in 8..=30 and no host bits set (got {0:?})")]
pub struct BadSubnet(pub String);

impl Subnet {
    /// Build from a network address and prefix; `None` when host bits are
    /// set or the prefix is outside 8..=30.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Option<Self> {
        if !(8..=30).contains(&prefix) || u32::from(network) & !mask(prefix) != 0 {
            return None;
        }
        Some(Subnet { network, prefix })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// The bridge's address: the first host address (`.1` in a /24).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The bridge address as CIDR, e.g. `172.30.0.1/24`.
    pub fn gateway_cidr(&self) -> String {
        format!("{}/{}", self.gateway(), self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether two networks share any address.
    pub fn overlaps(&self, other_net: Ipv4Addr, other_prefix: u8) -> bool {
        let p = self.prefix.min(other_prefix);
        u32::from(self.network) & mask(p) == u32::from(other_net) & mask(p)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Subnet {
    type Err = BadSubnet;
    fn from_str(s: &str) -> Result<Self, BadSubnet> {
        let bad = || BadSubnet(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let network: Ipv4Addr = a.parse().map_err(|_| bad())?;
        if p.is_empty()
            || p.len() > 2
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.starts_with('0')
        {
            return Err(bad());
        }
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Subnet::new(network, prefix).ok_or_else(bad)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Serialised as its text, `A.B.C.D/N`, validated on the way in.
impl serde::Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The lowest free guest address in `subnet`: never the network address,
/// the gateway (`.1`, the bridge) or the broadcast address, and never one
/// in `taken`. `None` when the subnet is full.
pub fn allocate(subnet: &Subnet, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.gateway()) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !taken.contains(ip))
}

/// FNV-1a, 64 bits: a stable hash (unlike `std`'s, which is seeded).
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The VM's MAC: locally administered, unicast (`02:` first byte), the
/// other five bytes from a stable hash of the VM id.
pub fn mac_for(vm_id: &str) -> String {
    let h = fnv1a(vm_id.as_bytes()).to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        h[0], h[1], h[2], h[3], h[4]
    )
}

/// The VM's tap: `banger-` + 8 lowercase hex chars from a stable hash of
/// the VM id (15 chars, the kernel's limit).
pub fn tap_for(vm_id: &str) -> String {
    format!("{TAP_PREFIX}{:08x}", (fnv1a(vm_id.as_bytes()) >> 32) as u32)
}

/// One IPv4 route of the host, as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    /// Output interface name (empty when unknown).
    pub dev: String,
}

/// banger's subnet overlaps a route of the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subnet {subnet} collides with the host route {dst}/{prefix} on {dev}; choose another subnet in install.toml")]
pub struct RouteCollision {
    pub subnet: Subnet,
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub dev: String,
}

/// Refuse a subnet that overlaps any host route other than the default
/// route and banger's own bridge routes.
pub fn check_collision(
    subnet: &Subnet,
    routes: &[HostRoute],
    bridge: &str,
) -> Result<(), RouteCollision> {
    for r in routes {
        if r.prefix == 0 || r.dev == bridge {
            continue;
        }
        if subnet.overlaps(r.dst, r.prefix) {
            return Err(RouteCollision {
                subnet: *subnet,
                dst: r.dst,
                prefix: r.prefix,
                dev: r.dev.clone(),
            });
        }
    }
    Ok(())
}

/// The first /24 in 172.30.0.0/16 that collides with no host route.
pub fn choose_default_subnet(routes: &[HostRoute], bridge: &str) -> Option<Subnet> {
    (0..=255u8)
        .filter_map(|third| Subnet::new(Ipv4Addr::new(172, 30, third, 0), 24))
        .find(|s| check_collision(s, routes, bridge).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    fn route(s: &str, dev: &str) -> HostRoute {
        let (a, p) = s.split_once('/').unwrap();
        HostRoute {
            dst: a.parse().unwrap(),
            prefix: p.parse().unwrap(),
            dev: dev.into(),
        }
    }

    #[test]
    fn subnet_parse_and_render() {
        let s = net("172.30.0.0/24");
        assert_eq!(s.gateway_cidr(), "172.30.0.1/24");
        assert_eq!(s.broadcast(), Ipv4Addr::new(172, 30, 0, 255));
        assert_eq!(s.to_string(), "172.30.0.0/24");
        for bad in [
            "172.30.0.1/24",
            "172.30.0.0/31",
            "172.30.0.0/7",
            "172.30.0.0/024",
            "172.30.0.0",
            "a/24",
            "172.30.0.0/",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allocation_skips_network_gateway_broadcast() {
        let s = net("172.30.0.0/30");
        assert_eq!(
            allocate(&s, &BTreeSet::new()),
            Some(Ipv4Addr::new(172, 30, 0, 2))
        );
        let taken = [Ipv4Addr::new(172, 30, 0, 2)].into();
        assert_eq!(
            allocate(&s, &taken),
            None,
            "only .2 is a guest address in a /30"
        );
        let s = net("172.30.0.0/24");
        let taken: BTreeSet<_> = [2, 3, 5].map(|i| Ipv4Addr::new(172, 30, 0, i)).into();
        assert_eq!(allocate(&s, &taken), Some(Ipv4Addr::new(172, 30, 0, 4)));
        let full: BTreeSet<_> = (2..=254).map(|i| Ipv4Addr::new(172, 30, 0, i)).collect();
        assert_eq!(allocate(&s, &full), None);
    }

    #[test]
    fn names_are_stable_and_shaped() {
        assert_eq!(tap_for("dev"), tap_for("dev"));
        assert_ne!(tap_for("dev"), tap_for("dev2"));
        let t = tap_for("some-vm-id");
        assert_eq!(t.len(), 15);
        assert!(t[TAP_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let m = mac_for("dev");
        assert_eq!(m, mac_for("dev"));
        assert!(m.starts_with("02:") && m.len() == 17, "{m}");
        assert_ne!(m, mac_for("dev2"));
    }

    #[test]
    fn collisions_are_refused_with_a_clear_message() {
        let s = net("172.30.0.0/24");
        let routes = [
            route("0.0.0.0/0", "eth0"),
            route("10.0.0.0/8", "eth0"),
            route("172.30.0.0/24", "banger0"),
        ];
        assert_eq!(check_collision(&s, &routes, "banger0"), Ok(()));
        let e = check_collision(&s, &[route("172.16.0.0/12", "docker0")], "banger0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 172.30.0.0/24 collides with the host route 172.16.0.0/12 on docker0; choose another subnet in install.toml"
        );
        assert!(check_collision(&s, &[route("172.30.0.128/25", "wg0")], "banger0").is_err());
        assert!(check_collision(&s, &[route("172.30.1.0/24", "wg0")], "banger0").is_ok());
    }

    #[test]
    fn default_subnet_avoids_host_routes() {
        assert_eq!(
            choose_default_subnet(&[], "banger0"),
            Some(net("172.30.0.0/24"))
        );
        let routes = [
            route("172.30.0.0/23", "wg0"),
            route("172.30.2.0/24", "eth1"),
        ];
        assert_eq!(
            choose_default_subnet(&routes, "banger0"),
            Some(net("172.30.3.0/24"))
        );
        assert_eq!(
            choose_default_subnet(&[route("172.30.0.0/16", "x")], "banger0"),
            None
        );
    }

    proptest! {
        /// Allocating one VM after another never hands out an address twice,
        /// never a reserved one, and frees are reused.
        #[test]
        fn never_two_vms_on_one_address(ops in proptest::collection::vec(any::<Option<u8>>(), 1..300)) {
            let s = net("172.30.0.0/25");
            let mut taken = BTreeSet::new();
            for op in ops {
                match op {
                    None => match allocate(&s, &taken) {
                        Some(ip) => {
                            prop_assert!(s.contains(ip));
                            prop_assert!(ip != s.network() && ip != s.gateway() && ip != s.broadcast());
                            prop_assert!(taken.insert(ip), "{} handed out twice", ip);
                        }
                        None => prop_assert_eq!(taken.len(), 125),
                    },
                    Some(k) => {
                        if let Some(ip) = taken.iter().nth(usize::from(k) % taken.len().max(1)).copied() {
                            taken.remove(&ip);
                        }
                    }
                }
            }
        }
    }
}
