//! The create benchmark: N `vm create`s (started, to SSH-ready) at
//! concurrency 1, 4 and 10 through the daemon's own create path, on the
//! Firecracker double (this binary re-executed as the VMM); host steps real
//! as root (the helper's code in-process, a `bgtest-` bridge and nftables
//! table, the host's disk driver), recorded otherwise. Prints JSON: p50/p95
//! of create→SSH-ready and of the control plane (every phase but
//! `boot_to_ssh`), the floor of the plain tools measured in the same run
//! and the ratio, the SSH readiness detection lag, the process RSS with 50
//! VMs, and the 200-VM scaling figure.
//!
//! `BANGER_BENCH_CREATE_VMM=qemu` runs the same creates on QEMU with a
//! real Debian guest instead (`create/qemu.rs`); `=all` runs both.
//!
//! `cargo bench -p bangerd --bench create`; env: `BANGER_BENCH_CREATE_N`
//! (creates per level, default 20), `BANGER_BENCH_CREATE_SCALE` (default
//! 200), `BANGER_BENCH_DIR` (scratch, default /var/tmp).

#[path = "create/floor.rs"]
pub mod floor;
#[path = "../src/vmdisk/guest_cache.rs"]
pub mod guest_cache;
#[path = "create/host.rs"]
pub mod host;
#[path = "create/qemu.rs"]
pub mod qemu;

use bangerd::progress::Progress;
use bangerd::vms::ready;
use host::Skip;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_testkit::bench::{ms, pct, stats};

/// How much to run.
pub struct Opts {
    /// Creates per concurrency level.
    pub n: usize,
    pub levels: Vec<usize>,
    /// VMs kept running for the scaling figure (RSS is read at 50).
    pub scale: usize,
    pub floor_n: usize,
    pub lag_n: usize,
}

impl Opts {
    pub fn from_env() -> Opts {
        let get = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Opts {
            n: get("BANGER_BENCH_CREATE_N", 20),
            levels: vec![1, 4, 10],
            scale: get("BANGER_BENCH_CREATE_SCALE", 200),
            floor_n: get("BANGER_BENCH_CREATE_N", 20),
            lag_n: 20,
        }
    }
}

/// One create: its wall time to SSH-ready, its control plane and phases.
struct Sample {
    total: Duration,
    control: Duration,
    phases: Vec<(&'static str, Duration)>,
}

fn p50(d: &[Duration]) -> Duration {
    let mut s = d.to_vec();
    s.sort();
    pct(&s, 50)
}

fn mean(d: &[Duration]) -> Duration {
    d.iter().sum::<Duration>() / d.len().max(1) as u32
}

fn ratio(a: Duration, b: Duration) -> f64 {
    ((a.as_secs_f64() / b.as_secs_f64().max(1e-9)) * 100.0).round() / 100.0
}

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    (kib / 1024.0 * 10.0).round() / 10.0
}

async fn create_one(
    d: Arc<bangerd::daemon::Daemon>,
    name: String,
    memory_mib: u32,
) -> Result<Sample, Skip> {
    let p = Progress::new(tokio::sync::mpsc::unbounded_channel().0);
    let req = bangerd::vms::CreateReq {
        name,
        image: "base".into(),
        vcpus: 1,
        memory_mib,
        start: true,
        vmm: None,
        disk_size: None,
    };
    let t = Instant::now();
    bangerd::vms::create(&d, &req, &p).await.map_err(|e| {
        Skip(format!(
            "create {}: {}",
            req.name,
            bangerd::render_chain(&e)
        ))
    })?;
    let total = t.elapsed();
    let phases = p.phases();
    let control = phases
        .iter()
        .filter(|x| x.0 != banger_proto::api::GUEST_PHASE)
        .map(|x| x.1)
        .sum();
    Ok(Sample {
        total,
        control,
        phases,
    })
}

async fn remove_all(d: &bangerd::daemon::Daemon, names: &[String]) -> Result<(), Skip> {
    let p = Progress::new(tokio::sync::mpsc::unbounded_channel().0);
    for n in names {
        bangerd::vms::remove(d, n, true, &p)
            .await
            .map_err(|e| Skip(format!("rm {n}: {}", bangerd::render_chain(&e))))?;
    }
    Ok(())
}

/// How one level runs its creates.
#[derive(Clone, Copy)]
pub struct LevelCfg {
    pub memory_mib: u32,
    /// Each worker removes its VM once it is SSH-ready (untimed), so at
    /// most `conc` VMs run at once; otherwise all go at the level's end.
    pub remove_each: bool,
}

const DOUBLE: LevelCfg = LevelCfg {
    memory_mib: 128,
    remove_each: false,
};

/// Set when the run is interrupted: no new create starts.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// `n` creates by `conc` workers, then all removed.
async fn level(env: &host::Env, conc: usize, n: usize, cfg: LevelCfg) -> Result<Vec<Sample>, Skip> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (d, next) = (env.d.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n || STOP.load(Ordering::SeqCst) {
                    return Ok::<_, Skip>(got);
                }
                let name = format!("c{conc}-{i}");
                got.push(create_one(d.clone(), name.clone(), cfg.memory_mib).await?);
                if cfg.remove_each {
                    remove_all(&d, &[name]).await?;
                }
            }
        }));
    }
    let mut all = Vec::new();
    let mut failed = None;
    for t in tasks {
        match t.await.map_err(|e| Skip(e.to_string())) {
            Ok(Ok(v)) => all.extend(v),
            Ok(Err(e)) | Err(e) => failed = Some(e),
        }
    }
    let names: Vec<String> = (0..n).map(|i| format!("c{conc}-{i}")).collect();
    let names: Vec<String> = names
        .into_iter()
        .filter(|x| bangerd::vms::find(&env.d, x).is_ok())
        .collect();
    remove_all(&env.d, &names).await?;
    match failed {
        Some(e) => Err(e),
        None => Ok(all),
    }
}

fn level_json(s: &[Sample]) -> Value {
    let total: Vec<Duration> = s.iter().map(|x| x.total).collect();
    let control: Vec<Duration> = s.iter().map(|x| x.control).collect();
    let mut phases = Map::new();
    for name in banger_proto::api::PHASES {
        let d: Vec<Duration> = s
            .iter()
            .flat_map(|x| x.phases.iter().filter(|p| p.0 == *name).map(|p| p.1))
            .collect();
        if !d.is_empty() {
            phases.insert(name.to_string(), json!(ms(p50(&d))));
        }
    }
    json!({
        "n": s.len(),
        "create_to_ssh_ms": stats(&total),
        "control_plane_ms": stats(&control),
        "phases_p50_ms": phases,
    })
}

/// Each phase's mean over `runs`.
fn phase_means(runs: &[Vec<(&'static str, Duration)>]) -> Value {
    let mut out = Map::new();
    for name in banger_proto::api::PHASES {
        let d: Vec<Duration> = runs
            .iter()
            .flat_map(|r| r.iter().filter(|p| p.0 == *name).map(|p| p.1))
            .collect();
        if !d.is_empty() {
            out.insert(name.to_string(), json!(ms(mean(&d))));
        }
    }
    Value::Object(out)
}

/// How long after a listener starts sending banners readiness sees it
/// (`lag_n` trials, the listener started 20–60 ms into the wait).
async fn ssh_lag(n: usize) -> Vec<Duration> {
    let mut lags = Vec::new();
    for i in 0..n {
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let delay = Duration::from_millis(20 + (i as u64 * 7) % 40);
        let server = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tokio::time::sleep(delay).await;
            let l = tokio::net::TcpListener::bind(addr).await.unwrap();
            let listening = Instant::now();
            let (mut c, _) = l.accept().await.unwrap();
            let _ = c.write_all(b"SSH-2.0-bgtest\r\n").await;
            listening
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let r =
            ready::wait_for_banner(addr, deadline, ready::Poll::default(), || false, |_| {}).await;
        let seen = Instant::now();
        let listening = server.await.unwrap();
        if r.is_ok() {
            lags.push(seen.saturating_duration_since(listening));
        }
    }
    lags
}

/// The whole bench; JSON, or why it could not run.
pub fn run(o: &Opts) -> Result<Value, Skip> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| Skip(e.to_string()))?;
    let env = host::env(host::Kind::Double)?;
    let root = env.host == "real";
    rt.block_on(async {
        // Warm-up: banger's own SSH key, the NAT ruleset, caches.
        let commits = env.d.store.commits();
        let _ = create_one(env.d.clone(), "warm".into(), DOUBLE.memory_mib).await?;
        let commits = env.d.store.commits() - commits;
        remove_all(&env.d, &["warm".to_string()]).await?;
        let mut levels = Map::new();
        let mut by_level = Vec::new();
        for &c in &o.levels {
            let s = level(&env, c, o.n, DOUBLE).await?;
            levels.insert(c.to_string(), level_json(&s));
            by_level.push((c, s));
        }
        let base = env
            .d
            .store
            .read(|c| c.query_row("SELECT rootfs FROM images LIMIT 1", [], |r| r.get::<_, String>(0)))
            .map_err(|e| Skip(e.to_string()))?;
        let rounds = floor::measure(env.tmp.path(), std::path::Path::new(&base), o.floor_n, root)?;
        let floor_tot: Vec<Duration> = rounds.iter().map(|r| r.total()).collect();
        let mut parts = Map::new();
        if let Some(first) = rounds.first() {
            for (name, _) in &first.parts {
                let d: Vec<Duration> = rounds
                    .iter()
                    .flat_map(|r| r.parts.iter().filter(|p| p.0 == *name).map(|p| p.1))
                    .collect();
                parts.insert(name.to_string(), json!(ms(p50(&d))));
            }
        }
        let lags = ssh_lag(o.lag_n).await;

        // Scaling: `scale` VMs kept running; RSS at 50 and at the end.
        let mut scale = Vec::new();
        let mut scale_phases: Vec<Vec<(&'static str, Duration)>> = Vec::new();
        let mut rss50 = None;
        let mut names = Vec::new();
        for i in 0..o.scale {
            let name = format!("s-{i}");
            let r = create_one(env.d.clone(), name.clone(), DOUBLE.memory_mib).await;
            names.push(name);
            match r {
                Ok(s) => {
                    scale.push(s.control);
                    scale_phases.push(s.phases);
                }
                Err(e) => {
                    remove_all(&env.d, &names[..i]).await?;
                    return Err(e);
                }
            }
            if i + 1 == 50 {
                rss50 = Some(rss_mib());
            }
        }
        let rss_end = rss_mib();
        remove_all(&env.d, &names).await?;

        let c1 = &by_level.iter().find(|x| x.0 == 1).map(|x| &x.1);
        let c10 = &by_level.iter().find(|x| x.0 == 10).map(|x| &x.1);
        let control = |s: &[Sample]| s.iter().map(|x| x.control).collect::<Vec<_>>();
        let c1_p50 = c1.map(|s| p50(&control(s)));
        let c10_p95 = c10.map(|s| {
            let mut v = control(s);
            v.sort();
            pct(&v, 95)
        });
        let floor_p50 = (!floor_tot.is_empty()).then(|| p50(&floor_tot));
        let w = scale.len().min(10);
        let scale_json = if scale.is_empty() {
            Value::Null
        } else {
            json!({
                "vms": scale.len(),
                "first_control_ms": ms(scale[0]),
                "last_control_ms": ms(scale[scale.len() - 1]),
                "last_over_first": ratio(scale[scale.len() - 1], scale[0]),
                "first_10_mean_ms": ms(mean(&scale[..w])),
                "last_10_mean_ms": ms(mean(&scale[scale.len() - w..])),
                "last_10_over_first_10": ratio(mean(&scale[scale.len() - w..]), mean(&scale[..w])),
                "first_10_phases_mean_ms": phase_means(&scale_phases[..w]),
                "last_10_phases_mean_ms": phase_means(&scale_phases[scale_phases.len() - w..]),
            })
        };
        let c1_phase = |name: &str| {
            c1.and_then(|s| {
                let d: Vec<Duration> = s
                    .iter()
                    .flat_map(|x| x.phases.iter().filter(|p| p.0 == name).map(|p| p.1))
                    .collect();
                (!d.is_empty()).then(|| p50(&d))
            })
        };
        let le = |v: Option<f64>, max: f64| v.map(|v| v <= max);
        let targets = json!({
            "control_plane_p50_le_1_5x_floor_c1": le(c1_p50.zip(floor_p50).map(|(a, b)| ratio(a, b)), 1.5),
            "control_plane_p95_c10_le_3x_p50_c1": le(c10_p95.zip(c1_p50).map(|(a, b)| ratio(a, b)), 3.0),
            "nat_p50_le_3ms": le(c1_phase("nat").map(ms), 3.0),
            "customise_p50_le_15ms": le(c1_phase("customise").map(ms), 15.0),
            "ssh_detect_lag_p50_le_50ms": le((!lags.is_empty()).then(|| ms(p50(&lags))), 50.0),
            "scale_last_le_1_2x_first": le(
                (scale.len() >= 2).then(|| ratio(scale[scale.len() - 1], scale[0])),
                1.2
            ),
            "rss_at_50_le_30mib": le(rss50, 30.0),
        });
        Ok(json!({
            "bench": "create",
            "targets": targets,
            "vmm": "firecracker double (this binary re-executed: fork + exec, API over its socket)",
            "host_steps": env.host,
            "disk_driver": env.driver,
            "n_per_level": o.n,
            "sqlite_commits_per_create": commits,
            "bridge_remade": env.ops.bridge_remade.load(Ordering::Relaxed),
            "levels": levels,
            "floor_ms": if floor_tot.is_empty() { Value::Null } else { stats(&floor_tot) },
            "floor_parts_p50_ms": parts,
            "floor_complete": root,
            "control_plane_p50_over_floor_p50_c1": match (c1_p50, floor_p50) {
                (Some(a), Some(b)) => json!(ratio(a, b)),
                _ => Value::Null,
            },
            "control_plane_p95_c10_over_p50_c1": match (c10_p95, c1_p50) {
                (Some(a), Some(b)) => json!(ratio(a, b)),
                _ => Value::Null,
            },
            "ssh_detect_lag_ms": if lags.is_empty() { Value::Null } else { stats(&lags) },
            "rss_mib_at_50_vms": rss50,
            "rss_mib_at_end": rss_end,
            "rss_note": "the bench process: the daemon's code in-process plus the bench's own threads (the doubles are separate processes)",
            "scale": scale_json,
        }))
    })
}

#[allow(dead_code)] // also compiled into tests/bench_create.rs, which has its own entry
fn main() {
    if let Some(code) = host::double_mode() {
        std::process::exit(code);
    }
    let vmm = std::env::var("BANGER_BENCH_CREATE_VMM").unwrap_or_else(|_| "double".into());
    let out = match vmm.as_str() {
        "double" => run(&Opts::from_env()),
        "qemu" => qemu::run(&qemu::QemuOpts::from_env()),
        "all" => run(&Opts::from_env()).and_then(|mut v| {
            v["qemu"] = qemu::run(&qemu::QemuOpts::from_env())?;
            Ok(v)
        }),
        other => Err(Skip(format!(
            "BANGER_BENCH_CREATE_VMM={other}: double, qemu or all"
        ))),
    };
    match out {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap()),
        Err(Skip(why)) => {
            println!("failed: {why}");
            std::process::exit(1);
        }
    }
}
