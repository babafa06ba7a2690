//! Network bench (root, in a fresh network namespace): create and delete
//! 100 taps with their NAT set elements; per-VM setup and teardown percentiles.
//!
//! `cargo bench -p banger-sys --bench net`

use banger_sys::net::{NetOps, Owner, RealNet};
use banger_sys::netns::in_new_netns;
use banger_sys::nft::{Nft, TableName, VmNat};
use banger_sys::runner::HostRunner;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_testkit::bench::pct;

const N: u32 = 100;

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
    in_new_netns(|| {
        let net = RealNet::default();
        let br = "bgtest-bench";
        net.ensure_bridge(br, Ipv4Addr::new(172, 30, 0, 1), 24)
            .unwrap();
        let nft = Nft::new(
            Arc::new(HostRunner),
            TableName::new("bgtest_bench").unwrap(),
            "/proc",
        );
        let owner = Owner {
            uid: 1000,
            gid: 1000,
        };
        let vms: Vec<VmNat> = (0..N)
            .map(|i| VmNat {
                tap: format!("banger-t{i:05}"),
                guest_ip: Ipv4Addr::new(172, 30, 0, 2 + i as u8),
                bridge: br.into(),
            })
            .collect();
        let (mut tap_t, mut nat_t, mut setup, mut teardown) = (vec![], vec![], vec![], vec![]);
        let all = Instant::now();
        for vm in &vms {
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
        assert_eq!(nft.list().unwrap().len(), N as usize);
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
        println!("create {N} taps + NAT elements: {created:.2?}; delete them: {deleted:.2?}");
        report("per-VM setup (tap+NAT)", setup);
        report("  create_tap", tap_t);
        report("  ensure_nat", nat_t);
        report("per-VM teardown", teardown);
    })
    .unwrap();
}
