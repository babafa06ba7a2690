//! The jailed-launch fixture: a temporary install (StateDir, RuntimeDir,
//! jailer base, binaries), a root-disk block node, and /proc probes.

use banger_helper::error::RpcError;
use banger_helper::helper::Helper;
use banger_helper::host::{Host, LaunchPolicy};
use banger_proto::install::InstallConfig;
use banger_testkit::{open_up, wait_until};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A static VMM stand-in (the chroot holds no loader): prints its argv,
/// binds `--api-sock`, accepts and closes connections until killed.
pub const STATIC_VMM_C: &str = r#"
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

pub const OWNER: (u32, u32) = (4242, 4243);

pub fn root_only(test: &str) -> bool {
    banger_testkit::require_root(test)
}

/// A binary built beside the tests (the parent of `deps/`).
pub fn built_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join(name);
    p.is_file().then_some(p)
}

pub fn cp(from: &Path, to: &Path) {
    banger_testkit::cp_out_of_process(from, to);
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn compile_static_vmm(out: &Path) {
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

pub static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique `bgtest-` VM id (it also names the per-VM cgroups, host-wide).
pub fn vm_id() -> String {
    format!(
        "bgtest-{}-{}",
        std::process::id() % 1_000_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// `/dev/mapper/fc-rootfs-<id>` as a block node (the helper only needs a
/// block device of that name); removed on drop, with `/dev/mapper` if this
/// fixture created it and it is empty.
pub struct DmNode {
    pub path: PathBuf,
    made_dir: bool,
}

/// Whether `/dev/mapper` was absent when this test process first looked.
pub static MAPPER_WAS_ABSENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

impl DmNode {
    pub fn new(id: &str) -> DmNode {
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

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub h: Helper,
    /// The VMM is a Firecracker API server (`BANGER_FIRECRACKER`: the real
    /// one, or a static fc-double), not the stand-in that only accepts.
    pub api_vmm: bool,
}

impl Fixture {
    pub fn new() -> Fixture {
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
                if real_fc.is_some() { "BANGER_FIRECRACKER" } else { "static stand-in" },
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
            api_vmm: real_fc.is_some(),
        }
    }

    pub fn state_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.h.cfg.state_dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::os::unix::fs::chown(&p, Some(OWNER.0), Some(OWNER.1)).unwrap();
        p
    }

    pub fn params(&self, vm: &str, dm: &DmNode) -> Value {
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
pub struct Kill(pub i32);
impl Drop for Kill {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test launched.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// Relative path, file type letter, uid and mode of everything in `dir`
/// (not descending into mounts other than `dir`'s own).
pub fn listing(dir: &Path) -> Vec<(String, char, u32, u32)> {
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

pub fn status_field(pid: i32, name: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or("")
        .trim()
        .to_string()
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

pub fn v1_cgroup(controller: &str, vm: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("firecracker")
        .join(vm)
}

pub fn gate_text(r: Result<Value, RpcError>) -> String {
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

pub fn wait(what: &str, f: impl FnMut() -> bool, log: &Path) {
    assert!(
        wait_until(Duration::from_secs(15), f),
        "timed out: {what}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}
