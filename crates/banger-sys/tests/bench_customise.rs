//! The customisation bench itself works: it runs with a tiny N (as root)
//! and prints every figure, or skips saying why. No timing is asserted.

#[path = "../benches/customise.rs"]
mod customise;

#[test]
fn customise_bench_runs_with_a_tiny_n() {
    match customise::run(2) {
        Ok(v) => {
            assert_eq!(v["n"], 2);
            assert_eq!(v["files"], 9);
            assert_eq!(v["parents_created"], 7, "{v}");
            for k in ["write_files_ms", "floor_one_debugfs_write_ms"] {
                for p in ["p50", "p95", "min", "max"] {
                    assert!(v[k][p].as_f64().is_some_and(|x| x > 0.0), "{k}.{p}: {v}");
                }
            }
            assert_eq!(v["debugfs_runs_after"], 1, "{v}");
            assert_eq!(v["debugfs_runs_before"], 26, "{v}");
            assert!(v["target_met"].is_boolean());
        }
        Err(customise::Skip(why)) => {
            assert!(
                !rustix::process::geteuid().is_root(),
                "root, yet skipped: {why}"
            );
            assert!(why.contains("root"), "{why}");
        }
    }
}

#[test]
fn customise_bench_skips_without_root_or_tools() {
    let customise::Skip(why) = customise::check(false, &["debugfs"]).unwrap_err();
    assert!(why.starts_with("needs root"), "{why}");
    let customise::Skip(why) = customise::check(true, &["/nonexistent/debugfs"]).unwrap_err();
    assert!(
        why.starts_with("/nonexistent/debugfs not runnable: "),
        "{why}"
    );
}
