//! A compromised daemon attacking the helper's file handling, through
//! `Helper::dispatch` with the real host code (openat2, debugfs, fsops) as
//! root: a parent directory swapped for a symlink before the COW undo, hard
//! links to root files, FIFOs where files are expected, a 1 TiB sparse file
//! in an image, symlinked api_socket directories, an oversized COW. Each
//! shows the refusal and the host unchanged.

#[path = "attack/harness.rs"]
mod harness;

use banger_helper::error::RpcError;
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_proto::helper as m;
use banger_sys::loopdev::RecordingLoops;
use banger_sys::runner::{Cmd, HostRunner, Runner};
use harness::*;
use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[test]
fn root_cow_undo_never_follows_a_parent_swapped_for_a_symlink() {
    if !root_only() {
        return;
    }
    let (t, loops) = setup_swapping();
    let base = base_image(&t);
    // A root-owned decoy with the COW's very name, outside StateDir.
    let decoy_dir = t.root.join("decoy");
    std::fs::create_dir(&decoy_dir).unwrap();
    std::fs::write(decoy_dir.join("cow"), b"root's file").unwrap();
    let before = snap(&decoy_dir.join("cow"));
    let (vm, moved) = (t.state.join("vms/a"), t.state.join("vms/a-moved"));
    let (vm2, decoy2) = (vm.clone(), decoy_dir.clone());
    let moved2 = moved.clone();
    // Between the gate (and the COW's creation) and the undo: the VM
    // directory becomes a symlink to the decoy's directory.
    loops.arm(move || {
        std::fs::rename(&vm2, &moved2).unwrap();
        std::os::unix::fs::symlink(&decoy2, &vm2).unwrap();
    });
    let r = call(
        &t,
        m::CREATE_DM_SNAPSHOT,
        snapshot_params(&base, &vm.join("cow"), 1 << 20),
    );
    assert!(
        matches!(&r, Err(RpcError::Failed(m)) if m.contains("attach")),
        "{r:?}"
    );
    assert!(decoy_dir.join("cow").exists(), "root unlinked the decoy");
    assert_eq!(
        snap(&decoy_dir.join("cow")),
        before,
        "the decoy was touched"
    );
    assert!(
        !moved.join("cow").exists(),
        "the COW the helper created was not undone"
    );
}

#[test]
fn root_cow_undo_never_removes_a_file_swapped_in_under_the_cow_name() {
    if !root_only() {
        return;
    }
    let (t, loops) = setup_swapping();
    let base = base_image(&t);
    let cow = t.state.join("vms/a/cow");
    // Another root file renamed in under the COW's name: the dev/ino check
    // leaves it alone.
    let victim = t.root.join("victim");
    std::fs::write(&victim, b"victim").unwrap();
    let (cow2, victim2, aside) = (cow.clone(), victim.clone(), t.state.join("vms/aside"));
    let aside2 = aside.clone();
    loops.arm(move || {
        std::fs::rename(&cow2, &aside2).unwrap();
        std::fs::rename(&victim2, &cow2).unwrap();
    });
    let r = call(
        &t,
        m::CREATE_DM_SNAPSHOT,
        snapshot_params(&base, &cow, 1 << 20),
    );
    assert!(matches!(r, Err(RpcError::Failed(_))), "{r:?}");
    assert!(cow.exists(), "root unlinked the file swapped in");
    assert_eq!(std::fs::read(&cow).unwrap(), b"victim");
    assert_eq!(std::fs::metadata(&aside).unwrap().len(), 1 << 20);
}

/// A root-owned file in StateDir and a hard link to it at `link`.
fn root_file_linked(t: &T, link: &Path, content: &[u8]) -> PathBuf {
    let secret = t.state.join("root-secret");
    if !secret.exists() {
        std::fs::write(&secret, content).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::hard_link(&secret, link).unwrap();
    secret
}

#[test]
fn root_hard_links_are_refused_as_cow_base_and_ext4_images() {
    if !root_only() {
        return;
    }
    let loops = Arc::new(RecordingLoops::new());
    let t = setup(loops.clone());
    let base = base_image(&t);
    // A root file (think /etc/shadow on the same filesystem).
    let secret = root_file_linked(&t, &t.state.join("vms/a/cow"), &vec![7u8; 4096]);
    std::fs::hard_link(&secret, t.state.join("images/linked.ext4")).unwrap();
    let before = snap(&secret);
    let e = refused(call(
        &t,
        m::CREATE_DM_SNAPSHOT,
        snapshot_params(&base, &t.state.join("vms/a/cow"), 1 << 20),
    ));
    assert!(e.contains("cow_file must have exactly one link"), "{e}");
    let e = refused(call(
        &t,
        m::CREATE_DM_SNAPSHOT,
        snapshot_params(
            &t.state.join("images/linked.ext4"),
            &t.state.join("vms/a/cow2"),
            1 << 20,
        ),
    ));
    assert!(e.contains("base_image must have exactly one link"), "{e}");
    assert!(loops.requests().is_empty(), "a loop was attached");
    assert!(!t.state.join("vms/a/cow2").exists());

    // ext4 images: a root file hard-linked in, and the owner's own file
    // with a second link (the link count alone refuses it).
    let own = t.state.join("images/own.ext4");
    mkfs(&own, Some(OWNER));
    std::fs::hard_link(&own, t.root.join("own-elsewhere")).unwrap();
    let own_before = snap(&own);
    for (img, rule) in [
        ("images/linked.ext4", "image must have exactly one link"),
        ("images/own.ext4", "image must have exactly one link"),
    ] {
        let img = t.state.join(img);
        let e = refused(call(
            &t,
            m::READ_EXT4_FILE,
            json!({"image": s(&img), "path": "/etc/hostname"}),
        ));
        assert!(
            e.starts_with("priv.read_ext4_file: ") && e.contains(rule),
            "{e}"
        );
        let e = refused(call(
            &t,
            m::WRITE_EXT4_FILES,
            json!({"image": s(&img), "files": [{"path": "/pwn", "content_b64": "eA==", "mode": 0o4755, "uid": 0, "gid": 0}]}),
        ));
        assert!(
            e.starts_with("priv.write_ext4_files: ") && e.contains(rule),
            "{e}"
        );
    }
    // A single-link image that is root's, not the owner's, is refused too.
    let rootimg = t.state.join("images/root.ext4");
    mkfs(&rootimg, None);
    let e = refused(call(
        &t,
        m::READ_EXT4_FILE,
        json!({"image": s(&rootimg), "path": "/etc/hostname"}),
    ));
    assert!(e.contains("image must be owned by the owner"), "{e}");
    assert_eq!(snap(&secret), before, "root's file changed");
    assert_eq!(snap(&own), own_before, "the image changed");
}

#[test]
fn root_a_hard_linked_socket_is_not_handed_over() {
    if !root_only() {
        return;
    }
    let t = setup(Arc::new(RecordingLoops::new()));
    let rt = t.helper.cfg.runtime_dir.clone();
    // A root socket (think the helper's own) with a second link the owner placed.
    let _l = UnixListener::bind(rt.join("root.sock")).unwrap();
    std::fs::hard_link(rt.join("root.sock"), rt.join("vm.sock")).unwrap();
    let before = snap(&rt.join("root.sock"));
    let e = refused(call(
        &t,
        m::ENSURE_SOCKET_ACCESS,
        json!({"path": s(&rt.join("vm.sock"))}),
    ));
    assert_eq!(
        e,
        "priv.ensure_socket_access: socket path must have exactly one link (it has 2)"
    );
    // A socket of a third uid is not handed over either.
    let _o = UnixListener::bind(rt.join("other.sock")).unwrap();
    std::os::unix::fs::lchown(rt.join("other.sock"), Some(7), Some(7)).unwrap();
    let e = refused(call(
        &t,
        m::ENSURE_SOCKET_ACCESS,
        json!({"path": s(&rt.join("other.sock"))}),
    ));
    assert!(
        e.contains("must be owned by the owner, root or a jail uid"),
        "{e}"
    );
    assert_eq!(snap(&rt.join("root.sock")), before);
    assert_eq!(
        std::fs::symlink_metadata(rt.join("other.sock"))
            .unwrap()
            .uid(),
        7
    );
}

fn mkfifo(p: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    std::os::unix::fs::chown(p, Some(OWNER.0), Some(OWNER.1)).unwrap();
}

#[test]
fn root_fifos_where_files_are_expected_are_refused_without_blocking() {
    if !root_only() {
        return;
    }
    let loops = Arc::new(RecordingLoops::new());
    let t = setup(loops.clone());
    let base = base_image(&t);
    let fifo = t.state.join("vms/a/fifo");
    mkfifo(&fifo);
    let rule = "must be a regular file (not a FIFO, socket, device or directory)";
    let e = refused(call(
        &t,
        m::READ_EXT4_FILE,
        json!({"image": s(&fifo), "path": "/etc/hostname"}),
    ));
    assert!(e.contains(&format!("image {rule}")), "{e}");
    let e = refused(call(
        &t,
        m::WRITE_EXT4_FILES,
        json!({"image": s(&fifo), "files": []}),
    ));
    assert!(e.contains(&format!("image {rule}")), "{e}");
    let e = refused(call(
        &t,
        m::CREATE_DM_SNAPSHOT,
        snapshot_params(&fifo, &t.state.join("vms/a/cow"), 1 << 20),
    ));
    assert!(e.contains(&format!("base_image {rule}")), "{e}");
    let e = refused(call(
        &t,
        m::CREATE_DM_SNAPSHOT,
        snapshot_params(&base, &fifo, 1 << 20),
    ));
    assert!(e.contains(&format!("cow_file {rule}")), "{e}");
    assert!(loops.requests().is_empty());
    assert!(!t.state.join("vms/a/cow").exists());

    // The log: without a reader (open fails at once) and with one held
    // open by the attacker (opens, then the type check refuses).
    let log = t.state.join("vms/a/fc.log");
    mkfifo(&log);
    let api = t.helper.cfg.runtime_dir.join("fc.sock");
    let launch = json!({"vm_id": "bgtest-fifo", "api_socket": s(&api), "log_file": s(&log)});
    let r = call(&t, m::LAUNCH_FIRECRACKER, launch.clone());
    assert!(r.is_err(), "launched with a FIFO log: {r:?}");
    let reader = rustix::fs::open(
        &log,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let r = call(&t, m::LAUNCH_FIRECRACKER, launch);
    let msg = format!("{r:?}");
    assert!(msg.contains("is not a regular file"), "{msg}");
    assert!(t.helper.host.launched.is_empty(), "something was launched");
    drop(reader);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&log)
        .unwrap()
        .file_type()
        .is_fifo());
}

/// Peak resident set of this process, in KiB.
fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn root_a_1_tib_sparse_file_in_an_image_is_refused_with_bounded_memory() {
    if !root_only() {
        return;
    }
    let t = setup(Arc::new(RecordingLoops::new()));
    let img = t.state.join("vms/a/root.ext4");
    mkfs(&img, Some(OWNER));
    call(
        &t,
        m::WRITE_EXT4_FILES,
        json!({"image": s(&img), "files": [{"path": "/big", "content_b64": "eA==", "mode": 0o644, "uid": 0, "gid": 0}]}),
    )
    .unwrap();
    // 1 TiB of holes: debugfs cat would stream a terabyte of zeros.
    HostRunner
        .run(
            &Cmd::new("debugfs")
                .args(["-w", "-R", "sif /big size 1099511627776"])
                .arg(&img),
        )
        .unwrap();
    let hwm = vm_hwm_kib();
    let t0 = std::time::Instant::now();
    let r = call(
        &t,
        m::READ_EXT4_FILE,
        json!({"image": s(&img), "path": "/big"}),
    );
    let msg = match r {
        Err(RpcError::Failed(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(
        msg.contains("/big in the image is larger than 524288 bytes"),
        "{msg}"
    );
    let grew = vm_hwm_kib().saturating_sub(hwm);
    println!(
        "1 TiB sparse read refused in {:?}; peak RSS grew by {grew} KiB",
        t0.elapsed()
    );
    assert!(
        grew < 32 << 10,
        "peak RSS grew by {grew} KiB reading a capped 512 KiB"
    );
    // debugfs is gone (killed with its group), not streaming on.
    let stragglers: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| c.windows(7).any(|w| w == b"cat /bi"))
        .collect();
    assert!(stragglers.is_empty(), "debugfs still runs");
}

#[test]
fn root_api_socket_directories_may_not_be_symlinks() {
    if !root_only() {
        return;
    }
    let t = setup(Arc::new(RecordingLoops::new()));
    let rt = t.helper.cfg.runtime_dir.clone();
    let outside = t.root.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, rt.join("vm")).unwrap();
    let log = t.state.join("vms/a/fc.log");
    let e = refused(call(
        &t,
        m::LAUNCH_FIRECRACKER,
        json!({"vm_id": "bgtest-dir", "api_socket": s(&rt.join("vm/fc.sock")), "log_file": s(&log)}),
    ));
    assert!(
        e.starts_with("priv.launch_firecracker: api_socket directory must exist below RuntimeDir"),
        "{e}"
    );
    assert!(t.helper.host.launched.is_empty());
    assert!(!log.exists(), "the log was created before the refusal");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn root_cow_size_is_capped_by_install_metadata() {
    if !root_only() {
        return;
    }
    let loops = Arc::new(RecordingLoops::new());
    let mut t = setup(loops.clone());
    Arc::get_mut(&mut t.helper).unwrap().cfg.max_cow_bytes = 1 << 20;
    let base = base_image(&t);
    let cow = t.state.join("vms/a/cow");
    let e = refused(call(
        &t,
        m::CREATE_DM_SNAPSHOT,
        snapshot_params(&base, &cow, (1 << 20) + 512),
    ));
    assert_eq!(
        e,
        "priv.create_dm_snapshot: cow_size_bytes must be 1..=1048576 (max_cow_bytes of install.toml)"
    );
    assert!(!cow.exists());
    assert!(loops.requests().is_empty());
}

/// A mount below StateDir/RuntimeDir (a tmpfs here, standing in for the
/// owner's FUSE mount, whose lookups could block forever) is never entered:
/// every lookup of a daemon-named path stops at the mount (`RESOLVE_NO_XDEV`).
#[test]
fn root_no_lookup_enters_a_mount_below_state_or_runtime_dir() {
    if !root_only() {
        return;
    }
    // This thread (and the call threads it spawns) in a private mount
    // namespace: nothing mounted here is seen by the host.
    rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNS).unwrap();
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .unwrap();
    let t = setup(Arc::new(RecordingLoops::new()));
    let (sm, rm) = (t.state.join("vms/m"), t.helper.cfg.runtime_dir.join("m"));
    for d in [&sm, &rm] {
        std::fs::create_dir_all(d).unwrap();
        rustix::mount::mount(
            "bgtest-tmpfs",
            d,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            "size=16m",
        )
        .unwrap();
    }
    let img = sm.join("root.ext4");
    mkfs(&img, Some(OWNER));
    let _l = UnixListener::bind(rm.join("fc.sock")).unwrap();
    let e = refused(call(
        &t,
        m::READ_EXT4_FILE,
        json!({"image": s(&img), "path": "/etc/hostname"}),
    ));
    assert!(e.contains("image must be under StateDir"), "{e}");
    let e = refused(call(
        &t,
        m::CREATE_DM_SNAPSHOT,
        snapshot_params(&img, &t.state.join("vms/a/cow"), 1 << 20),
    ));
    assert!(
        e.contains("path must resolve to a file under StateDir"),
        "{e}"
    );
    let e = refused(call(
        &t,
        m::CREATE_DM_SNAPSHOT,
        snapshot_params(&base_image(&t), &sm.join("cow"), 1 << 20),
    ));
    assert!(e.contains("path must be a file under StateDir"), "{e}");
    let e = refused(call(
        &t,
        m::ENSURE_SOCKET_ACCESS,
        json!({"path": s(&rm.join("fc.sock"))}),
    ));
    assert_eq!(
        e,
        "priv.ensure_socket_access: socket path must not cross a mount below RuntimeDir"
    );
    let e = refused(call(
        &t,
        m::LAUNCH_FIRECRACKER,
        json!({"vm_id": "bgtest-mnt", "api_socket": s(&t.helper.cfg.runtime_dir.join("fc.sock")), "log_file": s(&sm.join("fc.log"))}),
    ));
    assert_eq!(
        e,
        "priv.launch_firecracker: log_file must not cross a mount below StateDir"
    );
    let e = refused(call(
        &t,
        m::LAUNCH_FIRECRACKER,
        json!({"vm_id": "bgtest-mnt", "api_socket": s(&rm.join("api.sock")), "log_file": s(&t.state.join("vms/a/fc.log"))}),
    ));
    assert!(
        e.contains("api_socket directory must exist below RuntimeDir with no symlink and no mount"),
        "{e}"
    );
    assert!(!sm.join("cow").exists() && !sm.join("fc.log").exists());
    assert_eq!(
        std::fs::symlink_metadata(rm.join("fc.sock")).unwrap().uid(),
        0,
        "the socket was handed over"
    );
    assert!(t.helper.host.launched.is_empty());
    for d in [&sm, &rm] {
        rustix::mount::unmount(d, rustix::mount::UnmountFlags::DETACH).unwrap();
    }
}

/// A dm image is opened beneath `/dev` and checked on the fd (root-owned
/// block device that sysfs names the device) before debugfs, run as uid 0
/// with no capability, gets it as `/proc/self/fd/N`. A loop device over a
/// real image stands in for the dm device (this kernel may lack dm), with
/// fixture `/dev` and `/sys` roots.
#[test]
fn root_dm_images_are_checked_on_the_node_fd_then_used() {
    if !root_only() {
        return;
    }
    use banger_sys::dmnode::DmNodes;
    use banger_sys::loopdev::{KernelLoops, LoopOps};
    let t = setup(Arc::new(RecordingLoops::new()));
    let img = t.state.join("images/dm.ext4");
    mkfs(&img, None);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let loops = KernelLoops::new("/sys");
    let dev = loops.attach(&f, &img, false).unwrap();
    struct Detach<'a>(&'a KernelLoops, PathBuf);
    impl Drop for Detach<'_> {
        fn drop(&mut self) {
            let _ = self.0.detach(&self.1);
        }
    }
    let _d = Detach(&loops, dev.clone());
    let rdev = std::fs::metadata(&dev).unwrap().rdev();
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let (fdev, fsys) = (t.root.join("dev"), t.root.join("sys"));
    std::fs::create_dir_all(fdev.join("mapper")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fdev.join("dm-0"),
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rdev,
    )
    .unwrap();
    std::os::unix::fs::symlink("../dm-0", fdev.join("mapper/fc-rootfs-bgtest")).unwrap();
    let name_file = fsys.join(format!("dev/block/{major}:{minor}/dm/name"));
    std::fs::create_dir_all(name_file.parent().unwrap()).unwrap();
    std::fs::write(&name_file, "fc-rootfs-bgtest\n").unwrap();
    let dm = Arc::new(banger_sys::dm::RecordingDm::new());
    dm.add_device("fc-rootfs-bgtest", "BANGER-fc-rootfs-bgtest");
    let h = Helper {
        cfg: t.helper.cfg.clone(),
        host: Host {
            dm,
            dm_nodes: Some(DmNodes {
                dev_root: fdev.clone(),
                sys_root: fsys.clone(),
            }),
            ..Host::real()
        },
    };
    let dm_path = "/dev/mapper/fc-rootfs-bgtest";
    h.dispatch(
        m::WRITE_EXT4_FILES,
        json!({"image": dm_path, "files": [{"path": "/etc/hostname", "content_b64": "ZG0K", "mode": 0o644, "uid": 0, "gid": 0}]}),
    )
    .unwrap();
    let r = h
        .dispatch(
            m::READ_EXT4_FILE,
            json!({"image": dm_path, "path": "/etc/hostname"}),
        )
        .unwrap();
    assert_eq!(r["content_b64"], "ZG0K");
    assert_eq!(
        h.dispatch(m::FSCK_SNAPSHOT, json!({"device": dm_path}))
            .unwrap()["exit_code"],
        0
    );
    // sysfs says the node is another device: refused before any tool runs.
    std::fs::write(&name_file, "vg0-root\n").unwrap();
    for (method, params) in [
        (
            m::READ_EXT4_FILE,
            json!({"image": dm_path, "path": "/etc/hostname"}),
        ),
        (m::FSCK_SNAPSHOT, json!({"device": dm_path})),
    ] {
        let e = refused(h.dispatch(method, params));
        assert!(
            e.contains(
                "device node must be a root-owned block device that sysfs names fc-rootfs-bgtest"
            ),
            "{e}"
        );
    }
}
