//! `banger vm create` to SSH-ready with the real daemon and a real Debian
//! guest (QEMU/TCG), N times one after the other, printed as JSON: the
//! whole create as the CLI sees it and the `boot_to_ssh` phase, p50/p95/
//! min/max. Opt-in: runs only with `BANGER_GUEST_CREATE_RUNS=N` set (each
//! run boots a guest); the image is the real-guest tests' cached Debian
//! image, or `BANGER_GUEST_CREATE_SEED=DIR` (e.g. an older recipe's, to
//! compare). Asserts only that every create succeeds and answers `vm exec`.

mod common;

use banger_testkit::bench::stats;
use common::guest_cache;
use common::guest_net::{gate, GuestNet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn create_to_ssh_ready_on_the_default_image() {
    if let Err(why) = gate() {
        println!("skipped: {why}");
        return;
    }
    let Some(runs) = std::env::var("BANGER_GUEST_CREATE_RUNS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        println!("skipped: set BANGER_GUEST_CREATE_RUNS=N to boot N guests");
        return;
    };
    let seed = match std::env::var_os("BANGER_GUEST_CREATE_SEED") {
        Some(d) => PathBuf::from(d),
        None => {
            let kernels = bangerd::images::kernel::host_kernels(
                Path::new("/boot"),
                Path::new("/lib/modules"),
            );
            guest_cache::debian_dir(&format!("{kernels:?}"))
        }
    };
    if !guest_cache::is_cached(&seed) {
        println!(
            "skipped: no image in {} (a real-guest test builds it)",
            seed.display()
        );
        return;
    }
    let g = GuestNet::start_env(&[("BANGER_DEFAULT_IMAGE_SEED", &seed)]);
    // The first create imports the default image and stops there.
    let out = g.banger(&["vm", "create", "seed", "--no-start"]);
    assert!(
        text(&out.stderr).contains("importing it from"),
        "{}",
        text(&out.stderr)
    );
    let (mut whole, mut boot) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let name = format!("speed{i}");
        let t = Instant::now();
        let out = g.banger(&[
            "vm", "create", &name, "--vcpus", "1", "--memory", "512", "--json",
        ]);
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stderr),
            g.consoles()
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let b = v["timings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["phase"] == "boot_to_ssh")
            .and_then(|p| p["ms"].as_f64())
            .unwrap();
        let exec = g.banger(&["vm", "exec", &name, "true"]);
        assert!(exec.status.success(), "{}", text(&exec.stderr));
        println!(
            "run {i}: create {:.2} s, boot_to_ssh {:.2} s",
            took.as_secs_f64(),
            b / 1e3
        );
        whole.push(took);
        boot.push(Duration::from_secs_f64(b / 1e3));
        let rm = g.banger(&["vm", "rm", "--force", &name]);
        assert!(rm.status.success(), "{}", text(&rm.stderr));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "image": seed.display().to_string(),
            "runs": runs,
            "create_ms": stats(&whole),
            "boot_to_ssh_ms": stats(&boot),
            "loadavg": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        })
    );
}
