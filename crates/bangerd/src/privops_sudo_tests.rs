//! `SudoOps`' two development-mode fallbacks: the exact argv, their order,
//! and that a gate refusal or a failed step runs nothing further.

use super::*;
use banger_sys::runner::{CmdOutput, RecordingRunner};
use serde_json::json;
use std::path::Path;

const HELPER_BIN: &str = "/usr/local/bin/banger-helper";

/// A temp tree with `run/`, `jail/`, `proc/thread-self/mountinfo` and a
/// dev-install.toml (owner 4242:4243) naming them.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    runner: Arc<RecordingRunner>,
    ops: SudoOps,
}

fn fixture(mountinfo: &dyn Fn(&Path) -> String) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-sudo-")
        .tempdir()
        .unwrap();
    let root = dir.path().canonicalize().unwrap();
    for d in ["run", "jail", "proc/thread-self", "state"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("proc/thread-self/mountinfo"), mountinfo(&root)).unwrap();
    let mut cfg = InstallConfig::for_owner(4242, 4243, root.clone());
    cfg.runtime_dir = root.join("run");
    cfg.jailer_base = root.join("jail");
    cfg.state_dir = root.join("state");
    let config = root.join("state/dev-install.toml");
    std::fs::write(&config, cfg.render()).unwrap();
    let runner = Arc::new(RecordingRunner::new());
    let ops =
        SudoOps::new(runner.clone(), HELPER_BIN.into(), config).with_proc_root(root.join("proc"));
    Fixture {
        _dir: dir,
        root,
        runner,
        ops,
    }
}

fn no_mounts(_: &Path) -> String {
    "1 0 0:1 / / rw - ext4 /dev/vda rw\n".into()
}

fn refusal(r: Result<Value, PrivError>) -> (i64, String) {
    match r {
        Err(PrivError::Refused { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn failed(status: i32, stderr: &str) -> CmdOutput {
    CmdOutput {
        status,
        stdout: vec![],
        stderr: stderr.as_bytes().to_vec(),
    }
}

#[test]
fn socket_access_chowns_without_following_then_chmods_as_the_owner() {
    let f = fixture(&no_mounts);
    let sock = f.root.join("run/fc-vm1.sock");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let v = f
        .ops
        .call_value(m::ENSURE_SOCKET_ACCESS, json!({"path": sock}))
        .unwrap();
    assert_eq!(v, json!({}));
    let path = sock.to_str().unwrap();
    assert_eq!(
        f.runner.calls(),
        vec![
            vec!["sudo", "-n", "chown", "-h", "4242:4243", "--", path],
            vec!["chmod", "600", "--", path],
        ],
        "chown -h through sudo first, then chmod without sudo; no oneshot"
    );
}

#[test]
fn socket_access_stops_after_a_failed_chown() {
    let f = fixture(&no_mounts);
    let sock = f.root.join("run/fc-vm1.sock");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    f.runner
        .answer("chown", failed(1, "sudo: a password is required"));
    let err = f
        .ops
        .call_value(m::ENSURE_SOCKET_ACCESS, json!({"path": sock}))
        .unwrap_err();
    assert!(matches!(err, PrivError::Sudo(_)), "{err:?}");
    assert_eq!(f.runner.calls().len(), 1, "chmod ran after a failed chown");
}

#[test]
fn socket_access_gates_refuse_before_any_command() {
    let f = fixture(&no_mounts);
    let canary = f.root.join("state/canary");
    std::fs::write(&canary, b"x").unwrap();
    let link = f.root.join("run/fc-vm1.sock");
    std::os::unix::fs::symlink(&canary, &link).unwrap();
    let plain = f.root.join("run/plain.sock");
    std::fs::write(&plain, b"").unwrap();
    let sock_outside = f.root.join("state/out.sock");
    let _l = std::os::unix::net::UnixListener::bind(&sock_outside).unwrap();
    for (params, code, want) in [
        (
            json!({"path": link}),
            -32602,
            "priv.ensure_socket_access: socket path must not be a symlink".to_string(),
        ),
        (
            json!({"path": plain}),
            -32602,
            "priv.ensure_socket_access: socket path must be a socket".to_string(),
        ),
        (
            json!({"path": sock_outside}),
            -32602,
            format!(
                "priv.ensure_socket_access: socket path must be below RuntimeDir ({})",
                f.root.join("run").display()
            ),
        ),
        (
            json!({"path": f.root.join("run/missing.sock")}),
            -32602,
            "priv.ensure_socket_access: socket path must exist".to_string(),
        ),
        (
            json!({"path": link, "uid": 0}),
            -32602,
            "invalid params: unknown field `uid`".to_string(),
        ),
    ] {
        let (c, msg) = refusal(f.ops.call_value(m::ENSURE_SOCKET_ACCESS, params));
        assert_eq!(c, code, "{msg}");
        assert!(msg.starts_with(&want), "{msg:?} vs {want:?}");
    }
    assert!(f.runner.calls().is_empty(), "{:?}", f.runner.calls());
}

fn jail_mounts(root: &Path) -> String {
    let j = root.join("jail/firecracker");
    let j = j.display();
    format!(
        "1 0 0:1 / / rw - ext4 /dev/vda rw\n\
         20 1 0:20 / {j}/vm1/root rw - tmpfs t rw\n\
         21 20 0:21 / {j}/vm1/root/dev rw - tmpfs t rw\n\
         22 21 0:22 / {j}/vm1/root/dev/net rw - tmpfs t rw\n\
         23 20 0:23 / {j}/vm1/root/proc rw - proc proc rw\n\
         24 1 0:24 / {j}/vm10/root/dev rw - tmpfs t rw\n\
         25 1 0:25 / {j}/vm1 rw - tmpfs t rw\n"
    )
}

fn ok_oneshot() -> CmdOutput {
    CmdOutput {
        status: 0,
        stdout: br#"{"jsonrpc":"2.0","result":{},"id":1}"#.to_vec(),
        stderr: vec![],
    }
}

#[test]
fn jailer_cleanup_unmounts_deepest_first_lazily_then_removes_through_the_helper() {
    let f = fixture(&jail_mounts);
    let chroot = f.root.join("jail/firecracker/vm1/root");
    std::fs::create_dir_all(chroot.join("dev/net")).unwrap();
    f.runner.answer("oneshot", ok_oneshot());
    let v = f
        .ops
        .call_value(m::CLEANUP_JAILER_CHROOT, json!({"path": chroot}))
        .unwrap();
    assert_eq!(v, json!({}));
    let umount = |rel: &str| {
        let p = if rel.is_empty() {
            chroot.clone()
        } else {
            chroot.join(rel)
        };
        vec![
            "sudo".to_string(),
            "-n".into(),
            "umount".into(),
            "--lazy".into(),
            "--".into(),
            p.display().to_string(),
        ]
    };
    let calls = f.runner.calls();
    assert_eq!(calls.len(), 5, "{calls:?}");
    // Deepest first; same-depth order is free, so compare depth by depth.
    assert_eq!(calls[0], umount("dev/net"));
    let mut mid = vec![calls[1].clone(), calls[2].clone()];
    mid.sort();
    let mut want = vec![umount("dev"), umount("proc")];
    want.sort();
    assert_eq!(mid, want);
    assert_eq!(calls[3], umount(""));
    // Neither vm10 (a sibling sharing the prefix) nor the parent vm1 mount.
    assert_eq!(
        calls[4],
        vec![
            "sudo",
            "-n",
            "--",
            HELPER_BIN,
            "--config",
            f.root.join("state/dev-install.toml").to_str().unwrap(),
            "oneshot"
        ]
    );
    let stdin: Value = serde_json::from_slice(f.runner.cmds()[4].stdin.as_ref().unwrap()).unwrap();
    assert_eq!(stdin["method"], m::CLEANUP_JAILER_CHROOT);
    assert_eq!(stdin["params"], json!({"path": chroot}));
}

#[test]
fn jailer_cleanup_stops_at_a_failed_umount_and_never_removes() {
    let f = fixture(&jail_mounts);
    let chroot = f.root.join("jail/firecracker/vm1/root");
    std::fs::create_dir_all(&chroot).unwrap();
    f.runner
        .answer("root/dev", failed(32, "umount: target is busy"));
    let err = f
        .ops
        .call_value(m::CLEANUP_JAILER_CHROOT, json!({"path": chroot}))
        .unwrap_err();
    assert!(matches!(err, PrivError::Sudo(_)), "{err:?}");
    let calls = f.runner.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls.iter().all(|c| c.iter().all(|a| a != "oneshot")));
}

#[test]
fn jailer_cleanup_without_mounts_goes_straight_to_the_removal() {
    let f = fixture(&no_mounts);
    let chroot = f.root.join("jail/firecracker/vm2/root");
    std::fs::create_dir_all(&chroot).unwrap();
    f.runner.answer("oneshot", ok_oneshot());
    f.ops
        .call_value(m::CLEANUP_JAILER_CHROOT, json!({"path": chroot}))
        .unwrap();
    let calls = f.runner.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].last().unwrap(), "oneshot");
}

#[test]
fn jailer_cleanup_gates_refuse_before_any_command() {
    let f = fixture(&jail_mounts);
    let elsewhere = f.root.join("state/elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(f.root.join("jail/firecracker")).unwrap();
    let link = f.root.join("jail/firecracker/vm3");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let file = f.root.join("jail/file");
    std::fs::write(&file, b"").unwrap();
    for (path, want) in [
        (
            link.clone(),
            "priv.cleanup_jailer_chroot: chroot path must not be a symlink",
        ),
        (
            link.join("root"),
            "priv.cleanup_jailer_chroot: chroot path must not pass through a symlink",
        ),
        (
            file.clone(),
            "priv.cleanup_jailer_chroot: chroot path must be a directory",
        ),
        (
            elsewhere.clone(),
            "priv.cleanup_jailer_chroot: chroot path must be below the jailer base",
        ),
        (
            f.root.join("jail/firecracker/../file"),
            "priv.cleanup_jailer_chroot: chroot path must be lexically clean",
        ),
    ] {
        std::fs::create_dir_all(elsewhere.join("root")).unwrap();
        let (code, msg) = refusal(
            f.ops
                .call_value(m::CLEANUP_JAILER_CHROOT, json!({"path": path})),
        );
        assert_eq!(code, -32602, "{msg}");
        assert!(msg.starts_with(want), "{msg:?} vs {want:?}");
    }
    // Already gone: nothing to do, nothing run.
    f.ops
        .call_value(
            m::CLEANUP_JAILER_CHROOT,
            json!({"path": f.root.join("jail/firecracker/gone/root")}),
        )
        .unwrap();
    assert!(f.runner.calls().is_empty(), "{:?}", f.runner.calls());
}

#[test]
fn other_methods_still_go_through_the_oneshot() {
    let f = fixture(&no_mounts);
    f.runner.answer("oneshot", ok_oneshot());
    f.ops
        .call_value(m::DELETE_TAP, json!({"name": "banger-1"}))
        .unwrap();
    let calls = f.runner.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0][..3], ["sudo", "-n", "--"]);
    assert_eq!(calls[0].last().unwrap(), "oneshot");
}

#[test]
fn socket_access_chmod_failure_bubbles_after_the_chown() {
    let f = fixture(&no_mounts);
    let sock = f.root.join("run/fc-vm1.sock");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    f.runner.answer(
        "chmod",
        failed(1, "chmod: changing permissions: Operation not permitted"),
    );
    let err = f
        .ops
        .call_value(m::ENSURE_SOCKET_ACCESS, json!({"path": sock}))
        .unwrap_err();
    let PrivError::Sudo(e) = &err else {
        panic!("{err:?}")
    };
    assert!(
        banger_sys::service::render_chain(e).contains("Operation not permitted"),
        "{err:?}"
    );
    let calls = f.runner.calls();
    assert_eq!(calls.len(), 2, "chown ran, then the failing chmod");
    assert_eq!(calls[0][..3], ["sudo", "-n", "chown"]);
    assert_eq!(calls[1][0], "chmod");
}
