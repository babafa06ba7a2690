//! Network attacks on the real helper (root, in its own network namespace):
//! squatting another bridge name, attaching taps to a bridge other than the
//! configured one, adopting a foreign interface, more taps than `max_taps`,
//! routing a host-wide DNS domain. Each is refused with `-32602` naming the
//! rule and leaves the interfaces, nftables rules and resolver untouched;
//! the bridge and taps banger makes have IPv6 off.

#[path = "e2e/guards.rs"]
#[allow(dead_code)]
mod guards;
#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use banger_proto::helper as m;
use banger_testkit::{require_root, SystemUser};
use guards::{assert_refused, in_netns, short_tag};
use harness::{call_as, layout, result, HelperProc};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Every interface in the helper's namespace: name → (master, alias).
fn links(h: &HelperProc) -> BTreeMap<String, (String, String)> {
    let out = in_netns(h, &["ip", "-j", "link", "show"]).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            (s("ifname"), (s("master"), s("ifalias")))
        })
        .collect()
}

fn sysctl(h: &HelperProc, iface: &str, key: &str) -> String {
    let path = format!("/proc/sys/net/ipv6/conf/{iface}/{key}");
    in_netns(h, &["cat", &path]).unwrap().trim().to_string()
}

fn ip(h: &HelperProc, args: &[&str]) {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    in_netns(h, &argv).unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
}

#[test]
fn root_network_attacks_are_refused_and_leave_the_host_unchanged() {
    if !require_root("root_network_attacks_are_refused_and_leave_the_host_unchanged") {
        return;
    }
    let owner = SystemUser::create("e2ehnet");
    let tag = short_tag();
    let bridge = format!("bgtest-n{tag}");
    let mut l = layout(&owner, &bridge);
    l.cfg.max_taps = 2;
    std::fs::write(&l.cfg_path, l.cfg.render()).unwrap();
    let root = l.cfg.owner_home.clone();
    let h = HelperProc::start(&l.cfg_path, &l.cfg, &[], root.join("helper.log"));
    let call =
        |method: &str, params: Value| call_as(owner.uid, owner.gid, &h.socket, method, params);
    let nft = || in_netns(&h, &["nft", "list", "ruleset"]).unwrap();

    // Bridge squatting: no other name, existing or not.
    let before = links(&h);
    let squat = format!("bgtest-d{tag}");
    for name in ["docker0", "virbr0", "cni0", "wg0", squat.as_str()] {
        let v = call(
            m::ENSURE_BRIDGE,
            json!({"name": name, "address": "10.213.0.1/24"}),
        );
        assert_refused(
            m::ENSURE_BRIDGE,
            &v,
            &format!("priv.ensure_bridge: name must be the configured bridge {bridge}"),
        );
    }
    assert_eq!(links(&h), before, "no interface created");

    // The configured bridge: made, with IPv6 off (no router advertisement
    // from a guest configures the host).
    let v = call(
        m::ENSURE_BRIDGE,
        json!({"name": bridge, "address": "10.213.0.1/24"}),
    );
    result(m::ENSURE_BRIDGE, &v);
    assert_eq!(sysctl(&h, &bridge, "disable_ipv6"), "1");
    assert_eq!(sysctl(&h, &bridge, "accept_ra"), "0");

    // Another banger-marked bridge (say from an install with another
    // configured name), a foreign tap that carries banger's prefix, and a
    // banger-marked bridge that carries the tap prefix.
    let other = format!("bgtest-o{tag}");
    ip(&h, &["link", "add", &other, "type", "bridge"]);
    ip(&h, &["link", "set", &other, "alias", "banger-managed"]);
    let foreign_tap = format!("banger-f{tag}");
    ip(&h, &["tuntap", "add", "dev", &foreign_tap, "mode", "tap"]);
    let marked_br = format!("banger-x{tag}");
    ip(&h, &["link", "add", &marked_br, "type", "bridge"]);
    ip(&h, &["link", "set", &marked_br, "alias", "banger-managed"]);
    let before = links(&h);
    let rules_before = nft();

    let tap = |c: char| format!("banger-{c}{tag}");
    let v = call(m::CREATE_TAP, json!({"name": tap('a'), "bridge": other}));
    assert_refused(
        m::CREATE_TAP,
        &v,
        &format!("priv.create_tap: bridge must be the configured bridge {bridge}"),
    );
    let v = call(
        m::CREATE_TAP,
        json!({"name": foreign_tap, "bridge": bridge}),
    );
    assert_refused(
        m::CREATE_TAP,
        &v,
        &format!("priv.create_tap: {foreign_tap} must be absent or an interface banger created"),
    );
    let v = call(m::DELETE_TAP, json!({"name": foreign_tap}));
    assert_refused(
        m::DELETE_TAP,
        &v,
        &format!("priv.delete_tap: {foreign_tap} must be absent or an interface banger created"),
    );
    let v = call(m::CREATE_TAP, json!({"name": marked_br, "bridge": bridge}));
    assert_refused(
        m::CREATE_TAP,
        &v,
        &format!("priv.create_tap: {marked_br} must be a tun banger created"),
    );
    let v = call(m::DELETE_TAP, json!({"name": marked_br}));
    assert_refused(
        m::DELETE_TAP,
        &v,
        &format!("priv.delete_tap: {marked_br} must be a tun banger created"),
    );

    // Host-wide DNS hijack and DNS redirect on another bridge.
    for (params, rule) in [
        (
            json!({"bridge": bridge, "resolver": "10.213.0.1", "domain": "com"}),
            "priv.sync_resolver_routing: domain must be the configured domain vm".to_string(),
        ),
        (
            json!({"bridge": other, "resolver": "10.213.0.1", "domain": "vm"}),
            format!("priv.sync_resolver_routing: bridge must be the configured bridge {bridge}"),
        ),
    ] {
        let v = call(m::SYNC_RESOLVER_ROUTING, params);
        assert_refused(m::SYNC_RESOLVER_ROUTING, &v, &rule);
    }
    let v = call(m::CLEAR_RESOLVER_ROUTING, json!({"bridge": other}));
    assert_refused(
        m::CLEAR_RESOLVER_ROUTING,
        &v,
        &format!("priv.clear_resolver_routing: bridge must be the configured bridge {bridge}"),
    );
    let v = call(
        m::ENSURE_DNS_REDIRECT,
        json!({"bridge": other, "port": 5353}),
    );
    assert_refused(
        m::ENSURE_DNS_REDIRECT,
        &v,
        &format!("priv.ensure_dns_redirect: bridge must be the configured bridge {bridge}"),
    );
    assert_eq!(links(&h), before, "interfaces unchanged by the refusals");
    assert_eq!(nft(), rules_before, "nftables unchanged by the refusals");
    let log = h.log_text();
    assert!(
        !log.contains("resolvectl"),
        "a refused request reached resolvectl:\n{log}"
    );

    // max_taps = 2: two taps of banger's on the host, the third refused.
    // (The foreign tap is not banger's and does not count.)
    for c in ['a', 'b'] {
        let v = call(m::CREATE_TAP, json!({"name": tap(c), "bridge": bridge}));
        result(m::CREATE_TAP, &v);
        assert_eq!(sysctl(&h, &tap(c), "disable_ipv6"), "1");
        assert_eq!(links(&h)[&tap(c)].0, bridge, "attached to the bridge");
    }
    let before = links(&h);
    let v = call(m::CREATE_TAP, json!({"name": tap('c'), "bridge": bridge}));
    assert_refused(
        m::CREATE_TAP,
        &v,
        "priv.create_tap: taps must number at most max_taps = 2 (install.toml); 2 exist",
    );
    assert_eq!(links(&h), before, "no third tap");
    // Re-ensuring an existing tap is not a new one.
    let v = call(m::CREATE_TAP, json!({"name": tap('a'), "bridge": bridge}));
    result(m::CREATE_TAP, &v);
    let v = call(m::DELETE_TAP, json!({"name": tap('b')}));
    result(m::DELETE_TAP, &v);
    let v = call(m::CREATE_TAP, json!({"name": tap('c'), "bridge": bridge}));
    result(m::CREATE_TAP, &v);
    assert!(links(&h).contains_key(&tap('c')));
}
