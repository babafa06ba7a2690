//! A real `bangerd --dev` in a `bgtest-` scratch dir (no network set-up),
//! and the `banger` CLI pointed at its socket.

use banger_testkit::{http_unix, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

pub const DAEMON: &str = env!("CARGO_BIN_EXE_bangerd");

/// The `banger` binary beside `bangerd`.
pub fn cli() -> PathBuf {
    let p = Path::new(DAEMON).with_file_name("banger");
    assert!(
        p.exists(),
        "{} missing: run `cargo test --workspace`",
        p.display()
    );
    p
}

pub struct DevDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Child,
}

impl Drop for DevDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Stored images are read-only; let the temp dir go.
        let _ = Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(self.dir.path())
            .status();
    }
}

/// Start the daemon under `<tmp>/<prefix>*` and wait until it answers.
pub fn start(prefix: &str) -> DevDaemon {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let socket = dir.path().join("run/bangerd.sock");
    let child = Command::new(DAEMON)
        .arg("--dev")
        .env("BANGER_STATE_DIR", dir.path().join("state"))
        .env("BANGER_RUNTIME_DIR", dir.path().join("run"))
        .env("BANGER_LOG", "warn")
        // Root runs DirectOps: do not create banger0 on the test host.
        .env("BANGER_NO_NETWORK", "1")
        .spawn()
        .unwrap();
    let s = socket.clone();
    assert!(wait_until(Duration::from_secs(20), || matches!(
        http_unix(&s, "GET", "/v1/health", None),
        Ok((200, _))
    )));
    DevDaemon { dir, socket, child }
}

impl DevDaemon {
    pub fn banger(&self, args: &[&str]) -> Output {
        Command::new(cli())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Run `banger args`, assert success, parse stdout as JSON.
    pub fn ok_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.banger(args);
        assert!(
            out.status.success(),
            "banger {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}
