//! `banger-helper sweep` (what `banger system uninstall` runs) against real
//! interfaces in a fresh network namespace: every interface carrying
//! banger's mark goes, whatever its name or kind — not only the configured
//! bridge and `banger-` taps — and nothing unmarked is touched.

use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_helper::sweep::sweep;
use banger_proto::install::InstallConfig;
use banger_sys::net::{NetOps, Owner, RealNet};
use banger_sys::netns::in_new_netns;
use banger_testkit::require_root;
use std::net::Ipv4Addr;
use std::sync::Arc;

use banger_testkit::{ip, LinkGuard};

#[test]
fn root_sweep_removes_every_banger_marked_interface_and_nothing_else() {
    if !require_root("root_sweep_removes_every_banger_marked_interface_and_nothing_else") {
        return;
    }
    in_new_netns(|| {
        let s = banger_testkit::unique_suffix();
        let s = &s[s.len().saturating_sub(6)..];
        let names = [
            format!("bgtest-c{s}"), // the configured bridge
            format!("banger-t{s}"), // its tap
            format!("bgtest-o{s}"), // banger-marked bridge of another name
            format!("banger-o{s}"), // banger-marked tap on it
            format!("bgtest-u{s}"), // a bridge banger did not make
            format!("banger-u{s}"), // a tap banger did not make
        ];
        let _g: Vec<LinkGuard> = names.iter().cloned().map(LinkGuard).collect();
        let [cfg_br, tap, other_br, other_tap, foreign_br, foreign_tap] = &names;
        let root = tempfile::Builder::new()
            .prefix("bgtest-sweep-")
            .tempdir()
            .unwrap();
        let mut cfg = InstallConfig::for_owner(4242, 4242, root.path().into());
        cfg.bridge = cfg_br.clone();
        let net = Arc::new(RealNet::default());
        let owner = Owner {
            uid: 4242,
            gid: 4242,
        };
        net.ensure_bridge(cfg_br, Ipv4Addr::new(172, 30, 251, 1), 24)
            .unwrap();
        net.create_tap(tap, cfg_br, owner).unwrap();
        ip(&["link", "add", other_br, "type", "bridge"]);
        ip(&["link", "set", other_br, "alias", "banger-managed"]);
        ip(&["tuntap", "add", "dev", other_tap, "mode", "tap"]);
        ip(&["link", "set", other_tap, "alias", "banger-managed"]);
        ip(&["link", "set", other_tap, "master", other_br]);
        ip(&["link", "add", foreign_br, "type", "bridge"]);
        ip(&["tuntap", "add", "dev", foreign_tap, "mode", "tap"]);

        let h = Helper {
            cfg,
            host: Host {
                net: net.clone(),
                ..Host::recording()
            },
        };
        let swept = sweep(&h, &root.path().join("sys"), &root.path().join("run"));
        assert!(swept.errors.is_empty(), "{:?}", swept.errors);
        for n in [cfg_br, tap, other_br, other_tap] {
            assert_eq!(net.link(n).unwrap(), None, "{n} removed");
        }
        for n in [foreign_br, foreign_tap] {
            assert!(net.link(n).unwrap().is_some(), "{n} untouched");
        }
        let mut removed: Vec<_> = swept
            .removed
            .iter()
            .filter(|r| r.starts_with("tap ") || r.starts_with("bridge "))
            .cloned()
            .collect();
        removed.sort();
        let mut want = vec![
            format!("bridge {cfg_br}"),
            format!("bridge {other_br}"),
            format!("tap {other_tap}"),
            format!("tap {tap}"),
        ];
        want.sort();
        assert_eq!(removed, want);
    })
    .unwrap();
}
