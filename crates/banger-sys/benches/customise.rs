//! Disk customisation bench (root): a fresh copy of a small pristine ext4
//! (mkfs.ext4, no directories) per run, then `Ext4Tools::write_files` of the
//! daemon's nine customisation files (seven parent directories to create),
//! timed (the copy is synced before); interleaved with the floor, one plain `debugfs -w` writing one
//! file. Counts debugfs runs with a forwarding `RecordingRunner`; prints JSON.
//!
//! `cargo bench -p banger-sys --bench customise` (N from `BANGER_BENCH_CUSTOMISE_N`, default 20)

use banger_sys::ext4::{probe_paths, Ext4Tools, GuestFile};
use banger_sys::runner::{Cmd, HostRunner, RecordingRunner, Runner};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The target for one customisation, p50.
pub const TARGET_P50_MS: f64 = 15.0;

/// Why the bench did not run.
#[derive(Debug)]
pub struct Skip(pub String);

/// Whether the bench can run: as root, with `mkfs.ext4` and `debugfs`.
pub fn check(root: bool, tools: &[&str]) -> Result<(), Skip> {
    if !root {
        return Err(Skip(
            "needs root (the helper's debugfs runs as root)".into(),
        ));
    }
    for t in tools {
        match Command::new(t)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(_) => {}
            Err(e) => return Err(Skip(format!("{t} not runnable: {e}"))),
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn stats(d: &[Duration]) -> Value {
    let mut s = d.to_vec();
    s.sort();
    let pct = |p: usize| {
        s[((s.len() * p).div_ceil(100))
            .saturating_sub(1)
            .min(s.len() - 1)]
    };
    json!({"p50": ms(pct(50)), "p95": ms(pct(95)), "min": ms(s[0]), "max": ms(s[s.len() - 1])})
}

/// The nine files `bangerd`'s customisation writes, with contents of
/// their usual size.
pub fn nine_files() -> Vec<GuestFile> {
    let f = |path: &str, content: Vec<u8>, mode: u32| GuestFile {
        path: path.into(),
        content,
        mode,
        uid: 0,
        gid: 0,
    };
    vec![
        f("/etc/hostname", b"bgtest-vm\n".to_vec(), 0o644),
        f(
            "/etc/hosts",
            b"127.0.0.1 localhost\n10.0.0.2 bgtest-vm.vm bgtest-vm\n".to_vec(),
            0o644,
        ),
        f(
            "/etc/systemd/network/10-banger.network",
            [b'n'; 200].to_vec(),
            0o644,
        ),
        f("/etc/network/interfaces", [b'i'; 180].to_vec(), 0o644),
        f("/etc/resolv.conf", b"nameserver 10.0.0.1\n".to_vec(), 0o644),
        f(
            "/etc/machine-id",
            b"0123456789abcdef0123456789abcdef\n".to_vec(),
            0o444,
        ),
        f("/root/.ssh/authorized_keys", [b'k'; 100].to_vec(), 0o600),
        f("/etc/ssh/ssh_host_ed25519_key", [b'p'; 411].to_vec(), 0o600),
        f(
            "/etc/ssh/ssh_host_ed25519_key.pub",
            [b'q'; 100].to_vec(),
            0o644,
        ),
    ]
}

/// Run the bench `n` times (1..=1000).
pub fn run(n: usize) -> Result<Value, Skip> {
    check(
        rustix::process::geteuid().is_root(),
        &["mkfs.ext4", "debugfs"],
    )?;
    let n = n.clamp(1, 1000);
    let dir = tempfile::Builder::new()
        .prefix("bgtest-customise-")
        .tempdir()
        .map_err(|e| Skip(format!("no temp dir: {e}")))?;
    let base = dir.path().join("bgtest-base.ext4");
    std::fs::File::create(&base)
        .and_then(|f| f.set_len(64 << 20))
        .map_err(|e| Skip(format!("make {}: {e}", base.display())))?;
    HostRunner
        .run(&Cmd::new("mkfs.ext4").args(["-q", "-F"]).arg(&base))
        .map_err(|e| Skip(format!("mkfs.ext4: {e}")))?;
    let files = nine_files();
    let one = dir.path().join("one");
    std::fs::write(&one, b"bgtest-vm\n").unwrap();
    let (mut times, mut floor, mut runs, mut mkdirs) = (vec![], vec![], vec![], 0);
    for i in 0..n {
        let disk = dir.path().join(format!("bgtest-vm{i}.ext4"));
        std::fs::copy(&base, &disk).unwrap();
        // The clone is its own phase: its dirty pages are not the
        // customisation's to flush (debugfs fsyncs the image on close).
        std::fs::File::open(&disk).unwrap().sync_all().unwrap();
        let rec = Arc::new(RecordingRunner::forwarding_to_host());
        let tools = Ext4Tools::new(rec.clone());
        let t = Instant::now();
        tools.write_files(&disk, &files).unwrap();
        times.push(t.elapsed());
        runs.push(rec.calls().len());
        let stdin: Vec<u8> = rec
            .cmds()
            .iter()
            .filter_map(|c| c.stdin.clone())
            .flatten()
            .collect();
        mkdirs = String::from_utf8_lossy(&stdin).matches("mkdir ").count();
        assert!(rec.calls().iter().all(|c| c[0] == "debugfs"));
        floor.push(floor_write(&disk, &one));
        check_written(&disk, &files);
        std::fs::remove_file(&disk).unwrap();
    }
    let p50 = stats(&times)["p50"].as_f64().unwrap();
    Ok(json!({
        "bench": "customise",
        "n": n,
        "files": files.len(),
        "parents_created": mkdirs,
        "write_files_ms": stats(&times),
        "floor_one_debugfs_write_ms": stats(&floor),
        "debugfs_runs_after": runs.iter().max(),
        // The former rule: one `stat` per distinct parent and per target,
        // one write run, one `cat` run per file.
        "debugfs_runs_before": probe_paths(&files).len() + 1 + files.len(),
        "target_p50_ms": TARGET_P50_MS,
        "target_met": p50 <= TARGET_P50_MS,
    }))
}

/// One plain `debugfs -w -R "write ONE /bgtest-floor"` run, timed.
fn floor_write(disk: &Path, one: &Path) -> Duration {
    let t = Instant::now();
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg(format!("write {} /bgtest-floor", one.display()))
        .arg(disk)
        .output()
        .unwrap();
    let d = t.elapsed();
    assert!(out.status.success(), "{out:?}");
    d
}

fn check_written(disk: &Path, files: &[GuestFile]) {
    let tools = Ext4Tools::new(Arc::new(HostRunner));
    for f in files {
        assert_eq!(tools.read_file(disk, &f.path, 1 << 20).unwrap(), f.content);
    }
}

#[allow(dead_code)] // also compiled into tests/bench_customise.rs, which has its own entry
fn main() {
    let n = std::env::var("BANGER_BENCH_CUSTOMISE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    match run(n) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap()),
        Err(Skip(why)) => println!("skipped: {why}"),
    }
}
