//! `kill -9` of the real `bangerd --dev` (root, in-process helper) at
//! seeded random points of create, start, stop and rm; restarted, its
//! reconcile and sweep run, every VM `rm --force`d; then nothing of any VM
//! may be left: row, address, known_hosts pin, VM or runtime directory,
//! socket, VMM process, QEMU cgroup, loop or dm device, mount, tap or NAT element.
//!
//! The daemon runs in a `bgtest-` network namespace where it makes its own
//! `banger0` and nft table (both go with the namespace); loops and dm
//! devices are the host's, recognised by backing files under the test's
//! scratch dir. Guests are QEMU/TCG on the host kernel with a rootfs that
//! has no init: a VM reaches `starting` with a live VMM, never `running`
//! (no SSH), so a stop meets a VM mid-start.
//!
//! The second test runs the system way (a `banger-helper` process, entered
//! with `nsenter --net` so it keeps the host's cgroup hierarchy, and
//! `bangerd --config`, both in the namespace) and kills the helper `-9`
//! mid-call instead; the helper comes back as its unit would, the daemon
//! restarts cleanly (reconcile), and the same checks hold.
//!
//!   BANGER_CRASH_CYCLES=50 BANGER_CRASH_SEED=42 cargo test -p bangerd --test crash_kill -- --nocapture
//!
//! Default: 6 cycles each (CI); the seed is printed, set it to replay a run.

mod common;

use banger_sys::netns::NamedNetns;
use banger_testkit::wait_until;
use common::procs::{dm_devices, loops_under, Procs, BIN};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// splitmix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The test's processes, and the CLI against its daemon.
struct Env(Procs);

impl std::ops::Deref for Env {
    type Target = Procs;
    fn deref(&self) -> &Procs {
        &self.0
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut Procs {
        &mut self.0
    }
}

impl Env {
    fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(Path::new(BIN).with_file_name("banger"));
        c.arg("--socket").arg(self.socket()).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cli(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "banger {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn vms(&self) -> Vec<Value> {
        let out = self.ok(&["vm", "ls", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill9_daemon();
        self.kill9_helper();
        // Whatever a failed run left: VMMs, dm devices, loops, cgroups.
        let root = self.dir.path().display().to_string();
        for (pid, _) in processes_under(&root) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        self.sweep_host();
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Processes (pid, argv0) whose command line names a path under `root`.
fn processes_under(root: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if pid != me && cmd.contains(root) {
            out.push((pid, cmd.split(' ').next().unwrap_or("").to_string()));
        }
    }
    out
}

/// Every leftover of any VM, as lines (empty when clean). `ids`: every VM
/// id seen in the run (for dm names and taps).
fn leftovers(env: &Env, ids: &[String]) -> Vec<String> {
    let root = env.dir.path().display().to_string();
    let mut bad = Vec::new();
    let vms = env.vms();
    if !vms.is_empty() {
        bad.push(format!("rows: {vms:?}"));
    }
    let db = rusqlite::Connection::open_with_flags(
        env.dir.path().join("state/state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    for t in ["vms", "ip_allocations"] {
        let n: i64 = db
            .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap();
        if n != 0 {
            bad.push(format!("{n} rows in {t}"));
        }
    }
    let kh = std::fs::read_to_string(env.dir.path().join("state/known_hosts")).unwrap_or_default();
    if kh.lines().any(|l| !l.trim().is_empty()) {
        bad.push(format!("known_hosts pins: {kh:?}"));
    }
    for d in ["state/vms", "run/vms"] {
        let p = env.dir.path().join(d);
        let entries: Vec<_> = std::fs::read_dir(&p)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if !entries.is_empty() {
            bad.push(format!("{}: {entries:?}", p.display()));
        }
    }
    let o = Command::new("find")
        .arg(env.dir.path().join("run"))
        .args([
            "-type",
            "s",
            "!",
            "-name",
            "bangerd.sock",
            "!",
            "-name",
            "helper.sock",
        ])
        .output()
        .unwrap();
    if !text(&o).trim().is_empty() {
        bad.push(format!("sockets: {}", text(&o)));
    }
    // `ip netns exec` execs: the children's pids are the processes'.
    let daemon_pid = env.daemon.as_ref().map(|c| c.id() as i32);
    let helper_pid = env.helper.as_ref().map(|c| c.id() as i32);
    let procs: Vec<_> = processes_under(&root)
        .into_iter()
        .filter(|(p, a0)| {
            let ours = [Some(*p) == daemon_pid, Some(*p) == helper_pid];
            !ours.contains(&true) && !a0.ends_with("/ip")
        })
        .collect();
    if !procs.is_empty() {
        bad.push(format!("processes: {procs:?}"));
    }
    let loops = loops_under(&root);
    if !loops.is_empty() {
        bad.push(format!("loops: {loops:?}"));
    }
    let dms: Vec<_> = dm_devices()
        .into_iter()
        .filter(|(n, _)| ids.iter().any(|id| n.contains(id.as_str())))
        .collect();
    if !dms.is_empty() {
        bad.push(format!("dm devices: {dms:?}"));
    }
    // QEMU cgroups (v1 controllers, or v2).
    for id in ids {
        for c in ["memory", "pids", ""] {
            let d = Path::new("/sys/fs/cgroup")
                .join(c)
                .join(format!("banger-{id}"));
            if d.exists() {
                bad.push(format!("cgroup {}", d.display()));
            }
        }
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts: Vec<_> = mi.lines().filter(|l| l.contains(&root)).collect();
    if !mounts.is_empty() {
        bad.push(format!("mounts: {mounts:?}"));
    }
    let links = Command::new("ip")
        .args(["-n", env.ns.name(), "-o", "link"])
        .output()
        .unwrap();
    let taps: Vec<_> = text(&links)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("banger-"))
        .collect();
    if !taps.is_empty() {
        bad.push(format!("taps: {taps:?}"));
    }
    let nft = Command::new("ip")
        .args([
            "netns",
            "exec",
            env.ns.name(),
            "nft",
            "list",
            "set",
            "inet",
            "banger",
            "nat_guests",
        ])
        .output()
        .unwrap();
    if text(&nft).contains("elements") {
        bad.push(format!("NAT elements: {}", text(&nft)));
    }
    bad
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Start,
    Stop,
    Rm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Daemon,
    Helper,
}

#[test]
fn kill_9_of_the_daemon_at_random_points_leaves_nothing_after_reconcile_and_rm_force() {
    crash_cycles(Victim::Daemon);
}

#[test]
fn kill_9_of_the_helper_mid_call_leaves_nothing_after_reconcile_and_rm_force() {
    crash_cycles(Victim::Helper);
}

fn crash_cycles(victim: Victim) {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: needs root (network namespace, loops, dm, QEMU)");
        return;
    }
    let kernel = std::fs::read_dir("/boot").ok().and_then(|rd| {
        rd.flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .max()
    });
    let (Some(kernel), true) = (kernel, Path::new("/usr/bin/qemu-system-x86_64").exists()) else {
        println!("skipped: needs a kernel in /boot and qemu-system-x86_64");
        return;
    };
    let seed: u64 = std::env::var("BANGER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let cycles: usize = std::env::var("BANGER_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    println!("crash test ({victim:?}): BANGER_CRASH_SEED={seed} BANGER_CRASH_CYCLES={cycles}");
    let mut rng = Rng(seed);

    let dir = tempfile::Builder::new()
        .prefix("bgtest-crash-")
        .tempdir()
        .unwrap();
    let ns = NamedNetns::add(&format!("bgtest-{}-cr", banger_testkit::unique_suffix())).unwrap();
    let mut env = Env(Procs::new(dir, ns, None));
    if victim == Victim::Helper {
        env.use_system_config();
        env.start_helper();
    }
    let ssh = env.dir.path().join("home/.ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::write(
        ssh.join("id_ed25519.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3rGf9oUq0v0cW1m8lJp7Jm2r7l4vG1m5m0r8m0bq1 bgtest\n",
    )
    .unwrap();
    let work = env.dir.path().join("work");
    std::fs::create_dir_all(work.join("root/etc")).unwrap();
    std::fs::write(work.join("root/etc/hostname"), "crash\n").unwrap();
    common::mkfs(&work.join("root"), &work.join("rootfs.ext4"));
    env.start_daemon();
    let (r, k) = (
        work.join("rootfs.ext4").display().to_string(),
        kernel.display().to_string(),
    );
    env.ok(&["image", "import", "base", "--rootfs", &r, "--kernel", &k]);

    let mut ids: Vec<String> = Vec::new();
    let t0 = Instant::now();
    for cycle in 0..cycles {
        let op = [Op::Create, Op::Start, Op::Stop, Op::Rm][rng.below(4) as usize];
        let name = format!("c{cycle}");
        let base = [
            "vm",
            "create",
            name.as_str(),
            "--image",
            "base",
            "--vcpus",
            "1",
            "--memory",
            "128",
        ];
        // Preparation (not killed): the VM the operation acts on.
        if !matches!(op, Op::Create) {
            let mut args = base.to_vec();
            args.push("--no-start");
            env.ok(&args);
        }
        let mut starter = None;
        if matches!(op, Op::Stop) || (matches!(op, Op::Rm) && rng.below(2) == 0) {
            // A start under way (QEMU launched, waiting for SSH).
            starter = Some(
                env.cli(&["vm", "start", &name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
        }
        let args: Vec<&str> = match op {
            Op::Create => base.to_vec(),
            Op::Start => vec!["vm", "start", &name],
            Op::Stop => vec!["vm", "stop", "--force", &name],
            Op::Rm => vec!["vm", "rm", "--force", &name],
        };
        let window = match op {
            Op::Create | Op::Start => 3000,
            Op::Stop | Op::Rm => 1500,
        };
        let at = rng.below(window);
        let mut cmd = env
            .cli(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(at));
        match victim {
            Victim::Daemon => env.kill9_daemon(),
            Victim::Helper => {
                env.kill9_helper();
                // Back as its unit would be; the call under way failed.
                std::thread::sleep(Duration::from_millis(500));
                env.start_helper();
                // Let the operation end (a start may wait for SSH: cut it).
                let _ = wait_until(Duration::from_secs(5), || {
                    cmd.try_wait().is_ok_and(|s| s.is_some())
                });
                env.term_daemon(Duration::from_secs(20));
            }
        }
        for c in [Some(&mut cmd), starter.as_mut()].into_iter().flatten() {
            if !wait_until(Duration::from_secs(10), || {
                c.try_wait().is_ok_and(|s| s.is_some())
            }) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        println!("cycle {cycle}: {op:?} {name}, {victim:?} killed at {at} ms");
        env.start_daemon();
        for vm in env.vms() {
            let id = vm["id"].as_str().unwrap().to_string();
            if !ids.contains(&id) {
                ids.push(id);
            }
            env.ok(&["vm", "rm", "--force", vm["name"].as_str().unwrap()]);
        }
        let bad = leftovers(&env, &ids);
        assert!(
            bad.is_empty(),
            "seed {seed}, cycle {cycle} ({op:?} killed at {at} ms): leftovers:\n{}\n(log: {}/bangerd.log)",
            bad.join("\n"),
            env.dir.path().display()
        );
    }
    println!(
        "crash test ({victim:?}): {cycles} cycles clean in {:.1}s (seed {seed})",
        t0.elapsed().as_secs_f64()
    );
    env.ok(&["image", "rm", "base"]);
}
