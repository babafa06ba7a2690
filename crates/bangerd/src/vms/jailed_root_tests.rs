//! The jailed lifecycle for real, as root: the daemon in jailed mode with
//! the copy disk driver, the real helper in-process (system launch
//! policy), the jailer double and a static fc-double as the exec file,
//! inside a `bgtest-` network namespace. `create` → running (the VMM as its
//! jail uid with no capability, in its own cgroups with the limits, the
//! chroot holding only its files, the disk file the jail uid's) → `stop`
//! (the disk given back) → `start` → `rm`, and nothing of it remains.

use super::tests::{fx, progress};
use super::*;
use crate::network::{self, NetPlan};
use crate::privops::DirectOps;
use banger_helper::gates::jail::{host_cgroup_version, CgroupVersion};
use banger_helper::helper::Helper;
use banger_helper::host::{Host, LaunchPolicy};
use banger_sys::net::RealNet;
use banger_sys::netns::NamedNetns;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// fc-double and the jailer double built static (`+crt-static`, the gnu
/// target: the chroot has no loader) once per test run, in
/// `<target dir>/static-fc`; or why not.
fn static_doubles() -> Result<(PathBuf, PathBuf), String> {
    static BUILT: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
            let installed = Command::new("rustup")
                .args(["target", "list", "--installed"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(&triple))
                // No rustup: the toolchain's own target is the host's.
                .unwrap_or(true);
            if !installed {
                return Err(format!("the {triple} target is not installed"));
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let target = exe
                .ancestors()
                .nth(3)
                .ok_or("no target dir above the test binary")?
                .join("static-fc");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .args(["build", "-q", "-p", "banger-fc-double", "-p"])
                .args(["banger-jailer-double", "--target", &triple, "--target-dir"])
                .arg(&target)
                .output()
                .map_err(|e| format!("cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "the static build failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let dir = target.join(&triple).join("debug");
            let fc = dir.join("fc-double");
            let bytes = std::fs::read(&fc).map_err(|e| e.to_string())?;
            match banger_core::elf::interpreter(&bytes) {
                Ok(None) => Ok((fc, dir.join("jailer-double"))),
                other => Err(format!("fc-double is not static: {other:?}")),
            }
        })
        .clone()
}

fn install(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn status_field(pid: i64, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// Relative path, type letter and uid of everything below `dir`.
fn listing(dir: &Path) -> Vec<(String, char, u32)> {
    fn walk(base: &Path, at: &Path, out: &mut Vec<(String, char, u32)>) {
        let mut ents: Vec<_> = std::fs::read_dir(at).unwrap().flatten().collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let ft = md.file_type();
            let t = match () {
                _ if ft.is_dir() => 'd',
                _ if ft.is_file() => 'f',
                _ if ft.is_char_device() => 'c',
                _ if ft.is_block_device() => 'b',
                _ if ft.is_socket() => 's',
                _ => '?',
            };
            let rel = e.path().strip_prefix(base).unwrap().display().to_string();
            out.push((rel, t, md.uid()));
            if ft.is_dir() {
                walk(base, &e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

fn mounts_below(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(str::to_string)
        .collect()
}

/// The per-VM cgroup directories the jailer makes on this host.
fn cgroup_dirs(exec: &str, id: &str) -> Vec<PathBuf> {
    let cg = Path::new("/sys/fs/cgroup");
    match host_cgroup_version(Path::new("/sys")) {
        Some(CgroupVersion::V1) => ["memory", "pids"]
            .iter()
            .map(|c| cg.join(c).join(exec).join(id))
            .collect(),
        Some(CgroupVersion::V2) => vec![cg.join(exec).join(id)],
        None => vec![],
    }
}

/// Whatever a failed run left on the host: VMMs in this run's `bgtest-`
/// cgroups (killed), binds under the temp dir, and those cgroups.
struct Leftovers {
    tmp: PathBuf,
    exec: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for c in ["memory", "pids", ""] {
            let parent = Path::new("/sys/fs/cgroup").join(c).join(&self.exec);
            for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                let procs = std::fs::read_to_string(e.path().join("cgroup.procs"));
                for pid in procs.unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        // SAFETY: kill(2) on a VMM of this run's own cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        for l in mounts_below(&self.tmp) {
            if let Some(mp) = l.split(' ').nth(4) {
                let _ = rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH);
            }
        }
        for c in ["memory", "pids", "cpu", ""] {
            let parent = Path::new("/sys/fs/cgroup").join(c).join(&self.exec);
            for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(e.path());
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(15), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn root_jailed_vm_create_running_stop_start_rm_through_the_real_helper() {
    if !banger_testkit::require_root(
        "root_jailed_vm_create_running_stop_start_rm_through_the_real_helper",
    ) {
        return;
    }
    let Some(version) = host_cgroup_version(Path::new("/sys")) else {
        println!("skipped: no cgroup hierarchy with memory and pids under /sys/fs/cgroup");
        return;
    };
    let (fc_double, jailer_double) = match static_doubles() {
        Ok(p) => p,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let s = banger_testkit::unique_suffix();
    let exec = format!("bgtest-fc{s}");
    let bridge = format!("bgtest-br{s}");
    let super::tests::Fx { tmp, mut d } = fx(Arc::new(crate::privops::RecordingPriv::new()));
    let _left = Leftovers {
        tmp: tmp.path().to_path_buf(),
        exec: exec.clone(),
    };
    let root = tmp.path().to_path_buf();
    let bin = root.join("bin");
    let jail_base = root.join("jail");
    for dir in [&bin, &jail_base] {
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let fc_bin = bin.join(&exec);
    install(&fc_double, &fc_bin);
    // The real jailer when `BANGER_JAILER` names it (the exec file stays
    // fc-double: the real Firecracker would need a real guest).
    let jailer = std::env::var_os("BANGER_JAILER")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or(jailer_double);
    println!("jailer: {}", jailer.display());
    install(&jailer, &bin.join("jailer"));

    // A real ext4 image: the disk is customised through the real helper.
    let image = d.paths.state_dir.join("images/img1/rootfs.ext4");
    let tree = root.join("tree");
    for p in ["etc/systemd/network", "etc/network", "etc/ssh", "root/.ssh"] {
        std::fs::create_dir_all(tree.join(p)).unwrap();
    }
    std::fs::remove_file(&image).unwrap();
    let mk = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("16M")
        .status()
        .unwrap();
    assert!(mk.success(), "mkfs.ext4");

    let mut hcfg = banger_proto::install::InstallConfig::for_owner(0, 0, "/root".into());
    hcfg.state_dir = d.paths.state_dir.clone();
    hcfg.runtime_dir = d.paths.runtime_dir.clone();
    hcfg.bridge = bridge.clone();
    hcfg.jailer_base = jail_base.clone();
    hcfg.firecracker_bin = fc_bin.clone();
    hcfg.jailer_bin = bin.join("jailer");
    hcfg.jail_uid_base = Some(3_900_000 + (std::process::id() % 1000) * 64);
    hcfg.jail_uid_count = Some(64);
    let range = hcfg.jail_range().unwrap().unwrap();
    let records = root.join("records");
    d.privops = Arc::new(DirectOps::new(Helper {
        cfg: hcfg,
        host: Host {
            launch_policy: LaunchPolicy::JailedOnly,
            launch_records: records.clone(),
            ..Host::real()
        },
    }));
    d.cfg.bridge = bridge.clone();
    d.cfg.jailer_base = jail_base.clone();
    d.cfg.firecracker_bin = fc_bin.clone();
    d.cfg.jailer_bin = bin.join("jailer");
    d.vmms.backend = Some(banger_core::machine::Backend::Firecracker);
    d.vmms.jailed = Some(true);
    d.vmms.disk_driver = Some(banger_core::disk::Driver::Copy);
    d.vmms.grace = Duration::from_secs(10);
    std::fs::create_dir_all(&d.paths.runtime_dir).unwrap();

    let ns = NamedNetns::add(&format!("bgtest-{s}-jail")).unwrap();
    let run_root = root.join("netrun");
    std::fs::create_dir_all(&run_root).unwrap();
    let exec2 = exec.clone();
    ns.run(move || {
        assert!(Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        // Readiness without a guest: an SSH banner inside the namespace.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        d.vmms.ready_addr = Some(l.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let _ = std::io::Write::write_all(&mut c, b"SSH-2.0-bgtest\r\n");
            }
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(lifecycle(d, exec2, run_root, range, version, records));
    })
    .unwrap();
    drop(ns);
    drop(tmp);
}

async fn lifecycle(
    d: crate::daemon::Daemon,
    exec: String,
    run_root: PathBuf,
    range: banger_proto::install::JailRange,
    version: CgroupVersion,
    records: PathBuf,
) {
    let plan = NetPlan::from_config(&d.cfg).unwrap();
    let routes = network::host_routes(&RealNet::default()).unwrap();
    let up = network::set_up(&plan, d.privops.as_ref(), &routes, &run_root).unwrap();
    assert!(up.status.problems.is_empty(), "{:?}", up.status.problems);
    let req = CreateReq {
        name: "bgtest-jailed".into(),
        image: "base".into(),
        vcpus: 1,
        memory_mib: 128,
        start: false,
        vmm: None,
        disk_size: None,
    };
    let row = create(&d, &req, &progress()).await.unwrap();
    assert_eq!(row.state, VmState::Created);
    // The disk as the owner made it, before any jail held it.
    let disk = d.paths.vm_dir(&row.id).join(crate::vmdisk::COPY_FILE);
    let disk_before = std::fs::metadata(&disk).unwrap();
    let t = Instant::now();
    let row = match start(&d, "bgtest-jailed", &progress()).await {
        Ok(r) => r,
        Err(e) => {
            let logs: Vec<String> = std::fs::read_dir(d.paths.vms_dir())
                .into_iter()
                .flatten()
                .flatten()
                .map(|v| std::fs::read_to_string(v.path().join("console.log")).unwrap_or_default())
                .collect();
            panic!("{}\nconsole: {logs:?}", crate::render_chain(&e))
        }
    };
    println!("start to running (jailed) in {:?}", t.elapsed());
    assert_eq!(row.state, VmState::Running);
    let id = row.id.clone();
    let vm_jail = d.cfg.jailer_base.join(&exec).join(&id);
    let chroot = vm_jail.join("root");
    let sock_dir = d.paths.runtime_dir.join("jails").join(&id);
    let tap = banger_core::net::tap_for(&id);

    let check_running = |pid: i64| -> u32 {
        // The VMM: one jail uid of the range, everywhere; no capability.
        let uid: u32 = status_field(pid, "Uid:")
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(range.contains(uid) && uid != 0, "uid {uid}");
        let ids = format!("{uid}\t{uid}\t{uid}\t{uid}");
        assert_eq!(status_field(pid, "Uid:"), ids);
        assert_eq!(status_field(pid, "Gid:"), ids);
        assert_eq!(status_field(pid, "CapEff:"), "0000000000000000");
        let argv0 = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(argv0.starts_with(format!("/{exec}\0").as_bytes()));
        // Its own cgroups, with the limits.
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let mem = ((128 + 128) << 20).to_string();
        let dirs = cgroup_dirs(&exec, &id);
        match version {
            CgroupVersion::V1 => {
                for c in ["memory", "pids"] {
                    assert!(cg.contains(&format!(":{c}:/{exec}/{id}\n")), "{cg}");
                }
                let limit = std::fs::read_to_string(dirs[0].join("memory.limit_in_bytes"));
                assert_eq!(limit.unwrap().trim(), mem);
                let pids = std::fs::read_to_string(dirs[1].join("pids.max"));
                assert_eq!(pids.unwrap().trim(), "34");
            }
            CgroupVersion::V2 => {
                assert!(cg.contains(&format!("0::/{exec}/{id}\n")), "{cg}");
                let limit = std::fs::read_to_string(dirs[0].join("memory.max"));
                assert_eq!(limit.unwrap().trim(), mem);
                let pids = std::fs::read_to_string(dirs[0].join("pids.max"));
                assert_eq!(pids.unwrap().trim(), "34");
            }
        }
        // The chroot: the jail uid's, holding only this VM's files.
        let md = std::fs::metadata(&chroot).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777), (uid, 0o700));
        let mut want: Vec<(String, char, u32)> = [
            ("api", 'd', uid),
            ("api/firecracker.socket", 's', 0),
            ("dev", 'd', uid),
            ("dev/kvm", 'c', uid),
            ("dev/net", 'd', uid),
            ("dev/net/tun", 'c', uid),
            ("dev/urandom", 'c', uid),
            ("dev/userfaultfd", 'c', uid),
            (exec.as_str(), 'f', uid),
            (&format!("{exec}.pid"), 'f', 0),
            ("rootfs", 'f', uid),
            ("run", 'd', uid),
            ("vmlinux", 'f', uid),
        ]
        .map(|(p, t, u)| (p.to_string(), t, u))
        .to_vec();
        want.sort();
        assert_eq!(listing(&chroot), want);
        // `/rootfs` is the VM's disk file itself, the jail uid's 0600.
        let inside = std::fs::metadata(chroot.join("rootfs")).unwrap();
        let host = std::fs::metadata(&disk).unwrap();
        assert_eq!(
            (inside.dev(), inside.ino()),
            (disk_before.dev(), disk_before.ino())
        );
        assert_eq!(
            (host.uid(), host.gid(), host.mode() & 0o7777),
            (uid, uid, 0o600)
        );
        assert_eq!(mounts_below(&chroot).len(), 2, "the api and rootfs binds");
        uid
    };
    let pid = row.pid.unwrap();
    let uid = check_running(pid);
    println!("running as jail uid {uid}, pid {pid}");

    let check_gone = |pid: i64| {
        wait_for("the VMM gone", || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        assert!(!vm_jail.exists(), "the jail remains");
        assert!(!sock_dir.exists(), "the socket dir remains");
        assert!(mounts_below(&d.cfg.jailer_base).is_empty());
        wait_for("the cgroups removed", || {
            cgroup_dirs(&exec, &id).iter().all(|c| !c.exists())
        });
        assert_eq!(std::fs::read_dir(&records).unwrap().count(), 0);
    };

    let row = stop(&d, "bgtest-jailed", false, &progress()).await.unwrap();
    assert_eq!((row.state, row.pid), (VmState::Stopped, None));
    check_gone(pid);
    // The disk is the owner's again, as it was.
    let after = std::fs::metadata(&disk).unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mode(), after.ino()),
        (
            disk_before.uid(),
            disk_before.gid(),
            disk_before.mode(),
            disk_before.ino()
        )
    );

    let row = start(&d, "bgtest-jailed", &progress()).await.unwrap();
    assert_eq!(row.state, VmState::Running);
    let pid2 = row.pid.unwrap();
    assert_ne!(pid2, pid);
    check_running(pid2);

    remove(&d, "bgtest-jailed", true, &progress())
        .await
        .unwrap();
    check_gone(pid2);
    assert!(!d.paths.vm_dir(&id).exists());
    assert!(matches!(
        find(&d, "bgtest-jailed"),
        Err(VmError::NotFound(_))
    ));
    let has_tap = Command::new("ip")
        .args(["link", "show", "dev", &tap])
        .output()
        .unwrap()
        .status
        .success();
    assert!(!has_tap, "the tap remains");
    let left = std::fs::read_dir(d.cfg.jailer_base.join(&exec))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "a jail remains under the exec dir");
}
