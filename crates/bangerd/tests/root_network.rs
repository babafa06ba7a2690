//! The network end to end, for real, in network namespaces made here:
//!
//! - `H` stands in for the host: banger's bridge, a tap, NAT in a
//!   `bgtest_` nft table, all made through `Helper::dispatch`, and the
//!   daemon's DNS server bound on the bridge address;
//! - `G` stands in for a guest: joined to the bridge by a veth pair, with
//!   a VM's allocated address and MAC, statically configured;
//! - `O` is "the outside": an HTTP server reachable from `H` only, with no
//!   route back to the guest subnet (so replies arrive only through NAT).
//!
//! The upstream DNS is a fake on this machine's loopback. No packet leaves
//! these namespaces and loopback. Everything is removed on drop.

mod common;

use banger_core::net::{allocate, mac_for, Subnet};
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_proto::install::InstallConfig;
use banger_sys::netns::NamedNetns;
use banger_sys::nft::{Nft, TableName};
use banger_sys::runner::HostRunner;
use bangerd::network::dns::{serve, DnsConfig, Records};
use common::dns::resolve_udp;
use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;

struct Vms(HashMap<String, Ipv4Addr>);
impl Records for Vms {
    fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        self.0.get(name).copied()
    }
}

/// A fake upstream resolver on loopback answering every name with 192.0.2.7.
fn fake_upstream() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        // Bounded: serves a handful of questions, then ends.
        for _ in 0..16 {
            let Ok((n, peer)) = s.recv_from(&mut buf) else {
                return;
            };
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut m = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
            m.queries = req.queries.clone();
            m.answers.push(Record::from_rdata(
                req.queries[0].name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
            ));
            let _ = s.send_to(&m.to_vec().unwrap(), peer);
        }
    });
    addr
}

#[test]
fn root_guest_resolves_and_reaches_the_outside_through_nat() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: needs root for network namespaces");
        return;
    }
    let s = banger_testkit::unique_suffix();
    let h = NamedNetns::add(&format!("bgtest-{s}-h")).unwrap();
    let g = NamedNetns::add(&format!("bgtest-{s}-g")).unwrap();
    let o = NamedNetns::add(&format!("bgtest-{s}-o")).unwrap();

    // Allocation, names and MAC as the daemon would make them.
    let subnet: Subnet = "172.30.250.0/24".parse().unwrap();
    let guest_ip = allocate(&subnet, &BTreeSet::new()).unwrap();
    let other_ip = allocate(&subnet, &[guest_ip].into()).unwrap();
    assert_eq!(
        (guest_ip, other_ip),
        (
            Ipv4Addr::new(172, 30, 250, 2),
            Ipv4Addr::new(172, 30, 250, 3)
        )
    );
    let (bridge, guest_port, other_tap) = (
        format!("bgtest-br{s}"),
        format!("banger-t{s}g"),
        format!("banger-t{s}o"),
    );

    // The helper, acting in H, with a test nft table.
    let mut cfg = InstallConfig::for_owner(4242, 4242, "/nonexistent".into());
    cfg.bridge = bridge.clone();
    cfg.subnet = subnet.to_string();
    let table = TableName::new(&format!("bgtest_{s}")).unwrap();
    let mut host = Host::real();
    host.nft = Arc::new(Nft::new(Arc::new(HostRunner), table, "/proc"));
    let helper = Arc::new(Helper { cfg, host });
    let call = |method: &'static str, params: serde_json::Value| {
        let helper = helper.clone();
        h.run(move || helper.dispatch(method, params)).unwrap()
    };
    call(
        "priv.ensure_bridge",
        json!({"name": bridge, "address": subnet.gateway_cidr()}),
    )
    .unwrap();
    call(
        "priv.create_tap",
        json!({"name": other_tap, "bridge": bridge}),
    )
    .unwrap();

    // The guest stand-in: a veth whose bridge end carries a banger tap name.
    h.ip(&[
        "link",
        "add",
        &guest_port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        g.name(),
    ])
    .unwrap();
    h.ip(&["link", "set", &guest_port, "master", &bridge, "up"])
        .unwrap();
    g.ip(&["link", "set", "eth0", "address", &mac_for("dev")])
        .unwrap();
    g.ip(&["addr", "add", &format!("{guest_ip}/24"), "dev", "eth0"])
        .unwrap();
    g.ip(&["link", "set", "eth0", "up"]).unwrap();
    g.ip(&[
        "route",
        "add",
        "default",
        "via",
        &subnet.gateway().to_string(),
    ])
    .unwrap();

    // The outside: H 198.51.100.1 <-> O 198.51.100.2, and O has no route
    // to the guest subnet.
    let uplink = format!("bgtest-up{s}");
    let web_addr = h.serve_outside(&o, &uplink).unwrap();

    // Without NAT the guest cannot get an answer from the outside.
    call(
        "priv.ensure_nat",
        json!({"guest_ip": guest_ip.to_string(), "tap": guest_port}),
    )
    .unwrap();
    call(
        "priv.clear_nat",
        json!({"guest_ip": guest_ip.to_string(), "tap": guest_port}),
    )
    .unwrap();
    assert!(
        g.run(move || banger_testkit::http_get(web_addr))
            .unwrap()
            .is_err(),
        "no route back without masquerade"
    );
    call(
        "priv.ensure_nat",
        json!({"guest_ip": guest_ip.to_string(), "tap": guest_port}),
    )
    .unwrap();
    call(
        "priv.ensure_nat",
        json!({"guest_ip": guest_ip.to_string(), "tap": guest_port}),
    )
    .unwrap();

    // The daemon's DNS, bound on the bridge address inside H.
    let dns_addr = SocketAddr::new(subnet.gateway().into(), 53);
    let (udp, tcp) = h
        .run(move || {
            (
                UdpSocket::bind(dns_addr).unwrap(),
                TcpListener::bind(dns_addr).unwrap(),
            )
        })
        .unwrap();
    let upstream = fake_upstream();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let records = Arc::new(Vms(HashMap::from([
        ("dev".into(), guest_ip),
        ("other".into(), other_ip),
    ])));
    let server = rt.spawn(async move {
        udp.set_nonblocking(true).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
        let tcp = tokio::net::TcpListener::from_std(tcp).unwrap();
        serve(
            udp,
            Some(tcp),
            DnsConfig::new("vm", vec![upstream]),
            records,
            async {
                let _ = stopped.await;
            },
        )
        .await
    });

    let (other, up, body) = g
        .run(move || {
            (
                resolve_udp(dns_addr, "other.vm."),
                resolve_udp(dns_addr, "upstream.example."),
                banger_testkit::http_get(web_addr),
            )
        })
        .unwrap();
    assert_eq!(
        other,
        Ok(vec![other_ip]),
        "<other-vm>.vm through the daemon's DNS"
    );
    assert_eq!(
        up,
        Ok(vec![Ipv4Addr::new(192, 0, 2, 7)]),
        "upstream name forwarded"
    );
    assert_eq!(
        body.unwrap(),
        "hello 198.51.100.1",
        "the outside sees the masqueraded address"
    );

    stop.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();

    // Tear down through the helper too; the namespaces go on drop.
    call(
        "priv.clear_nat",
        json!({"guest_ip": guest_ip.to_string(), "tap": guest_port}),
    )
    .unwrap();
    call("priv.delete_tap", json!({"name": other_tap})).unwrap();
    let helper2 = helper.clone();
    let left = h.run(move || helper2.host.nft.list().unwrap()).unwrap();
    assert!(left.is_empty(), "{left:?}");
}
