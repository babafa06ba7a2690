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

const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "banger", "handle": 1}},
  {"chain": {"family": "inet", "table": "banger", "name": "postrouting", "handle": 1}},
  {"rule": {"family": "inet", "table": "banger", "chain": "postrouting", "handle": 3, "comment": "banger-0a1b2c3d 172.30.0.2 masq banger0", "expr": []}},
  {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 4, "comment": "banger-0a1b2c3d 172.30.0.2 fwd-out banger0", "expr": []}},
  {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 5, "comment": "banger-0a1b2c3d 172.30.0.2 fwd-in banger0", "expr": []}},
  {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 6, "comment": "banger-ffffffff 172.30.0.3 fwd-in banger0", "expr": []}},
  {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 7, "expr": []}}]}"#;

#[test]
fn rules_render_exactly() {
    let s = Script::new(TableName::new("banger").unwrap()).delete("forward", 9);
    let s = vm("banger-0a1b2c3d", 2)
        .rules()
        .into_iter()
        .fold(s, Script::add_rule);
    assert_eq!(
        s.to_string(),
        "add table inet banger\n\
         add chain inet banger postrouting { type nat hook postrouting priority srcnat; policy accept; }\n\
         add chain inet banger forward { type filter hook forward priority filter; policy accept; }\n\
         delete rule inet banger forward handle 9\n\
         add rule inet banger postrouting ip saddr 172.30.0.2 oifname != \"banger0\" masquerade comment \"banger-0a1b2c3d 172.30.0.2 masq banger0\"\n\
         add rule inet banger forward iifname \"banger0\" ip saddr 172.30.0.2 accept comment \"banger-0a1b2c3d 172.30.0.2 fwd-out banger0\"\n\
         add rule inet banger forward oifname \"banger0\" ip daddr 172.30.0.2 ct state established,related accept comment \"banger-0a1b2c3d 172.30.0.2 fwd-in banger0\"\n"
    );
}

#[test]
fn comments_round_trip() {
    for r in vm("banger-0a1b2c3d", 7).rules() {
        assert_eq!(r.comment().parse::<VmRule>(), Ok(r));
    }
    for bad in [
        "",
        "x",
        "banger-1 172.30.0.2 masq",
        "banger-1 nope masq b",
        "banger-1 172.30.0.2 drop b",
        "a b c d e",
    ] {
        assert!(bad.parse::<VmRule>().is_err(), "{bad}");
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
fn listing_parses() {
    let rules = parse_listing(LISTING).unwrap();
    assert_eq!(rules.len(), 5);
    assert_eq!(rules[0].chain, "postrouting");
    assert_eq!(rules[0].handle, 3);
    assert_eq!(rules[0].vm.as_ref().unwrap().kind, RuleKind::Masquerade);
    assert_eq!(rules[4].vm, None);
    assert!(parse_listing("{}").is_err());
    assert!(parse_listing("not json").is_err());
}

fn nft_with(listing: &str) -> (Arc<RecordingRunner>, Nft, tempfile::TempDir) {
    let r = Arc::new(RecordingRunner::new());
    r.answer(
        "nft -j list table inet banger",
        CmdOutput {
            stdout: listing.as_bytes().to_vec(),
            ..Default::default()
        },
    );
    let proc = procfs();
    let nft = Nft::new(r.clone(), TableName::new("banger").unwrap(), proc.path());
    (r, nft, proc)
}

#[test]
fn ensure_is_a_no_op_when_rules_are_in_place() {
    let (r, nft, proc) = nft_with(LISTING);
    assert_eq!(
        nft.ensure_vm(&vm("banger-0a1b2c3d", 2)).unwrap(),
        Applied::Unchanged
    );
    assert_eq!(
        r.calls(),
        vec![vec!["nft", "-j", "list", "table", "inet", "banger"]]
    );
    let fwd = std::fs::read_to_string(proc.path().join("sys/net/ipv4/ip_forward")).unwrap();
    assert_eq!(fwd, "1\n");
}

#[test]
fn ensure_replaces_stale_rules_of_the_tap_and_the_address() {
    // The tap now has .3, which banger-ffffffff held: both sets go.
    let (r, nft, _p) = nft_with(LISTING);
    assert_eq!(
        nft.ensure_vm(&vm("banger-0a1b2c3d", 3)).unwrap(),
        Applied::Changed
    );
    let cmds = r.cmds();
    assert_eq!(cmds.len(), 2);
    assert_eq!(cmds[1].argv(), vec!["nft", "-f", "-"]);
    let script = String::from_utf8(cmds[1].stdin.clone().unwrap()).unwrap();
    let deletes: Vec<&str> = script.lines().filter(|l| l.starts_with("delete")).collect();
    assert_eq!(
        deletes,
        [
            "delete rule inet banger postrouting handle 3",
            "delete rule inet banger forward handle 4",
            "delete rule inet banger forward handle 5",
            "delete rule inet banger forward handle 6",
        ]
    );
    assert_eq!(
        script.lines().filter(|l| l.starts_with("add rule")).count(),
        3
    );
    assert!(script.contains("ip saddr 172.30.0.3 "));
}

#[test]
fn ensure_on_a_missing_table_creates_it() {
    let r = Arc::new(RecordingRunner::new());
    r.answer(
        "nft -j list",
        CmdOutput {
            status: 1,
            stderr: b"Error: No such file or directory\n".to_vec(),
            ..Default::default()
        },
    );
    let p = procfs();
    let nft = Nft::new(r.clone(), TableName::new("bgtest_x").unwrap(), p.path());
    assert_eq!(
        nft.ensure_vm(&vm("banger-tx", 2)).unwrap(),
        Applied::Changed
    );
    let script = String::from_utf8(r.cmds()[1].stdin.clone().unwrap()).unwrap();
    assert!(script.starts_with("add table inet bgtest_x\n"));
    assert!(!script.contains("delete"));
}

#[test]
fn clear_removes_exactly_one_vm() {
    let (r, nft, _p) = nft_with(LISTING);
    assert_eq!(nft.clear_vm("banger-ffffffff").unwrap(), 1);
    let script = String::from_utf8(r.cmds()[1].stdin.clone().unwrap()).unwrap();
    assert!(
        script.ends_with("delete rule inet banger forward handle 6\n"),
        "{script}"
    );
    let (r, nft, _p) = nft_with(LISTING);
    assert_eq!(nft.clear_vm("banger-00000000").unwrap(), 0);
    assert_eq!(r.calls().len(), 1, "nothing applied");
}

#[test]
fn list_failure_other_than_missing_table_surfaces() {
    let r = Arc::new(RecordingRunner::new());
    r.answer(
        "nft -j list",
        CmdOutput {
            status: 1,
            stderr: b"Error: Operation not permitted\n".to_vec(),
            ..Default::default()
        },
    );
    let p = procfs();
    let nft = Nft::new(r, TableName::new("banger").unwrap(), p.path());
    let e = nft.ensure_vm(&vm("banger-tx", 2)).unwrap_err();
    assert!(matches!(e, NftError::List(..)), "{e:?}");
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
    Nft::new(r.clone(), TableName::new("banger").unwrap(), p.path())
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
    let nft = Nft::new(r.clone(), TableName::new("banger").unwrap(), "/nonexistent");
    nft.ensure_dns_redirect("banger0", Ipv4Addr::new(172, 30, 0, 1), 40053)
        .unwrap();
    let cmds = r.cmds();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].argv(), vec!["nft", "-f", "-"]);
    assert_eq!(
        String::from_utf8(cmds[0].stdin.clone().unwrap()).unwrap(),
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
    // The redirect rules are not VM rules: listing ignores them for VMs.
    let listed = parse_listing(
        r#"{"nftables":[{"rule":{"chain":"dns_output","handle":9,"comment":"banger-dns"}}]}"#,
    )
    .unwrap();
    assert_eq!(listed[0].vm, None);
}
