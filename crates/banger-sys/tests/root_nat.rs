//! banger's NAT against real nftables (root): the static ruleset and one
//! set element per VM, in a `bgtest_` table inside fresh network
//! namespaces; traffic through veth pairs proves what the set does.

use banger_sys::netns::{in_new_netns, NamedNetns};
use banger_sys::nft::{Cleared, NatElement, Nft, TableName, VmNat, NAT_COMMENT};
use banger_sys::runner::{Cmd, HostRunner, Runner};
use std::net::Ipv4Addr;
use std::sync::Arc;

fn skip() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        println!("skipped: needs root for network namespaces and nftables");
    }
    !root
}

fn nft_json(args: &[&str]) -> serde_json::Value {
    let out = HostRunner
        .run(&Cmd::new("nft").arg("-j").args(args.iter().copied()))
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Everything in the ruleset outside `table` (and nft's metainfo).
fn ruleset_without(table: &str) -> Vec<serde_json::Value> {
    let v = nft_json(&["list", "ruleset"]);
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| {
            let inner = item.as_object().unwrap().values().next().unwrap();
            item.get("metainfo").is_none()
                && inner
                    .get("table")
                    .or(inner.get("name"))
                    .and_then(|t| t.as_str())
                    != Some(table)
        })
        .cloned()
        .collect()
}

/// The comments of the rules of `table`, chain by chain.
fn rule_comments(table: &str) -> Vec<(String, String)> {
    let v = nft_json(&["list", "table", "inet", table]);
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("rule"))
        .map(|r| {
            (
                r["chain"].as_str().unwrap().to_string(),
                r["comment"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn el(last: u8, tap: &str) -> NatElement {
    NatElement {
        guest_ip: Ipv4Addr::new(172, 30, 250, last),
        tap: Some(tap.into()),
    }
}

#[test]
fn root_nat_set_holds_one_element_per_vm_in_bangers_table_only() {
    set_holds_one_element_per_vm(false);
}

#[test]
fn root_nat_set_over_netlink_holds_one_element_per_vm_in_bangers_table_only() {
    set_holds_one_element_per_vm(true);
}

/// The set's life, its elements made by `nft` or over nfnetlink.
fn set_holds_one_element_per_vm(netlink: bool) {
    if skip() {
        return;
    }
    let make = move |name: &TableName| {
        let n = Nft::new(Arc::new(HostRunner), name.clone(), "/proc");
        if netlink {
            n.with_netlink()
        } else {
            n
        }
    };
    in_new_netns(move || {
        let s = banger_testkit::unique_suffix();
        let table = format!("bgtest_{s}");
        // Someone else's table, which must come through untouched.
        HostRunner
            .run(&Cmd::new("nft").args(["-f", "-"]).stdin(
                "add table ip bgtest_other\nadd chain ip bgtest_other other { type filter hook forward priority 0; policy accept; }\nadd rule ip bgtest_other other counter accept comment \"banger-t1 172.30.250.2 masq br\"\n",
            ))
            .unwrap();
        let before = ruleset_without(&table);
        let name = TableName::new(&table).unwrap();
        let nft = make(&name);
        let bridge = format!("bgtest-br{}", &s[..5]);
        let vm = |tap: &str, last| VmNat { tap: tap.into(), guest_ip: Ipv4Addr::new(172, 30, 250, last), bridge: bridge.clone() };
        let (a, b) = (vm("banger-ta", 2), vm("banger-tb", 3));
        nft.ensure_vm(&a).unwrap();
        nft.ensure_vm(&b).unwrap();
        nft.ensure_vm(&a).unwrap();
        assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap().trim(), "1");
        assert_eq!(nft.list().unwrap(), [el(2, "banger-ta"), el(3, "banger-tb")]);
        let nat_rules = |c: &[(String, String)]| c.iter().filter(|(_, c)| c == NAT_COMMENT).count();
        let comments = rule_comments(&table);
        assert_eq!(comments.len(), 3, "three static rules, whatever the VMs: {comments:?}");
        assert_eq!(nat_rules(&comments), 3);

        // The DNS redirect lives in the same table; a new process (a helper
        // restart) re-makes the ruleset and keeps both the set and the DNS chains.
        nft.ensure_dns_redirect(&bridge, Ipv4Addr::new(172, 30, 250, 1), 40053).unwrap();
        let again = make(&name);
        again.ensure_vm(&vm("banger-tc", 4)).unwrap();
        assert_eq!(again.list().unwrap(), [el(2, "banger-ta"), el(3, "banger-tb"), el(4, "banger-tc")]);
        let comments = rule_comments(&table);
        assert_eq!(nat_rules(&comments), 3, "{comments:?}");
        assert_eq!(comments.iter().filter(|(ch, c)| ch.starts_with("dns_") && c == "banger-dns").count(), 4, "{comments:?}");

        // Clear removes exactly that VM's element; again, it is absent.
        assert_eq!(nft.clear_vm(&a).unwrap(), Cleared::Removed);
        assert_eq!(nft.list().unwrap(), [el(3, "banger-tb"), el(4, "banger-tc")]);
        assert_eq!(nft.clear_vm(&a).unwrap(), Cleared::Absent);
        assert_eq!(rule_comments(&table).len(), 7, "rules untouched by clear");
        assert_eq!(ruleset_without(&table), before, "only banger's table changed");

        // Uninstall: the whole table goes; clearing then is a no-op.
        nft.delete_table().unwrap();
        nft.delete_table().unwrap();
        assert!(nft.list().unwrap().is_empty());
        assert_eq!(nft.clear_vm(&b).unwrap(), Cleared::Absent);
        assert_eq!(ruleset_without(&table), before);
        // And a later ensure in the same process makes it again.
        nft.ensure_vm(&b).unwrap();
        assert_eq!(nft.list().unwrap(), [el(3, "banger-tb")]);
        nft.delete_table().unwrap();
        HostRunner.run(&Cmd::new("nft").args(["delete", "table", "ip", "bgtest_other"])).unwrap();
    })
    .unwrap();
}

#[test]
fn root_nat_moves_vms_of_the_per_vm_layout_into_the_set() {
    if skip() {
        return;
    }
    in_new_netns(|| {
        let s = banger_testkit::unique_suffix();
        let table = format!("bgtest_{s}");
        let t = format!("inet {table}");
        // What the per-VM layout left: three rules for one running VM.
        let legacy = format!(
            "add table {t}\n\
             add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
             add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}\n\
             add rule {t} postrouting ip saddr 172.30.250.2 oifname != \"br0\" masquerade comment \"banger-old 172.30.250.2 masq br0\"\n\
             add rule {t} forward iifname \"br0\" ip saddr 172.30.250.2 accept comment \"banger-old 172.30.250.2 fwd-out br0\"\n\
             add rule {t} forward oifname \"br0\" ip daddr 172.30.250.2 ct state established,related accept comment \"banger-old 172.30.250.2 fwd-in br0\"\n"
        );
        HostRunner.run(&Cmd::new("nft").args(["-f", "-"]).stdin(legacy)).unwrap();
        let nft = Nft::new(Arc::new(HostRunner), TableName::new(&table).unwrap(), "/proc");
        let new = VmNat { tap: "banger-new".into(), guest_ip: Ipv4Addr::new(172, 30, 250, 5), bridge: "br0".into() };
        nft.ensure_vm(&new).unwrap();
        assert_eq!(nft.list().unwrap(), [el(2, "banger-old"), el(5, "banger-new")]);
        let comments = rule_comments(&table);
        assert!(comments.iter().all(|(_, c)| c == NAT_COMMENT), "per-VM rules replaced: {comments:?}");
        assert_eq!(comments.len(), 3);
        nft.delete_table().unwrap();
    })
    .unwrap();
}

#[test]
fn root_nat_concurrent_ensures_make_one_ruleset_and_every_element() {
    if skip() {
        return;
    }
    in_new_netns(|| {
        let table = format!("bgtest_{}", banger_testkit::unique_suffix());
        let nft = Arc::new(Nft::new(
            Arc::new(HostRunner),
            TableName::new(&table).unwrap(),
            "/proc",
        ));
        let threads: Vec<_> = (2..10u8)
            .map(|i| {
                let nft = nft.clone();
                std::thread::spawn(move || {
                    nft.ensure_vm(&VmNat {
                        tap: format!("banger-c{i}"),
                        guest_ip: Ipv4Addr::new(172, 30, 250, i),
                        bridge: "br0".into(),
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let want: Vec<NatElement> = (2..10u8).map(|i| el(i, &format!("banger-c{i}"))).collect();
        assert_eq!(nft.list().unwrap(), want);
        assert_eq!(rule_comments(&table).len(), 3);
        nft.delete_table().unwrap();
    })
    .unwrap();
}

/// H (the host: banger's bridge, a guest port on it, an uplink), G (a
/// guest at 172.30.250.2 behind the bridge), O (the outside at
/// 198.51.100.2, with no route back to the guest subnet: replies arrive
/// only through masquerade).
#[test]
fn root_nat_masquerades_exactly_the_addresses_in_the_set() {
    if skip() {
        return;
    }
    let s = banger_testkit::unique_suffix();
    let h = NamedNetns::add(&format!("bgtest-{s}-nh")).unwrap();
    let g = NamedNetns::add(&format!("bgtest-{s}-ng")).unwrap();
    let o = NamedNetns::add(&format!("bgtest-{s}-no")).unwrap();
    let (bridge, port, uplink) = (
        format!("bgtest-br{}", &s[..5]),
        format!("banger-t{}", &s[..5]),
        format!("bgtest-up{}", &s[..5]),
    );
    h.ip(&["link", "add", &bridge, "type", "bridge"]).unwrap();
    h.ip(&["addr", "add", "172.30.250.1/24", "dev", &bridge])
        .unwrap();
    h.ip(&["link", "set", &bridge, "up"]).unwrap();
    h.ip(&[
        "link",
        "add",
        &port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        g.name(),
    ])
    .unwrap();
    h.ip(&["link", "set", &port, "master", &bridge, "up"])
        .unwrap();
    g.ip(&["addr", "add", "172.30.250.2/24", "dev", "eth0"])
        .unwrap();
    g.ip(&["link", "set", "eth0", "up"]).unwrap();
    g.ip(&["route", "add", "default", "via", "172.30.250.1"])
        .unwrap();
    let web_addr = h.serve_outside(&o, &uplink).unwrap();
    let get = || g.run(move || banger_testkit::http_get(web_addr)).unwrap();

    // The helper's way: elements over nfnetlink (the CLI way is above).
    let nft = Arc::new(
        Nft::new(
            Arc::new(HostRunner),
            TableName::new(&format!("bgtest_{s}")).unwrap(),
            "/proc",
        )
        .with_netlink(),
    );
    let vm = |last| VmNat {
        tap: port.clone(),
        guest_ip: Ipv4Addr::new(172, 30, 250, last),
        bridge: bridge.clone(),
    };
    let in_h = |f: Box<dyn FnOnce(&Nft) + Send>| {
        let nft = nft.clone();
        h.run(move || f(&nft)).unwrap()
    };
    // Another VM's element makes the ruleset but does not cover the guest.
    let other = vm(3);
    in_h(Box::new(move |n| n.ensure_vm(&other).unwrap()));
    assert!(
        get().is_err(),
        "an address outside the set is not masqueraded"
    );
    let guest = vm(2);
    in_h(Box::new(move |n| n.ensure_vm(&guest).unwrap()));
    assert_eq!(
        get().unwrap(),
        "hello 198.51.100.1",
        "the outside sees the masqueraded address"
    );
    // Clearing the other VM leaves the guest's NAT alone.
    let other = vm(3);
    in_h(Box::new(move |n| {
        assert_eq!(n.clear_vm(&other).unwrap(), Cleared::Removed)
    }));
    assert_eq!(get().unwrap(), "hello 198.51.100.1");
    let guest = vm(2);
    in_h(Box::new(move |n| {
        assert_eq!(n.clear_vm(&guest).unwrap(), Cleared::Removed)
    }));
    assert!(
        get().is_err(),
        "cleared: no masquerade for a new connection"
    );
    in_h(Box::new(|n| n.delete_table().unwrap()));
    // The namespaces, and every link and table in them, go on drop.
}
