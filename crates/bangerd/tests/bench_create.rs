//! The create bench itself works: a small run (3 creates per level, 12 VMs
//! for the scaling figure) prints every figure; then, where a real guest
//! can run (root, QEMU, a host kernel, the Debian image cached or
//! buildable), its QEMU mode with one create at concurrency 1 prints
//! every figure too. No timing is asserted. Its own entry (no libtest
//! harness): the bench re-executes this binary as the Firecracker double.

#[path = "../benches/create.rs"]
mod create;

fn main() {
    if let Some(code) = create::host::double_mode() {
        std::process::exit(code);
    }
    let o = create::Opts {
        n: 3,
        levels: vec![1, 4],
        scale: 12,
        floor_n: 3,
        lag_n: 3,
    };
    let v = match create::run(&o) {
        Ok(v) => v,
        Err(create::host::Skip(why)) => panic!("the create bench failed: {why}"),
    };
    println!("{}", serde_json::to_string_pretty(&v).unwrap());
    for level in ["1", "4"] {
        let l = &v["levels"][level];
        assert_eq!(l["n"], 3, "{v}");
        for k in ["create_to_ssh_ms", "control_plane_ms"] {
            for p in ["p50", "p95", "min", "max"] {
                assert!(
                    l[k][p].as_f64().is_some_and(|x| x > 0.0),
                    "{level}.{k}.{p}: {v}"
                );
            }
        }
        for phase in banger_proto::api::PHASES {
            assert!(
                l["phases_p50_ms"][phase].as_f64().is_some(),
                "{level}: {phase}: {v}"
            );
        }
    }
    assert!(
        v["floor_ms"]["p50"].as_f64().is_some_and(|x| x > 0.0),
        "{v}"
    );
    assert!(
        v["control_plane_p50_over_floor_p50_c1"]
            .as_f64()
            .is_some_and(|x| x > 0.0),
        "{v}"
    );
    assert!(v["ssh_detect_lag_ms"]["p50"].as_f64().is_some(), "{v}");
    assert_eq!(v["scale"]["vms"], 12, "{v}");
    assert!(
        v["scale"]["last_over_first"]
            .as_f64()
            .is_some_and(|x| x > 0.0),
        "{v}"
    );
    // 12 VMs: no RSS at 50, but at the end.
    assert!(v["rss_mib_at_50_vms"].is_null(), "{v}");
    assert!(v["rss_mib_at_end"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    let root = rustix::process::geteuid().is_root();
    assert_eq!(v["floor_complete"], root, "{v}");
    assert_eq!(
        v["host_steps"],
        if root { "real" } else { "recorded" },
        "{v}"
    );
    qemu_mode();
    println!("bench_create: ok");
}

/// The QEMU mode with one real guest: every figure present.
fn qemu_mode() {
    if let Err(why) = create::qemu::gate() {
        println!("bench_create: QEMU mode skipped: {why}");
        return;
    }
    let o = create::qemu::QemuOpts {
        n: 1,
        levels: vec![1],
        memory_mib: 256,
        warm: false,
        ready_timeout: std::time::Duration::from_secs(600),
    };
    let v = match create::qemu::run(&o) {
        Ok(v) => v,
        Err(create::host::Skip(why)) => panic!("the create bench's QEMU mode failed: {why}"),
    };
    println!("{}", serde_json::to_string_pretty(&v).unwrap());
    let l = &v["levels"]["1"];
    assert_eq!(l["n"], 1, "{v}");
    for k in ["create_to_ssh_ms", "control_plane_ms"] {
        for p in ["p50", "p95", "min", "max"] {
            assert!(l[k][p].as_f64().is_some_and(|x| x > 0.0), "{k}.{p}: {v}");
        }
    }
    for phase in banger_proto::api::PHASES {
        // Firecracker's configure step: QEMU has none.
        if *phase != "vmm_configure" {
            assert!(l["phases_p50_ms"][phase].as_f64().is_some(), "{phase}: {v}");
        }
    }
    assert!(
        v["vmm"].as_str().is_some_and(|s| s.starts_with("qemu")),
        "{v}"
    );
    assert!(
        v["image_recipe_key"]
            .as_str()
            .is_some_and(|s| s.len() == 16),
        "{v}"
    );
    assert!(v["create_to_ssh_p50_c1_ms"].as_f64().is_some(), "{v}");
    assert!(
        v["targets"]["create_to_ssh_p50_c1_le_8s"].is_boolean(),
        "{v}"
    );
    assert_eq!(v["host_steps"], "real", "{v}");
}
