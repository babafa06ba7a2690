//! A running VM outlives its daemon and its helper (root, a real Debian
//! guest under QEMU/TCG, the system way: a `banger-helper` process and
//! `bangerd --config`, both in a `bgtest-` network namespace; the helper
//! entered with `nsenter --net` so it keeps the host's `/sys`).
//!
//! One guest serves every step, in sequence: created and running, its QEMU
//! is in a session of its own, without capabilities, under `NoNewPrivs`
//! and seccomp, and in its own `banger-<id>` cgroup with the VM's limits;
//! `kill -9` of the daemon, then a restart: the VM is still `running` with
//! the same QEMU and `vm ssh -- true` works; the same after a SIGTERM;
//! `kill -9` of the helper and its restart: the daemon (which reconnects
//! per call) still stops the VM — its QEMU gone, its cgroup gone — and
//! removes it. The image is the shared cached Debian image.

mod common;

use banger_sys::netns::NamedNetns;
use banger_testkit::wait_until;
use common::guest_cache;
use common::procs::{cgroup_dirs, loops_under, Procs, BIN};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The test's processes, the QEMU pids seen (killed on drop if still
/// there), and the CLI against its daemon.
struct Env {
    procs: Procs,
    vmms: Vec<i32>,
}

impl std::ops::Deref for Env {
    type Target = Procs;
    fn deref(&self) -> &Procs {
        &self.procs
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut Procs {
        &mut self.procs
    }
}

impl Env {
    /// SIGTERM, and wait for the daemon's clean exit.
    fn term_daemon_cleanly(&mut self) {
        let st = self.term_daemon(Duration::from_secs(30));
        assert!(st.is_some(), "bangerd ignored SIGTERM for 30 s");
        assert!(st.unwrap().success(), "bangerd after SIGTERM: {st:?}");
    }

    /// `banger args` inside the namespace.
    fn banger(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", self.ns.name()])
            .arg(Path::new(BIN).with_file_name("banger"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .env("HOME", self.dir.path().join("home"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.banger(args);
        assert!(
            out.status.success(),
            "banger {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.console()
        );
        out
    }

    fn vm(&self, name: &str) -> Value {
        let out = self.ok(&["vm", "ls", "--json"]);
        let all: Value = serde_json::from_slice(&out.stdout).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn console(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path().join("state/vms")) {
            for e in rd.flatten() {
                let t = std::fs::read_to_string(e.path().join("console.log")).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                s.push_str(&lines[lines.len().saturating_sub(20)..].join("\n"));
            }
        }
        s
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill9_daemon();
        self.kill9_helper();
        for pid in &self.vmms {
            if alive(*pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        reap();
        // Whatever a failed run left of the VM's disk and cgroup.
        self.sweep_host();
        if std::thread::panicking() {
            eprintln!("bangerd.log tail:\n{}", self.log_tail(40));
        }
    }
}

/// Reap whatever orphans this (subreaper) test process inherited.
fn reap() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(st) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if st == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Whether `pid` runs (a zombie does not: it is reaped here first).
fn alive(pid: i32) -> bool {
    reap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

/// `(key, value)` lines of `/proc/<pid>/status`.
fn status_field(pid: i32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The session id (`/proc/<pid>/stat` field 6).
fn session(pid: i32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = s.rsplit(')').next().unwrap();
    rest.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// The shared cached Debian image (built by the library's real-guest
/// tests, `vmdisk::boot_tests`, which `cargo test -p bangerd` runs first).
fn cached_debian() -> PathBuf {
    let kernels = format!(
        "{:?}",
        bangerd::images::kernel::host_kernels(Path::new("/boot"), Path::new("/lib/modules"))
    );
    guest_cache::debian_dir(&kernels)
}

/// Import the cached image as `deb`.
fn import_debian(env: &Env, cached: &Path) {
    let file = |f: &str| cached.join(f).display().to_string();
    let mut args = vec![
        "image".to_string(),
        "import".into(),
        "deb".into(),
        "--rootfs".into(),
        file("rootfs.ext4"),
        "--kernel".into(),
        file("vmlinux"),
    ];
    if cached.join("initrd.img").is_file() {
        args.extend(["--initrd".into(), file("initrd.img")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.ok(&args);
}

#[test]
fn a_running_vm_outlives_daemon_kill_9_sigterm_and_a_helper_restart() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: needs root (network namespace, helper, dm, cgroups)");
        return;
    }
    if !Path::new("/usr/bin/qemu-system-x86_64").exists()
        || bangerd::images::kernel::host_kernels(Path::new("/boot"), Path::new("/lib/modules"))
            .is_empty()
    {
        println!("skipped: needs qemu-system-x86_64 and a Debian kernel in /boot");
        return;
    }
    let cached = cached_debian();
    if !cached.join("rootfs.ext4").is_file() {
        if std::env::var_os("BANGER_SKIP_NETWORK_TESTS").is_some() {
            println!("skipped: no cached Debian image and BANGER_SKIP_NETWORK_TESTS is set");
            return;
        }
        panic!(
            "no cached Debian image at {}: `cargo test -p bangerd --lib vmdisk::boot_tests` builds it (the system daemon here has no network to build one)",
            cached.display()
        );
    }
    // Orphaned QEMUs (their daemon killed) become this process's children,
    // so "gone" can be told from "a zombie nobody reaps".
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();

    let dir = tempfile::Builder::new()
        .prefix("bgtest-outlive-")
        .tempdir()
        .unwrap();
    let ns = NamedNetns::add(&format!("bgtest-{}-ol", banger_testkit::unique_suffix())).unwrap();
    let mut env = Env {
        procs: Procs::new(dir, ns, None),
        vmms: Vec::new(),
    };
    env.use_system_config();
    env.start_helper();
    env.start_daemon();
    import_debian(&env, &cached);

    let t = Instant::now();
    env.ok(&[
        "vm", "create", "keep", "--image", "deb", "--vmm", "qemu", "--vcpus", "1", "--memory",
        "512",
    ]);
    println!("create (boot to SSH) in {:?}", t.elapsed());
    let vm = env.vm("keep");
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(vm["backend"], "qemu-tcg", "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let pid = vm["pid"].as_i64().unwrap() as i32;
    env.vmms.push(pid);

    // QEMU: its own session, no capabilities, NoNewPrivs, seccomp.
    assert_eq!(session(pid), pid, "QEMU leads a session of its own");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    // Its own cgroup, with the VM's limits.
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let dirs = cgroup_dirs(&id);
    let name = format!("/banger-{id}");
    if dirs.len() == 2 {
        assert!(
            cg.lines().any(|l| l.ends_with(&format!(":memory:{name}"))),
            "{cg}"
        );
        assert!(
            cg.lines().any(|l| l.ends_with(&format!(":pids:{name}"))),
            "{cg}"
        );
        let mem = std::fs::read_to_string(dirs[0].join("memory.limit_in_bytes")).unwrap();
        assert_eq!(mem.trim(), ((512u64 + 256) << 20).to_string());
        let pids = std::fs::read_to_string(dirs[1].join("pids.max")).unwrap();
        assert_eq!(pids.trim(), "130");
    } else {
        assert!(cg.lines().any(|l| l == format!("0::{name}")), "{cg}");
        let mem = std::fs::read_to_string(dirs[0].join("memory.max")).unwrap();
        assert_eq!(mem.trim(), ((512u64 + 256) << 20).to_string());
        let pids = std::fs::read_to_string(dirs[0].join("pids.max")).unwrap();
        assert_eq!(pids.trim(), "130");
    }
    for d in &dirs {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    }

    let reachable = |env: &Env, when: &str| {
        let out = env.banger(&["vm", "ssh", "keep", "--", "true"]);
        assert!(
            out.status.success(),
            "vm ssh after {when}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            env.console()
        );
    };
    reachable(&env, "create");

    // kill -9 of the daemon: the VM runs on and is re-adopted.
    env.kill9_daemon();
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid), "QEMU died with the daemon (kill -9)");
    env.start_daemon();
    let vm = env.vm("keep");
    assert_eq!(vm["state"], "running", "after kill -9: {vm}");
    assert_eq!(vm["pid"].as_i64(), Some(i64::from(pid)));
    reachable(&env, "kill -9 and restart of the daemon");

    // SIGTERM: a clean shutdown leaves it running too.
    env.term_daemon_cleanly();
    assert!(alive(pid), "QEMU died with the daemon (SIGTERM)");
    env.start_daemon();
    let vm = env.vm("keep");
    assert_eq!(vm["state"], "running", "after SIGTERM: {vm}");
    assert_eq!(vm["pid"].as_i64(), Some(i64::from(pid)));
    reachable(&env, "SIGTERM and restart of the daemon");

    // kill -9 of the helper, back as its unit would be: the daemon
    // reconnects; the VM runs on, stops (QEMU and cgroup gone) and goes.
    env.kill9_helper();
    assert!(alive(pid), "QEMU died with the helper");
    env.start_helper();
    reachable(&env, "a helper restart");
    let t = Instant::now();
    env.ok(&["vm", "stop", "keep"]);
    println!("stop of the re-adopted VM in {:?}", t.elapsed());
    assert_eq!(env.vm("keep")["state"], "stopped");
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "QEMU {pid} still runs after vm stop"
    );
    for d in &dirs {
        assert!(!d.exists(), "{} left after stop", d.display());
    }
    env.ok(&["vm", "rm", "keep"]);
    assert_eq!(env.vm("keep"), Value::Null);
    for d in &dirs {
        assert!(!d.exists(), "{} left after rm", d.display());
    }
    assert!(loops_under(&env.dir.path().display().to_string()).is_empty());
    env.ok(&["image", "rm", "deb"]);
}
