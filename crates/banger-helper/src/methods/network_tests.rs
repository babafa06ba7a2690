//! Tests of the network methods: exact host requests, and every gate refusing.
use crate::error::RpcError;
use crate::helper::Helper;
use crate::host::Host;
use banger_proto::install::InstallConfig;
use banger_sys::net::{NetOps, NetRequest, Owner, RecordingNet, Route4};
use banger_sys::nft::{Nft, TableName};
use banger_sys::runner::{CmdOutput, RecordingRunner};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::sync::Arc;

struct Fixture {
    helper: Helper,
    runner: Arc<RecordingRunner>,
    net: Arc<RecordingNet>,
    _proc: tempfile::TempDir,
}

fn fixture(net: RecordingNet) -> Fixture {
    let proc = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(proc.path().join("sys/net/ipv4")).unwrap();
    std::fs::write(proc.path().join("sys/net/ipv4/ip_forward"), "0").unwrap();
    let runner = Arc::new(RecordingRunner::new());
    let net = Arc::new(net);
    let mut host = Host::real();
    host.runner = runner.clone();
    host.net = net.clone();
    host.nft = Arc::new(Nft::new(
        runner.clone(),
        TableName::new("banger").unwrap(),
        proc.path(),
    ));
    let cfg = InstallConfig::for_owner(1000, 1001, "/home/alice".into());
    Fixture {
        helper: Helper { cfg, host },
        runner,
        net,
        _proc: proc,
    }
}

fn refused(f: &Fixture, method: &str, params: Value) -> String {
    match f.helper.dispatch(method, params) {
        Err(e @ RpcError::Gate { .. }) => {
            assert_eq!(e.to_object().code, -32602);
            e.to_string()
        }
        other => panic!("{method}: expected a gate refusal, got {other:?}"),
    }
}

#[test]
fn bridge_and_tap_requests_are_exact() {
    let f = fixture(RecordingNet::new());
    f.helper
        .dispatch(
            "priv.ensure_bridge",
            json!({"name": "banger0", "address": "172.30.0.1/24"}),
        )
        .unwrap();
    f.helper
        .dispatch(
            "priv.create_tap",
            json!({"name": "banger-0a1b2c3d", "bridge": "banger0"}),
        )
        .unwrap();
    f.helper
        .dispatch("priv.delete_tap", json!({"name": "banger-0a1b2c3d"}))
        .unwrap();
    assert_eq!(
        f.net.calls(),
        vec![
            NetRequest::EnsureBridge {
                name: "banger0".into(),
                addr: Ipv4Addr::new(172, 30, 0, 1),
                prefix: 24
            },
            NetRequest::CreateTap {
                name: "banger-0a1b2c3d".into(),
                bridge: "banger0".into(),
                owner: Owner {
                    uid: 1000,
                    gid: 1001
                }
            },
            NetRequest::DeleteTap {
                name: "banger-0a1b2c3d".into()
            },
        ]
    );
}

#[test]
fn bridge_and_tap_gates_refuse() {
    let f = fixture(RecordingNet::new());
    let routes = vec![
        Route4 {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            dev: "eth0".into(),
        },
        Route4 {
            dst: Ipv4Addr::new(172, 30, 0, 0),
            prefix: 24,
            dev: "banger0".into(),
        },
    ];
    let ok = fixture(RecordingNet::new().with_routes(routes.clone()));
    ok.helper
        .dispatch(
            "priv.ensure_bridge",
            json!({"name": "banger0", "address": "172.30.0.1/24"}),
        )
        .unwrap();
    let mut clash = routes;
    clash.push(Route4 {
        dst: Ipv4Addr::new(172, 16, 0, 0),
        prefix: 12,
        dev: "docker0".into(),
    });
    let f2 = fixture(RecordingNet::new().with_routes(clash));
    let e = refused(
        &f2,
        "priv.ensure_bridge",
        json!({"name": "banger0", "address": "172.30.0.1/24"}),
    );
    assert_eq!(
        e,
        "priv.ensure_bridge: address must not overlap a host route (172.16.0.0/12 on docker0)"
    );
    assert!(f2.net.calls().is_empty());
    let e = refused(
        &f,
        "priv.ensure_bridge",
        json!({"name": "br/0", "address": "172.30.0.1/24"}),
    );
    assert!(
        e.starts_with("priv.ensure_bridge: name must be an interface name"),
        "{e}"
    );
    let e = refused(
        &f,
        "priv.ensure_bridge",
        json!({"name": "banger0", "address": "10.0.0.1/8"}),
    );
    assert_eq!(e, "priv.ensure_bridge: address must be a CIDR A.B.C.D/24 with a host address inside 172.30.0.0/24");
    let e = refused(
        &f,
        "priv.create_tap",
        json!({"name": "eth0", "bridge": "banger0"}),
    );
    assert_eq!(e, "priv.create_tap: tap must start with banger-");
    let e = refused(
        &f,
        "priv.create_tap",
        json!({"name": "banger-1", "bridge": "a b"}),
    );
    assert!(
        e.starts_with("priv.create_tap: bridge must be an interface name"),
        "{e}"
    );
    let e = refused(&f, "priv.delete_tap", json!({"name": "lo"}));
    assert_eq!(e, "priv.delete_tap: tap must start with banger-");
    assert!(f.net.calls().is_empty(), "nothing reached the host");
    // Unknown fields never reach a gate.
    let e = f
        .helper
        .dispatch("priv.delete_tap", json!({"name": "banger-1", "uid": 0}))
        .unwrap_err();
    assert!(matches!(e, RpcError::Params(_)), "{e:?}");
}

#[test]
fn a_foreign_interface_is_a_gate_refusal() {
    let f = fixture(
        RecordingNet::new()
            .with_link("banger0", "tun", true)
            .with_link("banger-eeee", "tun", false),
    );
    assert_eq!(
        refused(&f, "priv.delete_tap", json!({"name": "banger-eeee"})),
        "priv.delete_tap: banger-eeee must be absent or an interface banger created"
    );
    assert_eq!(
        refused(
            &f,
            "priv.create_tap",
            json!({"name": "banger-eeee", "bridge": "banger0"})
        ),
        "priv.create_tap: banger0 must be a bridge banger created"
    );
    // The configured bridge name, held by an interface banger did not make.
    let g = fixture(RecordingNet::new().with_link("banger0", "bridge", false));
    assert_eq!(
        refused(
            &g,
            "priv.ensure_bridge",
            json!({"name": "banger0", "address": "172.30.0.1/24"})
        ),
        "priv.ensure_bridge: banger0 must be absent or an interface banger created"
    );
    assert_eq!(
        refused(
            &g,
            "priv.create_tap",
            json!({"name": "banger-1", "bridge": "banger0"})
        ),
        "priv.create_tap: banger0 must be absent or an interface banger created"
    );
    assert!(g.net.link("banger-1").unwrap().is_none(), "no tap made");
}

#[test]
fn only_the_configured_bridge_is_created_or_joined() {
    let f = fixture(
        RecordingNet::new()
            .with_link("banger0", "bridge", true)
            .with_link("bgtest-other", "bridge", true),
    );
    for name in ["docker0", "virbr0", "cni0", "wg0", "bgtest-other"] {
        assert_eq!(
            refused(
                &f,
                "priv.ensure_bridge",
                json!({"name": name, "address": "172.30.0.1/24"})
            ),
            "priv.ensure_bridge: name must be the configured bridge banger0"
        );
        assert_eq!(
            refused(
                &f,
                "priv.create_tap",
                json!({"name": "banger-1", "bridge": name})
            ),
            "priv.create_tap: bridge must be the configured bridge banger0"
        );
    }
    assert!(f.net.calls().is_empty(), "nothing reached the host");
}

#[test]
fn taps_are_capped_by_max_taps() {
    let mut f = fixture(
        RecordingNet::new()
            .with_link("banger0", "bridge", true)
            .with_link("banger-a", "tun", true)
            .with_link("banger-foreign", "tun", false),
    );
    f.helper.cfg.max_taps = 2;
    let tap = |f: &Fixture, name: &str| {
        f.helper
            .dispatch(
                "priv.create_tap",
                json!({"name": name, "bridge": "banger0"}),
            )
            .map(drop)
    };
    tap(&f, "banger-b").unwrap();
    assert_eq!(
        refused(
            &f,
            "priv.create_tap",
            json!({"name": "banger-c", "bridge": "banger0"})
        ),
        "priv.create_tap: taps must number at most max_taps = 2 (install.toml); 2 exist"
    );
    assert!(f.net.link("banger-c").unwrap().is_none());
    // Re-ensuring an existing tap adds none, so it still passes.
    tap(&f, "banger-a").unwrap();
    f.helper
        .dispatch("priv.delete_tap", json!({"name": "banger-a"}))
        .unwrap();
    tap(&f, "banger-c").unwrap();
    assert_eq!(
        f.net
            .calls()
            .iter()
            .filter(|c| matches!(c, NetRequest::CreateTap { name, .. } if name == "banger-c"))
            .count(),
        1,
        "the refused create never reached the host"
    );
}

#[test]
fn nat_goes_to_bangers_table_only() {
    let f = fixture(RecordingNet::new());
    f.runner.answer(
        "nft -j list table inet banger",
        CmdOutput {
            status: 1,
            stderr: b"Error: No such file or directory".to_vec(),
            ..Default::default()
        },
    );
    let nat = |method: &str, ip: &str, tap: &str| {
        f.helper
            .dispatch(method, json!({"guest_ip": ip, "tap": tap}))
            .unwrap();
    };
    nat("priv.ensure_nat", "172.30.0.7", "banger-0a1b2c3d");
    let cmds = f.runner.cmds();
    assert_eq!(
        cmds[0].argv(),
        ["nft", "-j", "list", "table", "inet", "banger"]
    );
    assert_eq!(cmds[1].argv(), ["nft", "-f", "-"]);
    let script = String::from_utf8(cmds[1].stdin.clone().unwrap()).unwrap();
    assert!(
        script
            .lines()
            .all(|l| l.split_whitespace().nth(2) == Some("inet")
                && l.split_whitespace().nth(3) == Some("banger")),
        "{script}"
    );
    // The static rules name the configured bridge, never a caller's.
    assert!(script.contains(
        "add rule inet banger postrouting ip saddr @nat_guests oifname != \"banger0\" masquerade comment \"banger-nat\""
    ));
    assert_eq!(
        cmds[2].argv(),
        [
            "nft",
            "add",
            "element",
            "inet",
            "banger",
            "nat_guests",
            "{ 172.30.0.7 comment \"banger-0a1b2c3d\" }"
        ]
    );
    // A second VM, then clearing both (one already gone): one command each.
    nat("priv.ensure_nat", "172.30.0.8", "banger-0a1b2c3e");
    nat("priv.clear_nat", "172.30.0.7", "banger-0a1b2c3d");
    f.runner.answer(
        "delete element",
        CmdOutput {
            status: 1,
            stderr: b"Error: Could not process rule: No such file or directory".to_vec(),
            ..Default::default()
        },
    );
    nat("priv.clear_nat", "172.30.0.8", "banger-0a1b2c3e");
    let calls: Vec<String> = f.runner.calls()[3..].iter().map(|c| c.join(" ")).collect();
    assert_eq!(
        calls,
        [
            "nft add element inet banger nat_guests { 172.30.0.8 comment \"banger-0a1b2c3e\" }",
            "nft delete element inet banger nat_guests { 172.30.0.7 }",
            "nft delete element inet banger nat_guests { 172.30.0.8 }",
        ]
    );
}

#[test]
fn nat_gates_refuse() {
    let f = fixture(RecordingNet::new());
    for (ip, tap, want) in [
        ("172.30.0.7; drop", "banger-1", "priv.ensure_nat: guest_ip must be a parsable IPv4 address"),
        ("8.8.8.8", "banger-1", "priv.ensure_nat: guest_ip must be a host address inside 172.30.0.0/24 other than the gateway 172.30.0.1"),
        ("172.30.0.1", "banger-1", "priv.ensure_nat: guest_ip must be a host address inside 172.30.0.0/24 other than the gateway 172.30.0.1"),
        ("172.30.0.7", "eth0", "priv.ensure_nat: tap must start with banger-"),
        ("172.30.0.7", "banger-\"x", "priv.ensure_nat: tap must be an interface name: 1-15 chars of [A-Za-z0-9_.-], no whitespace, '/', ':' or '..'"),
    ] {
        assert_eq!(refused(&f, "priv.ensure_nat", json!({"guest_ip": ip, "tap": tap})), want);
    }
    let e = refused(
        &f,
        "priv.clear_nat",
        json!({"guest_ip": "x", "tap": "banger-1"}),
    );
    assert_eq!(
        e,
        "priv.clear_nat: guest_ip must be a parsable IPv4 address"
    );
    assert!(f.runner.calls().is_empty());
}

#[test]
fn resolver_routing_argv_is_exact() {
    let f = fixture(RecordingNet::new().with_link("banger0", "bridge", true));
    f.helper
        .dispatch(
            "priv.sync_resolver_routing",
            json!({"bridge": "banger0", "resolver": "172.30.0.1", "domain": "vm"}),
        )
        .unwrap();
    f.helper
        .dispatch(
            "priv.sync_resolver_routing",
            json!({"bridge": "banger0", "resolver": "172.30.0.1:5353", "domain": "vm"}),
        )
        .unwrap();
    f.helper
        .dispatch("priv.clear_resolver_routing", json!({"bridge": "banger0"}))
        .unwrap();
    assert_eq!(
        f.runner.calls(),
        vec![
            vec!["resolvectl", "dns", "banger0", "172.30.0.1"],
            vec!["resolvectl", "domain", "banger0", "~vm"],
            vec!["resolvectl", "dns", "banger0", "172.30.0.1:5353"],
            vec!["resolvectl", "domain", "banger0", "~vm"],
            vec!["resolvectl", "revert", "banger0"],
        ]
    );
}

#[test]
fn resolver_routing_gates_refuse() {
    let f = fixture(
        RecordingNet::new()
            .with_link("banger0", "bridge", true)
            .with_link("eth0", "veth", false),
    );
    let sync = |b: &str, r: &str, d: &str| {
        refused(
            &f,
            "priv.sync_resolver_routing",
            json!({"bridge": b, "resolver": r, "domain": d}),
        )
    };
    assert!(sync("br 0", "172.30.0.1", "vm")
        .starts_with("priv.sync_resolver_routing: bridge must be an interface name"));
    assert!(sync("br:0", "172.30.0.1", "vm")
        .starts_with("priv.sync_resolver_routing: bridge must be an interface name"));
    assert!(sync("1234567890123456", "172.30.0.1", "vm")
        .starts_with("priv.sync_resolver_routing: bridge must be"));
    assert!(sync("banger0", "1.1.1.1", "vm").starts_with(
        "priv.sync_resolver_routing: resolver must be an IPv4 address inside 172.30.0.0/24"
    ));
    assert!(sync("banger0", "172.30.0.1:0", "vm")
        .starts_with("priv.sync_resolver_routing: resolver must be"));
    assert!(sync("banger0", "172.30.0.1", "~.")
        .starts_with("priv.sync_resolver_routing: domain must be DNS labels"));
    // Host-wide DNS hijack: only the configured domain, on the
    // configured bridge.
    for d in ["com", "internal", "x.vm", "vm.com", "local"] {
        assert_eq!(
            sync("banger0", "172.30.0.1", d),
            "priv.sync_resolver_routing: domain must be the configured domain vm"
        );
    }
    for b in ["eth0", "docker0", "missing0"] {
        assert_eq!(
            sync(b, "172.30.0.1", "vm"),
            "priv.sync_resolver_routing: bridge must be the configured bridge banger0"
        );
        assert_eq!(
            refused(&f, "priv.clear_resolver_routing", json!({"bridge": b})),
            "priv.clear_resolver_routing: bridge must be the configured bridge banger0"
        );
    }
    assert!(f.runner.calls().is_empty(), "resolvectl never ran");

    // The configured bridge name, but not an interface banger created.
    let g = fixture(RecordingNet::new().with_link("banger0", "bridge", false));
    assert_eq!(
        refused(
            &g,
            "priv.sync_resolver_routing",
            json!({"bridge": "banger0", "resolver": "172.30.0.1", "domain": "vm"})
        ),
        "priv.sync_resolver_routing: bridge must be an existing interface created by banger"
    );
    assert_eq!(
        refused(
            &g,
            "priv.clear_resolver_routing",
            json!({"bridge": "banger0"})
        ),
        "priv.clear_resolver_routing: bridge must be an existing interface created by banger"
    );
    assert!(g.runner.calls().is_empty());
}

#[test]
fn a_configured_domain_other_than_vm_is_the_only_one_routed() {
    let mut f = fixture(RecordingNet::new().with_link("banger0", "bridge", true));
    f.helper.cfg.domain = "dev.internal".into();
    assert_eq!(
        refused(
            &f,
            "priv.sync_resolver_routing",
            json!({"bridge": "banger0", "resolver": "172.30.0.1", "domain": "vm"})
        ),
        "priv.sync_resolver_routing: domain must be the configured domain dev.internal"
    );
    assert!(f.runner.calls().is_empty());
    f.helper
        .dispatch(
            "priv.sync_resolver_routing",
            json!({"bridge": "banger0", "resolver": "172.30.0.1", "domain": "dev.internal"}),
        )
        .unwrap();
    assert_eq!(
        f.runner.calls()[1],
        vec!["resolvectl", "domain", "banger0", "~dev.internal"]
    );
}

#[test]
fn dns_redirect_is_exact_and_gated() {
    let f = fixture(
        RecordingNet::new()
            .with_link("banger0", "bridge", true)
            .with_link("eth0", "veth", false),
    );
    f.helper
        .dispatch(
            "priv.ensure_dns_redirect",
            json!({"bridge": "banger0", "port": 40053}),
        )
        .unwrap();
    let cmds = f.runner.cmds();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].argv(), vec!["nft", "-f", "-"]);
    let script = String::from_utf8(cmds[0].stdin.clone().unwrap()).unwrap();
    assert!(
        script.contains(
            "iifname \"banger0\" ip daddr 172.30.0.1 udp dport 53 dnat ip to 172.30.0.1:40053"
        ),
        "{script}"
    );
    let redirect = |b: &str, p: u16| {
        refused(
            &f,
            "priv.ensure_dns_redirect",
            json!({"bridge": b, "port": p}),
        )
    };
    assert_eq!(
        redirect("banger0", 22),
        "priv.ensure_dns_redirect: port must be in 1024-65535"
    );
    assert_eq!(
        redirect("eth0", 40053),
        "priv.ensure_dns_redirect: bridge must be the configured bridge banger0"
    );
    assert!(redirect("br 0", 40053)
        .starts_with("priv.ensure_dns_redirect: bridge must be an interface name"));
    assert_eq!(f.runner.cmds().len(), 1, "nothing ran after a refusal");

    // The configured bridge, but not one banger created: refused.
    let g = fixture(RecordingNet::new().with_link("banger0", "bridge", false));
    assert_eq!(
        refused(
            &g,
            "priv.ensure_dns_redirect",
            json!({"bridge": "banger0", "port": 40053})
        ),
        "priv.ensure_dns_redirect: bridge must be an existing interface created by banger"
    );
    assert!(g.runner.calls().is_empty());
}

#[test]
fn a_tap_for_a_jail_uid_only_inside_the_reserved_range() {
    let mut f = fixture(RecordingNet::new().with_link("banger0", "bridge", true));
    f.helper.cfg.jail_uid_base = Some(900_000);
    f.helper.cfg.jail_uid_count = Some(16);
    // An attacker asks for root, the owner, a uid just outside the range
    // either side, and a uid of another host user: all refused, nothing made.
    for uid in [0u32, 1000, 1001, 899_999, 900_016, 65534] {
        let e = refused(
            &f,
            "priv.create_tap",
            json!({"name": "banger-0a1b2c3d", "bridge": "banger0", "jail_uid": uid}),
        );
        assert!(
            e.contains("priv.create_tap: jail_uid must lie inside install.toml's jail uid range"),
            "{uid}: {e}"
        );
    }
    assert!(f.net.calls().is_empty(), "{:?}", f.net.calls());
    f.helper
        .dispatch(
            "priv.create_tap",
            json!({"name": "banger-0a1b2c3d", "bridge": "banger0", "jail_uid": 900_015}),
        )
        .unwrap();
    assert_eq!(
        f.net.calls(),
        vec![NetRequest::CreateTap {
            name: "banger-0a1b2c3d".into(),
            bridge: "banger0".into(),
            owner: Owner {
                uid: 900_015,
                gid: 900_015
            }
        }]
    );
    // No range reserved: every jail uid is refused.
    let g = fixture(RecordingNet::new().with_link("banger0", "bridge", true));
    let e = refused(
        &g,
        "priv.create_tap",
        json!({"name": "banger-0a1b2c3d", "bridge": "banger0", "jail_uid": 900_000}),
    );
    assert!(e.contains("jail uid range"), "{e}");
    assert!(g.net.calls().is_empty());
}
