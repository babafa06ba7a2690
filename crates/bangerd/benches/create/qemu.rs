//! The create bench on QEMU with a real guest: the shared cached Debian
//! image (built into the cache once per recipe if missing, as the
//! real-guest tests do), `vm create` at each concurrency level until the
//! guest's own sshd answers, each VM removed (untimed) once ready so at
//! most `conc` guests run at once; JSON: p50/p95 of create→SSH-ready and
//! of the control plane, the phases, the host load, and whether the
//! issue's target (create→SSH-ready p50 ≤ 8 s at concurrency 1) is met.
//!
//! `BANGER_BENCH_CREATE_VMM=qemu`; env: `BANGER_BENCH_CREATE_QEMU_N`
//! (creates per level, at least the level's concurrency; default 4),
//! `BANGER_BENCH_CREATE_QEMU_LEVELS` (default `1,4,10`),
//! `BANGER_BENCH_CREATE_QEMU_MEMORY` (MiB per guest, default 256),
//! `BANGER_BENCH_CREATE_QEMU_TIMEOUT` (seconds to SSH-ready, default 900),
//! `BANGER_BENCH_CREATE_QEMU_IMAGE` (another cached image directory).

use super::guest_cache;
use super::host::{self, Skip};
use super::{level, level_json, p50, ratio, LevelCfg, Sample};
use bangerd::images::{build, catalog, kernel};
use bangerd::progress::Progress;
use bangerd::store::Store;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::{Duration, Instant};

use banger_testkit::bench::{ms, pct};

/// The target: create→SSH-ready p50 at concurrency 1, QEMU/TCG.
const TARGET_C1_P50: Duration = Duration::from_secs(8);

/// How much to run.
pub struct QemuOpts {
    /// Creates per level (a level runs at least its concurrency's worth).
    pub n: usize,
    pub levels: Vec<usize>,
    pub memory_mib: u32,
    /// One untimed create first (page cache, banger's SSH key, NAT).
    pub warm: bool,
    pub ready_timeout: Duration,
}

impl QemuOpts {
    pub fn from_env() -> QemuOpts {
        let get = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let levels = std::env::var("BANGER_BENCH_CREATE_QEMU_LEVELS")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .filter(|v: &Vec<usize>| !v.is_empty())
            .unwrap_or_else(|| vec![1, 4, 10]);
        QemuOpts {
            n: get("BANGER_BENCH_CREATE_QEMU_N", 4) as usize,
            levels,
            memory_mib: get("BANGER_BENCH_CREATE_QEMU_MEMORY", 256) as u32,
            warm: true,
            ready_timeout: Duration::from_secs(get("BANGER_BENCH_CREATE_QEMU_TIMEOUT", 900)),
        }
    }
}

fn host_kernels() -> String {
    format!(
        "{:?}",
        kernel::host_kernels(Path::new("/boot"), Path::new("/lib/modules"))
    )
}

/// Why the QEMU mode cannot run here, if it cannot.
pub fn gate() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (taps, a bridge, nftables, cgroups)".into());
    }
    if !bangerd::vmm::registry::Registry::default()
        .qemu_bin
        .is_file()
    {
        return Err("qemu-system-x86_64 not installed".into());
    }
    if kernel::host_kernels(Path::new("/boot"), Path::new("/lib/modules")).is_empty() {
        return Err("no Debian kernel in /boot".into());
    }
    let cached = guest_cache::debian_dir(&host_kernels());
    if !guest_cache::is_cached(&cached) && std::env::var_os("BANGER_SKIP_NETWORK_TESTS").is_some() {
        return Err(format!(
            "{} is not cached and BANGER_SKIP_NETWORK_TESTS is set (building it downloads from the Debian mirror)",
            cached.display()
        ));
    }
    Ok(())
}

/// The cached Debian image as image `base` (built through the daemon's
/// build path and cached first if this recipe is not); what it is.
/// `BANGER_BENCH_CREATE_QEMU_IMAGE` names another cached image directory
/// (`debian-bookworm-<key>`, e.g. another branch's recipe) to use instead.
pub fn import_debian(store: &Store, state_dir: &Path) -> Result<String, Skip> {
    let kernels = host_kernels();
    let given = std::env::var_os("BANGER_BENCH_CREATE_QEMU_IMAGE").map(std::path::PathBuf::from);
    let cached = given
        .clone()
        .unwrap_or_else(|| guest_cache::debian_dir(&kernels));
    let progress = Progress::new(tokio::sync::mpsc::unbounded_channel().0);
    let _lock = guest_cache::lock();
    if given.is_some() && !guest_cache::is_cached(&cached) {
        return Err(Skip(format!(
            "BANGER_BENCH_CREATE_QEMU_IMAGE: no image in {}",
            cached.display()
        )));
    }
    let how = if guest_cache::is_cached(&cached) {
        let initrd = cached.join(catalog::INITRD);
        let req = banger_proto::api::ImageImport {
            name: "base".into(),
            rootfs: cached.join(catalog::ROOTFS).display().to_string(),
            kernel: cached.join(catalog::KERNEL).display().to_string(),
            initrd: initrd.is_file().then(|| initrd.display().to_string()),
        };
        catalog::import(store, state_dir, &req, &progress)
            .map_err(|e| Skip(bangerd::render_chain(&e)))?;
        "cached"
    } else {
        eprintln!("create bench: building {} (once)", cached.display());
        let req = banger_proto::api::ImageBuild {
            name: "base".into(),
            from_oci: None,
            debian: Some("bookworm".into()),
            kernel: None,
            headroom_mib: None,
            mirror: None,
        };
        let img = build::build(store, state_dir, &Default::default(), &req, &progress)
            .map_err(|e| Skip(bangerd::render_chain(&e)))?;
        guest_cache::keep(&catalog::images_dir(state_dir).join(&img.id), &cached);
        "built now and cached"
    };
    let how = if given.is_some() {
        "BANGER_BENCH_CREATE_QEMU_IMAGE"
    } else {
        how
    };
    Ok(format!("{how}: {}", cached.display()))
}

/// The recipe key in an image's description (`…debian-bookworm-<key>`).
fn image_key(image: &str) -> String {
    image
        .rsplit("debian-bookworm-")
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string()
}

/// `/proc/loadavg`'s three figures.
fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The ids of the daemon's VMs.
fn vm_ids(d: &bangerd::daemon::Daemon) -> Vec<String> {
    d.store
        .read(|c| {
            let mut s = c.prepare("SELECT id FROM vms")?;
            let r = s
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>();
            r
        })
        .unwrap_or_default()
}

/// SIGINT or SIGTERM (the run stops and cleans up instead of leaving
/// guests in their own sessions behind); which one.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut i), Ok(mut t)) => tokio::select! {
            _ = i.recv() => "SIGINT",
            _ = t.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

/// The QEMU part of the bench; JSON, or why it could not run.
pub fn run(o: &QemuOpts) -> Result<Value, Skip> {
    gate().map_err(|why| Skip(format!("QEMU mode: {why}")))?;
    // Made before the runtime, so dropped after it: an interrupted run's
    // create tasks are gone before `Env` kills what they left.
    let env = host::env(host::Kind::Qemu {
        ready_timeout: o.ready_timeout,
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| Skip(e.to_string()))?;
    let (backend, why) = bangerd::vms::run::backend_for(&env.d, "bench");
    let cfg = LevelCfg {
        memory_mib: o.memory_mib,
        remove_each: true,
    };
    let load_at_start = loadavg();
    let work = async {
        let warm = if o.warm {
            let s = level(&env, 1, 1, cfg).await?;
            json!(ms(s[0].total))
        } else {
            Value::Null
        };
        let mut levels = Map::new();
        let mut by_level: Vec<(usize, Vec<Sample>)> = Vec::new();
        for &c in &o.levels {
            let n = o.n.max(c);
            let t = Instant::now();
            let s = level(&env, c, n, cfg).await?;
            let mut j = level_json(&s);
            j["wall_s"] = json!((t.elapsed().as_secs_f64() * 10.0).round() / 10.0);
            j["load_after"] = json!(loadavg());
            levels.insert(c.to_string(), j);
            by_level.push((c, s));
        }
        Ok::<_, Skip>((warm, levels, by_level))
    };
    let out = rt.block_on(async {
        tokio::pin!(work);
        let sig = tokio::select! {
            r = &mut work => return r,
            sig = interrupted() => sig,
        };
        // As `vm rm --force` does: each create under way is cancelled, tears
        // its VM down and undoes itself; no new one starts.
        eprintln!("create bench: {sig}: cancelling the creates under way");
        super::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
        let d = env.d.clone();
        let canceller = tokio::spawn(async move {
            loop {
                for id in vm_ids(&d) {
                    d.vmms.cancel(&id);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let r = tokio::time::timeout(Duration::from_secs(60), &mut work).await;
        canceller.abort();
        Err(Skip(format!(
            "interrupted by {sig}; the creates under way {}",
            match r {
                Ok(_) => "were cancelled and undone",
                Err(_) => "did not give up within 60 s (killed on the way out)",
            }
        )))
    });
    let (warm, levels, by_level) = out?;
    let of = |c: usize, f: fn(&Sample) -> Duration, p: usize| {
        by_level.iter().find(|x| x.0 == c).map(|x| {
            let mut v: Vec<Duration> = x.1.iter().map(f).collect();
            v.sort();
            pct(&v, p)
        })
    };
    let total = |s: &Sample| s.total;
    let control = |s: &Sample| s.control;
    let c1_p50 = of(1, total, 50);
    let max = o.levels.iter().copied().max().unwrap_or(1);
    let hi_p95 = of(max, control, 95);
    let c1_control = of(1, control, 50);
    let c1_boot = by_level.iter().find(|x| x.0 == 1).and_then(|x| {
        let d: Vec<Duration> =
            x.1.iter()
                .flat_map(|s| {
                    s.phases
                        .iter()
                        .filter(|p| p.0 == banger_proto::api::GUEST_PHASE)
                })
                .map(|p| p.1)
                .collect();
        (!d.is_empty()).then(|| p50(&d))
    });
    Ok(json!({
        "vmm": format!("{} ({why})", backend.as_str()),
        "image": env.image,
        "image_recipe_key": image_key(&env.image),
        "this_tree_recipe_key": guest_cache::debian_recipe_key(&host_kernels()),
        "guest": { "vcpus": 1, "memory_mib": o.memory_mib },
        "host_steps": env.host,
        "disk_driver": env.driver,
        "readiness": "the guest's own sshd banner at its address on the bench's bridge",
        "n_per_level": o.n,
        "levels_note": "each level runs max(n, concurrency) creates; each VM is removed (untimed) once SSH-ready, so at most `concurrency` guests run at once",
        "warm_up_create_to_ssh_ms": warm,
        "load_at_start": load_at_start,
        "levels": levels,
        "targets": {
            "create_to_ssh_p50_c1_le_8s": c1_p50.map(|d| d <= TARGET_C1_P50),
        },
        "create_to_ssh_p50_c1_ms": c1_p50.map(ms),
        "control_plane_p95_top_over_p50_c1": hi_p95.zip(c1_control).map(|(a, b)| ratio(a, b)),
        "top_level": max,
        "boot_to_ssh_note": "the guest's own boot (kernel + systemd to sshd) under the backend above",
        "c1_boot_to_ssh_p50_ms": c1_boot.map(ms),
    }))
}
