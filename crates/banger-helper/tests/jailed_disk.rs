//! A jailed launch whose root disk is a file below StateDir (the
//! copy/reflink driver), as root through `Helper::dispatch` with the
//! system policy and the jailer double: exactly that file is bound onto
//! the chroot's `/rootfs` and handed to the jail uid, cleanup gives it back
//! (also after the bind is gone, as after a reboot), and every file an
//! attacker could name instead is refused with nothing changed.

#[allow(dead_code)]
#[path = "jailed/fixture.rs"]
mod fixture;

use banger_proto::helper as m;
use fixture::*;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Kernel, initrd and `vms/<vm>/rootfs.ext4` (owner's, 0644) in StateDir;
/// the launch params naming the disk file.
fn file_params(f: &Fixture, vm: &str) -> (Value, PathBuf) {
    let vms = f.h.cfg.state_dir.join("vms");
    let _ = std::fs::create_dir(&vms);
    std::os::unix::fs::chown(&vms, Some(OWNER.0), Some(OWNER.1)).unwrap();
    let dir = vms.join(vm);
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(OWNER.0), Some(OWNER.1)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let disk = dir.join("rootfs.ext4");
    std::fs::write(&disk, b"disk bytes").unwrap();
    std::os::unix::fs::chown(&disk, Some(OWNER.0), Some(OWNER.1)).unwrap();
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut p = f.params_with_root(vm, "");
    p["jail"]["root_disk_file"] = json!(disk);
    (p, disk)
}

trait ParamsWithRoot {
    fn params_with_root(&self, vm: &str, root_disk: &str) -> Value;
}

impl ParamsWithRoot for Fixture {
    fn params_with_root(&self, vm: &str, root_disk: &str) -> Value {
        let kernel = self.state_file(&format!("{vm}.vmlinux"), b"kernel bytes");
        let initrd = self.state_file(&format!("{vm}.initrd"), b"initrd bytes");
        let mut jail = json!({
            "kernel": kernel,
            "initrd": initrd,
            "memory_mib": 64,
            "vcpus": 1,
        });
        if !root_disk.is_empty() {
            jail["root_disk"] = json!(root_disk);
        }
        json!({
            "vm_id": vm,
            "api_socket": "",
            "jailed": true,
            "log_file": self.h.cfg.state_dir.join(format!("{vm}.log")),
            "jail": jail,
        })
    }
}

/// Owner, group, mode, links, device, inode and bytes of a file (lstat).
fn fingerprint(p: &Path) -> (u32, u32, u32, u64, u64, u64, Vec<u8>) {
    let md = std::fs::symlink_metadata(p).unwrap();
    let bytes = if md.is_file() {
        std::fs::read(p).unwrap()
    } else {
        Vec::new()
    };
    (
        md.uid(),
        md.gid(),
        md.mode(),
        md.nlink(),
        md.dev(),
        md.ino(),
        bytes,
    )
}

fn mounts_below(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(str::to_string)
        .collect()
}

#[test]
fn root_a_disk_file_is_bound_into_the_jail_as_the_jail_uid_and_given_back() {
    if !root_only("root_a_disk_file_is_bound_into_the_jail_as_the_jail_uid_and_given_back") {
        return;
    }
    let f = Fixture::new();
    let h = &f.h;
    let exec_dir = h.cfg.jailer_base.join("firecracker");
    for reboot in [false, true] {
        let vm = vm_id();
        let (p, disk) = file_params(&f, &vm);
        let before = fingerprint(&disk);
        let r = h.dispatch(m::LAUNCH_FIRECRACKER, p).unwrap();
        let pid = r["pid"].as_i64().unwrap() as i32;
        let _k = Kill(pid);
        let uid = r["jail_uid"].as_u64().unwrap() as u32;
        let log = h.cfg.state_dir.join(format!("{vm}.log"));
        let chroot = exec_dir.join(&vm).join("root");
        wait(
            "the API socket",
            || {
                h.cfg
                    .runtime_dir
                    .join("jails")
                    .join(&vm)
                    .join("firecracker.socket")
                    .exists()
            },
            &log,
        );
        // The very file, bound in, the jail uid's 0600; on the host too.
        let inside = std::fs::metadata(chroot.join("rootfs")).unwrap();
        let host = std::fs::metadata(&disk).unwrap();
        assert_eq!((inside.dev(), inside.ino()), (before.4, before.5));
        assert_eq!(
            (host.uid(), host.gid(), host.mode() & 0o7777),
            (uid, uid, 0o600)
        );
        assert_eq!(std::fs::read(chroot.join("rootfs")).unwrap(), b"disk bytes");
        let mi = mounts_below(&chroot);
        assert_eq!(mi.len(), 2, "the api and rootfs binds: {mi:?}");
        // The grant record, root's, outside the chroot.
        let rec = exec_dir.join(&vm).join("rootfs.grant");
        let md = std::fs::symlink_metadata(&rec).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777), (0, 0o600));
        let listed: Vec<String> = listing(&chroot).into_iter().map(|e| e.0).collect();
        assert!(listed.contains(&"rootfs".to_string()), "{listed:?}");

        // The disk is the jail's: another launch naming it is refused.
        let other = vm_id();
        let mut q = f.params_with_root(&other, "");
        q["jail"]["root_disk_file"] = json!(disk);
        let t = gate_text(h.dispatch(m::LAUNCH_FIRECRACKER, q));
        assert!(
            t.contains("jail.root_disk_file must be owned by the owner"),
            "{t}"
        );
        assert!(!exec_dir.join(&other).exists());

        h.dispatch(m::KILL_PROCESS, json!({ "pid": pid })).unwrap();
        wait("killed", || !alive(pid), &log);
        if reboot {
            // As after a reboot: the binds are gone, the jail's files stay.
            for t in ["rootfs", "api"] {
                rustix::mount::unmount(chroot.join(t), rustix::mount::UnmountFlags::DETACH)
                    .unwrap();
            }
            assert_eq!(std::fs::metadata(&disk).unwrap().uid(), uid);
        }
        h.dispatch(
            m::CLEANUP_JAILER_CHROOT,
            json!({ "path": exec_dir.join(&vm) }),
        )
        .unwrap();
        assert!(!exec_dir.join(&vm).exists());
        assert!(
            !h.cfg.runtime_dir.join("jails").join(&vm).exists(),
            "the socket directory remains"
        );
        assert!(mounts_below(&exec_dir).is_empty());
        assert_eq!(
            fingerprint(&disk),
            before,
            "reboot={reboot}: given back as it was"
        );
        // Idempotent: an absent jail is clean.
        h.dispatch(
            m::CLEANUP_JAILER_CHROOT,
            json!({ "path": exec_dir.join(&vm) }),
        )
        .unwrap();
    }
}

#[test]
fn root_disk_files_an_attacker_names_are_refused_and_change_nothing() {
    if !root_only("root_disk_files_an_attacker_names_are_refused_and_change_nothing") {
        return;
    }
    let f = Fixture::new();
    let h = &f.h;
    let exec_dir = h.cfg.jailer_base.join("firecracker");
    let vm = vm_id();
    let (p, disk) = file_params(&f, &vm);
    let vm_dir = disk.parent().unwrap().to_path_buf();
    let secret = f.dir.path().join("root-secret");
    std::fs::write(&secret, b"secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let hard = vm_dir.join("hard.ext4");
    std::fs::hard_link(&secret, &hard).unwrap();
    let watched = [disk.clone(), secret.clone()];
    let before: Vec<_> = watched.iter().map(|w| fingerprint(w)).collect();
    let refuse = |name: &Path, want: &str| {
        let mut q = p.clone();
        q["jail"]["root_disk_file"] = json!(name);
        let t = gate_text(h.dispatch(m::LAUNCH_FIRECRACKER, q));
        assert!(t.starts_with("priv.launch_firecracker: "), "{t}");
        assert!(t.contains(want), "{}: {t} lacks {want}", name.display());
        assert!(!exec_dir.join(&vm).exists(), "a jail was built");
        assert!(!h.cfg.runtime_dir.join("jails").join(&vm).exists());
        assert!(mounts_below(&h.cfg.jailer_base).is_empty());
        let now: Vec<_> = watched.iter().map(|w| fingerprint(w)).collect();
        assert_eq!(now, before, "{}: the host changed", name.display());
    };
    // A symlink to a root file.
    let sym = vm_dir.join("sym.ext4");
    std::os::unix::fs::symlink(&secret, &sym).unwrap();
    refuse(&sym, "no symlink or mount");
    // A hard link to it.
    refuse(&hard, "must have exactly one hard link");
    // A FIFO (opened O_NONBLOCK: no hang).
    let fifo = vm_dir.join("fifo.ext4");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .unwrap();
    std::os::unix::fs::lchown(&fifo, Some(OWNER.0), Some(OWNER.1)).unwrap();
    refuse(&fifo, "must be a regular file");
    // Files someone else owns: root's, and another user's.
    let roots = vm_dir.join("roots.ext4");
    std::fs::write(&roots, b"root's").unwrap();
    refuse(&roots, "must be owned by the owner");
    let nobody = vm_dir.join("nobody.ext4");
    std::fs::write(&nobody, b"nobody's").unwrap();
    std::os::unix::fs::chown(&nobody, Some(65534), Some(65534)).unwrap();
    refuse(&nobody, "must be owned by the owner");
    // A parent directory swapped for a symlink to a directory elsewhere.
    let elsewhere = f.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let planted = elsewhere.join("rootfs.ext4");
    std::fs::write(&planted, b"planted").unwrap();
    std::os::unix::fs::chown(&planted, Some(OWNER.0), Some(OWNER.1)).unwrap();
    let swapped = h.cfg.state_dir.join("vms").join("swapped");
    std::os::unix::fs::symlink(&elsewhere, &swapped).unwrap();
    let planted_before = fingerprint(&planted);
    refuse(&swapped.join("rootfs.ext4"), "no symlink or mount");
    assert_eq!(fingerprint(&planted), planted_before);
    // Outside StateDir, plainly and through `..`.
    refuse(&planted, "jail.root_disk_file must be below StateDir");
    refuse(
        &h.cfg.state_dir.join("vms/../../elsewhere/rootfs.ext4"),
        "must be lexically clean",
    );
    assert_eq!(fingerprint(&planted), planted_before);
    // Both a dm device and a file: refused.
    let mut q = p.clone();
    q["jail"]["root_disk"] = json!(format!("/dev/mapper/fc-rootfs-{vm}"));
    let t = gate_text(h.dispatch(m::LAUNCH_FIRECRACKER, q));
    assert!(
        t.contains("exactly one of root_disk and root_disk_file"),
        "{t}"
    );
    // The honest file still launches after all that.
    let r = h.dispatch(m::LAUNCH_FIRECRACKER, p.clone()).unwrap();
    let pid = r["pid"].as_i64().unwrap() as i32;
    let _k = Kill(pid);
    h.dispatch(m::KILL_PROCESS, json!({ "pid": pid })).unwrap();
    let log = h.cfg.state_dir.join(format!("{vm}.log"));
    wait("killed", || !alive(pid), &log);
    h.dispatch(
        m::CLEANUP_JAILER_CHROOT,
        json!({ "path": exec_dir.join(&vm) }),
    )
    .unwrap();
    assert_eq!(fingerprint(&disk), before[0]);
}
