//! The three real binaries together, the way the two systemd units run
//! them: `banger-helper` as root, `bangerd` as the owner uid (system mode,
//! same install.toml), and the `banger` CLI as root and as the owner.

use banger_testkit::{open_up, require_root, wait_until, KillOnDrop, SystemUser};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CLI: &str = env!("CARGO_BIN_EXE_banger");

/// A sibling binary built by `cargo test --workspace` (same target dir).
fn sibling(name: &str) -> PathBuf {
    let p = Path::new(CLI).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

#[test]
fn root_banger_version_talks_to_a_running_bangerd_and_helper() {
    if !require_root("root_banger_version_talks_to_a_running_bangerd_and_helper") {
        return;
    }
    let owner = SystemUser::create("e2eown");
    let dir = tempfile::Builder::new()
        .prefix("bgtest-e2e-")
        .tempdir()
        .unwrap();
    open_up(dir.path());
    let (state, run) = (dir.path().join("state"), dir.path().join("run"));
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(owner.uid), Some(owner.gid)).unwrap();
    // RuntimeDir as the system layout has it: root-owned, owner's group.
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(0), Some(owner.gid)).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o770)).unwrap();
    let mut cfg =
        banger_proto::install::InstallConfig::for_owner(owner.uid, owner.gid, dir.path().into());
    cfg.state_dir = state;
    cfg.runtime_dir = run.clone();
    let cfg_path = dir.path().join("install.toml");
    std::fs::write(&cfg_path, cfg.render()).unwrap();
    std::fs::set_permissions(&cfg_path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let helper = KillOnDrop(
        Command::new(sibling("banger-helper"))
            .arg("--config")
            .arg(&cfg_path)
            .env("BANGER_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let helper_sock = run.join("helper.sock");
    assert!(wait_until(Duration::from_secs(20), || helper_sock.exists()));

    let daemon = KillOnDrop(
        Command::new(sibling("bangerd"))
            .arg("--config")
            .arg(&cfg_path)
            .env_clear()
            .env("BANGER_LOG", "warn")
            // This test is about versions; keep the host's network untouched.
            .env("BANGER_NO_NETWORK", "1")
            .uid(owner.uid)
            .gid(owner.gid)
            .spawn()
            .unwrap(),
    );
    let sock = run.join("bangerd.sock");
    assert!(wait_until(Duration::from_secs(20), || sock.exists()));

    let version = |as_owner: bool| {
        let mut c = Command::new(CLI);
        c.arg("--socket").arg(&sock).args(["version", "--json"]);
        if as_owner {
            c.uid(owner.uid).gid(owner.gid).env_clear();
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "banger version failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    for as_owner in [false, true] {
        let v = version(as_owner);
        assert_eq!(v["cli"], banger_proto::VERSION);
        assert_eq!(v["daemon"]["daemon"], banger_proto::VERSION);
        assert_eq!(v["daemon"]["privileges"], "helper");
        assert_eq!(v["daemon"]["helper"], banger_proto::VERSION, "{v}");
    }

    // Human output names all three.
    let out = Command::new(CLI)
        .arg("--socket")
        .arg(&sock)
        .arg("version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bangerd") && text.contains("banger-helper"),
        "{text}"
    );
    drop(daemon);
    drop(helper);
}

#[test]
fn cli_errors_are_one_line_with_the_right_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(CLI)
        .arg("--socket")
        .arg(dir.path().join("nope.sock"))
        .args(["vm", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("banger: cannot reach bangerd"), "{err}");

    let out = Command::new(CLI)
        .arg("--socket")
        .arg(dir.path().join("nope.sock"))
        .args(["vm", "ssh", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = Command::new(CLI)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("_banger"));
}
