//! VMMs a previous daemon started (re-adopted at reconcile): recognised
//! under `/proc` by binary and VM id, held by a pidfd, proven by their
//! QMP/API socket answering; stopped like the daemon's own (QMP or API
//! first), or killed (Firecracker through the helper; QEMU by its pidfd).

use super::qemu::{QemuError, Qmp};
use super::Stopped;
use crate::privops::{PrivError, PrivOps};
use banger_proto::helper::{self as m, method};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A kill that failed.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("killing Firecracker {0} through the helper")]
    Helper(i64, #[source] Box<PrivError>),
    #[error("killing QEMU {0}")]
    Kill(i64, #[source] std::io::Error),
    #[error("killing QEMU {0} through its pidfd")]
    Pidfd(i64, #[source] banger_sys::pidfd::PidfdError),
    #[error("QEMU {0} still runs after SIGKILL")]
    Survived(i64),
}

/// Whether `pid` under `proc_root` is a VMM (QEMU or Firecracker) of VM `id`:
/// its command line names the binary and the VM's id (its disk, socket or
/// `--id`), so a reused pid is never taken for the VM.
pub fn alive(proc_root: &Path, pid: i64, id: &str) -> bool {
    let Ok(raw) = std::fs::read(proc_root.join(pid.to_string()).join("cmdline")) else {
        return false;
    };
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let is_vmm = args.first().is_some_and(|a0| {
        let base = a0.rsplit('/').next().unwrap_or(a0);
        base.starts_with("qemu-system") || base == "firecracker"
    });
    is_vmm && args.iter().any(|a| a.contains(id))
}

/// SIGKILL the VMM `pid`; `jailed`: a Firecracker the helper launched.
pub fn kill(privops: &dyn PrivOps, jailed: bool, pid: i64) -> Result<(), KillError> {
    if jailed {
        return privops
            .call::<method::KillProcess>(&m::KillProcess { pid: pid as i32 })
            .map(drop)
            .map_err(|e| KillError::Helper(pid, Box::new(e)));
    }
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => rustix::process::kill_process(p, rustix::process::Signal::Kill)
            .map_err(|e| KillError::Kill(pid, e.into())),
        None => Ok(()),
    }
}

/// A QEMU a previous daemon started, held by a pidfd opened while its
/// command line still named the VM.
pub struct AdoptedQemu {
    pid: i32,
    pidfd: OwnedFd,
    qmp: PathBuf,
}

/// Why a running QEMU was not re-adopted.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("pid {0} is not VM {1}'s VMM")]
    NotTheVmm(i64, String),
    #[error("holding pid {0}")]
    Pidfd(i64, #[source] banger_sys::pidfd::PidfdError),
    #[error("QEMU (pid {0}) does not answer on its QMP socket")]
    Qmp(i64, #[source] Box<QemuError>),
}

impl AdoptedQemu {
    /// Re-adopt QEMU `pid` of VM `id`: a pidfd first, then its argv must
    /// still name the VM (so the pidfd holds that very process), then its
    /// QMP socket `qmp` must answer a session within 2 s.
    pub async fn adopt(
        proc_root: &Path,
        pid: i64,
        id: &str,
        qmp: PathBuf,
    ) -> Result<AdoptedQemu, AdoptError> {
        let pidfd = banger_sys::pidfd::open(pid as i32).map_err(|e| AdoptError::Pidfd(pid, e))?;
        if !alive(proc_root, pid, id) {
            return Err(AdoptError::NotTheVmm(pid, id.into()));
        }
        match tokio::time::timeout(Duration::from_secs(2), Qmp::connect(&qmp)).await {
            Ok(Ok(_)) => Ok(AdoptedQemu {
                pid: pid as i32,
                pidfd,
                qmp,
            }),
            Ok(Err(e)) => Err(AdoptError::Qmp(pid, Box::new(e))),
            Err(_) => Err(AdoptError::Qmp(
                pid,
                Box::new(QemuError::Closed(qmp.clone())),
            )),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the process has exited (its pidfd polls readable).
    pub fn exited(&self) -> bool {
        !banger_sys::pidfd::is_alive(self.pid, &self.pidfd).unwrap_or(false)
    }

    async fn exited_within(&self, d: Duration) -> bool {
        let t = tokio::time::Instant::now();
        loop {
            if self.exited() {
                return true;
            }
            if t.elapsed() >= d {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// As [`super::qemu::QemuVm::stop`]: Ctrl+Alt+Del and `grace`, QMP
    /// `quit`, then SIGKILL through the pidfd.
    pub async fn stop(&mut self, grace: Duration) -> Result<Stopped, KillError> {
        if self.exited() {
            return Ok(Stopped::AlreadyExited);
        }
        if let Ok(Ok(mut q)) =
            tokio::time::timeout(Duration::from_secs(2), Qmp::connect(&self.qmp)).await
        {
            if q.ctrl_alt_del().await.is_ok() && self.exited_within(grace).await {
                return Ok(Stopped::Graceful);
            }
            if q.execute("quit", None).await.is_ok()
                && self.exited_within(Duration::from_secs(5)).await
            {
                return Ok(Stopped::Quit);
            }
        }
        banger_sys::pidfd::send_signal(self.pid, &self.pidfd, libc::SIGKILL)
            .map_err(|e| KillError::Pidfd(i64::from(self.pid), e))?;
        if self.exited_within(Duration::from_secs(5)).await {
            Ok(Stopped::Killed)
        } else {
            Err(KillError::Survived(i64::from(self.pid)))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake `<root>/<pid>/cmdline` holding `argv`.
    pub(crate) fn proc_with(root: &Path, pid: i64, argv: &[&str]) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut raw = argv.join("\0").into_bytes();
        raw.push(0);
        std::fs::write(dir.join("cmdline"), raw).unwrap();
    }

    #[test]
    fn a_vmm_is_recognised_by_binary_and_vm_id() {
        let tmp = tempfile::tempdir().unwrap();
        proc_with(
            tmp.path(),
            10,
            &[
                "/usr/bin/qemu-system-x86_64",
                "-drive",
                "file=/s/vms/abc/rootfs.ext4",
            ],
        );
        proc_with(
            tmp.path(),
            11,
            &[
                "/usr/bin/qemu-system-x86_64",
                "-drive",
                "file=/s/vms/other/rootfs.ext4",
            ],
        );
        proc_with(tmp.path(), 12, &["/bin/sleep", "abc"]);
        proc_with(tmp.path(), 13, &["firecracker", "--id", "abc"]);
        assert!(alive(tmp.path(), 10, "abc"));
        assert!(!alive(tmp.path(), 11, "abc"), "another VM's QEMU");
        assert!(!alive(tmp.path(), 12, "abc"), "a reused pid");
        assert!(alive(tmp.path(), 13, "abc"));
        assert!(!alive(tmp.path(), 14, "abc"), "gone");
    }
}
