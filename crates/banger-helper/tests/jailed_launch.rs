//! The jailed launch end to end, as root, through `Helper::dispatch` with
//! the system policy: the jailer double (or the real jailer named by
//! `BANGER_JAILER`) builds the jail the helper prepared and execs a static
//! fake VMM (or the real Firecracker named by `BANGER_FIRECRACKER`).

use banger_helper::dispatch::Helper;
use banger_helper::error::RpcError;
use banger_helper::host::{Host, LaunchPolicy};
use banger_proto::helper as m;
use banger_proto::install::InstallConfig;
use banger_testkit::{open_up, probe_as, wait_until, Probe};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A static VMM stand-in (the chroot holds no loader): prints its argv,
/// binds `--api-sock`, accepts and closes connections until killed.
const STATIC_VMM_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
int main(int argc, char **argv) {
    const char *sock = 0;
    for (int i = 0; i < argc; i++) {
        printf("%s\n", argv[i]);
        if (!strcmp(argv[i], "--api-sock") && i + 1 < argc) sock = argv[i + 1];
    }
    fflush(stdout);
    if (!sock) for (;;) pause();
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {0};
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, sock, sizeof a.sun_path - 1);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 8)) {
        perror("api socket");
        return 1;
    }
    for (;;) { int c = accept(fd, 0, 0); if (c >= 0) close(c); }
}
"#;

const OWNER: (u32, u32) = (4242, 4243);

fn root_only(test: &str) -> bool {
    banger_testkit::require_root(test)
}

/// A binary built beside the tests (the parent of `deps/`).
fn built_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join(name);
    p.is_file().then_some(p)
}

fn cp(from: &Path, to: &Path) {
    assert!(Command::new("cp")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn compile_static_vmm(out: &Path) {
    let mut cc = Command::new("cc")
        .args(["-static", "-O1", "-x", "c", "-o"])
        .arg(out)
        .arg("-")
        .stdin(Stdio::piped())
        .spawn()
        .expect("cc runs");
    cc.stdin
        .take()
        .unwrap()
        .write_all(STATIC_VMM_C.as_bytes())
        .unwrap();
    assert!(cc.wait().unwrap().success(), "compiling the static VMM");
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o755)).unwrap();
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique `bgtest-` VM id (it also names the per-VM cgroups, host-wide).
fn vm_id() -> String {
    format!(
        "bgtest-{}-{}",
        std::process::id() % 1_000_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// `/dev/mapper/fc-rootfs-<id>` as a block node (the helper only needs a
/// block device of that name); removed on drop, with `/dev/mapper` if this
/// fixture created it and it is empty.
struct DmNode {
    path: PathBuf,
    made_dir: bool,
}

/// Whether `/dev/mapper` was absent when this test process first looked.
static MAPPER_WAS_ABSENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

impl DmNode {
    fn new(id: &str) -> DmNode {
        let dir = Path::new("/dev/mapper");
        let made_dir = *MAPPER_WAS_ABSENT.get_or_init(|| !dir.exists());
        let _ = std::fs::create_dir(dir);
        let path = dir.join(format!("fc-rootfs-{id}"));
        let _ = std::fs::remove_file(&path);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(7, 250),
        )
        .unwrap();
        DmNode { path, made_dir }
    }
}

impl Drop for DmNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if self.made_dir {
            let _ = std::fs::remove_dir("/dev/mapper");
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    h: Helper,
    real: bool,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("bgtest-jail-")
            .tempdir()
            .unwrap();
        open_up(dir.path());
        let root = dir.path().canonicalize().unwrap();
        let mut cfg = InstallConfig::for_owner(OWNER.0, OWNER.1, root.join("home"));
        cfg.state_dir = root.join("state");
        cfg.runtime_dir = root.join("run");
        cfg.jailer_base = root.join("jail");
        let bin = root.join("bin");
        for d in [&cfg.state_dir, &cfg.runtime_dir, &cfg.jailer_base, &bin] {
            std::fs::create_dir(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::os::unix::fs::chown(&cfg.state_dir, Some(OWNER.0), Some(OWNER.1)).unwrap();
        cfg.firecracker_bin = bin.join("firecracker");
        cfg.jailer_bin = bin.join("jailer");
        let env_path = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let real_fc = env_path("BANGER_FIRECRACKER");
        let real_jailer = env_path("BANGER_JAILER");
        match &real_fc {
            Some(p) => cp(p, &cfg.firecracker_bin),
            None => compile_static_vmm(&cfg.firecracker_bin),
        }
        let jailer = real_jailer
            .clone()
            .or_else(|| built_binary("jailer-double"));
        let jailer = jailer.expect(
            "jailer-double beside the tests (cargo build -p banger-jailer-double) or BANGER_JAILER",
        );
        cp(&jailer, &cfg.jailer_bin);
        if real_fc.is_none() || real_jailer.is_none() {
            println!(
                "note: jailer {}, VMM {} (set BANGER_JAILER and BANGER_FIRECRACKER to run against the real ones)",
                if real_jailer.is_some() { "real" } else { "double" },
                if real_fc.is_some() { "real" } else { "static stand-in" },
            );
        }
        // A range no host user has; distinct per test process.
        cfg.jail_uid_base = Some(3_800_000 + (std::process::id() % 1000) * 64);
        cfg.jail_uid_count = Some(64);
        let h = Helper {
            cfg,
            host: Host {
                launch_policy: LaunchPolicy::JailedOnly,
                launch_records: root.join("records"),
                ..Host::real()
            },
        };
        Fixture {
            dir,
            h,
            real: real_fc.is_some() && real_jailer.is_some(),
        }
    }

    fn state_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.h.cfg.state_dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::os::unix::fs::chown(&p, Some(OWNER.0), Some(OWNER.1)).unwrap();
        p
    }

    fn params(&self, vm: &str, dm: &DmNode) -> Value {
        let kernel = self.state_file(&format!("{vm}.vmlinux"), b"kernel bytes");
        let initrd = self.state_file(&format!("{vm}.initrd"), b"initrd bytes");
        json!({
            "vm_id": vm,
            "api_socket": "",
            "jailed": true,
            "log_file": self.h.cfg.state_dir.join(format!("{vm}.log")),
            "jail": {
                "kernel": kernel,
                "initrd": initrd,
                "root_disk": dm.path,
                "memory_mib": 64,
                "vcpus": 1,
            }
        })
    }
}

/// Kills a pid on drop, whatever the test did.
struct Kill(i32);
impl Drop for Kill {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test launched.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// Relative path, file type letter, uid and mode of everything in `dir`
/// (not descending into mounts other than `dir`'s own).
fn listing(dir: &Path) -> Vec<(String, char, u32, u32)> {
    fn walk(base: &Path, at: &Path, out: &mut Vec<(String, char, u32, u32)>) {
        let mut ents: Vec<_> = std::fs::read_dir(at).unwrap().flatten().collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let ft = md.file_type();
            let t = if ft.is_dir() {
                'd'
            } else if ft.is_file() {
                'f'
            } else if ft.is_block_device() {
                'b'
            } else if ft.is_char_device() {
                'c'
            } else if ft.is_socket() {
                's'
            } else {
                '?'
            };
            let rel = e.path().strip_prefix(base).unwrap().display().to_string();
            out.push((rel, t, md.uid(), md.mode() & 0o7777));
            if ft.is_dir() {
                walk(base, &e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

fn status_field(pid: i32, name: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn v1_cgroup(controller: &str, vm: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("firecracker")
        .join(vm)
}

fn gate_text(r: Result<Value, RpcError>) -> String {
    match r {
        Err(e @ RpcError::Gate { .. }) => e.to_string(),
        other => panic!("expected a gate refusal, got {other:?}"),
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Whatever a failed test left: the /run binds and the cgroups.
        let exec_dir = self.h.cfg.jailer_base.join("firecracker");
        for e in std::fs::read_dir(&exec_dir).into_iter().flatten().flatten() {
            let run = e.path().join("root/api");
            let _ = rustix::mount::unmount(&run, rustix::mount::UnmountFlags::DETACH);
            let name = e.file_name();
            for c in ["memory", "pids", "cpu"] {
                let _ = std::fs::remove_dir(v1_cgroup(c, name.to_str().unwrap_or("")));
            }
        }
        let _ = &self.dir;
    }
}

fn wait(what: &str, f: impl FnMut() -> bool, log: &Path) {
    assert!(
        wait_until(Duration::from_secs(15), f),
        "timed out: {what}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn root_jailed_vmm_runs_as_its_jail_uid_in_its_cgroup_with_only_its_files() {
    if !root_only("root_jailed_vmm_runs_as_its_jail_uid_in_its_cgroup_with_only_its_files") {
        return;
    }
    let f = Fixture::new();
    let h = &f.h;
    let range = h.cfg.jail_range().unwrap().unwrap();
    let (a, b) = (vm_id(), vm_id());
    let (dma, dmb) = (DmNode::new(&a), DmNode::new(&b));
    let ra = h
        .dispatch(m::LAUNCH_FIRECRACKER, f.params(&a, &dma))
        .unwrap();
    let pid = ra["pid"].as_i64().unwrap() as i32;
    let _ka = Kill(pid);
    let log = h.cfg.state_dir.join(format!("{a}.log"));
    let uid = ra["jail_uid"].as_u64().unwrap() as u32;
    assert!(range.contains(uid) && uid != OWNER.0 && uid != OWNER.1 && uid != 0);
    let exec_dir = h.cfg.jailer_base.join("firecracker");
    let chroot = exec_dir.join(&a).join("root");
    let api = h
        .cfg
        .runtime_dir
        .join("jails")
        .join(&a)
        .join("firecracker.socket");
    assert_eq!(ra["chroot"], json!(chroot));
    assert_eq!(ra["api_socket"], json!(api));
    wait("the API socket", || api.exists(), &log);

    // The VMM: the jail uid and gid, no capability, `/firecracker` argv[0].
    let ids = format!("{uid}\t{uid}\t{uid}\t{uid}");
    assert_eq!(status_field(pid, "Uid:"), ids);
    assert_eq!(status_field(pid, "Gid:"), ids);
    assert_eq!(status_field(pid, "CapEff:"), "0000000000000000");
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
    assert_eq!(argv[0], b"/firecracker");
    assert!(argv
        .windows(2)
        .any(|w| w[0] == b"--id" && w[1] == a.as_bytes()));

    // Its own cgroups, with the limits (v1 on this machine kind).
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    match banger_helper::gates::jail::host_cgroup_version(Path::new("/sys")) {
        Some(banger_helper::gates::jail::CgroupVersion::V1) => {
            for c in ["memory", "pids"] {
                assert!(cg.contains(&format!(":{c}:/firecracker/{a}\n")), "{cg}");
            }
            let mem =
                std::fs::read_to_string(v1_cgroup("memory", &a).join("memory.limit_in_bytes"));
            assert_eq!(mem.unwrap().trim(), ((64 + 128) << 20).to_string());
            let pids = std::fs::read_to_string(v1_cgroup("pids", &a).join("pids.max"));
            assert_eq!(pids.unwrap().trim(), "34");
        }
        Some(banger_helper::gates::jail::CgroupVersion::V2) => {
            assert!(cg.contains(&format!("0::/firecracker/{a}\n")), "{cg}");
        }
        None => panic!("no usable cgroup hierarchy, yet the launch passed"),
    }

    // The chroot: root-only parents; inside, only this VM's files.
    for d in [&exec_dir, &exec_dir.join(&a)] {
        let md = std::fs::metadata(d).unwrap();
        assert_eq!(
            (md.uid(), md.mode() & 0o7777),
            (0, 0o700),
            "{}",
            d.display()
        );
    }
    let md = std::fs::metadata(&chroot).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (uid, uid, 0o700));
    let got: Vec<(String, char, u32)> = listing(&chroot)
        .into_iter()
        .map(|(p, t, u, _)| (p, t, u))
        .collect();
    let want: Vec<(String, char, u32)> = [
        ("api", 'd', uid),
        ("api/firecracker.socket", 's', uid),
        ("dev", 'd', uid),
        ("dev/kvm", 'c', uid),
        ("dev/net", 'd', uid),
        ("dev/net/tun", 'c', uid),
        ("dev/urandom", 'c', uid),
        ("dev/userfaultfd", 'c', uid),
        ("firecracker", 'f', uid),
        ("firecracker.pid", 'f', 0),
        ("initrd", 'f', uid),
        ("rootfs", 'b', uid),
        ("run", 'd', uid),
        ("vmlinux", 'f', uid),
    ]
    .map(|(p, t, u)| (p.to_string(), t, u))
    .to_vec();
    assert_eq!(got, want);
    for (p, mode) in [("vmlinux", 0o400), ("initrd", 0o400), ("rootfs", 0o600)] {
        let md = std::fs::symlink_metadata(chroot.join(p)).unwrap();
        assert_eq!(md.mode() & 0o7777, mode, "{p}");
    }
    assert_eq!(
        std::fs::read(chroot.join("vmlinux")).unwrap(),
        b"kernel bytes"
    );
    let rd = std::fs::symlink_metadata(chroot.join("rootfs")).unwrap();
    assert_eq!(rd.rdev(), rustix::fs::makedev(7, 250));

    // A second VM: another jail uid; the same VM again: refused.
    let rb = h
        .dispatch(m::LAUNCH_FIRECRACKER, f.params(&b, &dmb))
        .unwrap();
    let pid_b = rb["pid"].as_i64().unwrap() as i32;
    let _kb = Kill(pid_b);
    assert_ne!(rb["jail_uid"].as_u64().unwrap() as u32, uid);
    let t = gate_text(h.dispatch(m::LAUNCH_FIRECRACKER, f.params(&a, &dma)));
    assert!(
        t.contains(&format!("the jail of {a} already exists")),
        "{t}"
    );

    // The API socket: the owner cannot connect until it is handed over,
    // below RuntimeDir, through the unchanged gate.
    let req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(
        probe_as(OWNER.0, OWNER.1, &api, req),
        Probe::ConnectFailed(libc::EACCES)
    );
    h.dispatch(m::ENSURE_SOCKET_ACCESS, json!({ "path": api }))
        .unwrap();
    let got = probe_as(OWNER.0, OWNER.1, &api, req);
    assert!(
        matches!(got, Probe::ClosedSilently | Probe::Answered(_)),
        "{got:?}"
    );

    // A restarted helper still signals it; not a root process running the
    // chroot's very copy of the binary (same inode, not a jail uid).
    let h2 = Helper {
        cfg: h.cfg.clone(),
        host: Host {
            launch_policy: LaunchPolicy::JailedOnly,
            launch_records: h.host.launch_records.clone(),
            ..Host::real()
        },
    };
    let mut copy = Command::new(chroot.join("firecracker"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t = gate_text(h2.dispatch(m::KILL_PROCESS, json!({ "pid": copy.id() })));
    assert!(t.contains("this helper launched"), "{t}");
    assert!(
        copy.try_wait().unwrap().is_none(),
        "the root copy was killed"
    );
    let _ = copy.kill();
    let _ = copy.wait();
    h2.dispatch(
        m::SIGNAL_PROCESS,
        json!({ "pid": pid, "signal": "SIGSTOP" }),
    )
    .unwrap();
    wait(
        "stopped",
        || status_field(pid, "State:").starts_with('T'),
        &log,
    );
    h2.dispatch(
        m::SIGNAL_PROCESS,
        json!({ "pid": pid, "signal": "SIGCONT" }),
    )
    .unwrap();
    h2.dispatch(m::KILL_PROCESS, json!({ "pid": pid })).unwrap();
    wait("killed", || !alive(pid), &log);
    h.dispatch(m::KILL_PROCESS, json!({ "pid": pid_b }))
        .unwrap();
    wait("b killed", || !alive(pid_b), &log);

    // Cleanup: the reaper drops the cgroups and the records; the chroot
    // method unmounts /run and removes the jail.
    wait(
        "cgroups removed",
        || !v1_cgroup("memory", &a).exists() && !v1_cgroup("pids", &a).exists(),
        &log,
    );
    for vm in [&a, &b] {
        h.dispatch(
            m::CLEANUP_JAILER_CHROOT,
            json!({ "path": exec_dir.join(vm) }),
        )
        .unwrap();
        assert!(!exec_dir.join(vm).exists(), "{vm}'s jail remains");
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(exec_dir.to_str().unwrap()), "{mi}");
    assert_eq!(
        std::fs::read_dir(&h.host.launch_records).unwrap().count(),
        0
    );
    drop((dma, dmb));
    let _ = f.real;
}

#[test]
fn root_a_dynamically_linked_exec_file_fails_inside_the_chroot() {
    if !root_only("root_a_dynamically_linked_exec_file_fails_inside_the_chroot") {
        return;
    }
    let f = Fixture::new();
    let Some(double) = built_binary("fc-double") else {
        println!("skipped: no fc-double beside the tests (cargo build -p banger-fc-double)");
        return;
    };
    cp(&double, &f.h.cfg.firecracker_bin);
    let vm = vm_id();
    let dm = DmNode::new(&vm);
    let r =
        f.h.dispatch(m::LAUNCH_FIRECRACKER, f.params(&vm, &dm))
            .unwrap();
    let pid = r["pid"].as_i64().unwrap() as i32;
    let _k = Kill(pid);
    let log = f.h.cfg.state_dir.join(format!("{vm}.log"));
    wait("the jailer exits", || !alive(pid), &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("Failed to exec into Firecracker: No such file or directory"),
        "{text}"
    );
    let exec_dir = f.h.cfg.jailer_base.join("firecracker");
    f.h.dispatch(
        m::CLEANUP_JAILER_CHROOT,
        json!({ "path": exec_dir.join(&vm) }),
    )
    .unwrap();
    assert!(!exec_dir.join(&vm).exists());
}

#[test]
fn root_jailed_launch_refusals_leave_nothing_behind() {
    if !root_only("root_jailed_launch_refusals_leave_nothing_behind") {
        return;
    }
    let mut f = Fixture::new();
    let vm = vm_id();
    let dm = DmNode::new(&vm);
    let exec_dir = f.h.cfg.jailer_base.join("firecracker");
    let nothing_left = |f: &Fixture| {
        assert!(!exec_dir.join(&vm).exists(), "a jail was built");
        assert!(!f.h.cfg.runtime_dir.join("jails").join(&vm).exists());
        assert!(!v1_cgroup("memory", &vm).exists());
    };
    let refuse = |f: &Fixture, p: Value, want: &str| {
        let t = gate_text(f.h.dispatch(m::LAUNCH_FIRECRACKER, p));
        assert!(t.starts_with("priv.launch_firecracker: "), "{t}");
        assert!(t.contains(want), "{t} lacks {want}");
        nothing_left(f);
    };
    let mut p = f.params(&vm, &dm);
    p.as_object_mut().unwrap().remove("jail");
    refuse(&f, p, "jail is required when jailed");
    let mut p = f.params(&vm, &dm);
    p["api_socket"] = json!(f.h.cfg.runtime_dir.join("x.sock"));
    refuse(&f, p, "api_socket must be empty when jailed");
    let mut p = f.params(&vm, &dm);
    p["jail"]["kernel"] = json!("/etc/shadow");
    refuse(&f, p, "jail.kernel must be below StateDir");
    let mut p = f.params(&vm, &dm);
    p["jail"]["root_disk"] = json!("/dev/sda");
    refuse(&f, p, "jail.root_disk must be /dev/mapper/fc-rootfs-*");
    // A hard link to a root file planted in StateDir is not a kernel.
    let p = f.params(&vm, &dm);
    let link = f.h.cfg.state_dir.join("linked");
    let target = f.dir.path().join("root-secret");
    std::fs::write(&target, b"secret").unwrap();
    std::fs::hard_link(&target, &link).unwrap();
    let mut q = p.clone();
    q["jail"]["kernel"] = json!(link);
    refuse(&f, q, "jail.kernel must have exactly one hard link");
    let foreign = f.state_file("foreign", b"x");
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let mut q = p.clone();
    q["jail"]["kernel"] = json!(foreign);
    refuse(&f, q, "jail.kernel must be owned by the owner or root");
    let sym = f.h.cfg.state_dir.join("sym");
    std::os::unix::fs::symlink("/etc/shadow", &sym).unwrap();
    let mut q = p.clone();
    q["jail"]["kernel"] = json!(sym);
    assert!(matches!(
        f.h.dispatch(m::LAUNCH_FIRECRACKER, q),
        Err(RpcError::Failed(_))
    ));
    nothing_left(&f);
    // A regular file where the dm device should be.
    let fake = PathBuf::from(format!("/dev/mapper/fc-rootfs-{vm}-f"));
    std::fs::write(&fake, b"").unwrap();
    let mut q = p.clone();
    q["jail"]["root_disk"] = json!(fake);
    let r = f.h.dispatch(m::LAUNCH_FIRECRACKER, q);
    let _ = std::fs::remove_file(&fake);
    assert!(gate_text(r).contains("jail.root_disk must be a block device"));
    nothing_left(&f);
    // A leading '-' is never an id.
    let mut q = p.clone();
    q["vm_id"] = json!("-h");
    refuse(&f, q, "starting with [a-z0-9]");
    // RuntimeDir/jails made by someone else (RuntimeDir is the owner's
    // group's, sticky): refused, never used.
    let squat = f.h.cfg.runtime_dir.join("jails");
    std::fs::create_dir(&squat).unwrap();
    std::os::unix::fs::chown(&squat, Some(OWNER.0), Some(OWNER.1)).unwrap();
    let t = gate_text(f.h.dispatch(m::LAUNCH_FIRECRACKER, p.clone()));
    assert!(t.contains("must be a directory owned by uid 0"), "{t}");
    assert!(!exec_dir.join(&vm).exists(), "the jail was not undone");
    std::fs::remove_dir(&squat).unwrap();
    nothing_left(&f);
    // The launch cap.
    f.h.cfg.max_launches = 0;
    refuse(
        &f,
        p.clone(),
        "at most 0 jailed VMs may exist at once (max_launches)",
    );
    f.h.cfg.max_launches = 256;
    // No reserved range: no jailed launch at all.
    f.h.cfg.jail_uid_base = None;
    f.h.cfg.jail_uid_count = None;
    refuse(&f, p, "install.toml must reserve a jail uid range");
}
