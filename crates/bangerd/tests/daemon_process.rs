//! The real `bangerd` binary: umask 077, socket mode and owner, clean
//! shutdown, restart on a stale socket, and who may connect (root, the
//! owner, not a third uid, over real uids).

use banger_testkit::{http_unix, open_up, probe_as, require_root, wait_until, Probe, SystemUser};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_bangerd");

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready(socket: &Path) -> bool {
    matches!(http_unix(socket, "GET", "/v1/health", None), Ok((200, _)))
}

fn dev_daemon(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--dev")
        .env("BANGER_STATE_DIR", dir.join("state"))
        .env("BANGER_RUNTIME_DIR", dir.join("run"))
        .env("BANGER_LOG", "warn")
        // Root runs DirectOps: do not create banger0 on the test host.
        .env("BANGER_NO_NETWORK", "1");
    c
}

fn start(mut cmd: Command, socket: PathBuf) -> Daemon {
    let child = cmd.spawn().expect("bangerd starts");
    let d = Daemon { child, socket };
    assert!(
        wait_until(Duration::from_secs(20), || ready(&d.socket)),
        "bangerd did not become ready on {}",
        d.socket.display()
    );
    d
}

fn umask_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn umask_socket_mode_version_and_clean_shutdown() {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-d-")
        .tempdir()
        .unwrap();
    let socket = dir.path().join("run/bangerd.sock");
    let mut d = start(dev_daemon(dir.path()), socket.clone());

    assert_eq!(umask_of(d.child.id()), "0077");
    let db = dir.path().join("state/state.db");
    assert_eq!(std::fs::metadata(&db).unwrap().mode() & 0o777, 0o600);
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode");
    assert_eq!(
        meta.uid(),
        rustix::process::getuid().as_raw(),
        "socket owner"
    );

    let (status, body) = http_unix(&socket, "GET", "/v1/version", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["daemon"], banger_proto::VERSION);
    if rustix::process::geteuid().is_root() {
        assert_eq!(v["privileges"], "direct");
        assert_eq!(v["helper"], banger_proto::VERSION);
    } else {
        assert_eq!(v["privileges"], "sudo");
        // The dev config handed to `sudo -n banger-helper` is private.
        let cfg = dir.path().join("state/dev-install.toml");
        assert_eq!(std::fs::metadata(cfg).unwrap().mode() & 0o777, 0o600);
    }

    d.signal(nix::sys::signal::Signal::SIGTERM);
    let st = d.child.wait().unwrap();
    assert!(st.success(), "SIGTERM is a clean shutdown: {st:?}");
    assert!(!socket.exists(), "socket removed on shutdown");
}

#[test]
fn restart_on_a_stale_socket_and_refusal_of_a_live_one() {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-d-")
        .tempdir()
        .unwrap();
    let socket = dir.path().join("run/bangerd.sock");
    let mut first = start(dev_daemon(dir.path()), socket.clone());

    // A second daemon on the same live socket refuses and leaves it alone.
    let out = dev_daemon(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already serving"), "{err}");
    assert!(ready(&socket), "first daemon still serving");

    // SIGKILL leaves a stale socket file behind; a new daemon replaces it.
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.child.wait().unwrap();
    assert!(socket.exists(), "stale socket left behind");
    let second = start(dev_daemon(dir.path()), socket.clone());
    assert!(ready(&second.socket));

    // A non-socket at the socket path is never removed.
    drop(second);
    let _ = std::fs::remove_file(&socket);
    std::fs::write(&socket, "precious").unwrap();
    let out = dev_daemon(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "precious");
}

#[test]
fn root_owner_daemon_admits_root_and_owner_and_refuses_a_third_uid() {
    if !require_root("root_owner_daemon_admits_root_and_owner_and_refuses_a_third_uid") {
        return;
    }
    let owner = SystemUser::create("down");
    let third = SystemUser::create("dthird");
    let dir = tempfile::Builder::new()
        .prefix("bgtest-d-")
        .tempdir()
        .unwrap();
    open_up(dir.path());
    let (state, run) = (dir.path().join("state"), dir.path().join("run"));
    for d in [&state, &run] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(owner.uid), Some(owner.gid)).unwrap();
    }
    let cfg_path = dir.path().join("install.toml");
    let mut cfg =
        banger_proto::install::InstallConfig::for_owner(owner.uid, owner.gid, dir.path().into());
    cfg.state_dir = state.clone();
    cfg.runtime_dir = run.clone();
    std::fs::write(&cfg_path, cfg.render()).unwrap();
    std::fs::set_permissions(&cfg_path, std::fs::Permissions::from_mode(0o644)).unwrap();

    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.args(["--config"])
        .arg(&cfg_path)
        .env_clear()
        .env("BANGER_LOG", "warn")
        .env("BANGER_NO_NETWORK", "1")
        .uid(owner.uid)
        .gid(owner.gid);
    let socket = run.join("bangerd.sock");
    let d = start(cmd, socket.clone());

    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.uid(), owner.uid, "socket owned by the owner");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(umask_of(d.child.id()), "0077");

    // uid 0 admitted; the helper is not running, which /v1/version says.
    let (status, body) = http_unix(&socket, "GET", "/v1/version", None).unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["privileges"], "helper");
    assert!(
        v["helper_error"].as_str().unwrap().contains("helper"),
        "{v}"
    );

    let req = b"GET /v1/health HTTP/1.1\r\nHost: banger\r\nConnection: close\r\n\r\n";
    match probe_as(owner.uid, owner.gid, &socket, req) {
        Probe::Answered(bytes) => assert!(bytes.starts_with(b"HTTP/1.1 200"), "{bytes:?}"),
        other => panic!("owner not answered: {other:?}"),
    }
    // Filesystem permissions already keep the third uid out...
    assert_eq!(
        probe_as(third.uid, third.gid, &socket, req),
        Probe::ConnectFailed(13),
        "EACCES from the 0600 socket"
    );
    // ...and if the socket were ever reachable, SO_PEERCRED still refuses.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(
        probe_as(third.uid, third.gid, &socket, req),
        Probe::ClosedSilently
    );
    assert!(ready(&socket), "still serving after a refusal");
}
