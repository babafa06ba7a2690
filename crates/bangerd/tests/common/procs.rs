//! The real `bangerd` (and, the system way, a `banger-helper` process) in a
//! `bgtest-` network namespace under one scratch dir; and what a run may
//! leave on the host (loops, dm devices, cgroups), found by that dir.

use banger_sys::netns::NamedNetns;
use banger_testkit::{http_unix, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

/// The daemon binary under test (its siblings: `banger`, `banger-helper`).
pub const BIN: &str = env!("CARGO_BIN_EXE_bangerd");

/// The daemon and helper processes of one test.
pub struct Procs {
    pub dir: tempfile::TempDir,
    pub ns: NamedNetns,
    /// System mode: the install config both processes read; `None`: `--dev`.
    pub config: Option<PathBuf>,
    pub daemon: Option<Child>,
    pub helper: Option<Child>,
}

impl Procs {
    pub fn new(dir: tempfile::TempDir, ns: NamedNetns, config: Option<PathBuf>) -> Self {
        Procs {
            dir,
            ns,
            config,
            daemon: None,
            helper: None,
        }
    }

    /// The system way: an install config (owner root, every directory
    /// under the scratch dir) for both processes.
    pub fn use_system_config(&mut self) {
        let root = self.dir.path();
        let mut cfg = banger_proto::install::InstallConfig::for_owner(0, 0, root.join("home"));
        cfg.state_dir = root.join("state");
        cfg.runtime_dir = root.join("run");
        cfg.jailer_base = root.join("jail");
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::create_dir_all(root.join("home")).unwrap();
        let path = root.join("install.toml");
        std::fs::write(&path, cfg.render()).unwrap();
        self.config = Some(path);
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/bangerd.sock")
    }

    /// `bangerd.log` in the scratch dir, both processes' stderr.
    pub fn log(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("bangerd.log"))
            .unwrap()
    }

    /// The last `n` lines of `bangerd.log`.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("bangerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Start the helper (system mode only) and wait for its socket.
    pub fn start_helper(&mut self) {
        let Some(cfg) = &self.config else { return };
        let bin = Path::new(BIN).with_file_name("banger-helper");
        // nsenter, not `ip netns exec`: that remounts /sys for the
        // namespace, and the helper needs the host's cgroup hierarchy
        // (each QEMU goes into its VM's cgroup).
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns.name()))
            .arg("--")
            .arg(bin)
            .arg("--config")
            .arg(cfg)
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

    /// SIGKILL the helper (as a crash would) and reap it.
    pub fn kill9_helper(&mut self) {
        if let Some(mut c) = self.helper.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the daemon in the namespace and wait until it answers.
    pub fn start_daemon(&mut self) {
        let mode: Vec<std::ffi::OsString> = match &self.config {
            Some(cfg) => vec!["--config".into(), cfg.into()],
            None => vec!["--dev".into()],
        };
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns.name(), BIN])
            .args(mode)
            .env("BANGER_STATE_DIR", self.dir.path().join("state"))
            .env("BANGER_RUNTIME_DIR", self.dir.path().join("run"))
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

    /// SIGKILL the daemon and reap it.
    pub fn kill9_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the daemon: its exit status, or `None` when it did not exit
    /// within `grace` (then it is killed).
    pub fn term_daemon(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut c = self.daemon.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if !wait_until(grace, || c.try_wait().is_ok_and(|s| s.is_some())) {
            let _ = c.kill();
            let _ = c.wait();
            return None;
        }
        c.wait().ok()
    }

    /// Remove what a failed run left of its disks and cgroups: dm devices
    /// on loops backed under the scratch dir, those loops, and the cgroups
    /// of the VMs recorded there; make the tree removable.
    pub fn sweep_host(&self) {
        let root = self.dir.path().display().to_string();
        for (name, _) in dm_devices() {
            if name.starts_with("fc-rootfs-") && dm_uses_our_loops(&name, &root) {
                let _ = Command::new("dmsetup")
                    .args(["remove", "--force", &name])
                    .status();
            }
        }
        for (dev, _) in loops_under(&root) {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
        if let Ok(rd) = std::fs::read_dir(self.dir.path().join("state/vms")) {
            for e in rd.flatten() {
                for d in cgroup_dirs(&e.file_name().to_string_lossy()) {
                    let _ = std::fs::remove_dir(d);
                }
            }
        }
        let _ = Command::new("chmod").args(["-R", "u+w", &root]).status();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.kill9_daemon();
        self.kill9_helper();
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Loop devices whose backing file lies under `root`: (device, file).
pub fn loops_under(root: &str) -> Vec<(String, String)> {
    let o = Command::new("losetup")
        .args(["-l", "-n", "-O", "NAME,BACK-FILE"])
        .output()
        .unwrap();
    text(&o)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (dev, file) = (it.next()?, it.next()?);
            file.starts_with(root)
                .then(|| (dev.to_string(), file.to_string()))
        })
        .collect()
}

/// `dmsetup ls`: (name, device).
pub fn dm_devices() -> Vec<(String, String)> {
    let o = Command::new("dmsetup").args(["ls"]).output().unwrap();
    text(&o)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next().unwrap_or("").to_string()))
        })
        .filter(|(n, _)| n != "No")
        .collect()
}

/// Whether dm device `name` sits on a loop backed by a file under `root`.
pub fn dm_uses_our_loops(name: &str, root: &str) -> bool {
    let o = Command::new("dmsetup")
        .args(["deps", "-o", "devname", name])
        .output()
        .unwrap();
    let deps = text(&o);
    loops_under(root).iter().any(|(dev, _)| {
        let short = dev.trim_start_matches("/dev/");
        deps.contains(&format!("({short})"))
    })
}

/// VM `id`'s cgroup directories on this host (v1 controllers or v2).
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let cg = Path::new("/sys/fs/cgroup");
    let name = format!("banger-{id}");
    if cg.join("cgroup.controllers").exists() {
        vec![cg.join(name)]
    } else {
        vec![cg.join("memory").join(&name), cg.join("pids").join(&name)]
    }
}
