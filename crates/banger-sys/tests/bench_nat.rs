//! The NAT bench itself works: it runs with a small N (as root) and
//! prints every figure, or skips saying why. No timing is asserted.

#[path = "../benches/nat.rs"]
mod nat;

#[test]
fn nat_bench_runs_with_a_small_n() {
    match nat::run(5) {
        Ok(v) => {
            assert_eq!(v["n"], 5);
            for k in [
                "ensure_ms",
                "floor_add_element_ms",
                "clear_ms",
                "floor_delete_element_ms",
            ] {
                for p in ["p50", "p95", "min", "max"] {
                    assert!(v[k][p].as_f64().is_some_and(|x| x > 0.0), "{k}.{p}: {v}");
                }
            }
            for k in [
                "first_ensure_ms",
                "last_ensure_ms",
                "ensure_p50_over_floor_p50",
            ] {
                assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {v}");
            }
            assert!(v["target_met"].is_boolean());
        }
        Err(nat::Skip(why)) => {
            assert!(
                !rustix::process::geteuid().is_root(),
                "root, yet skipped: {why}"
            );
            assert!(why.contains("root"), "{why}");
        }
    }
}

#[test]
fn nat_bench_skips_without_root_or_nft() {
    let nat::Skip(why) = nat::check(false, "nft").unwrap_err();
    assert_eq!(why, "needs root for network namespaces and nftables");
    let nat::Skip(why) = nat::check(true, "/nonexistent/nft").unwrap_err();
    assert!(why.starts_with("/nonexistent/nft not runnable: "), "{why}");
}
