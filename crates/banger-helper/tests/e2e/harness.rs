//! Shared by the end-to-end helper tests: the real `banger-helper` binary
//! started as root in a private network namespace with a temporary
//! install.toml, and one-request clients as another uid.

use banger_proto::install::InstallConfig;
use banger_testkit::{open_up, probe_as, wait_until, Probe, SystemUser};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const HELPER: &str = env!("CARGO_BIN_EXE_banger-helper");

/// The fake VMM: prints its argv (one per line) to stdout — the log the
/// helper opened — and waits for signals. A real ELF, so `/proc/<pid>/cmdline`
/// argv[0] is the configured binary path, as for Firecracker.
pub const FAKE_VMM_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) printf("%s\n", argv[i]);
    fflush(stdout);
    for (;;) pause();
}
"#;

/// The real helper process; SIGKILLed and reaped when dropped.
pub struct HelperProc {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl HelperProc {
    /// Start `banger-helper --config <cfg> serve` in a fresh network
    /// namespace; wait for its socket.
    pub fn start(cfg_path: &Path, cfg: &InstallConfig, extra: &[&str], log: PathBuf) -> HelperProc {
        let stderr = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(HELPER);
        cmd.arg("--config")
            .arg(cfg_path)
            .args(extra)
            .arg("serve")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("BANGER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: unshare(2) is async-signal-safe; the closure touches no
        // memory shared with other threads.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("banger-helper starts");
        let socket = cfg.helper_socket();
        let p = HelperProc { child, socket, log };
        assert!(
            wait_until(Duration::from_secs(20), || p.socket.exists()),
            "helper socket never appeared; log:\n{}",
            p.log_text()
        );
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HelperProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn request(method: &str, params: &Value) -> Vec<u8> {
    let mut line = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        .to_string()
        .into_bytes();
    line.push(b'\n');
    line
}

/// One request as `uid`/`gid` from a forked child; the parsed answer.
pub fn call_as(uid: u32, gid: u32, socket: &Path, method: &str, params: Value) -> Value {
    match probe_as(uid, gid, socket, &request(method, &params)) {
        Probe::Answered(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method}: bad answer {bytes:?}: {e}")),
        other => panic!("{method} as uid {uid}: expected an answer, got {other:?}"),
    }
}

pub fn result<'a>(method: &str, v: &'a Value) -> &'a Value {
    assert!(v["error"].is_null(), "{method} failed: {v}");
    &v["result"]
}

/// The error's code and message.
pub fn error(method: &str, v: &Value) -> (i64, String) {
    let code = v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("{method}: expected an error, got {v}"));
    (code, v["error"]["message"].as_str().unwrap().to_string())
}

/// A test tree: `<dir>/{bin,state,run,jail}` and an install.toml naming them.
pub struct Layout {
    pub _dir: tempfile::TempDir,
    pub cfg: InstallConfig,
    pub cfg_path: PathBuf,
}

pub fn layout(owner: &SystemUser, bridge: &str) -> Layout {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-e2eh-")
        .tempdir()
        .unwrap();
    open_up(dir.path());
    let root = dir.path().canonicalize().unwrap();
    let (bin, state, run, jail) = (
        root.join("bin"),
        root.join("state"),
        root.join("run"),
        root.join("jail"),
    );
    for d in [&bin, &state, &run, &jail] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&state, Some(owner.uid), Some(owner.gid)).unwrap();
    // RuntimeDir as the system layout has it: root-owned, the owner's group.
    std::os::unix::fs::chown(&run, Some(0), Some(owner.gid)).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o770)).unwrap();

    let fc = bin.join("firecracker");
    // Static: the jailer double runs it inside an empty chroot.
    let mut cc = Command::new("cc")
        .args(["-static", "-O1", "-x", "c", "-o"])
        .arg(&fc)
        .arg("-")
        .stdin(Stdio::piped())
        .spawn()
        .expect("cc runs (the Rust toolchain's linker)");
    cc.stdin
        .take()
        .unwrap()
        .write_all(FAKE_VMM_C.as_bytes())
        .unwrap();
    assert!(cc.wait().unwrap().success(), "compiling the fake VMM");
    let double = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("jailer-double")))
        .filter(|p| p.is_file())
        .expect("the jailer double beside the tests (cargo build -p banger-jailer-double)");
    std::fs::copy(&double, bin.join("jailer")).unwrap();
    for b in ["firecracker", "jailer"] {
        std::fs::set_permissions(bin.join(b), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let mut cfg = InstallConfig::for_owner(owner.uid, owner.gid, root.clone());
    cfg.state_dir = state;
    cfg.runtime_dir = run;
    cfg.jailer_base = jail;
    cfg.firecracker_bin = fc;
    cfg.jailer_bin = bin.join("jailer");
    cfg.bridge = bridge.to_string();
    cfg.subnet = "10.213.0.0/24".into();
    cfg.jail_uid_base = Some(3_700_000 + (std::process::id() % 1000) * 16);
    cfg.jail_uid_count = Some(16);
    let cfg_path = root.join("install.toml");
    std::fs::write(&cfg_path, cfg.render()).unwrap();
    std::fs::set_permissions(&cfg_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Layout {
        _dir: dir,
        cfg,
        cfg_path,
    }
}
