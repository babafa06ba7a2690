//! Real bridges and taps, each test inside its own fresh
//! network namespace (so the host's interfaces and ruleset are never seen).

use banger_sys::net::{Link, NetError, NetOps, Owner, RealNet};
use banger_sys::netns::in_new_netns;
use std::net::Ipv4Addr;

// LinkGuard: the namespace goes too, but a failing test must not rely on that alone.
use banger_testkit::{ip, is_root, LinkGuard};

fn link(name: &str) -> Link {
    RealNet::default()
        .link(name)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} missing"))
}

/// Open the tap as `uid`/`gid` in a forked child, as a VMM would; returns
/// the child's errno (0: it could attach).
fn attach_as(name: &str, uid: u32, gid: u32) -> i32 {
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: 0x0002 | 0x1000,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let path = c"/dev/net/tun";
    // SAFETY: the child only makes raw syscalls on memory prepared before
    // the fork, then _exits; the parent waits for it.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let err = |e: i32| libc::_exit(e);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                err(100);
            }
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                err(101);
            }
            if libc::ioctl(fd, 0x4004_54ca, &mut req as *mut IfReq) < 0 {
                err(*libc::__errno_location());
            }
            libc::_exit(0);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::WEXITSTATUS(status)
    }
}

/// `/proc/sys/net/ipv6/conf/<iface>/<key>` of the calling thread's netns.
fn conf_path(iface: &str, key: &str) -> String {
    format!("/proc/sys/net/ipv6/conf/{iface}/{key}")
}

fn ipv6_conf(iface: &str, key: &str) -> String {
    std::fs::read_to_string(conf_path(iface, key))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn root_any_banger_marked_link_is_deleted_and_no_other() {
    if !is_root() {
        println!("skipped: needs root for network namespaces");
        return;
    }
    in_new_netns(|| {
        let s = banger_testkit::unique_suffix();
        let (marked, peer, foreign) = (
            format!("bgtest-m{s}"),
            format!("bgtest-p{s}"),
            format!("bgtest-f{s}"),
        );
        let _g = (LinkGuard(marked.clone()), LinkGuard(foreign.clone()));
        // Neither a tap nor a bridge: a veth end banger marked.
        ip(&[
            "link", "add", &marked, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &marked, "alias", "banger-managed"]);
        ip(&["link", "add", &foreign, "type", "bridge"]);
        let net = RealNet::default();
        assert!(
            matches!(net.delete_managed(&foreign), Err(NetError::NotManaged(n)) if n == foreign)
        );
        assert!(net.link(&foreign).unwrap().is_some(), "foreign link kept");
        net.delete_managed(&marked).unwrap();
        assert_eq!(net.link(&marked).unwrap(), None);
        net.delete_managed(&marked).unwrap();
    })
    .unwrap();
}

#[test]
fn root_bridge_and_tap_lifecycle() {
    if !is_root() {
        println!("skipped: needs root for network namespaces");
        return;
    }
    in_new_netns(|| {
        let s = banger_testkit::unique_suffix();
        let (br, tap) = (format!("bgtest-br{s}"), format!("banger-t{s}"));
        let _g = (LinkGuard(tap.clone()), LinkGuard(br.clone()));
        let net = RealNet::default();
        let addr = Ipv4Addr::new(172, 30, 250, 1);
        net.ensure_bridge(&br, addr, 24).unwrap();
        net.ensure_bridge(&br, addr, 24).unwrap();
        let b = link(&br);
        assert_eq!(b.kind.as_deref(), Some("bridge"));
        assert!(b.managed() && b.up, "{b:?}");
        // IPv6 off: a guest's router advertisement never configures the host.
        assert_eq!(ipv6_conf(&br, "disable_ipv6"), "1");
        assert_eq!(ipv6_conf(&br, "accept_ra"), "0");
        // A bridge made before (IPv6 on) is fixed by the next ensure.
        std::fs::write(conf_path(&br, "disable_ipv6"), "0").unwrap();
        std::fs::write(conf_path(&br, "accept_ra"), "2").unwrap();
        net.ensure_bridge(&br, addr, 24).unwrap();
        assert_eq!(ipv6_conf(&br, "disable_ipv6"), "1");
        assert_eq!(ipv6_conf(&br, "accept_ra"), "0");
        let routes = net.routes().unwrap();
        assert!(
            routes
                .iter()
                .any(|r| r.dst == Ipv4Addr::new(172, 30, 250, 0) && r.prefix == 24 && r.dev == br),
            "{routes:?}"
        );

        let owner = Owner {
            uid: 4242,
            gid: 4243,
        };
        net.create_tap(&tap, &br, owner).unwrap();
        net.create_tap(&tap, &br, owner).unwrap();
        let t = link(&tap);
        assert_eq!(t.kind.as_deref(), Some("tun"));
        assert!(t.managed(), "{t:?}");
        assert_eq!(t.master, Some(b.index));
        assert_eq!((t.tun_owner, t.tun_group), (Some(4242), Some(4243)));
        assert_eq!(ipv6_conf(&tap, "disable_ipv6"), "1");
        assert_eq!(
            attach_as(&tap, 4242, 4243),
            0,
            "the owner can attach without root"
        );
        assert_eq!(
            attach_as(&tap, 4999, 4999),
            libc::EPERM,
            "a stranger cannot"
        );

        let mut managed: Vec<String> = net
            .managed_links()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        managed.sort();
        assert_eq!(managed, [tap.clone(), br.clone()]);
        net.delete_tap(&tap).unwrap();
        assert_eq!(net.link(&tap).unwrap(), None);
        net.delete_tap(&tap).unwrap();
        net.delete_bridge(&br).unwrap();
        assert_eq!(net.link(&br).unwrap(), None);
    })
    .unwrap();
}

#[test]
fn root_foreign_interfaces_are_never_adopted() {
    if !is_root() {
        println!("skipped: needs root for network namespaces");
        return;
    }
    in_new_netns(|| {
        let s = banger_testkit::unique_suffix();
        let (foreign_br, foreign_tap, br, tap) =
            (format!("bgtest-fb{s}"), format!("banger-tf{}", &s[..5]), format!("bgtest-br{s}"), format!("banger-t{s}"));
        let _g = (LinkGuard(foreign_br.clone()), LinkGuard(foreign_tap.clone()), LinkGuard(br.clone()), LinkGuard(tap.clone()));
        ip(&["link", "add", &foreign_br, "type", "bridge"]);
        ip(&["tuntap", "add", "dev", &foreign_tap, "mode", "tap"]);
        let net = RealNet::default();
        let owner = Owner { uid: 4242, gid: 4242 };
        let addr = Ipv4Addr::new(172, 30, 250, 1);
        assert!(matches!(net.ensure_bridge(&foreign_br, addr, 24), Err(NetError::NotManaged(n)) if n == foreign_br));
        assert!(matches!(net.create_tap(&tap, &foreign_br, owner), Err(NetError::NotManaged(_))));
        assert_eq!(net.link(&tap).unwrap(), None, "no tap made on a foreign bridge");
        net.ensure_bridge(&br, addr, 24).unwrap();
        let e = net.create_tap(&foreign_tap, &br, owner).unwrap_err();
        assert_eq!(e.to_string(), format!("refusing to adopt interface {foreign_tap}: it exists and was not created by banger"));
        assert!(matches!(net.delete_tap(&foreign_tap), Err(NetError::NotManaged(_))));
        assert!(matches!(net.delete_bridge(&foreign_br), Err(NetError::NotManaged(_))));
        assert!(matches!(net.delete_tap(&br), Err(NetError::WrongKind(..))), "a bridge is not a tap");
        let ft = link(&foreign_tap);
        assert!(!ft.managed() && ft.master.is_none(), "{ft:?}");
        assert!(net.link(&foreign_br).unwrap().is_some());
    })
    .unwrap();
}
