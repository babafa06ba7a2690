use super::*;
use crate::runner::{CmdOutput, RecordingRunner};

fn vm(tap: &str, last: u8) -> VmNat {
    VmNat {
        tap: tap.into(),
        guest_ip: Ipv4Addr::new(172, 30, 0, last),
        bridge: "banger0".into(),
    }
}

fn procfs() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("sys/net/ipv4")).unwrap();
    std::fs::write(d.path().join("sys/net/ipv4/ip_forward"), "0\n").unwrap();
    d
}

fn t(name: &str) -> TableName {
    TableName::new(name).unwrap()
}

fn missing() -> CmdOutput {
    CmdOutput {
        status: 1,
        stderr: b"Error: No such file or directory\nlist table inet banger\n".to_vec(),
        ..Default::default()
    }
}

fn stdin_of(c: &Cmd) -> String {
    String::from_utf8(c.stdin.clone().unwrap()).unwrap()
}

/// An earlier layout's table: two VMs with per-VM rules, one unrelated rule.
const LEGACY: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "banger", "handle": 1}},
  {"chain": {"family": "inet", "table": "banger", "name": "postrouting", "handle": 1}},
  {"rule": {"family": "inet", "table": "banger", "chain": "postrouting", "handle": 3, "comment": "banger-0a1b2c3d 172.30.0.2 masq banger0", "expr": []}},
  {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 4, "comment": "banger-0a1b2c3d 172.30.0.2 fwd-out banger0", "expr": []}},
  {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 5, "comment": "banger-0a1b2c3d 172.30.0.2 fwd-in banger0", "expr": []}},
  {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 6, "comment": "banger-ffffffff 172.30.0.3 fwd-in banger0", "expr": []}},
  {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 7, "comment": "banger-x 172.30.0.9 drop banger0", "expr": []}},
  {"rule": {"family": "inet", "table": "banger", "chain": "dns_output", "handle": 8, "comment": "banger-dns", "expr": []}},
  {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 9, "expr": []}}]}"#;

/// `nft -j list set` output: one element with a comment, one without.
const SET: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "nat_guests", "table": "banger", "type": "ipv4_addr", "handle": 1, "elem": [{"elem": {"val": "172.30.0.7", "comment": "banger-0a"}}, "172.30.0.8"]}}]}"#;

#[test]
fn ruleset_renders_exactly() {
    let r = NatRuleset {
        table: t("banger"),
        bridge: "banger0".into(),
        carry: vec![NatElement {
            guest_ip: Ipv4Addr::new(172, 30, 0, 2),
            tap: Some("banger-0a1b2c3d".into()),
        }],
    };
    assert_eq!(
        r.to_string(),
        "add table inet banger\n\
         add set inet banger nat_guests { type ipv4_addr; }\n\
         add chain inet banger postrouting { type nat hook postrouting priority srcnat; policy accept; }\n\
         add chain inet banger forward { type filter hook forward priority filter; policy accept; }\n\
         flush chain inet banger postrouting\n\
         flush chain inet banger forward\n\
         add rule inet banger postrouting ip saddr @nat_guests oifname != \"banger0\" masquerade comment \"banger-nat\"\n\
         add rule inet banger forward iifname \"banger0\" ip saddr @nat_guests accept comment \"banger-nat\"\n\
         add rule inet banger forward oifname \"banger0\" ip daddr @nat_guests ct state established,related accept comment \"banger-nat\"\n\
         add element inet banger nat_guests { 172.30.0.2 comment \"banger-0a1b2c3d\" }\n"
    );
}

#[test]
fn element_ops_render_exactly() {
    let e = NatElement {
        guest_ip: Ipv4Addr::new(172, 30, 0, 7),
        tap: Some("banger-0a1b2c3d".into()),
    };
    assert_eq!(
        ElementOp::Add(e.clone()).argv(&t("bgtest_x")),
        [
            "add",
            "element",
            "inet",
            "bgtest_x",
            "nat_guests",
            "{ 172.30.0.7 comment \"banger-0a1b2c3d\" }"
        ]
    );
    assert_eq!(
        ElementOp::Delete(e.guest_ip).argv(&t("banger")),
        [
            "delete",
            "element",
            "inet",
            "banger",
            "nat_guests",
            "{ 172.30.0.7 }"
        ]
    );
}

#[test]
fn elements_round_trip() {
    for e in [
        NatElement {
            guest_ip: Ipv4Addr::new(10, 0, 0, 2),
            tap: Some("banger-t1".into()),
        },
        NatElement {
            guest_ip: Ipv4Addr::new(10, 0, 0, 3),
            tap: None,
        },
    ] {
        assert_eq!(e.to_string().parse::<NatElement>(), Ok(e));
    }
    for bad in [
        "",
        "x",
        "10.0.0.2 comment",
        "10.0.0.2 comment \"a\"b\"",
        "10.0.0.2 comment \"\"",
        "10.0.0.2 counter",
        "10.0.0.256",
        "10.0.0.2 comment \"banger-t1\" x",
    ] {
        assert!(bad.parse::<NatElement>().is_err(), "{bad}");
    }
}

#[test]
fn table_names() {
    assert!(TableName::new("banger").is_ok());
    assert!(TableName::new("bgtest_ab12").is_ok());
    for bad in ["", "1abc", "a-b", "a b", "A", "a;b", &"a".repeat(33)] {
        assert!(TableName::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn set_listing_parses() {
    assert_eq!(
        parse_elements(SET).unwrap(),
        [
            NatElement {
                guest_ip: Ipv4Addr::new(172, 30, 0, 7),
                tap: Some("banger-0a".into())
            },
            NatElement {
                guest_ip: Ipv4Addr::new(172, 30, 0, 8),
                tap: None
            },
        ]
    );
    let empty = r#"{"nftables": [{"set": {"name": "nat_guests", "type": "ipv4_addr"}}]}"#;
    assert_eq!(parse_elements(empty).unwrap(), []);
    assert!(parse_elements("{}").is_err());
    assert!(parse_elements("not json").is_err());
    assert!(parse_elements(r#"{"nftables": [{"set": {"elem": ["nope"]}}]}"#).is_err());
}

#[test]
fn legacy_rules_name_their_vms_once() {
    assert_eq!(
        parse_legacy_vms(LEGACY).unwrap(),
        [
            NatElement {
                guest_ip: Ipv4Addr::new(172, 30, 0, 2),
                tap: Some("banger-0a1b2c3d".into())
            },
            NatElement {
                guest_ip: Ipv4Addr::new(172, 30, 0, 3),
                tap: Some("banger-ffffffff".into())
            },
        ]
    );
    assert!(parse_legacy_vms("[]").is_err());
}

fn nft_on(r: &Arc<RecordingRunner>, proc: &tempfile::TempDir) -> Nft {
    Nft::new(r.clone(), t("banger"), proc.path())
}

#[test]
fn first_ensure_makes_the_ruleset_then_each_vm_is_one_add_element() {
    let (r, proc) = (Arc::new(RecordingRunner::new()), procfs());
    r.answer("nft -j list table inet banger", missing());
    let nft = nft_on(&r, &proc);
    nft.ensure_vm(&vm("banger-a", 2)).unwrap();
    let cmds = r.cmds();
    assert_eq!(cmds.len(), 3, "{:?}", r.calls());
    assert_eq!(
        cmds[0].argv(),
        ["nft", "-j", "list", "table", "inet", "banger"]
    );
    assert_eq!(cmds[1].argv(), ["nft", "-f", "-"]);
    assert!(stdin_of(&cmds[1]).starts_with("add table inet banger\nadd set"));
    assert!(!stdin_of(&cmds[1]).contains("add element"));
    assert_eq!(
        cmds[2].argv().join(" "),
        "nft add element inet banger nat_guests { 172.30.0.2 comment \"banger-a\" }"
    );
    let fwd = std::fs::read_to_string(proc.path().join("sys/net/ipv4/ip_forward")).unwrap();
    assert_eq!(fwd, "1\n");
    // Every later VM, and the same VM again: exactly one command each.
    for i in 3..50 {
        nft.ensure_vm(&vm(&format!("banger-{i}"), i)).unwrap();
    }
    nft.ensure_vm(&vm("banger-a", 2)).unwrap();
    let calls = r.calls();
    assert_eq!(calls.len(), 3 + 47 + 1);
    assert!(calls[3..].iter().all(|c| c[1..3] == ["add", "element"]));
    assert_eq!(calls[49][6], "{ 172.30.0.49 comment \"banger-49\" }");
}

#[test]
fn ruleset_carries_legacy_vms_into_the_set() {
    let (r, proc) = (Arc::new(RecordingRunner::new()), procfs());
    r.answer(
        "nft -j list table inet banger",
        CmdOutput {
            stdout: LEGACY.as_bytes().to_vec(),
            ..Default::default()
        },
    );
    nft_on(&r, &proc).ensure_vm(&vm("banger-new", 9)).unwrap();
    let script = stdin_of(&r.cmds()[1]);
    let adds: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("add element"))
        .collect();
    assert_eq!(
        adds,
        [
            "add element inet banger nat_guests { 172.30.0.2 comment \"banger-0a1b2c3d\" }",
            "add element inet banger nat_guests { 172.30.0.3 comment \"banger-ffffffff\" }",
        ]
    );
    assert!(script.contains("flush chain inet banger forward\n"));
}

#[test]
fn a_new_bridge_or_a_deleted_table_remakes_the_ruleset() {
    let (r, proc) = (Arc::new(RecordingRunner::new()), procfs());
    for _ in 0..3 {
        r.answer("list table", missing());
    }
    let nft = nft_on(&r, &proc);
    nft.ensure_vm(&vm("banger-a", 2)).unwrap();
    let mut other = vm("banger-a", 2);
    other.bridge = "banger1".into();
    nft.ensure_vm(&other).unwrap();
    nft.delete_table().unwrap();
    nft.ensure_vm(&other).unwrap();
    let scripts: Vec<String> = r
        .cmds()
        .iter()
        .filter(|c| c.argv()[1] == "-f")
        .map(stdin_of)
        .collect();
    assert_eq!(scripts.len(), 4, "ruleset, ruleset, delete, ruleset");
    assert!(scripts[1].contains("oifname != \"banger1\""));
    assert!(scripts[2].starts_with("add table inet banger\ndelete table"));
    assert!(scripts[3].contains("add set inet banger nat_guests"));
}

#[test]
fn a_table_deleted_behind_its_back_is_made_again_once() {
    let (r, proc) = (Arc::new(RecordingRunner::new()), procfs());
    for _ in 0..3 {
        r.answer("list table", missing());
    }
    let nft = nft_on(&r, &proc);
    nft.ensure_vm(&vm("banger-a", 2)).unwrap();
    r.answer("add element", missing());
    nft.ensure_vm(&vm("banger-b", 3)).unwrap();
    let calls: Vec<String> = r.calls().iter().map(|c| c[1..3].join(" ")).collect();
    assert_eq!(
        calls,
        [
            "-j list",
            "-f -",
            "add element",
            "add element",
            "-j list",
            "-f -",
            "add element"
        ]
    );
    // Twice missing: the error names the element and carries nft's words.
    r.answer("add element", missing());
    r.answer("add element", missing());
    let e = nft.ensure_vm(&vm("banger-c", 4)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "add 172.30.0.4 to set nat_guests of table inet banger"
    );
    assert!(matches!(
        e,
        NftError::AddElement(_, _, RunError::Failed { .. })
    ));
}

#[test]
fn clear_is_one_delete_element_and_absent_is_fine() {
    let (r, proc) = (Arc::new(RecordingRunner::new()), procfs());
    let nft = nft_on(&r, &proc);
    assert_eq!(nft.clear_vm(&vm("banger-a", 2)).unwrap(), Cleared::Removed);
    assert_eq!(
        r.calls(),
        [[
            "nft",
            "delete",
            "element",
            "inet",
            "banger",
            "nat_guests",
            "{ 172.30.0.2 }"
        ]]
    );
    r.answer("delete element", missing());
    assert_eq!(nft.clear_vm(&vm("banger-a", 2)).unwrap(), Cleared::Absent);
    r.answer(
        "delete element",
        CmdOutput {
            status: 1,
            stderr: b"Error: Operation not permitted\n".to_vec(),
            ..Default::default()
        },
    );
    let e = nft.clear_vm(&vm("banger-a", 2)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "delete 172.30.0.2 from set nat_guests of table inet banger"
    );
}

#[test]
fn names_that_cannot_be_quoted_are_refused_before_nft() {
    let (r, proc) = (Arc::new(RecordingRunner::new()), procfs());
    let nft = nft_on(&r, &proc);
    for (tap, bridge) in [("banger-\"x", "banger0"), ("banger-a", "br 0"), ("", "b")] {
        let v = VmNat {
            tap: tap.into(),
            guest_ip: Ipv4Addr::new(172, 30, 0, 2),
            bridge: bridge.into(),
        };
        assert!(matches!(nft.ensure_vm(&v), Err(NftError::IfaceName(_))));
    }
    assert!(r.calls().is_empty());
}

#[test]
fn list_reads_the_set_and_a_missing_one_is_empty() {
    let (r, proc) = (Arc::new(RecordingRunner::new()), procfs());
    let nft = nft_on(&r, &proc);
    r.answer(
        "list set",
        CmdOutput {
            stdout: SET.as_bytes().to_vec(),
            ..Default::default()
        },
    );
    assert_eq!(nft.list().unwrap().len(), 2);
    assert_eq!(
        r.calls()[0],
        ["nft", "-j", "list", "set", "inet", "banger", "nat_guests"]
    );
    r.answer("list set", missing());
    assert_eq!(nft.list().unwrap(), []);
    r.answer(
        "list set",
        CmdOutput {
            status: 1,
            stderr: b"Error: Operation not permitted\n".to_vec(),
            ..Default::default()
        },
    );
    assert!(matches!(nft.list(), Err(NftError::List(..))));
    // A listing failure while making the ruleset stops the ensure before
    // anything is applied.
    let r = Arc::new(RecordingRunner::new());
    let nft = nft_on(&r, &proc);
    r.answer(
        "list table",
        CmdOutput {
            status: 1,
            stderr: b"Error: Operation not permitted\n".to_vec(),
            ..Default::default()
        },
    );
    let e = nft.ensure_vm(&vm("banger-a", 2)).unwrap_err();
    assert!(matches!(e, NftError::List(..)), "{e:?}");
    assert_eq!(r.calls().len(), 1);
}

#[test]
fn forwarding_error_names_the_path() {
    let d = tempfile::tempdir().unwrap();
    let e = enable_ipv4_forwarding(d.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "enable IPv4 forwarding via {}",
            d.path().join("sys/net/ipv4/ip_forward").display()
        )
    );
}

#[test]
fn delete_table_is_one_transaction() {
    let r = Arc::new(RecordingRunner::new());
    let p = procfs();
    Nft::new(r.clone(), t("banger"), p.path())
        .delete_table()
        .unwrap();
    let c = &r.cmds()[0];
    assert_eq!(c.argv(), vec!["nft", "-f", "-"]);
    assert_eq!(
        c.stdin.as_deref(),
        Some(&b"add table inet banger\ndelete table inet banger\n"[..])
    );
}

#[test]
fn dns_redirect_renders_and_applies_exactly() {
    let r = Arc::new(RecordingRunner::new());
    let nft = Nft::new(r.clone(), t("banger"), "/nonexistent");
    nft.ensure_dns_redirect("banger0", Ipv4Addr::new(172, 30, 0, 1), 40053)
        .unwrap();
    let cmds = r.cmds();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].argv(), vec!["nft", "-f", "-"]);
    assert_eq!(
        stdin_of(&cmds[0]),
        "add table inet banger\n\
         add chain inet banger dns_prerouting { type nat hook prerouting priority dstnat; policy accept; }\n\
         add chain inet banger dns_output { type nat hook output priority -100; policy accept; }\n\
         flush chain inet banger dns_prerouting\n\
         flush chain inet banger dns_output\n\
         add rule inet banger dns_prerouting iifname \"banger0\" ip daddr 172.30.0.1 udp dport 53 dnat ip to 172.30.0.1:40053 comment \"banger-dns\"\n\
         add rule inet banger dns_prerouting iifname \"banger0\" ip daddr 172.30.0.1 tcp dport 53 dnat ip to 172.30.0.1:40053 comment \"banger-dns\"\n\
         add rule inet banger dns_output ip daddr 172.30.0.1 udp dport 53 dnat ip to 172.30.0.1:40053 comment \"banger-dns\"\n\
         add rule inet banger dns_output ip daddr 172.30.0.1 tcp dport 53 dnat ip to 172.30.0.1:40053 comment \"banger-dns\"\n"
    );
    // The NAT ruleset never flushes the DNS chains.
    let ruleset = NatRuleset {
        table: t("banger"),
        bridge: "banger0".into(),
        carry: vec![],
    }
    .to_string();
    assert!(!ruleset.contains("dns_"), "{ruleset}");
}

#[test]
fn concurrent_first_ensures_make_the_ruleset_once() {
    let (r, proc) = (Arc::new(RecordingRunner::new()), procfs());
    r.answer("list table", missing());
    let nft = Arc::new(nft_on(&r, &proc));
    let threads: Vec<_> = (2..10)
        .map(|i| {
            let nft = nft.clone();
            std::thread::spawn(move || nft.ensure_vm(&vm(&format!("banger-{i}"), i)))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let calls = r.calls();
    assert_eq!(calls.iter().filter(|c| c[1] == "-f").count(), 1);
    assert_eq!(calls.iter().filter(|c| c[1] == "-j").count(), 1);
    let mut adds: Vec<&str> = calls
        .iter()
        .filter(|c| c[1] == "add")
        .map(|c| c[6].as_str())
        .collect();
    adds.sort();
    assert_eq!(adds.len(), 8);
    assert_eq!(adds[0], "{ 172.30.0.2 comment \"banger-2\" }");
}
