//! The create bench's daemon: an in-process `Daemon` over a `bgtest-`
//! scratch StateDir whose Firecracker is the fc-double (this binary
//! re-executed with `--fc-double`) or whose VMM is QEMU with the cached
//! Debian guest, and whose host steps are real (root: the helper's code
//! in-process, on a `bgtest-` bridge and nftables table) or recorded (not
//! root; the double only).

use banger_core::machine::Backend;
use banger_core::paths::{Mode, Paths};
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_proto::helper::{self as m, method};
use banger_proto::install::InstallConfig;
use banger_sys::nft::{Nft, TableName};
use bangerd::daemon::Daemon;
use bangerd::privops::{DirectOps, PrivError, PrivOps, RecordingPriv};
use bangerd::progress::Progress;
use bangerd::vmm::registry::Registry;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the bench did not run.
#[derive(Debug)]
pub struct Skip(pub String);

/// Which VMM the bench's daemon runs.
pub enum Kind {
    /// The Firecracker double; readiness on a local banner.
    Double,
    /// QEMU as the host allows (TCG here) with the cached Debian image;
    /// readiness on the guest's own sshd within `ready_timeout`. Root only.
    Qemu { ready_timeout: Duration },
}

/// If this process was started as the Firecracker double (`--fc-double
/// --api-sock PATH --id ID`), serve until the guest powers off or SIGTERM,
/// and return the exit code.
pub fn double_mode() -> Option<i32> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == "--fc-double")?;
    let value = |flag: &str| {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).cloned()
    };
    let (Some(sock), Some(id)) = (value("--api-sock"), value("--id")) else {
        eprintln!("fc-double: --api-sock and --id are required");
        return Some(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let code = rt.block_on(async {
        let Ok(l) = tokio::net::UnixListener::bind(&sock) else {
            eprintln!("fc-double: cannot bind {sock}");
            return 1;
        };
        let cfg = banger_fc_double::DoubleConfig {
            instance_id: id,
            sys_root: std::env::var_os("FC_DOUBLE_SYS_ROOT")
                .map_or_else(|| PathBuf::from("/sys"), PathBuf::from),
            guest_shutdown: Some(Duration::from_millis(5)),
            ..Default::default()
        };
        let term = async {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        };
        let _ = banger_fc_double::serve(l, cfg, term).await;
        0
    });
    let _ = std::fs::remove_file(&sock);
    Some(code)
}

/// The privileged seam of the bench: Firecracker launches start the double
/// (fork + exec of this binary, as the owner: its socket needs no hand-over),
/// kills go to it directly; every other step goes to `inner` (the helper's
/// code in-process as root, or a recorder), which, recording, also makes
/// each tap appear in the double's sysfs fixture.
pub struct BenchPriv {
    pub inner: Arc<dyn PrivOps>,
    pub sys_fixture: Option<PathBuf>,
    pub children: Mutex<HashSet<i32>>,
    /// The bench's bridge and its address.
    pub bridge: Option<(String, String)>,
    /// How often the bridge had gone and was made again.
    pub bridge_remade: AtomicU64,
}

impl BenchPriv {
    fn launch(&self, params: Value) -> Result<Value, PrivError> {
        let p: m::LaunchFirecrackerParams =
            serde_json::from_value(params).map_err(PrivError::BadAnswer)?;
        let exe = std::env::current_exe().map_err(PrivError::Io)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log_file)
            .map_err(PrivError::Io)?;
        let mut c = Command::new(exe);
        c.args(["--fc-double", "--api-sock", &p.api_socket, "--id", &p.vm_id])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(PrivError::Io)?)
            .stderr(log);
        if let Some(sys) = &self.sys_fixture {
            c.env("FC_DOUBLE_SYS_ROOT", sys);
        }
        let mut child = c.spawn().map_err(PrivError::Io)?;
        let pid = child.id() as i32;
        self.children.lock().unwrap().insert(pid);
        // Reaped as it exits, so /proc/<pid> goes with it.
        std::thread::spawn(move || child.wait());
        Ok(json!({ "pid": pid }))
    }

    fn kill(&self, params: &Value, sig: i32) -> Result<Value, PrivError> {
        let pid = params["pid"].as_i64().unwrap_or(0) as i32;
        if self.children.lock().unwrap().contains(&pid) {
            // SAFETY: kill(2) on a double this bench started.
            unsafe { libc::kill(pid, sig) };
        }
        Ok(json!({}))
    }

    /// Kill every double still running.
    pub fn kill_all(&self) {
        for pid in self.children.lock().unwrap().drain() {
            // SAFETY: kill(2) on a double this bench started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl PrivOps for BenchPriv {
    fn kind(&self) -> &'static str {
        "bench"
    }

    fn call_value(&self, method: &str, params: Value) -> Result<Value, PrivError> {
        match method {
            m::LAUNCH_FIRECRACKER => self.launch(params),
            m::ENSURE_SOCKET_ACCESS => Ok(json!({})),
            m::KILL_PROCESS => self.kill(&params, libc::SIGKILL),
            m::SIGNAL_PROCESS => {
                let sig = params["signal"].as_i64().unwrap_or(15) as i32;
                self.kill(&params, sig)
            }
            m::CREATE_TAP => {
                if let (Some(sys), Some(tap)) = (&self.sys_fixture, params["name"].as_str()) {
                    let _ = std::fs::create_dir_all(sys.join("class/net").join(tap));
                }
                // Other test runs on this host sweep `bgtest-` links: a bridge
                // gone under the bench is made again (and counted).
                if let Some((bridge, address)) = &self.bridge {
                    if self.sys_fixture.is_none()
                        && !Path::new("/sys/class/net").join(bridge).exists()
                    {
                        self.bridge_remade.fetch_add(1, Ordering::Relaxed);
                        let b = m::EnsureBridge {
                            name: bridge.clone(),
                            address: address.clone(),
                        };
                        self.inner.call_value(
                            m::ENSURE_BRIDGE,
                            serde_json::to_value(b).expect("params serialise"),
                        )?;
                    }
                }
                self.inner.call_value(method, params)
            }
            _ => self.inner.call_value(method, params),
        }
    }
}

/// The bench's daemon and what it made on the host, removed on drop.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub d: Arc<Daemon>,
    pub ops: Arc<BenchPriv>,
    /// `real`: host steps ran (root); `recorded`: they were only recorded.
    pub host: &'static str,
    pub bridge: String,
    pub table: String,
    pub driver: String,
    /// The base image: what it is (the Debian recipe key for QEMU).
    pub image: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.ops.kill_all();
        self.kill_qemus();
        if self.host == "real" {
            // Whatever a failed run left: the VMs' disks, taps, the bridge, the table.
            let ids: Vec<String> = self
                .d
                .store
                .read(|c| {
                    let mut s = c.prepare("SELECT id FROM vms")?;
                    let r = s
                        .query_map([], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>();
                    r
                })
                .unwrap_or_default();
            for id in ids {
                let _ = self
                    .d
                    .privops
                    .call::<method::RemoveQemuCgroup>(&m::RemoveQemuCgroup { vm_id: id.clone() });
                let _ = bangerd::vmdisk::destroy(&self.d, &id);
                quiet("ip", &["link", "del", &banger_core::net::tap_for(&id)]);
            }
            quiet("ip", &["link", "del", &self.bridge]);
            quiet("nft", &["delete", "table", "inet", &self.table]);
        }
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(self.tmp.path())
            .status();
    }
}

impl Env {
    /// SIGKILL every QEMU a failed or interrupted run left — each a child
    /// of this process (the daemon's code runs in it), whose VM id is in
    /// its command line (`…/vms/<id>/…`) — wait for it to go, and remove
    /// that VM's cgroup and tap (its row may be gone already: a create
    /// undone without its start torn down).
    fn kill_qemus(&self) {
        let me = std::process::id().to_string();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1));
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if ppid != Some(me.as_str())
                || !cmdline.starts_with(&self.d.vmms.qemu_bin.display().to_string())
            {
                continue;
            }
            // SAFETY: kill(2) on a QEMU this process started (its child).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // Gone, or a zombie (empty cmdline) until its handle reaps it.
            let t = std::time::Instant::now();
            while std::fs::read(e.path().join("cmdline")).is_ok_and(|c| !c.is_empty())
                && t.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let id = cmdline
                .split("/vms/")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap_or_default()
                .to_string();
            if id.is_empty() {
                continue;
            }
            drop(self.d.vmms.take(&id));
            let _ = self
                .d
                .privops
                .call::<method::RemoveQemuCgroup>(&m::RemoveQemuCgroup { vm_id: id.clone() });
            quiet("ip", &["link", "del", &banger_core::net::tap_for(&id)]);
        }
    }
}

/// Run a tool, ignoring how it ends (cleanup).
pub fn quiet(tool: &str, args: &[&str]) {
    let _ = Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Run a tool that must succeed.
pub fn must(tool: &str, args: &[&str]) -> Result<(), Skip> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| Skip(format!("{tool} not runnable: {e}")))?;
    if !out.status.success() {
        return Err(Skip(format!(
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A base image: a sparse ext4 of `mib` MiB (mkfs.ext4, empty).
pub fn make_image(dir: &Path, mib: u64) -> Result<PathBuf, Skip> {
    let p = dir.join("bgtest-base.ext4");
    let f = std::fs::File::create(&p).map_err(|e| Skip(format!("image: {e}")))?;
    f.set_len(mib << 20)
        .map_err(|e| Skip(format!("image: {e}")))?;
    must("mkfs.ext4", &["-q", "-F", &p.display().to_string()])?;
    Ok(p)
}

/// Build the bench's daemon on the Firecracker double or QEMU.
pub fn env(kind: Kind) -> Result<Env, Skip> {
    let root = rustix::process::geteuid().is_root();
    if matches!(kind, Kind::Qemu { .. }) && !root {
        return Err(Skip(
            "the QEMU mode needs root (taps, bridge, cgroups)".into(),
        ));
    }
    let tmp = tempfile::Builder::new()
        .prefix("bgtest-bench-create-")
        .tempdir_in(std::env::var("BANGER_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .map_err(|e| Skip(format!("scratch dir: {e}")))?;
    let t = tmp.path();
    let home = t.join("home");
    std::fs::create_dir_all(home.join(".ssh")).map_err(|e| Skip(e.to_string()))?;
    must(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "bgtest-owner",
            "-f",
            &home.join(".ssh/id_ed25519").display().to_string(),
        ],
    )?;
    let suffix = banger_testkit::unique_suffix();
    let bridge = format!("bgtest-c{suffix}");
    let table = format!("bgtest_create_{suffix}");
    let me = rustix::process::getuid().as_raw();
    let mut cfg = InstallConfig::for_owner(me, me, home);
    cfg.state_dir = t.join("state");
    cfg.runtime_dir = t.join("run");
    cfg.bridge = bridge.clone();
    // A /24 of 10.231.0.0/16 (up to 253 VMs), picked by the suffix.
    let third = u8::from_str_radix(&suffix[4..6], 16).unwrap_or(7);
    cfg.subnet = format!("10.231.{third}.0/24");
    cfg.max_taps = 1024;
    let paths = Paths {
        state_dir: cfg.state_dir.clone(),
        runtime_dir: cfg.runtime_dir.clone(),
    };
    for d in [&paths.state_dir, &paths.runtime_dir] {
        std::fs::create_dir_all(d).map_err(|e| Skip(e.to_string()))?;
    }
    let (inner, sys_fixture, host): (Arc<dyn PrivOps>, _, _) = if root {
        let h = Host::real();
        let nft = Nft::new(
            h.runner.clone(),
            TableName::new(&table).map_err(|e| Skip(e.to_string()))?,
            "/proc",
        )
        .with_netlink(); // as the helper adds elements
        let helper = Helper {
            cfg: cfg.clone(),
            host: Host {
                nft: Arc::new(nft),
                ..h
            },
        };
        (Arc::new(DirectOps::new(helper)), None, "real")
    } else {
        (
            Arc::new(RecordingPriv::new()),
            Some(t.join("sys")),
            "recorded",
        )
    };
    let subnet: banger_core::net::Subnet =
        cfg.subnet.parse().map_err(|_| Skip(cfg.subnet.clone()))?;
    let ops = Arc::new(BenchPriv {
        inner,
        sys_fixture,
        children: Mutex::default(),
        bridge: Some((bridge.clone(), subnet.gateway_cidr())),
        bridge_remade: AtomicU64::new(0),
    });
    let store = bangerd::store::Store::open(&paths.database()).map_err(|e| Skip(e.to_string()))?;
    let mut vmms = Registry::default();
    vmms.jailed = Some(false);
    vmms.grace = Duration::from_secs(5);
    let image = match kind {
        Kind::Double => {
            let base = make_image(t, 512)?;
            let kernel = t.join("vmlinux");
            std::fs::write(&kernel, b"\x7fELF bgtest kernel").map_err(|e| Skip(e.to_string()))?;
            let req = banger_proto::api::ImageImport {
                name: "base".into(),
                rootfs: base.display().to_string(),
                kernel: kernel.display().to_string(),
                initrd: None,
            };
            let quiet_progress = Progress::new(tokio::sync::mpsc::unbounded_channel().0);
            bangerd::images::catalog::import(&store, &paths.state_dir, &req, &quiet_progress)
                .map_err(|e| Skip(bangerd::render_chain(&e)))?;
            vmms.backend = Some(Backend::Firecracker);
            vmms.ready_addr = Some(banger_testkit::ssh_banner_listener());
            vmms.ready_timeout = Duration::from_secs(30);
            "an empty 512 MiB ext4 and a placeholder kernel".to_string()
        }
        Kind::Qemu { ready_timeout } => {
            // The backend as the host says (QEMU/TCG here); readiness on
            // the guest's sshd at its address on the bench's bridge.
            vmms.ready_timeout = ready_timeout;
            super::qemu::import_debian(&store, &paths.state_dir)?
        }
    };
    let driver = if root {
        bangerd::vmdisk::driver::select(Path::new("/proc"), &paths.state_dir).driver
    } else {
        bangerd::vmdisk::driver::Driver::Copy
    };
    vmms.disk_driver = Some(driver);
    let d = Daemon {
        cfg,
        paths,
        mode: Mode::Dev,
        store,
        privops: ops.clone(),
        host_paths: Default::default(),
        vmms,
    };
    let env = Env {
        tmp,
        d: Arc::new(d),
        ops,
        host,
        bridge,
        table,
        driver: format!("{driver:?}"),
        image,
    };
    // Once per daemon, as its start does: the bridge.
    let plan = bangerd::network::NetPlan::from_config(&env.d.cfg)
        .map_err(|e| Skip(bangerd::render_chain(&e)))?;
    env.d
        .privops
        .call::<method::EnsureBridge>(&m::EnsureBridge {
            name: plan.bridge.clone(),
            address: plan.subnet.gateway_cidr(),
        })
        .map_err(|e| Skip(bangerd::render_chain(&e)))?;
    Ok(env)
}
