//! The QEMU `microvm` backend's process: spawn it with the argv rendered
//! from the machine spec, talk QMP on its control socket, and stop it the
//! way Firecracker is stopped — Ctrl+Alt+Del first (the guest reboots, and
//! `-no-reboot` turns that into an exit), then `quit`, then SIGKILL.

use super::socket_access::{wait_for_path, SocketAccessError, WaitPolicy};
use super::Stopped;
use banger_core::machine::{qemu_argv, Backend, MachineSpec, QemuIo};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

/// A failed step of running a QEMU guest.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("the QEMU backend needs a QMP socket in its I/O settings")]
    NoQmpSocket,
    #[error("starting {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    #[error("connecting to QMP at {0}")]
    Connect(PathBuf, #[source] std::io::Error),
    #[error("talking QMP at {0}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("QMP at {0} closed the connection")]
    Closed(PathBuf),
    #[error("QMP at {path} answered {command} with an error: {message}")]
    Command {
        path: PathBuf,
        command: String,
        message: String,
    },
    #[error("QMP at {0} sent a line that is not JSON")]
    Decode(PathBuf, #[source] serde_json::Error),
    #[error("waiting for QEMU (pid {0}) to exit")]
    Wait(u32, #[source] std::io::Error),
    #[error("waiting for QEMU's control socket")]
    QmpSocket(#[source] Box<SocketAccessError>),
}

/// QEMU's seccomp sandbox: no obsolete system calls, no privilege
/// changes, no fork/exec, no scheduler or resource changes.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Whether `qemu` was built with the seccomp sandbox (`-sandbox` in its
/// `-help`).
pub fn supports_sandbox(qemu: &Path) -> bool {
    std::process::Command::new(qemu)
        .arg("-help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\n-sandbox "))
}

/// In the forked child before exec: a new session (not in the daemon's
/// process group or session, so nothing aimed at those reaches QEMU),
/// `NoNewPrivs`, no ambient capabilities, and — when the daemon runs as
/// root (development mode) and `drop_root_caps` — `SECBIT_NOROOT`, so the
/// exec grants root no capabilities either.
fn unprivileged_session(drop_root_caps: bool) -> std::io::Result<()> {
    use rustix::thread::{self as t, CapabilitiesSecureBits as B};
    rustix::process::setsid()?;
    t::set_no_new_privs(true)?;
    t::clear_ambient_capability_set()?;
    if drop_root_caps && rustix::process::geteuid().is_root() {
        t::set_capabilities_secure_bits(
            B::NO_ROOT | B::NO_ROOT_LOCKED | B::NO_SETUID_FIXUP | B::NO_SETUID_FIXUP_LOCKED,
        )?;
    }
    Ok(())
}

/// One QMP session: greeting read, capabilities negotiated.
pub struct Qmp {
    path: PathBuf,
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Qmp {
    pub async fn connect(path: &Path) -> Result<Qmp, QemuError> {
        let s = UnixStream::connect(path)
            .await
            .map_err(|e| QemuError::Connect(path.into(), e))?;
        let (r, w) = s.into_split();
        let mut q = Qmp {
            path: path.into(),
            lines: BufReader::new(r).lines(),
            write: w,
        };
        // The greeting: {"QMP": {...}}.
        q.next_message().await?;
        q.execute("qmp_capabilities", None).await?;
        Ok(q)
    }

    async fn next_message(&mut self) -> Result<Value, QemuError> {
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|e| QemuError::Io(self.path.clone(), e))?
            .ok_or_else(|| QemuError::Closed(self.path.clone()))?;
        serde_json::from_str(&line).map_err(|e| QemuError::Decode(self.path.clone(), e))
    }

    /// Run `command`; events that arrive before its answer are skipped.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QemuError> {
        let mut req = json!({ "execute": command });
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        let mut line = req.to_string();
        line.push('\n');
        self.write
            .write_all(line.as_bytes())
            .await
            .map_err(|e| QemuError::Io(self.path.clone(), e))?;
        loop {
            let msg = self.next_message().await?;
            if let Some(r) = msg.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = msg.get("error") {
                return Err(QemuError::Command {
                    path: self.path.clone(),
                    command: command.into(),
                    message: e["desc"].as_str().unwrap_or("unknown error").into(),
                });
            }
            // {"event": ...}: not ours.
        }
    }

    /// Press Ctrl+Alt+Del on the guest's i8042 keyboard.
    pub async fn ctrl_alt_del(&mut self) -> Result<(), QemuError> {
        let keys: Vec<Value> = ["ctrl", "alt", "delete"]
            .iter()
            .map(|k| json!({"type": "qcode", "data": k}))
            .collect();
        self.execute("send-key", Some(json!({ "keys": keys })))
            .await
            .map(drop)
    }
}

/// Run the guest of a QEMU started paused (`-S`): QMP `cont` on `qmp`,
/// once the socket appears and accepts (within `deadline`).
pub async fn resume(qmp: &Path, deadline: Duration) -> Result<(), QemuError> {
    let t = std::time::Instant::now();
    let policy = WaitPolicy {
        deadline,
        tick: Duration::from_millis(10),
    };
    wait_for_path(qmp, "QMP socket", policy, std::future::pending())
        .await
        .map_err(|e| QemuError::QmpSocket(Box::new(e)))?;
    let mut q = loop {
        match Qmp::connect(qmp).await {
            // QEMU binds the socket before it listens: refused in between.
            Err(QemuError::Connect(_, e))
                if e.kind() == std::io::ErrorKind::ConnectionRefused && t.elapsed() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            r => break r?,
        }
    };
    q.execute("cont", None).await.map(drop)
}

/// A running QEMU guest.
pub struct QemuVm {
    child: Child,
    pid: u32,
    qmp: PathBuf,
}

impl QemuVm {
    /// Start `qemu` (the `qemu-system-x86_64` binary) for `spec`, paused
    /// (`-S`: [`resume`] runs the guest once it is placed in its
    /// cgroup). `wrapper` comes before it on the command line (tests run
    /// it in a network namespace with `ip netns exec NS`); empty in the
    /// daemon. QEMU runs in a session of its own (it outlives the daemon,
    /// which re-adopts it: `vmm::adopted`), with no capabilities and
    /// `NoNewPrivs`, under QEMU's own seccomp sandbox where it has one.
    pub fn spawn(
        qemu: &Path,
        wrapper: &[String],
        spec: &MachineSpec,
        backend: Backend,
        io: &QemuIo,
    ) -> Result<QemuVm, QemuError> {
        let qmp = io.qmp_socket.clone().ok_or(QemuError::NoQmpSocket)?;
        let mut argv: Vec<String> = wrapper.to_vec();
        argv.push(qemu.display().to_string());
        argv.extend(qemu_argv(spec, backend, io));
        argv.push("-S".into());
        if supports_sandbox(qemu) {
            argv.extend(["-sandbox".into(), SANDBOX.into()]);
        }
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // QEMU's own errors (a tap it cannot open, a bad drive) go to the
            // daemon's log; a pipe nobody reads would stall it once full.
            .stderr(Stdio::inherit());
        // A wrapper (tests: `ip netns exec`) needs root's capabilities to
        // enter the namespace, so only an unwrapped QEMU drops them here.
        let drop_root_caps = wrapper.is_empty();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes system calls (setsid, prctl) through rustix, which are
        // async-signal-safe; it allocates nothing and touches no lock.
        unsafe {
            cmd.pre_exec(move || unprivileged_session(drop_root_caps));
        }
        let child = cmd.spawn().map_err(|e| QemuError::Spawn(qemu.into(), e))?;
        let pid = child.id().unwrap_or(0);
        Ok(QemuVm { child, pid, qmp })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, if QEMU has exited.
    pub fn try_exited(&mut self) -> Result<Option<std::process::ExitStatus>, QemuError> {
        self.child
            .try_wait()
            .map_err(|e| QemuError::Wait(self.pid, e))
    }

    /// A QMP session, once QEMU has made its socket (within `deadline`).
    pub async fn qmp(&self, deadline: Duration) -> Result<Qmp, QemuError> {
        let policy = WaitPolicy {
            deadline,
            tick: Duration::from_millis(10),
        };
        wait_for_path(&self.qmp, "QMP socket", policy, std::future::pending())
            .await
            .map_err(|e| QemuError::QmpSocket(Box::new(e)))?;
        Qmp::connect(&self.qmp).await
    }

    async fn exited_within(&mut self, d: Duration) -> Result<bool, QemuError> {
        match tokio::time::timeout(d, self.child.wait()).await {
            Ok(r) => r.map(|_| true).map_err(|e| QemuError::Wait(self.pid, e)),
            Err(_) => Ok(false),
        }
    }

    /// Stop the guest: Ctrl+Alt+Del and up to `grace` for it to go down,
    /// then QMP `quit`, then SIGKILL. Always reaps the process.
    pub async fn stop(&mut self, grace: Duration) -> Result<Stopped, QemuError> {
        if self.try_exited()?.is_some() {
            return Ok(Stopped::AlreadyExited);
        }
        if let Ok(mut q) = self.qmp(Duration::from_secs(2)).await {
            if q.ctrl_alt_del().await.is_ok() && self.exited_within(grace).await? {
                return Ok(Stopped::Graceful);
            }
            if q.execute("quit", None).await.is_ok()
                && self.exited_within(Duration::from_secs(5)).await?
            {
                return Ok(Stopped::Quit);
            }
        }
        let _ = self.child.start_kill();
        self.child
            .wait()
            .await
            .map_err(|e| QemuError::Wait(self.pid, e))?;
        Ok(Stopped::Killed)
    }
}

#[cfg(test)]
#[path = "qemu_tests.rs"]
mod tests;
