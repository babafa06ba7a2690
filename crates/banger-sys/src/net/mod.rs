//! Bridge and tap management over rtnetlink and `/dev/net/tun`, behind the
//! [`NetOps`] trait (real: [`RealNet`]; fake: [`RecordingNet`]).
//!
//! Every interface banger creates carries the alias [`MANAGED_ALIAS`]
//! (`IFLA_IFALIAS`); an existing interface without it is never adopted,
//! modified or deleted. Bridges and taps are made with IPv6 off
//! (`accept_ra=0`, `disable_ipv6=1`), so a guest's router advertisement
//! never configures the host.

mod fake;
mod rtnl;
mod tun;

pub use fake::{NetRequest, RecordingNet};

use netlink_packet_core::{
    Nla, NlasIterator, NLA_TYPE_MASK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as Rt};
pub(crate) use rtnl::Rtnl;
use std::io;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use tun::{Tap, TunStep};

/// The `IFLA_IFALIAS` banger sets on every interface it creates.
pub const MANAGED_ALIAS: &str = "banger-managed";

/// Who may attach to a tap without root (the VMM's uid/gid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// An interface as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`, e.g. `bridge`, `tun`, `veth`.
    pub kind: Option<String>,
    pub alias: Option<String>,
    /// Index of the bridge this link is enslaved to.
    pub master: Option<u32>,
    pub up: bool,
    /// `IFLA_TUN_OWNER` / `IFLA_TUN_GROUP` for tun/tap links.
    pub tun_owner: Option<u32>,
    pub tun_group: Option<u32>,
}

impl Link {
    /// Created by banger (carries [`MANAGED_ALIAS`]).
    pub fn managed(&self) -> bool {
        self.alias.as_deref() == Some(MANAGED_ALIAS)
    }
}

/// One IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub dev: String,
}

/// Why a network operation failed. One variant per operation, carrying the
/// interface it was about.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("open an rtnetlink socket")]
    OpenNetlink(#[source] io::Error),
    #[error("look up interface {0}")]
    GetLink(String, #[source] io::Error),
    #[error("list interfaces")]
    ListLinks(#[source] io::Error),
    #[error("list IPv4 routes")]
    ListRoutes(#[source] io::Error),
    #[error("refusing to adopt interface {0}: it exists and was not created by banger")]
    NotManaged(String),
    #[error("interface {0} is not a {1}")]
    WrongKind(String, &'static str),
    #[error("interface {0} does not exist")]
    NoSuchLink(String),
    #[error("create bridge {0}")]
    CreateBridge(String, #[source] io::Error),
    #[error("mark interface {0} as banger's")]
    SetAlias(String, #[source] io::Error),
    #[error("add address {1}/{2} to {0}")]
    AddAddress(String, Ipv4Addr, u8, #[source] io::Error),
    #[error("bring interface {0} up")]
    SetUp(String, #[source] io::Error),
    #[error("attach {0} to bridge {1}")]
    SetMaster(String, String, #[source] io::Error),
    #[error("delete interface {0}")]
    DeleteLink(String, #[source] io::Error),
    #[error("open {0}")]
    OpenTun(PathBuf, #[source] io::Error),
    #[error("create tap {0} (TUNSETIFF)")]
    TunSetIff(String, #[source] io::Error),
    #[error("set owner of tap {0} to {1}:{2}")]
    TunSetOwner(String, u32, u32, #[source] io::Error),
    #[error("make tap {0} persistent")]
    TunSetPersist(String, #[source] io::Error),
    #[error("turn IPv6 off on {0} (write {1})")]
    Ipv6Off(String, PathBuf, #[source] io::Error),
}

/// Host network operations banger needs. Names must already have passed
/// the helper's gates; implementations refuse interfaces banger did not create.
pub trait NetOps: Send + Sync {
    /// Create the bridge (or keep banger's existing one), give it
    /// `addr/prefix` and bring it up.
    fn ensure_bridge(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), NetError>;
    /// Create a persistent tap owned by `owner`, attach it to banger's
    /// bridge `bridge` and bring it up. An existing banger tap is re-ensured.
    fn create_tap(&self, name: &str, bridge: &str, owner: Owner) -> Result<(), NetError>;
    /// Delete banger's tap `name`; absent is fine.
    fn delete_tap(&self, name: &str) -> Result<(), NetError>;
    /// Delete banger's bridge `name` (uninstall); absent is fine.
    fn delete_bridge(&self, name: &str) -> Result<(), NetError>;
    /// Delete the interface `name` of any kind if it carries banger's mark
    /// (uninstall: whatever banger-marked interface exists); absent is fine.
    fn delete_managed(&self, name: &str) -> Result<(), NetError>;
    /// The link named `name`, if any.
    fn link(&self, name: &str) -> Result<Option<Link>, NetError>;
    /// IPv4 routes of the main table (for the subnet collision check).
    fn routes(&self) -> Result<Vec<Route4>, NetError>;
    /// Every interface banger created (for reconciling orphaned taps).
    fn managed_links(&self) -> Result<Vec<Link>, NetError>;
    /// How many tun/tap interfaces banger created (the helper's `max_taps`
    /// cap counts them for every new tap).
    fn managed_tap_count(&self) -> Result<usize, NetError> {
        Ok(self
            .managed_links()?
            .iter()
            .filter(|l| l.kind.as_deref() == Some("tun"))
            .count())
    }
}

/// `RTM_NEWLINK`, the message type of a link dump's replies.
const RTM_NEWLINK: u16 = 16;
/// `sizeof(struct ifinfomsg)`, before a link message's attributes.
const IFINFOMSG_LEN: usize = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_INFO_KIND: u16 = 1;

/// A string attribute's bytes up to its NUL.
fn nla_str(v: &[u8]) -> &[u8] {
    v.split(|b| *b == 0).next().unwrap_or(v)
}

/// Whether one `RTM_NEWLINK` payload (`ifinfomsg` and attributes) is a
/// tun/tap link carrying [`MANAGED_ALIAS`]; only its alias and kind are
/// looked at, nothing else is decoded.
pub(crate) fn is_managed_tap(payload: &[u8]) -> bool {
    let Some(attrs) = payload.get(IFINFOMSG_LEN..) else {
        return false;
    };
    let (mut alias, mut tun) = (false, false);
    for nla in NlasIterator::new(attrs).flatten() {
        match nla.kind() & NLA_TYPE_MASK {
            IFLA_IFALIAS => alias = nla_str(nla.value()) == MANAGED_ALIAS.as_bytes(),
            IFLA_LINKINFO => {
                tun = NlasIterator::new(nla.value()).flatten().any(|i| {
                    i.kind() & NLA_TYPE_MASK == IFLA_INFO_KIND && nla_str(i.value()) == b"tun"
                })
            }
            _ => {}
        }
    }
    alias && tun
}

/// The real host (the network namespace of the calling thread).
#[derive(Debug, Clone)]
pub struct RealNet {
    /// The tun clone device, `/dev/net/tun`.
    pub tun_dev: PathBuf,
    /// Root of the proc filesystem, for the per-interface IPv6 sysctls.
    pub proc_root: PathBuf,
}

impl Default for RealNet {
    fn default() -> Self {
        RealNet {
            tun_dev: "/dev/net/tun".into(),
            proc_root: "/proc".into(),
        }
    }
}

/// Turn IPv6 off on interface `name`: `accept_ra=0`, then `disable_ipv6=1`
/// under `<proc_root>/sys/net/ipv6/conf/<name>/` (the calling thread's
/// network namespace). A kernel without IPv6 (no
/// `<proc_root>/sys/net/ipv6`) has nothing to turn off.
pub fn ipv6_off(proc_root: &Path, name: &str) -> Result<(), NetError> {
    let base = proc_root.join("sys/net/ipv6");
    if !base.exists() {
        return Ok(());
    }
    let dir = base.join("conf").join(name);
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(NetError::Ipv6Off(
            name.to_string(),
            dir,
            io::Error::from_raw_os_error(libc::EINVAL),
        ));
    }
    for (key, value) in [("accept_ra", b"0\n"), ("disable_ipv6", b"1\n")] {
        let path = dir.join(key);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value))
            .map_err(|e| NetError::Ipv6Off(name.to_string(), path, e))?;
    }
    Ok(())
}

/// An rtnetlink socket in the calling thread's namespace (for [`crate::netns`]).
pub(crate) fn rtnl_open() -> io::Result<Rtnl> {
    Rtnl::open()
}

fn open() -> Result<Rtnl, NetError> {
    Rtnl::open().map_err(NetError::OpenNetlink)
}

fn link_from(msg: LinkMessage) -> Link {
    let mut l = Link {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        ..Default::default()
    };
    for a in msg.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n,
            LinkAttribute::IfAlias(s) => l.alias = Some(s),
            LinkAttribute::Controller(i) => l.master = Some(i),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Tun(attrs)) => {
                            for t in attrs {
                                let mut v = vec![0u8; t.value_len()];
                                t.emit_value(&mut v);
                                let n = v
                                    .get(..4)
                                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                                match t.kind() {
                                    1 => l.tun_owner = n,
                                    2 => l.tun_group = n,
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn get_link(nl: &mut Rtnl, name: &str) -> Result<Option<Link>, NetError> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    match nl.get(Rt::GetLink(msg)) {
        Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
            Rt::NewLink(l) => Some(link_from(l)),
            _ => None,
        })),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(NetError::GetLink(name.to_string(), e)),
    }
}

fn set_link(nl: &mut Rtnl, index: u32, attrs: Vec<LinkAttribute>, up: bool) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if up {
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    msg.attributes = attrs;
    nl.request(Rt::SetLink(msg), 0)
}

fn mark_managed(nl: &mut Rtnl, l: &Link) -> Result<(), NetError> {
    set_link(
        nl,
        l.index,
        vec![LinkAttribute::IfAlias(MANAGED_ALIAS.into())],
        false,
    )
    .map_err(|e| NetError::SetAlias(l.name.clone(), e))
}

/// The existing link `name`, which must be banger's and of `kind`.
fn existing_managed(
    nl: &mut Rtnl,
    name: &str,
    kind: &'static str,
) -> Result<Option<Link>, NetError> {
    match get_link(nl, name)? {
        None => Ok(None),
        Some(l) if !l.managed() => Err(NetError::NotManaged(name.to_string())),
        Some(l) if l.kind.as_deref() != Some(kind) => {
            Err(NetError::WrongKind(name.to_string(), kind))
        }
        Some(l) => Ok(Some(l)),
    }
}

/// Delete banger's link `name` (of `kind`, or of any kind when `None`).
fn delete_link(name: &str, kind: Option<&'static str>) -> Result<(), NetError> {
    let mut nl = open()?;
    let found = match kind {
        Some(kind) => existing_managed(&mut nl, name, kind)?,
        None => match get_link(&mut nl, name)? {
            Some(l) if !l.managed() => return Err(NetError::NotManaged(name.to_string())),
            other => other,
        },
    };
    let Some(l) = found else {
        return Ok(());
    };
    let mut msg = LinkMessage::default();
    msg.header.index = l.index;
    match nl.request(Rt::DelLink(msg), 0) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(NetError::DeleteLink(name.to_string(), e)),
    }
}

fn all_links(nl: &mut Rtnl) -> Result<Vec<Link>, NetError> {
    Ok(nl
        .dump(Rt::GetLink(LinkMessage::default()))
        .map_err(NetError::ListLinks)?
        .into_iter()
        .filter_map(|m| match m {
            Rt::NewLink(l) => Some(link_from(l)),
            _ => None,
        })
        .collect())
}

impl NetOps for RealNet {
    fn ensure_bridge(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        let mut nl = open()?;
        let br = match existing_managed(&mut nl, name, "bridge")? {
            Some(l) => l,
            None => {
                let mut msg = LinkMessage::default();
                msg.attributes.push(LinkAttribute::IfName(name.to_string()));
                msg.attributes
                    .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                        InfoKind::Bridge,
                    )]));
                nl.request(Rt::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
                    .map_err(|e| NetError::CreateBridge(name.to_string(), e))?;
                let l = get_link(&mut nl, name)?
                    .ok_or_else(|| NetError::NoSuchLink(name.to_string()))?;
                mark_managed(&mut nl, &l)?;
                l
            }
        };
        // Before the bridge is up, and again for a bridge made by an older
        // banger: no router advertisement from a guest reaches the host.
        ipv6_off(&self.proc_root, name)?;
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = br.index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(addr)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(addr)));
        nl.request(Rt::NewAddress(msg), NLM_F_CREATE | NLM_F_REPLACE)
            .map_err(|e| NetError::AddAddress(name.to_string(), addr, prefix, e))?;
        set_link(&mut nl, br.index, vec![], true).map_err(|e| NetError::SetUp(name.to_string(), e))
    }

    fn create_tap(&self, name: &str, bridge: &str, owner: Owner) -> Result<(), NetError> {
        let mut nl = open()?;
        let br = existing_managed(&mut nl, bridge, "bridge")?
            .ok_or_else(|| NetError::NoSuchLink(bridge.to_string()))?;
        let tap = match existing_managed(&mut nl, name, "tun")? {
            Some(l) => l,
            None => {
                let t = Tap::create(&self.tun_dev, name).map_err(|(step, e)| match step {
                    TunStep::Open => NetError::OpenTun(self.tun_dev.clone(), e),
                    _ => NetError::TunSetIff(name.to_string(), e),
                })?;
                // Until TUNSETPERSIST (last) the tap lives only as long as
                // `t`: any failure before it leaves nothing behind, and a
                // persistent tap always carries banger's alias.
                let l = get_link(&mut nl, name)?
                    .ok_or_else(|| NetError::NoSuchLink(name.to_string()))?;
                mark_managed(&mut nl, &l)?;
                ipv6_off(&self.proc_root, name)?;
                t.set_owner(owner.uid, owner.gid).map_err(|(_, e)| {
                    NetError::TunSetOwner(name.to_string(), owner.uid, owner.gid, e)
                })?;
                t.set_persist(true)
                    .map_err(|(_, e)| NetError::TunSetPersist(name.to_string(), e))?;
                l
            }
        };
        set_link(
            &mut nl,
            tap.index,
            vec![LinkAttribute::Controller(br.index)],
            false,
        )
        .map_err(|e| NetError::SetMaster(name.to_string(), bridge.to_string(), e))?;
        set_link(&mut nl, tap.index, vec![], true).map_err(|e| NetError::SetUp(name.to_string(), e))
    }

    fn delete_tap(&self, name: &str) -> Result<(), NetError> {
        delete_link(name, Some("tun"))
    }

    fn delete_bridge(&self, name: &str) -> Result<(), NetError> {
        delete_link(name, Some("bridge"))
    }

    fn delete_managed(&self, name: &str) -> Result<(), NetError> {
        delete_link(name, None)
    }

    fn link(&self, name: &str) -> Result<Option<Link>, NetError> {
        get_link(&mut open()?, name)
    }

    fn managed_links(&self) -> Result<Vec<Link>, NetError> {
        Ok(all_links(&mut open()?)?
            .into_iter()
            .filter(Link::managed)
            .collect())
    }

    /// One link dump the kernel filters to `tun` links, without their
    /// statistics, each reply looked at only for its alias and kind (a
    /// kernel that ignores the filter sends every link: still counted
    /// right). The cost per tap is a few hundred bytes, not a decoded link.
    fn managed_tap_count(&self) -> Result<usize, NetError> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Tun)]));
        let mut n = 0;
        open()?
            .dump_raw(Rt::GetLink(msg), RTM_NEWLINK, |p| {
                n += usize::from(is_managed_tap(p));
            })
            .map_err(NetError::ListLinks)?;
        Ok(n)
    }

    fn routes(&self) -> Result<Vec<Route4>, NetError> {
        let mut nl = open()?;
        let links = all_links(&mut nl)?;
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let mut out = Vec::new();
        for m in nl.dump(Rt::GetRoute(q)).map_err(NetError::ListRoutes)? {
            let Rt::NewRoute(r) = m else { continue };
            if r.header.kind != RouteType::Unicast {
                continue;
            }
            let mut table = u32::from(r.header.table);
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut dev = String::new();
            for a in &r.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Oif(i) => {
                        dev = links
                            .iter()
                            .find(|l| l.index == *i)
                            .map(|l| l.name.clone())
                            .unwrap_or_default()
                    }
                    _ => {}
                }
            }
            if table == 254 {
                out.push(Route4 {
                    dst,
                    prefix: r.header.destination_prefix_length,
                    dev,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    fn payload(kind: Option<InfoKind>, alias: Option<&str>) -> Vec<u8> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName("banger-t1".into()));
        m.attributes.push(LinkAttribute::Mtu(1500));
        if let Some(a) = alias {
            m.attributes.push(LinkAttribute::IfAlias(a.into()));
        }
        if let Some(k) = kind {
            m.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(k)]));
        }
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        buf
    }

    #[test]
    fn a_managed_tap_is_told_from_its_raw_link_message() {
        assert!(is_managed_tap(&payload(
            Some(InfoKind::Tun),
            Some(MANAGED_ALIAS)
        )));
        assert!(!is_managed_tap(&payload(Some(InfoKind::Tun), None)));
        assert!(!is_managed_tap(&payload(
            Some(InfoKind::Tun),
            Some("banger-managedx")
        )));
        assert!(!is_managed_tap(&payload(
            Some(InfoKind::Tun),
            Some("banger")
        )));
        assert!(!is_managed_tap(&payload(
            Some(InfoKind::Bridge),
            Some(MANAGED_ALIAS)
        )));
        assert!(!is_managed_tap(&payload(
            Some(InfoKind::Veth),
            Some(MANAGED_ALIAS)
        )));
        assert!(!is_managed_tap(&payload(None, Some(MANAGED_ALIAS))));
        assert!(!is_managed_tap(&[0u8; 8]), "shorter than ifinfomsg");
        let mut cut = payload(Some(InfoKind::Tun), Some(MANAGED_ALIAS));
        cut.truncate(cut.len() - 3);
        assert!(!is_managed_tap(&cut), "a truncated kind is not read as tun");
    }

    #[test]
    fn ipv6_off_writes_accept_ra_then_disable_ipv6() {
        let proc = tempfile::tempdir().unwrap();
        let conf = proc.path().join("sys/net/ipv6/conf/banger0");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("accept_ra"), "1\n").unwrap();
        std::fs::write(conf.join("disable_ipv6"), "0\n").unwrap();
        ipv6_off(proc.path(), "banger0").unwrap();
        assert_eq!(
            std::fs::read_to_string(conf.join("accept_ra")).unwrap(),
            "0\n"
        );
        assert_eq!(
            std::fs::read_to_string(conf.join("disable_ipv6")).unwrap(),
            "1\n"
        );
    }

    #[test]
    fn ipv6_off_fails_loudly_but_not_without_ipv6() {
        let proc = tempfile::tempdir().unwrap();
        ipv6_off(proc.path(), "banger0").expect("no IPv6 in the kernel: nothing to do");
        std::fs::create_dir_all(proc.path().join("sys/net/ipv6/conf")).unwrap();
        let e = ipv6_off(proc.path(), "banger0").unwrap_err();
        assert!(
            matches!(&e, NetError::Ipv6Off(n, p, _) if n == "banger0" && p.ends_with("conf/banger0/accept_ra")),
            "{e:?}"
        );
        assert!(matches!(
            ipv6_off(proc.path(), "../all"),
            Err(NetError::Ipv6Off(..))
        ));
        assert!(matches!(
            ipv6_off(proc.path(), ".."),
            Err(NetError::Ipv6Off(..))
        ));
    }
}
