//! Owner requests: `helper.version`, bridge, taps, NAT and resolver routing,
//! acting for real in the helper's private network namespace.

use crate::guards::{assert_refused, in_netns};
use crate::harness::{error, result};
use crate::Ctx;
use banger_proto::helper as m;
use serde_json::{json, Value};

pub fn network(c: &Ctx) {
    let call = |method: &'static str, params: Value| c.call(method, params);
    let (helper, bridge, tap) = (c.helper, c.bridge.as_str(), c.tap.as_str());
    // helper.version
    let v = call(m::VERSION, json!({}));
    assert_eq!(result(m::VERSION, &v)["version"], banger_proto::VERSION);
    let v = call(m::VERSION, json!({"uid": 0}));
    assert_refused(m::VERSION, &v, "unknown field `uid`");
    c.cover(m::VERSION);

    // Bridge, tap, NAT: real netlink and nft, in the helper's namespace.
    let v = call(
        m::ENSURE_BRIDGE,
        json!({"name": bridge, "address": "10.213.0.1/24"}),
    );
    result(m::ENSURE_BRIDGE, &v);
    let link = in_netns(helper, &["ip", "-o", "addr", "show", "dev", bridge]).unwrap();
    assert!(link.contains("10.213.0.1/24"), "{link}");
    let v = call(
        m::ENSURE_BRIDGE,
        json!({"name": bridge, "address": "10.213.0.1/24"}),
    );
    result(m::ENSURE_BRIDGE, &v);
    let v = call(
        m::ENSURE_BRIDGE,
        json!({"name": bridge, "address": "192.168.9.1/24"}),
    );
    assert_refused(m::ENSURE_BRIDGE, &v, "inside 10.213.0.0/24");
    let v = call(
        m::ENSURE_BRIDGE,
        json!({"name": "lo", "address": "10.213.0.1/24"}),
    );
    // Only the configured bridge may be created or used.
    assert_refused(
        m::ENSURE_BRIDGE,
        &v,
        &format!("name must be the configured bridge {bridge}"),
    );
    c.cover(m::ENSURE_BRIDGE);

    let v = call(m::CREATE_TAP, json!({"name": tap, "bridge": bridge}));
    result(m::CREATE_TAP, &v);
    let t = in_netns(helper, &["ip", "-o", "link", "show", "dev", tap]).unwrap();
    assert!(t.contains(&format!("master {bridge}")), "{t}");
    let v = call(m::CREATE_TAP, json!({"name": "eth9", "bridge": bridge}));
    assert_refused(m::CREATE_TAP, &v, "tap must start with banger-");
    c.cover(m::CREATE_TAP);

    let v = call(m::ENSURE_NAT, json!({"guest_ip": "10.213.0.2", "tap": tap}));
    result(m::ENSURE_NAT, &v);
    let rules = in_netns(helper, &["nft", "list", "table", "inet", "banger"]).unwrap();
    assert!(
        rules.contains("10.213.0.2") && rules.contains(tap),
        "{rules}"
    );
    let v = call(m::ENSURE_NAT, json!({"guest_ip": "8.8.8.8", "tap": tap}));
    assert_refused(
        m::ENSURE_NAT,
        &v,
        "guest_ip must be a host address inside 10.213.0.0/24",
    );
    c.cover(m::ENSURE_NAT);

    let v = call(
        m::ENSURE_DNS_REDIRECT,
        json!({"bridge": c.bridge, "port": 5353}),
    );
    result(m::ENSURE_DNS_REDIRECT, &v);
    let rules = in_netns(helper, &["nft", "list", "table", "inet", "banger"]).unwrap();
    assert!(
        rules.contains("dns_prerouting") && rules.contains("5353"),
        "{rules}"
    );
    let v = call(
        m::ENSURE_DNS_REDIRECT,
        json!({"bridge": c.bridge, "port": 53}),
    );
    assert_refused(m::ENSURE_DNS_REDIRECT, &v, "port must be");
    c.cover(m::ENSURE_DNS_REDIRECT);

    let v = call(m::CLEAR_NAT, json!({"guest_ip": "10.213.0.2", "tap": tap}));
    result(m::CLEAR_NAT, &v);
    let rules = in_netns(helper, &["nft", "list", "table", "inet", "banger"]).unwrap();
    assert!(!rules.contains(tap), "rules left after clear_nat: {rules}");
    let v = call(
        m::CLEAR_NAT,
        json!({"guest_ip": "10.213.0.2", "tap": "eth0"}),
    );
    assert_refused(m::CLEAR_NAT, &v, "tap must start with banger-");
    c.cover(m::CLEAR_NAT);

    // Resolver routing: systemd-resolved never sees a link of a private
    // namespace, so a valid request fails cleanly (or resolvectl is absent).
    for (method, params) in [
        (
            m::SYNC_RESOLVER_ROUTING,
            json!({"bridge": bridge, "resolver": "10.213.0.1", "domain": "vm"}),
        ),
        (m::CLEAR_RESOLVER_ROUTING, json!({"bridge": bridge})),
    ] {
        let v = call(method, params);
        if v["error"].is_object() {
            let (code, msg) = error(method, &v);
            assert_eq!(code, -32000, "{method}: {msg}");
            assert!(msg.contains("resolvectl"), "{method}: {msg}");
        }
    }
    let v = call(
        m::SYNC_RESOLVER_ROUTING,
        json!({"bridge": "br:0", "resolver": "10.213.0.1", "domain": "vm"}),
    );
    assert_refused(
        m::SYNC_RESOLVER_ROUTING,
        &v,
        "bridge must be an interface name",
    );
    let v = call(
        m::SYNC_RESOLVER_ROUTING,
        json!({"bridge": bridge, "resolver": "10.213.0.1", "domain": "com"}),
    );
    assert_refused(
        m::SYNC_RESOLVER_ROUTING,
        &v,
        "domain must be the configured domain vm",
    );
    let v = call(m::CLEAR_RESOLVER_ROUTING, json!({"bridge": "lo"}));
    assert_refused(
        m::CLEAR_RESOLVER_ROUTING,
        &v,
        &format!("bridge must be the configured bridge {bridge}"),
    );
    c.cover(m::SYNC_RESOLVER_ROUTING);
    c.cover(m::CLEAR_RESOLVER_ROUTING);

    let v = call(m::DELETE_TAP, json!({"name": tap}));
    result(m::DELETE_TAP, &v);
    assert!(in_netns(helper, &["ip", "link", "show", "dev", tap]).is_err());
    let v = call(m::DELETE_TAP, json!({"name": "lo"}));
    assert_refused(m::DELETE_TAP, &v, "tap must start with banger-");
    assert!(in_netns(helper, &["ip", "link", "show", "dev", "lo"]).is_ok());
    c.cover(m::DELETE_TAP);
}
