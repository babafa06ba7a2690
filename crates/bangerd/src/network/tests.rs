use super::*;
use crate::privops::RecordingPriv;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;
use std::collections::HashSet;

fn plan(subnet: &str) -> NetPlan {
    NetPlan {
        bridge: "bgtest-br0".into(),
        subnet: subnet.parse().unwrap(),
        domain: "vm".into(),
    }
}

fn route(dst: &str, prefix: u8, dev: &str) -> HostRoute {
    HostRoute {
        dst: dst.parse().unwrap(),
        prefix,
        dev: dev.into(),
    }
}

/// A run root where systemd-resolved is (or is not) running.
fn run_root(resolved: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    if resolved {
        let p = d.path().join("systemd/resolve");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("io.systemd.Resolve"), "").unwrap();
    }
    d
}

// 127.0.0.0/24: its gateway 127.0.0.1 is bindable without a bridge.
const LOOP: &str = "127.0.0.0/24";

#[test]
fn start_up_asks_the_helper_exactly_this() {
    let p = plan(LOOP);
    let privops = RecordingPriv::new();
    let run = run_root(true);
    let routes = [route("0.0.0.0", 0, "eth0"), route("192.0.2.0", 24, "eth0")];
    let up = set_up(&p, &privops, &routes, run.path()).unwrap();
    let dns = up.dns.expect("DNS bound");
    assert_ne!(dns.port, 53, "an unprivileged port");
    assert_eq!(dns.udp.local_addr().unwrap(), dns.tcp.local_addr().unwrap());
    assert_eq!(
        privops.calls(),
        vec![
            (
                "priv.ensure_bridge".to_string(),
                json!({"name": "bgtest-br0", "address": "127.0.0.1/24"})
            ),
            (
                "priv.ensure_dns_redirect".to_string(),
                json!({"bridge": "bgtest-br0", "port": dns.port})
            ),
            (
                "priv.sync_resolver_routing".to_string(),
                json!({"bridge": "bgtest-br0", "resolver": "127.0.0.1", "domain": "vm"})
            ),
        ]
    );
    assert_eq!(up.status.resolver, Resolver::Routed);
    assert!(up.status.problems.is_empty());
    let c = up.status.check();
    assert_eq!(c.status, "ok", "{c:?}");
    assert_eq!(
        c.detail,
        "systemd-resolved routes ~vm to banger's DNS at 127.0.0.1:53 on bgtest-br0"
    );
}

#[test]
fn without_resolved_doctor_prints_the_alternative() {
    let privops = RecordingPriv::new();
    let run = run_root(false);
    let up = set_up(&plan(LOOP), &privops, &[], run.path()).unwrap();
    let methods: Vec<String> = privops.calls().into_iter().map(|c| c.0).collect();
    assert_eq!(
        methods,
        ["priv.ensure_bridge", "priv.ensure_dns_redirect"],
        "no resolver routing without resolved"
    );
    assert_eq!(up.status.resolver, Resolver::Absent);
    let c = up.status.check();
    assert_eq!(c.status, "warn");
    assert!(c.detail.ends_with("server=/vm/127.0.0.1"), "{c:?}");
}

#[test]
fn a_colliding_subnet_is_refused_before_any_request() {
    let privops = RecordingPriv::new();
    let run = run_root(true);
    let routes = [route("10.0.0.0", 8, "eth0"), route("0.0.0.0", 0, "eth0")];
    let e = set_up(&plan("10.214.0.0/24"), &privops, &routes, run.path()).unwrap_err();
    assert_eq!(
        crate::render_chain(&e),
        "subnet 10.214.0.0/24 collides with the host route 10.0.0.0/8 on eth0; choose another subnet in install.toml"
    );
    assert!(privops.calls().is_empty());
    // The bridge's own route is not a collision.
    let own = [route("10.214.0.0", 24, "bgtest-br0")];
    assert!(set_up(&plan(LOOP), &privops, &own, run.path()).is_ok());
}

#[test]
fn refused_privileges_are_reported_not_fatal() {
    let privops = RecordingPriv::new();
    privops.answer(
        "priv.ensure_bridge",
        Err((-32000, "sudo: a password is required".into())),
    );
    privops.answer(
        "priv.sync_resolver_routing",
        Err((-32000, "resolvectl failed".into())),
    );
    let run = run_root(true);
    let up = set_up(&plan(LOOP), &privops, &[], run.path()).unwrap();
    assert_eq!(
        up.status.problems,
        vec!["priv.ensure_bridge refused (-32000): sudo: a password is required"]
    );
    assert!(
        matches!(up.status.resolver, Resolver::Failed(ref e) if e.contains("resolvectl failed"))
    );
    let c = up.status.check();
    assert_eq!(c.status, "warn");
    assert!(
        c.detail
            .starts_with("network set-up incomplete: priv.ensure_bridge refused"),
        "{c:?}"
    );
}

#[test]
fn config_is_parsed_and_bad_config_refused() {
    let mut cfg = InstallConfig::for_owner(1000, 1000, "/home/u".into());
    let p = NetPlan::from_config(&cfg).unwrap();
    assert_eq!(
        (p.bridge.as_str(), p.subnet.to_string(), p.domain.as_str()),
        ("banger0", "172.30.0.0/24".to_string(), "vm")
    );
    cfg.subnet = "172.30.0.1/24".into();
    assert!(NetPlan::from_config(&cfg).is_err());
    cfg.subnet = "172.30.0.0/24".into();
    cfg.domain = "v m".into();
    assert!(NetPlan::from_config(&cfg).is_err());
}

/// A store with one image and the VMs `names` (id = `id-<name>`).
fn store_with_vms(path: &Path, names: &[String]) -> Store {
    let store = Store::open(path).unwrap();
    store
        .write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO images VALUES ('img','base','r','k',NULL,'x','y',1,'import',0)",
                [],
            )?;
            for n in names {
                tx.execute(
                    "INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_driver, created_at)
                     VALUES (?1, ?2, 'img', 'created', 1, 128, 'copy', 0)",
                    [format!("id-{n}"), n.clone()],
                )?;
            }
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
    store
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("vm{i}")).collect()
}

fn assert_distinct(ips: &[Ipv4Addr], subnet: &Subnet) {
    let set: HashSet<_> = ips.iter().collect();
    assert_eq!(set.len(), ips.len(), "an address handed out twice: {ips:?}");
    for ip in ips {
        assert!(subnet.contains(*ip) && *ip != subnet.gateway(), "{ip}");
    }
}

#[test]
fn twenty_concurrent_creates_on_one_store_get_distinct_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let vms = names(20);
    let store = Arc::new(store_with_vms(&dir.path().join("state.db"), &vms));
    let subnet: Subnet = "172.30.0.0/24".parse().unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(20));
    let threads: Vec<_> = vms
        .iter()
        .map(|n| {
            let (store, barrier, id) = (store.clone(), barrier.clone(), format!("id-{n}"));
            std::thread::spawn(move || {
                barrier.wait();
                allocate_ip(&store, &subnet, &id).unwrap()
            })
        })
        .collect();
    let ips: Vec<Ipv4Addr> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_distinct(&ips, &subnet);
    let rows: i64 = store
        .read(|c| c.query_row("SELECT count(*) FROM ip_allocations", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(rows, 20);
}

#[test]
fn twenty_concurrent_creates_on_separate_handles_get_distinct_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let vms = names(20);
    drop(store_with_vms(&db, &vms));
    let subnet: Subnet = "172.30.0.0/24".parse().unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(20));
    let threads: Vec<_> = vms
        .iter()
        .map(|n| {
            let (db, barrier, id) = (db.clone(), barrier.clone(), format!("id-{n}"));
            std::thread::spawn(move || {
                let store = Store::open(&db).unwrap();
                barrier.wait();
                allocate_ip(&store, &subnet, &id).unwrap()
            })
        })
        .collect();
    let ips: Vec<Ipv4Addr> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_distinct(&ips, &subnet);
    // Exactly .2 ..= .21: the lowest free addresses, none skipped.
    let mut sorted = ips.clone();
    sorted.sort();
    let want: Vec<Ipv4Addr> = (2..=21).map(|i| Ipv4Addr::new(172, 30, 0, i)).collect();
    assert_eq!(sorted, want);
}

#[test]
fn allocation_is_stable_freed_on_delete_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_vms(&dir.path().join("state.db"), &names(6));
    let subnet: Subnet = "172.30.0.0/29".parse().unwrap(); // guests .2 ..= .6
    let a = allocate_ip(&store, &subnet, "id-vm0").unwrap();
    assert_eq!(a, Ipv4Addr::new(172, 30, 0, 2));
    assert_eq!(allocate_ip(&store, &subnet, "id-vm0").unwrap(), a, "stable");
    for i in 1..5 {
        allocate_ip(&store, &subnet, &format!("id-vm{i}")).unwrap();
    }
    let full = allocate_ip(&store, &subnet, "id-vm5").unwrap_err();
    assert_eq!(full.to_string(), "no free address left in 172.30.0.0/29");
    // Deleting a VM frees its address (FK cascade); the next VM reuses it.
    store
        .write(|tx| tx.execute("DELETE FROM vms WHERE id = 'id-vm0'", []))
        .unwrap();
    assert_eq!(allocate_ip(&store, &subnet, "id-vm5").unwrap(), a);
    assert!(release_ip(&store, "id-vm5").unwrap());
    assert!(!release_ip(&store, "id-vm5").unwrap());
    // An allocation for a VM that does not exist is refused by the FK.
    assert!(allocate_ip(&store, &subnet, "id-nope").is_err());
}

#[test]
fn link_identity_is_derived_stably_from_the_id() {
    let l = vm_link("0123456789abcdef");
    assert_eq!(l, vm_link("0123456789abcdef"));
    assert_eq!(l.tap.len(), 15);
    assert!(l.tap.starts_with("banger-") && l.mac.starts_with("02:"));
    assert_ne!(l, vm_link("0123456789abcdee"));
}

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new(0x5151, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

#[test]
fn dns_answers_a_vm_name_from_the_state_db() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = store_with_vms(&db, &["dev".to_string(), "other".to_string()]);
    let subnet: Subnet = "172.30.0.0/24".parse().unwrap();
    allocate_ip(&store, &subnet, "id-other").unwrap();
    let dev_ip = allocate_ip(&store, &subnet, "id-dev").unwrap();
    assert_eq!(vm_ip(&store, "DEV").unwrap(), Some(dev_ip));

    let sockets = bind_dns(Ipv4Addr::LOCALHOST).unwrap();
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), sockets.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = DnsServer::spawn(
        rt.handle(),
        sockets,
        DnsConfig::new("vm", vec![]),
        Arc::new(StoreRecords::open(&db).unwrap()),
    )
    .unwrap();
    let ask = |name: &str| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.send_to(&query(name), addr).unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = s.recv_from(&mut buf).unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    };
    let m = ask("dev.vm.");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let ips: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(A(ip)) => Some(ip),
            _ => None,
        })
        .collect();
    assert_eq!(ips, vec![dev_ip]);
    assert_eq!(
        ask("nope.vm.").metadata.response_code,
        ResponseCode::NXDomain
    );
    // Names are read per query: a deleted VM is no longer answered.
    store
        .write(|tx| tx.execute("DELETE FROM vms WHERE id = 'id-dev'", []))
        .unwrap();
    assert_eq!(
        ask("dev.vm.").metadata.response_code,
        ResponseCode::NXDomain
    );
    drop(server);
}

#[test]
fn dns_upstreams_skip_the_server_itself() {
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("resolv.conf");
    std::fs::write(&rc, "nameserver 172.30.0.1\nnameserver 192.0.2.53\n").unwrap();
    let cfg = dns_config(&plan("172.30.0.0/24"), 40000, &rc);
    assert_eq!(cfg.upstreams, vec!["192.0.2.53:53".parse().unwrap()]);
    assert_eq!(cfg.domain, "vm");
}
