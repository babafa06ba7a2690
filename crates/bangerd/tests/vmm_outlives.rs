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

use banger_sys::netns::NamedNetns;
use banger_testkit::{http_unix, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../src/vmdisk/guest_cache.rs"]
#[allow(dead_code)]
mod guest_cache;

const BIN: &str = env!("CARGO_BIN_EXE_bangerd");

struct Env {
    dir: tempfile::TempDir,
    ns: NamedNetns,
    config: PathBuf,
    daemon: Option<Child>,
    helper: Option<Child>,
    /// QEMU pids seen, killed on drop if still there.
    vmms: Vec<i32>,
}

impl Env {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/bangerd.sock")
    }

    fn log(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("bangerd.log"))
            .unwrap()
    }

    fn start_helper(&mut self) {
        let bin = Path::new(BIN).with_file_name("banger-helper");
        // nsenter, not `ip netns exec`: that remounts /sys for the
        // namespace, and the helper needs the host's cgroup hierarchy.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns.name()))
            .arg("--")
            .arg(bin)
            .arg("--config")
            .arg(&self.config)
            .env("BANGER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log())
            .spawn()
            .unwrap();
        self.helper = Some(child);
        let sock = self
            .dir
            .path()
            .join("run")
            .join(banger_proto::HELPER_SOCKET);
        assert!(
            wait_until(Duration::from_secs(30), || sock.exists()),
            "banger-helper did not come up; see {}/bangerd.log",
            self.dir.path().display()
        );
    }

    fn kill9_helper(&mut self) {
        if let Some(mut c) = self.helper.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(
            self.dir
                .path()
                .join("run")
                .join(banger_proto::HELPER_SOCKET),
        );
    }

    fn start_daemon(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns.name(), BIN, "--config"])
            .arg(&self.config)
            .env("BANGER_LOG", "info")
            .env("HOME", self.dir.path().join("home"))
            .env_remove("BANGER_NO_NETWORK")
            .stdout(Stdio::null())
            .stderr(self.log())
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let s = self.socket();
        assert!(
            wait_until(Duration::from_secs(60), || matches!(
                http_unix(&s, "GET", "/v1/health", None),
                Ok((200, _))
            )),
            "bangerd did not come up; see {}/bangerd.log",
            self.dir.path().display()
        );
    }

    fn kill9_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for the daemon's clean exit.
    fn term_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            let exited = wait_until(Duration::from_secs(30), || {
                c.try_wait().is_ok_and(|s| s.is_some())
            });
            assert!(exited, "bangerd ignored SIGTERM for 30 s");
            let st = c.wait().unwrap();
            assert!(st.success(), "bangerd after SIGTERM: {st}");
        }
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
        let root = self.dir.path().display().to_string();
        let dms = Command::new("dmsetup").args(["ls"]).output().unwrap();
        for l in String::from_utf8_lossy(&dms.stdout).lines() {
            let name = l.split_whitespace().next().unwrap_or("");
            if name.starts_with("fc-rootfs-") && dm_on_our_loops(name, &root) {
                let _ = Command::new("dmsetup")
                    .args(["remove", "--force", name])
                    .status();
            }
        }
        for (dev, _) in loops_under(&root) {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
        for d in cgroups_of_test(&root) {
            let _ = std::fs::remove_dir(d);
        }
        let _ = Command::new("chmod").args(["-R", "u+w", &root]).status();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("bangerd.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "bangerd.log tail:\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

fn loops_under(root: &str) -> Vec<(String, String)> {
    let o = Command::new("losetup")
        .args(["-l", "-n", "-O", "NAME,BACK-FILE"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (dev, file) = (it.next()?, it.next()?);
            file.starts_with(root)
                .then(|| (dev.to_string(), file.to_string()))
        })
        .collect()
}

fn dm_on_our_loops(name: &str, root: &str) -> bool {
    let o = Command::new("dmsetup")
        .args(["deps", "-o", "devname", name])
        .output()
        .unwrap();
    let deps = String::from_utf8_lossy(&o.stdout).into_owned();
    loops_under(root)
        .iter()
        .any(|(dev, _)| deps.contains(&format!("({})", dev.trim_start_matches("/dev/"))))
}

/// `banger-<id>` cgroups of the VMs recorded under `root` (for cleanup).
fn cgroups_of_test(root: &str) -> Vec<PathBuf> {
    let ids: Vec<String> = std::fs::read_dir(Path::new(root).join("state/vms"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.iter().flat_map(|id| cgroup_dirs(id)).collect()
}

/// VM `id`'s cgroup directories on this host (v1 controllers or v2).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let cg = Path::new("/sys/fs/cgroup");
    let name = format!("banger-{id}");
    if cg.join("cgroup.controllers").exists() {
        vec![cg.join(name)]
    } else {
        vec![cg.join("memory").join(&name), cg.join("pids").join(&name)]
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
    let root = dir.path().to_path_buf();
    let mut cfg = banger_proto::install::InstallConfig::for_owner(0, 0, root.join("home"));
    cfg.state_dir = root.join("state");
    cfg.runtime_dir = root.join("run");
    cfg.jailer_base = root.join("jail");
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::create_dir_all(root.join("home")).unwrap();
    let config = root.join("install.toml");
    std::fs::write(&config, cfg.render()).unwrap();
    let mut env = Env {
        dir,
        ns,
        config,
        daemon: None,
        helper: None,
        vmms: Vec::new(),
    };
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
    env.term_daemon();
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
