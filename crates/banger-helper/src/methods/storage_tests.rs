use crate::helper::Helper;
use crate::host::Host;
use banger_proto::helper as m;
use banger_proto::install::InstallConfig;
use banger_sys::dm::{DmRequest, RecordingDm};
use banger_sys::ext4::Ext4Tools;
use banger_sys::loopdev::{LoopRequest, RecordingLoops};
use banger_sys::runner::{Cmd, HostRunner, Privilege, RecordingRunner, Runner};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct T {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    dm: Arc<RecordingDm>,
    loops: Arc<RecordingLoops>,
    runner: Arc<RecordingRunner>,
    helper: Helper,
}

fn setup(real_ext4: bool) -> T {
    let tmp = tempfile::Builder::new()
        .prefix("bgtest-")
        .tempdir()
        .unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let state = root.join("state");
    std::fs::create_dir_all(state.join("images")).unwrap();
    std::fs::create_dir_all(state.join("vms/a")).unwrap();
    let mut cfg = InstallConfig::for_owner(1000, 1000, "/home/bgtest".into());
    cfg.state_dir = state.clone();
    let dm = Arc::new(RecordingDm::new());
    let loops = Arc::new(RecordingLoops::new());
    let runner = Arc::new(RecordingRunner::new());
    let ext4_runner: Arc<dyn Runner> = if real_ext4 {
        Arc::new(HostRunner)
    } else {
        runner.clone()
    };
    let helper = Helper {
        cfg,
        host: Host {
            runner: runner.clone(),
            dm: dm.clone(),
            loops: loops.clone(),
            ext4: Arc::new(Ext4Tools::new(ext4_runner)),
            ..Host::recording()
        },
    };
    T {
        _tmp: tmp,
        root,
        state,
        dm,
        loops,
        runner,
        helper,
    }
}

fn call(t: &T, method: &str, params: Value) -> Result<Value, (i64, String)> {
    t.helper.dispatch(method, params).map_err(|e| {
        let o = e.to_object();
        (o.code, o.message)
    })
}

fn p(t: &T, rel: &str) -> String {
    t.state.join(rel).to_str().unwrap().to_string()
}

fn base(t: &T) -> String {
    std::fs::write(t.state.join("images/base.ext4"), vec![1u8; 1 << 20]).unwrap();
    p(t, "images/base.ext4")
}

#[test]
fn create_dm_snapshot_makes_exact_requests() {
    let t = setup(false);
    let b = base(&t);
    let r = call(&t, m::CREATE_DM_SNAPSHOT, json!({"name": "fc-rootfs-a", "base_image": b, "cow_file": p(&t, "vms/a/cow"), "cow_size_bytes": 64u64 << 20})).unwrap();
    assert_eq!(
        r,
        json!({"handles": {"dm_name": "fc-rootfs-a", "dm_device": "/dev/mapper/fc-rootfs-a", "base_loop": "/dev/loop100", "cow_loop": "/dev/loop101"}})
    );
    assert_eq!(
        t.loops.requests(),
        vec![
            LoopRequest::Attach {
                backing: t.state.join("images/base.ext4"),
                read_only: true
            },
            LoopRequest::Attach {
                backing: t.state.join("vms/a/cow"),
                read_only: false
            },
        ]
    );
    assert_eq!(
        t.dm.requests(),
        vec![DmRequest::Create {
            name: "fc-rootfs-a".into(),
            uuid: "BANGER-fc-rootfs-a".into(),
            table: "0 2048 snapshot /dev/loop100 /dev/loop101 P 8".into(),
        }]
    );
    use std::os::unix::fs::MetadataExt;
    let cow = std::fs::metadata(t.state.join("vms/a/cow")).unwrap();
    assert_eq!(cow.len(), 64 << 20);
    assert_eq!(cow.blocks(), 0, "COW file is sparse");
    assert_eq!(cow.mode() & 0o777, 0o600);
    assert_eq!(std::fs::read(&b).unwrap(), vec![1u8; 1 << 20]);
}

#[test]
fn create_dm_snapshot_undoes_on_dm_failure() {
    let t = setup(false);
    let b = base(&t);
    t.dm.fail_creates(true);
    let e = call(&t, m::CREATE_DM_SNAPSHOT, json!({"name": "fc-rootfs-a", "base_image": b, "cow_file": p(&t, "vms/a/cow"), "cow_size_bytes": 1u64 << 20})).unwrap_err();
    assert!(e.1.contains("create dm device fc-rootfs-a"), "{e:?}");
    assert_eq!(
        t.loops.requests()[2..],
        [
            LoopRequest::Detach {
                device: "/dev/loop101".into()
            },
            LoopRequest::Detach {
                device: "/dev/loop100".into()
            }
        ]
    );
    assert!(t.loops.attached().is_empty());
    assert!(!t.state.join("vms/a/cow").exists(), "created COW removed");
}

#[test]
fn create_dm_snapshot_undoes_on_loop_failure_and_keeps_an_existing_cow() {
    let t = setup(false);
    let b = base(&t);
    std::fs::write(t.state.join("vms/a/cow"), b"old data").unwrap();
    t.loops.fail_attach_after(1);
    let e = call(&t, m::CREATE_DM_SNAPSHOT, json!({"name": "fc-rootfs-a", "base_image": b, "cow_file": p(&t, "vms/a/cow"), "cow_size_bytes": 1u64 << 20})).unwrap_err();
    assert!(e.1.contains("attach"), "{e:?}");
    assert!(t.loops.attached().is_empty());
    assert_eq!(
        std::fs::read(t.state.join("vms/a/cow")).unwrap(),
        b"old data",
        "a COW the helper did not create is kept"
    );
    assert!(t.dm.requests().is_empty());
}

#[test]
fn create_dm_snapshot_gates() {
    let t = setup(false);
    let b = base(&t);
    std::fs::write(t.root.join("outside.ext4"), vec![0u8; 4096]).unwrap();
    std::os::unix::fs::symlink(
        t.root.join("outside.ext4"),
        t.state.join("images/evil.ext4"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&t.root, t.state.join("vms/out")).unwrap();
    std::os::unix::fs::symlink(t.root.join("outside.ext4"), t.state.join("vms/a/cowlink")).unwrap();
    let cases = [
        (
            json!({"name": "vg0-root", "base_image": b, "cow_file": p(&t, "vms/a/cow"), "cow_size_bytes": 1}),
            "dm name must be fc-rootfs-<id>",
        ),
        (
            json!({"name": "fc-rootfs-a", "base_image": p(&t, "images/evil.ext4"), "cow_file": p(&t, "vms/a/cow"), "cow_size_bytes": 1}),
            "path must resolve to a file under StateDir",
        ),
        (
            json!({"name": "fc-rootfs-a", "base_image": "/dev/sda", "cow_file": p(&t, "vms/a/cow"), "cow_size_bytes": 1}),
            "path must resolve to a file under StateDir",
        ),
        (
            json!({"name": "fc-rootfs-a", "base_image": b, "cow_file": p(&t, "vms/out/cow"), "cow_size_bytes": 1}),
            "path must be a file under StateDir",
        ),
        (
            json!({"name": "fc-rootfs-a", "base_image": b, "cow_file": b, "cow_size_bytes": 1}),
            "cow_file must differ from base_image",
        ),
        (
            json!({"name": "fc-rootfs-a", "base_image": b, "cow_file": p(&t, "vms/a/cow"), "cow_size_bytes": 0}),
            "cow_size_bytes must be",
        ),
    ];
    for (params, msg) in cases {
        let (code, text) = call(&t, m::CREATE_DM_SNAPSHOT, params.clone()).unwrap_err();
        assert_eq!(code, -32602, "{params}");
        assert!(
            text.starts_with("priv.create_dm_snapshot: ") && text.contains(msg),
            "{text}"
        );
    }
    // A COW path whose leaf is a symlink out passes the parent check but the
    // helper's O_NOFOLLOW open refuses it; nothing is attached.
    let e = call(&t, m::CREATE_DM_SNAPSHOT, json!({"name": "fc-rootfs-a", "base_image": b, "cow_file": p(&t, "vms/a/cowlink"), "cow_size_bytes": 1})).unwrap_err();
    assert_eq!(
        e,
        (
            -32602,
            "priv.create_dm_snapshot: cow_file must not pass through a symlink".into()
        )
    );
    assert!(t.loops.requests().is_empty());
    assert_eq!(
        std::fs::read(t.root.join("outside.ext4")).unwrap().len(),
        4096
    );
}

#[test]
fn cleanup_removes_exactly_what_the_handles_name() {
    let t = setup(false);
    let b = base(&t);
    let h = call(&t, m::CREATE_DM_SNAPSHOT, json!({"name": "fc-rootfs-a", "base_image": b, "cow_file": p(&t, "vms/a/cow"), "cow_size_bytes": 1u64 << 20})).unwrap();
    call(&t, m::CLEANUP_DM_SNAPSHOT, h.clone()).unwrap();
    assert_eq!(
        t.dm.requests()[1..],
        [
            DmRequest::Info {
                name: "fc-rootfs-a".into()
            },
            DmRequest::Remove {
                name: "fc-rootfs-a".into(),
                uuid: "BANGER-fc-rootfs-a".into()
            }
        ]
    );
    assert!(t.loops.attached().is_empty());
    // Idempotent: everything already gone is fine.
    call(&t, m::CLEANUP_DM_SNAPSHOT, h).unwrap();
}

#[test]
fn cleanup_refuses_host_devices() {
    let t = setup(false);
    t.loops.add("/dev/loop5", "/var/lib/snapd/snaps/core.snap");
    t.dm.add_device("fc-rootfs-lvm", "LVM-abc");
    let (code, msg) = call(
        &t,
        m::CLEANUP_DM_SNAPSHOT,
        json!({"handles": {"base_loop": "/dev/sda"}}),
    )
    .unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (
            -32602,
            "priv.cleanup_dm_snapshot: loop device must be /dev/loopN"
        )
    );
    let (code, _) = call(
        &t,
        m::CLEANUP_DM_SNAPSHOT,
        json!({"handles": {"dm_device": "/dev/mapper/vg0-root"}}),
    )
    .unwrap_err();
    assert_eq!(code, -32602);
    let e = call(
        &t,
        m::CLEANUP_DM_SNAPSHOT,
        json!({"handles": {"cow_loop": "/dev/loop5"}}),
    )
    .unwrap_err();
    assert!(e.1.contains("not a file under StateDir"), "{e:?}");
    let e = call(
        &t,
        m::CLEANUP_DM_SNAPSHOT,
        json!({"handles": {"dm_name": "fc-rootfs-lvm"}}),
    )
    .unwrap_err();
    assert!(e.1.contains("refusing to remove"), "{e:?}");
    assert_eq!(t.loops.attached().len(), 1);
    assert_eq!(t.dm.devices().len(), 1);
    assert!(!t
        .loops
        .requests()
        .iter()
        .any(|r| matches!(r, LoopRequest::Detach { .. })));
}

#[test]
fn remove_dm_snapshot_by_name_or_path_and_uuid() {
    let t = setup(false);
    t.dm.add_device("fc-rootfs-a", "BANGER-fc-rootfs-a");
    t.dm.add_device("fc-rootfs-b", "BANGER-fc-rootfs-b");
    t.dm.add_device("fc-rootfs-crypt", "CRYPT-LUKS2-1234-fc-rootfs-crypt");
    call(&t, m::REMOVE_DM_SNAPSHOT, json!({"target": "fc-rootfs-a"})).unwrap();
    call(
        &t,
        m::REMOVE_DM_SNAPSHOT,
        json!({"target": "/dev/mapper/fc-rootfs-b"}),
    )
    .unwrap();
    call(
        &t,
        m::REMOVE_DM_SNAPSHOT,
        json!({"target": "fc-rootfs-gone"}),
    )
    .unwrap();
    let e = call(
        &t,
        m::REMOVE_DM_SNAPSHOT,
        json!({"target": "fc-rootfs-crypt"}),
    )
    .unwrap_err();
    assert!(e.1.contains("refusing to remove"), "{e:?}");
    let e = call(
        &t,
        m::REMOVE_DM_SNAPSHOT,
        json!({"target": "/dev/mapper/vg0-root"}),
    )
    .unwrap_err();
    assert_eq!(
        e,
        (
            -32602,
            "priv.remove_dm_snapshot: target must be fc-rootfs-* or /dev/mapper/fc-rootfs-*".into()
        )
    );
    assert_eq!(
        t.dm.devices(),
        vec![(
            "fc-rootfs-crypt".to_string(),
            "CRYPT-LUKS2-1234-fc-rootfs-crypt".to_string()
        )]
    );
}

#[test]
fn fsck_snapshot_only_on_banger_devices() {
    let t = setup(false);
    let e = call(&t, m::FSCK_SNAPSHOT, json!({"device": "/dev/sda1"})).unwrap_err();
    assert_eq!(
        e,
        (
            -32602,
            "priv.fsck_snapshot: device must be /dev/mapper/fc-rootfs-*".into()
        )
    );
    t.dm.add_device("fc-rootfs-x", "LVM-1");
    assert!(call(
        &t,
        m::FSCK_SNAPSHOT,
        json!({"device": "/dev/mapper/fc-rootfs-x"})
    )
    .is_err());
    assert!(call(
        &t,
        m::FSCK_SNAPSHOT,
        json!({"device": "/dev/mapper/fc-rootfs-none"})
    )
    .is_err());
    assert!(t.runner.calls().is_empty());
    t.dm.add_device("fc-rootfs-a", "BANGER-fc-rootfs-a");
    let r = call(
        &t,
        m::FSCK_SNAPSHOT,
        json!({"device": "/dev/mapper/fc-rootfs-a"}),
    )
    .unwrap();
    assert_eq!(r, json!({"exit_code": 0}));
    assert_eq!(
        t.runner.calls(),
        vec![vec!["e2fsck", "-fy", "/dev/mapper/fc-rootfs-a"]]
    );
    let cmd = &t.runner.cmds()[0];
    assert_eq!(cmd.privilege, Privilege::RootNoCaps);
    assert_eq!(
        cmd.limits.timeout,
        Some(banger_sys::ext4::FSCK_TIMEOUT),
        "e2fsck runs against a deadline"
    );
}

#[test]
fn debugfs_on_a_dm_device_runs_as_uid_0_without_capabilities() {
    let t = setup(false);
    t.dm.add_device("fc-rootfs-a", "BANGER-fc-rootfs-a");
    call(
        &t,
        m::READ_EXT4_FILE,
        json!({"image": "/dev/mapper/fc-rootfs-a", "path": "/etc/hostname"}),
    )
    .unwrap();
    let cmd = &t.runner.cmds()[0];
    assert_eq!(
        cmd.argv(),
        [
            "debugfs",
            "-R",
            "cat /etc/hostname",
            "/dev/mapper/fc-rootfs-a"
        ]
    );
    assert_eq!(cmd.privilege, Privilege::RootNoCaps);
    assert!(cmd.pass_fds.is_empty());
    assert_eq!(cmd.limits.max_stdout, super::READ_MAX_BYTES);
    assert!(cmd.limits.timeout.is_some());
}

#[test]
fn root_debugfs_on_an_image_file_runs_as_the_owner_on_the_checked_fd() {
    if !banger_testkit::require_root(
        "root_debugfs_on_an_image_file_runs_as_the_owner_on_the_checked_fd",
    ) {
        return;
    }
    let t = setup(false);
    let img = t.state.join("vms/a/root.ext4");
    std::fs::write(&img, b"").unwrap();
    std::os::unix::fs::chown(&img, Some(1000), Some(1000)).unwrap();
    call(
        &t,
        m::READ_EXT4_FILE,
        json!({"image": img, "path": "/etc/hostname"}),
    )
    .unwrap();
    let cmd = &t.runner.cmds()[0];
    assert_eq!(
        cmd.privilege,
        Privilege::User {
            uid: 1000,
            gid: 1000
        }
    );
    assert_eq!(cmd.pass_fds.len(), 1);
    assert_eq!(
        cmd.argv()[3],
        format!("/proc/self/fd/{}", cmd.pass_fds[0]),
        "debugfs is named the fd it inherits, not a path"
    );
}

fn mkfs(path: &Path) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    HostRunner
        .run(&Cmd::new("mkfs.ext4").args(["-q", "-F"]).arg(path))
        .unwrap();
}

#[test]
fn root_write_and_read_ext4_files_for_real() {
    if !banger_testkit::require_root("root_write_and_read_ext4_files_for_real") {
        return;
    }
    let t = setup(true);
    let img = t.state.join("vms/a/root.ext4");
    mkfs(&img);
    // An image file is used only when the owner owns it (debugfs runs as the owner).
    std::os::unix::fs::chown(&img, Some(1000), Some(1000)).unwrap();
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let hostile = b"ssh-ed25519 AAAA\nrm /etc/hostname\n";
    call(&t, m::WRITE_EXT4_FILES, json!({"image": img, "files": [
        {"path": "/etc/hostname", "content_b64": b64(b"vm-a\n"), "mode": 0o644, "uid": 0, "gid": 0},
        {"path": "/root/.ssh/authorized_keys", "content_b64": b64(hostile), "mode": 0o600, "uid": 0, "gid": 0},
    ]}))
    .unwrap();
    let r = call(
        &t,
        m::READ_EXT4_FILE,
        json!({"image": img, "path": "/etc/hostname"}),
    )
    .unwrap();
    assert_eq!(r, json!({"content_b64": b64(b"vm-a\n")}));
    let r = call(
        &t,
        m::READ_EXT4_FILE,
        json!({"image": img, "path": "/root/.ssh/authorized_keys"}),
    )
    .unwrap();
    assert_eq!(r["content_b64"], b64(hostile));
    // Refused by the gates.
    let bad_paths = [
        "/etc/../shadow",
        "etc/x",
        "/etc/x y",
        "/etc/x\nrm /etc/hostname",
    ];
    for bad in bad_paths {
        let e = call(&t, m::WRITE_EXT4_FILES, json!({"image": img, "files": [{"path": bad, "content_b64": "", "mode": 0o644, "uid": 0, "gid": 0}]})).unwrap_err();
        assert_eq!(e.0, -32602, "{bad}");
        assert!(
            e.1.starts_with("priv.write_ext4_files: guest path must be absolute"),
            "{e:?}"
        );
    }
    let e = call(&t, m::WRITE_EXT4_FILES, json!({"image": img, "files": [{"path": "/x", "content_b64": "", "mode": 0o100644, "uid": 0, "gid": 0}]})).unwrap_err();
    assert_eq!(
        e,
        (
            -32602,
            "priv.write_ext4_files: mode must be at most 0o7777".into()
        )
    );
    let e = call(&t, m::WRITE_EXT4_FILES, json!({"image": img, "files": [{"path": "/x", "content_b64": "!!", "mode": 0o644, "uid": 0, "gid": 0}]})).unwrap_err();
    assert_eq!(e.0, -32602);
    // The hostile content did not act as a command.
    let r = call(
        &t,
        m::READ_EXT4_FILE,
        json!({"image": img, "path": "/etc/hostname"}),
    )
    .unwrap();
    assert_eq!(r["content_b64"], b64(b"vm-a\n"));
    assert_eq!(
        HostRunner
            .output(&Cmd::new("e2fsck").arg("-fn").arg(&img))
            .unwrap()
            .status,
        0
    );
}

#[test]
fn ext4_images_outside_state_dir_are_refused() {
    let t = setup(true);
    let outside = t.root.join("outside.ext4");
    mkfs(&outside);
    let before = std::fs::read(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, t.state.join("vms/a/link.ext4")).unwrap();
    let rule = "image must be under StateDir or /dev/mapper/fc-rootfs-*";
    for img in [
        outside.to_str().unwrap().to_string(),
        p(&t, "vms/a/link.ext4"),
        p(&t, "../outside.ext4"),
        "/dev/vda".into(),
        "/dev/mapper/vg0-root".into(),
    ] {
        let e = call(&t, m::WRITE_EXT4_FILES, json!({"image": img, "files": [{"path": "/pwn", "content_b64": "", "mode": 0o644, "uid": 0, "gid": 0}]})).unwrap_err();
        assert_eq!(
            e,
            (-32602, format!("priv.write_ext4_files: {rule}")),
            "{img}"
        );
        let e = call(
            &t,
            m::READ_EXT4_FILE,
            json!({"image": img, "path": "/etc/hostname"}),
        )
        .unwrap_err();
        assert_eq!(e, (-32602, format!("priv.read_ext4_file: {rule}")), "{img}");
    }
    assert_eq!(std::fs::read(&outside).unwrap(), before);
    // A dm path that is not a banger device is refused before debugfs runs.
    t.dm.add_device("fc-rootfs-z", "LVM-z");
    assert!(call(
        &t,
        m::READ_EXT4_FILE,
        json!({"image": "/dev/mapper/fc-rootfs-z", "path": "/etc/hostname"})
    )
    .is_err());
}

#[test]
fn root_create_and_cleanup_with_real_loops() {
    if !banger_testkit::require_root("root_create_and_cleanup_with_real_loops") {
        return;
    }
    let mut t = setup(true);
    let real_dm = banger_sys::dm::kernel_has_dm(std::path::Path::new("/proc"));
    if real_dm {
        t.helper.host.dm = Arc::new(banger_sys::dm::DmSetup::new(Arc::new(HostRunner)));
    } else {
        println!(
            "skipped (dm part): no device-mapper in /proc/misc, dm through the recording double"
        );
    }
    t.helper.host.loops = Arc::new(banger_sys::loopdev::KernelLoops::new("/sys"));
    let img = t.state.join("images/base.ext4");
    mkfs(&img);
    let before = std::fs::read(&img).unwrap();
    let name = format!("fc-rootfs-bgtest{}", std::process::id());
    let h = call(&t, m::CREATE_DM_SNAPSHOT, json!({"name": name, "base_image": img, "cow_file": p(&t, "vms/a/bgtest-cow"), "cow_size_bytes": 8u64 << 20})).unwrap();
    struct Cleanup<'a>(&'a T, Value);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = self
                .0
                .helper
                .dispatch(m::CLEANUP_DM_SNAPSHOT, self.1.clone());
        }
    }
    let guard = Cleanup(&t, h.clone());
    let loops = banger_sys::loopdev::KernelLoops::new("/sys");
    use banger_sys::loopdev::LoopOps;
    let base_loop = h["handles"]["base_loop"].as_str().unwrap().to_string();
    let cow_loop = h["handles"]["cow_loop"].as_str().unwrap().to_string();
    assert_eq!(
        loops.backing_file(Path::new(&base_loop)).unwrap(),
        Some(img.clone())
    );
    assert_eq!(
        loops.backing_file(Path::new(&cow_loop)).unwrap(),
        Some(t.state.join("vms/a/bgtest-cow"))
    );
    let ro = |dev: &str| std::fs::read_to_string(format!("/sys/block/{}/ro", &dev[5..])).unwrap();
    assert_eq!(ro(&base_loop).trim(), "1", "base loop is read-only");
    assert_eq!(ro(&cow_loop).trim(), "0");
    if real_dm {
        let dev = h["handles"]["dm_device"].as_str().unwrap();
        call(&t, m::WRITE_EXT4_FILES, json!({"image": dev, "files": [{"path": "/etc/hostname", "content_b64": "eA==", "mode": 420, "uid": 0, "gid": 0}]})).unwrap();
        assert_eq!(
            call(&t, m::FSCK_SNAPSHOT, json!({"device": dev})).unwrap()["exit_code"],
            0
        );
    }
    drop(guard);
    assert_eq!(loops.backing_file(Path::new(&base_loop)).unwrap(), None);
    assert_eq!(loops.backing_file(Path::new(&cow_loop)).unwrap(), None);
    assert_eq!(std::fs::read(&img).unwrap(), before, "base unchanged");
}
