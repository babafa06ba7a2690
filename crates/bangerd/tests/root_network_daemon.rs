//! The daemon's real network start-up, in network namespaces made here:
//! `H` stands in for the host (start-up runs there against `DirectOps`,
//! the in-process helper, with a `bgtest-` bridge, subnet 10.214.0.0/24
//! and a `bgtest_` nft table); `G` stands in for a guest with the address
//! the daemon allocated, asking `<vm>.vm` at the bridge address port 53,
//! which the helper's redirect carries to the daemon's unprivileged port.
//! Everything lives in the namespaces and goes with them on drop.

mod common;

use banger_core::net::Subnet;
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_proto::install::InstallConfig;
use banger_sys::net::RealNet;
use banger_sys::netns::NamedNetns;
use banger_sys::nft::{Nft, TableName};
use banger_sys::runner::{Cmd, HostRunner, Runner};
use bangerd::network::dns::DnsConfig;
use bangerd::network::{self, DnsServer, NetPlan, Resolver, StoreRecords};
use bangerd::privops::{DirectOps, PrivOps};
use bangerd::store::Store;
use common::dns::{resolve_tcp, resolve_udp};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

fn nft_ruleset(ns: &NamedNetns) -> String {
    let out = HostRunner
        .run(&Cmd::new("ip").args(["netns", "exec", ns.name(), "nft", "list", "ruleset"]))
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn root_daemon_start_up_serves_vm_names_to_a_guest_on_port_53() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: needs root for network namespaces, bridges and nftables");
        return;
    }
    let s = banger_testkit::unique_suffix();
    let h = NamedNetns::add(&format!("bgtest-{s}-dh")).unwrap();
    let g = NamedNetns::add(&format!("bgtest-{s}-dg")).unwrap();
    let bridge = format!("bgtest-br{s}");
    let subnet: Subnet = "10.214.0.0/24".parse().unwrap();

    // The install config and the in-process helper, with a test nft table.
    let mut cfg = InstallConfig::for_owner(4242, 4242, "/nonexistent".into());
    cfg.bridge = bridge.clone();
    cfg.subnet = subnet.to_string();
    let table = format!("bgtest_{s}");
    let mut host = Host::real();
    host.nft = Arc::new(Nft::new(
        Arc::new(HostRunner),
        TableName::new(&table).unwrap(),
        "/proc",
    ));
    let privops: Arc<dyn PrivOps> = Arc::new(DirectOps::new(Helper {
        cfg: cfg.clone(),
        host,
    }));
    let plan = NetPlan::from_config(&cfg).unwrap();

    // The daemon's start-up, in H; resolved is absent there (empty run root).
    let run_root = tempfile::tempdir().unwrap();
    let run_path = run_root.path().to_path_buf();
    let (p2, plan2) = (privops.clone(), plan.clone());
    let (up, took) = h
        .run(move || {
            let t = Instant::now();
            let routes = network::host_routes(&RealNet::default()).unwrap();
            let up = network::set_up(&plan2, p2.as_ref(), &routes, &run_path);
            (up, t.elapsed())
        })
        .unwrap();
    let up = up.unwrap();
    println!("measured: daemon network start-up in a fresh netns took {took:?}");
    assert!(up.status.problems.is_empty(), "{:?}", up.status.problems);
    assert_eq!(up.status.resolver, Resolver::Absent);
    let sockets = up.dns.expect("DNS bound on the bridge address");
    assert_eq!(
        sockets.udp.local_addr().unwrap().ip(),
        std::net::IpAddr::V4(Ipv4Addr::new(10, 214, 0, 1))
    );
    let port = sockets.port;
    assert_ne!(port, 53);
    let ruleset = nft_ruleset(&h);
    assert!(
        ruleset.contains(&format!("dnat ip to 10.214.0.1:{port}")),
        "{ruleset}"
    );

    // A colliding subnet is refused by the same start-up (routes read in H).
    let mut bad = plan.clone();
    bad.subnet = "10.214.0.0/16".parse().unwrap();
    bad.bridge = "bgtest-other".into();
    let p3 = privops.clone();
    let run_path = run_root.path().to_path_buf();
    let refused = h
        .run(move || {
            let routes = network::host_routes(&RealNet::default()).unwrap();
            network::set_up(&bad, p3.as_ref(), &routes, &run_path).map(|_| ())
        })
        .unwrap()
        .unwrap_err();
    assert!(
        refused.to_string().starts_with(&format!(
            "subnet 10.214.0.0/16 collides with the host route 10.214.0.0/24 on {bridge}"
        )),
        "{refused}"
    );

    // The state DB: VM "dev" gets an address; "other" too.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = Store::open(&db).unwrap();
    store
        .write(|tx| {
            tx.execute(
                "INSERT INTO images VALUES ('img','base','r','k',NULL,'x','y',1,'import',0)",
                [],
            )?;
            for (id, name) in [("vm-dev", "dev"), ("vm-other", "other")] {
                tx.execute(
                    "INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_driver, created_at)
                     VALUES (?1, ?2, 'img', 'created', 1, 128, 'copy', 0)",
                    [id, name],
                )?;
            }
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
    let dev_ip = network::allocate_ip(&store, &subnet, "vm-dev").unwrap();
    let other_ip = network::allocate_ip(&store, &subnet, "vm-other").unwrap();
    assert_eq!(
        (dev_ip, other_ip),
        (Ipv4Addr::new(10, 214, 0, 2), Ipv4Addr::new(10, 214, 0, 3))
    );

    // DNS from the state DB on the sockets start-up bound in H.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = DnsServer::spawn(
        rt.handle(),
        sockets,
        DnsConfig::new(&plan.domain, vec![]),
        Arc::new(StoreRecords::open(&db).unwrap()),
    )
    .unwrap();

    // The guest stand-in: a veth whose bridge end carries a banger tap
    // name, configured with dev's address and MAC.
    let link = network::vm_link("vm-dev");
    let port_name = format!("banger-t{s}d");
    h.ip(&[
        "link",
        "add",
        &port_name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        g.name(),
    ])
    .unwrap();
    h.ip(&["link", "set", &port_name, "master", &bridge, "up"])
        .unwrap();
    g.ip(&["link", "set", "eth0", "address", &link.mac])
        .unwrap();
    g.ip(&["addr", "add", &format!("{dev_ip}/24"), "dev", "eth0"])
        .unwrap();
    g.ip(&["link", "set", "eth0", "up"]).unwrap();

    let dns53 = SocketAddr::new(plan.gateway().into(), 53);
    let (udp, tcp) = g
        .run(move || {
            (
                resolve_udp(dns53, "other.vm."),
                resolve_tcp(dns53, "dev.vm."),
            )
        })
        .unwrap();
    assert_eq!(udp, Ok(vec![other_ip]), "other.vm over UDP at :53");
    assert_eq!(tcp, Ok(vec![dev_ip]), "dev.vm over TCP at :53");
    let nx = g.run(move || resolve_udp(dns53, "gone.vm.")).unwrap();
    assert_eq!(nx, Err("NXDomain".to_string()));

    // The host itself (output chain) also reaches it at :53.
    let from_host = h.run(move || resolve_udp(dns53, "dev.vm.")).unwrap();
    assert_eq!(from_host, Ok(vec![dev_ip]));

    // Start-up again is idempotent: the redirect follows the new port.
    drop(server);
    let (p4, plan4) = (privops.clone(), plan.clone());
    let run_path = run_root.path().to_path_buf();
    let again = h
        .run(move || network::set_up(&plan4, p4.as_ref(), &[], &run_path))
        .unwrap()
        .unwrap();
    assert!(
        again.status.problems.is_empty(),
        "{:?}",
        again.status.problems
    );
    let port2 = again.dns.as_ref().unwrap().port;
    let ruleset = nft_ruleset(&h);
    assert_eq!(
        ruleset.matches("dnat ip to").count(),
        4,
        "two chains, UDP and TCP, replaced not appended: {ruleset}"
    );
    assert!(
        ruleset.contains(&format!("10.214.0.1:{port2}")),
        "{ruleset}"
    );
    // H, G, their links and the nft table go with the namespaces on drop.
}
