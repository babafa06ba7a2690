//! Network bench (root, in a fresh network namespace): create and delete
//! N taps with their NAT set elements; per-VM setup and teardown
//! percentiles, and the first 10 against the last 10 of each step (the
//! helper's `max_taps` count included): per-VM cost must not grow with N.
//!
//! `cargo bench -p banger-sys --bench net` (N from `BANGER_BENCH_NET_N`, default 100)

use banger_sys::net::{NetOps, Owner, RealNet};
use banger_sys::netns::in_new_netns;
use banger_sys::nft::{Nft, TableName, VmNat};
use banger_sys::runner::HostRunner;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_testkit::bench::pct;

/// Mean of the first and of the last 10, in ms.
fn growth(d: &[Duration]) -> (f64, f64) {
    let w = d.len().min(10);
    let mean =
        |x: &[Duration]| x.iter().sum::<Duration>().as_secs_f64() * 1000.0 / x.len().max(1) as f64;
    (mean(&d[..w]), mean(&d[d.len() - w..]))
}

fn report(what: &str, mut d: Vec<Duration>) {
    d.sort();
    println!(
        "{what:<28} n={} p50={:.2?} p90={:.2?} max={:.2?}",
        d.len(),
        pct(&d, 50),
        pct(&d, 90),
        d[d.len() - 1]
    );
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: needs root for network namespaces");
        return;
    }
    let n: u32 = std::env::var("BANGER_BENCH_NET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(10, 250);
    in_new_netns(move || {
        let net = RealNet::default();
        let br = "bgtest-bench";
        net.ensure_bridge(br, Ipv4Addr::new(172, 30, 0, 1), 24)
            .unwrap();
        let nft = Nft::new(
            Arc::new(HostRunner),
            TableName::new("bgtest_bench").unwrap(),
            "/proc",
        )
        .with_netlink(); // as the helper adds elements
        let owner = Owner {
            uid: 1000,
            gid: 1000,
        };
        let vms: Vec<VmNat> = (0..n)
            .map(|i| VmNat {
                tap: format!("banger-t{i:05}"),
                guest_ip: Ipv4Addr::new(172, 30, 0, 2 + i as u8),
                bridge: br.into(),
            })
            .collect();
        let (mut tap_t, mut nat_t, mut setup, mut teardown) = (vec![], vec![], vec![], vec![]);
        let (mut count_t, mut links_t) = (vec![], vec![]);
        let all = Instant::now();
        for (i, vm) in vms.iter().enumerate() {
            let t = Instant::now();
            assert_eq!(net.managed_tap_count().unwrap(), i);
            count_t.push(t.elapsed());
            // What the count used to be: every link dumped and decoded.
            let t = Instant::now();
            let taps = net.managed_links().unwrap();
            assert_eq!(
                taps.iter()
                    .filter(|l| l.kind.as_deref() == Some("tun"))
                    .count(),
                i
            );
            links_t.push(t.elapsed());
            let t0 = Instant::now();
            net.create_tap(&vm.tap, br, owner).unwrap();
            let t1 = Instant::now();
            nft.ensure_vm(vm).unwrap();
            let t2 = Instant::now();
            tap_t.push(t1 - t0);
            nat_t.push(t2 - t1);
            setup.push(t2 - t0);
        }
        let created = all.elapsed();
        assert_eq!(nft.list().unwrap().len(), n as usize);
        let del = Instant::now();
        for vm in &vms {
            let t0 = Instant::now();
            nft.clear_vm(vm).unwrap();
            net.delete_tap(&vm.tap).unwrap();
            teardown.push(t0.elapsed());
        }
        let deleted = del.elapsed();
        assert!(nft.list().unwrap().is_empty());
        nft.delete_table().unwrap();
        net.delete_bridge(br).unwrap();
        println!("create {n} taps + NAT elements: {created:.2?}; delete them: {deleted:.2?}");
        for (what, d) in [
            ("managed_tap_count", &count_t),
            ("managed_links", &links_t),
            ("create_tap", &tap_t),
            ("ensure_nat", &nat_t),
        ] {
            let (first, last) = growth(d);
            println!(
                "{what:<18} first 10 mean {first:.3} ms, last 10 mean {last:.3} ms ({:.2}x)",
                last / first
            );
        }
        report("per-VM setup (tap+NAT)", setup);
        report("  create_tap", tap_t);
        report("  ensure_nat", nat_t);
        report("per-VM teardown", teardown);
    })
    .unwrap();
}
