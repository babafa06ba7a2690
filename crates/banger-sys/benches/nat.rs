//! NAT set-up bench (root, in a fresh network namespace, `bgtest_` table):
//! `ensure_vm` for N distinct guest addresses (the first makes the static
//! ruleset; elements over nfnetlink, as the helper adds them), interleaved with the floor — one plain `nft add element` run
//! by `std::process::Command` — then `clear_vm` for each, interleaved with
//! one plain `nft delete element`; prints JSON.
//!
//! `cargo bench -p banger-sys --bench nat` (N from `BANGER_BENCH_NAT_N`, default 200)

use banger_sys::netns::in_new_netns;
use banger_sys::nft::{Cleared, Nft, TableName, VmNat};
use banger_sys::runner::HostRunner;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_testkit::bench::{ms, stats};

/// The target for one VM's NAT set-up, p50.
pub const TARGET_P50_MS: f64 = 3.0;

/// Why the bench did not run.
#[derive(Debug)]
pub struct Skip(pub String);

/// Whether the bench can run: as root, with `nft` (the program) present.
pub fn check(root: bool, nft: &str) -> Result<(), Skip> {
    if !root {
        return Err(Skip(
            "needs root for network namespaces and nftables".into(),
        ));
    }
    match Command::new(nft)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Skip(format!("{nft} --version failed ({s})"))),
        Err(e) => Err(Skip(format!("{nft} not runnable: {e}"))),
    }
}

fn mean(d: &[Duration]) -> f64 {
    ms(d.iter().sum::<Duration>() / d.len().max(1) as u32)
}

/// The i-th distinct guest address in 10.200.0.0/16.
fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, (i / 250) as u8, (i % 250) as u8 + 2)
}

/// Run the bench for `n` VMs (1..=60000).
pub fn run(n: usize) -> Result<Value, Skip> {
    check(rustix::process::geteuid().is_root(), "nft")?;
    let n = n.clamp(1, 60_000);
    in_new_netns(move || measure(n)).map_err(|e| Skip(format!("no network namespace: {e}")))
}

fn nft_cmd(args: &[&str]) {
    let out = Command::new("nft").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn measure(n: usize) -> Value {
    let table = format!("bgtest_nat_{}", banger_testkit::unique_suffix());
    let nft = Nft::new(
        Arc::new(HostRunner),
        TableName::new(&table).unwrap(),
        "/proc",
    )
    .with_netlink();
    let bridge = "bgtest-natbr";
    nft_cmd(&["add", "table", "inet", &table]);
    nft_cmd(&["add", "set", "inet", &table, "floor", "{ type ipv4_addr; }"]);
    let vms: Vec<VmNat> = (0..n)
        .map(|i| VmNat {
            tap: format!("banger-b{i:05}"),
            guest_ip: addr(i),
            bridge: bridge.into(),
        })
        .collect();
    let (mut ensure, mut floor, mut clear) = (vec![], vec![], vec![]);
    // Interleaved, so both see the same load from whatever else runs.
    for vm in &vms {
        let t = Instant::now();
        nft.ensure_vm(vm).unwrap();
        ensure.push(t.elapsed());
        let elem = format!("{{ {} }}", vm.guest_ip);
        let t = Instant::now();
        nft_cmd(&["add", "element", "inet", &table, "floor", &elem]);
        floor.push(t.elapsed());
    }
    assert_eq!(nft.list().unwrap().len(), n, "one element per VM");
    let mut floor_del = vec![];
    for vm in &vms {
        let t = Instant::now();
        assert_eq!(nft.clear_vm(vm).unwrap(), Cleared::Removed);
        clear.push(t.elapsed());
        let elem = format!("{{ {} }}", vm.guest_ip);
        let t = Instant::now();
        nft_cmd(&["delete", "element", "inet", &table, "floor", &elem]);
        floor_del.push(t.elapsed());
    }
    assert!(nft.list().unwrap().is_empty());
    nft.delete_table().unwrap();
    let w = n.min(10);
    let (e50, f50) = (
        stats(&ensure)["p50"].as_f64().unwrap(),
        stats(&floor)["p50"].as_f64().unwrap(),
    );
    json!({
        "bench": "nat",
        "n": n,
        "table": format!("inet {table}"),
        "elements_via": "nfnetlink (in-process, as the helper)",
        "ensure_ms": stats(&ensure),
        "first_ensure_ms": ms(ensure[0]),
        "second_ensure_ms": ms(ensure[n.min(2) - 1]),
        "last_ensure_ms": ms(ensure[n - 1]),
        "first_10_mean_ms": mean(&ensure[..w]),
        "last_10_mean_ms": mean(&ensure[n - w..]),
        "floor_add_element_ms": stats(&floor),
        "clear_ms": stats(&clear),
        "floor_delete_element_ms": stats(&floor_del),
        "ensure_p50_over_floor_p50": ((e50 / f50) * 100.0).round() / 100.0,
        "target_ensure_p50_ms": TARGET_P50_MS,
        "target_met": e50 <= TARGET_P50_MS,
    })
}

#[allow(dead_code)] // also compiled into tests/bench_nat.rs, which has its own entry
fn main() {
    let n = std::env::var("BANGER_BENCH_NAT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    match run(n) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap()),
        Err(Skip(why)) => println!("skipped: {why}"),
    }
}
