//! A Firecracker VM's process, launched through the helper: the socket
//! hand-over raced against the launch (`EnsureSocketAccessForAsync`), the
//! API configured and started, and a stop that asks first (Ctrl+Alt+Del)
//! and then kills through the helper's pidfd-checked `priv.kill_process`.
//! A process that exits before its API answers fails the launch at once
//! (its pidfd polls readable), not at the deadline.
//! Jailed (the system install): the helper runs the jailer, the API socket
//! is the host side of the chroot's `/api` directory, and the tap is created
//! for the jail uid the launch answered.

use super::firecracker::{wait_for_api, BootPlan, FirecrackerClient, FirecrackerError};
use super::socket_access::{ensure_socket_access_for_async, SocketAccessError, WaitPolicy};
use super::Stopped;
use crate::privops::{PrivError, PrivOps};
use banger_proto::helper::{self as m, method};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A failed step of running a Firecracker VM.
#[derive(Debug, thiserror::Error)]
pub enum FcVmError {
    #[error("launching Firecracker for VM {0}")]
    Launch(String, #[source] PrivError),
    #[error("the helper refused to launch Firecracker for VM {0}: {1} (see docs/privileges.md, priv.launch_firecracker)")]
    Refused(String, String),
    #[error("the jailed launch of VM {0} answered API socket {1:?}, not {2}")]
    UnexpectedSocket(String, Option<String>, PathBuf),
    #[error("creating tap {0} for the jail uid of VM {1}")]
    Tap(String, String, #[source] PrivError),
    #[error("handing Firecracker's sockets to the owner")]
    SocketAccess(#[source] SocketAccessError),
    #[error("configuring and starting VM {0}")]
    Api(String, #[source] FirecrackerError),
    #[error("Firecracker (pid {1}) of VM {0} exited before its VM was configured and started")]
    Exited(String, i32),
    #[error("killing Firecracker (pid {0})")]
    Kill(i32, #[source] PrivError),
    #[error("Firecracker (pid {0}) still runs after SIGKILL")]
    Survived(i32),
    #[error("a blocking helper call ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}

/// Where one VM's Firecracker lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcLaunch {
    pub vm_id: String,
    /// Under RuntimeDir: `<rt>/vms/<id>/fc.sock`, or jailed the host side
    /// of the chroot's socket ([`jailed_api_socket`]).
    pub api_socket: PathBuf,
    /// Firecracker's stdout/stderr (the serial console), under StateDir.
    pub log_file: PathBuf,
    /// Jailed: what the chroot holds, and the tap to create for the jail uid
    /// once the launch names it.
    pub jail: Option<(m::JailSpec, m::CreateTap)>,
}

/// Where a jailed VM's API socket appears on the host.
pub fn jailed_api_socket(runtime_dir: &Path, vm_id: &str) -> PathBuf {
    runtime_dir
        .join("jails")
        .join(vm_id)
        .join("firecracker.socket")
}

/// A jailed VM's chroot directory (`priv.cleanup_jailer_chroot` removes it):
/// `<jailer_base>/<exec name>/<vm_id>`.
pub fn jail_dir(jailer_base: &Path, firecracker_bin: &Path, vm_id: &str) -> PathBuf {
    let exec = firecracker_bin
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| "firecracker".into());
    jailer_base.join(exec).join(vm_id)
}

/// A launched, started Firecracker VM.
pub struct FirecrackerVm {
    privops: Arc<dyn PrivOps>,
    pid: i32,
    client: FirecrackerClient,
    proc_root: PathBuf,
    /// How long the launch's API calls took (boot source, drives, network,
    /// machine config, `InstanceStart`); zero for an adopted VM.
    configure_took: Duration,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FcVmError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(FcVmError::Task)
}

impl FirecrackerVm {
    /// Launch, hand the API socket to the owner as it appears, wait for the
    /// API, then boot `plan`. On any failure after the launch, the process
    /// is killed before the error returns.
    pub async fn launch(
        privops: Arc<dyn PrivOps>,
        l: &FcLaunch,
        plan: &BootPlan,
        policy: WaitPolicy,
    ) -> Result<FirecrackerVm, FcVmError> {
        let (cancel, rx) = tokio::sync::watch::channel(());
        let access = ensure_socket_access_for_async(
            privops.clone(),
            vec![("API socket".into(), l.api_socket.clone())],
            policy,
            rx,
        );
        let jailed = l.jail.is_some();
        let params = m::LaunchFirecrackerParams {
            vm_id: l.vm_id.clone(),
            api_socket: if jailed {
                String::new()
            } else {
                l.api_socket.display().to_string()
            },
            jailed,
            log_file: l.log_file.display().to_string(),
            jail: l.jail.as_ref().map(|(j, _)| j.clone()),
        };
        let p = privops.clone();
        let launched = blocking(move || p.call::<method::LaunchFirecracker>(&params)).await?;
        let r = match launched {
            Ok(r) => r,
            Err(e) => {
                drop(cancel);
                let _ = access.await;
                return Err(match e {
                    PrivError::Refused {
                        code: -32602,
                        message,
                        ..
                    } => FcVmError::Refused(l.vm_id.clone(), message),
                    e => FcVmError::Launch(l.vm_id.clone(), e),
                });
            }
        };
        let (pid, proc_root) = (r.pid, PathBuf::from("/proc"));
        let mut vm = FirecrackerVm {
            privops,
            pid: r.pid,
            client: FirecrackerClient::new(&l.api_socket),
            proc_root: proc_root.clone(),
            configure_took: Duration::ZERO,
        };
        let ready = async {
            if let Some((_, tap)) = &l.jail {
                if r.api_socket.as_deref().map(Path::new) != Some(l.api_socket.as_path()) {
                    return Err(FcVmError::UnexpectedSocket(
                        l.vm_id.clone(),
                        r.api_socket.clone(),
                        l.api_socket.clone(),
                    ));
                }
                let tap = m::CreateTap {
                    jail_uid: r.jail_uid,
                    ..tap.clone()
                };
                let p = vm.privops.clone();
                let name = tap.name.clone();
                blocking(move || p.call::<method::CreateTap>(&tap))
                    .await?
                    .map_err(|e| FcVmError::Tap(name, l.vm_id.clone(), e))?;
            }
            access
                .await
                .map_err(FcVmError::Task)?
                .map_err(FcVmError::SocketAccess)?;
            wait_for_api(&l.api_socket, policy.deadline)
                .await
                .map_err(|e| FcVmError::Api(l.vm_id.clone(), e))?;
            let t = std::time::Instant::now();
            let r = vm
                .client
                .configure_and_start(plan)
                .await
                .map_err(|e| FcVmError::Api(l.vm_id.clone(), e));
            vm.configure_took = t.elapsed();
            r
        };
        let ready = tokio::select! {
            biased;
            r = ready => r,
            () = exited(&proc_root, pid, policy.tick) => Err(FcVmError::Exited(l.vm_id.clone(), pid)),
        };
        if let Err(e) = ready {
            let _ = vm.kill().await;
            return Err(e);
        }
        Ok(vm)
    }

    /// Re-adopt Firecracker `pid` of VM `vm_id` (a previous daemon's):
    /// alive, and its API socket answers `GET /` with the VM's id as its
    /// instance id (jailed or not, `--id` is the VM id) within 2 s.
    pub async fn adopt(
        privops: Arc<dyn PrivOps>,
        proc_root: &Path,
        pid: i32,
        vm_id: &str,
        api_socket: &Path,
    ) -> Option<FirecrackerVm> {
        let vm = FirecrackerVm {
            privops,
            pid,
            client: FirecrackerClient::new(api_socket),
            proc_root: proc_root.into(),
            configure_took: Duration::ZERO,
        };
        if !vm.alive() {
            return None;
        }
        match tokio::time::timeout(Duration::from_secs(2), vm.client.describe_instance()).await {
            Ok(Ok(info)) if info.id == vm_id => Some(vm),
            _ => None,
        }
    }

    /// How long the launch's API calls took (zero when adopted).
    pub fn configure_took(&self) -> Duration {
        self.configure_took
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the process still runs.
    pub fn is_alive(&self) -> bool {
        self.alive()
    }

    pub fn client(&self) -> &FirecrackerClient {
        &self.client
    }

    fn alive(&self) -> bool {
        alive(&self.proc_root, self.pid)
    }

    async fn exited_within(&self, d: Duration) -> bool {
        let t = tokio::time::Instant::now();
        loop {
            if !self.alive() {
                return true;
            }
            if t.elapsed() >= d {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn kill(&mut self) -> Result<(), FcVmError> {
        let (p, pid) = (self.privops.clone(), self.pid);
        let killed =
            blocking(move || p.call::<method::KillProcess>(&m::KillProcess { pid })).await?;
        match killed {
            Ok(_) => {}
            // Gone in between: the helper refuses a pid that is no longer Firecracker.
            Err(_) if !self.alive() => return Ok(()),
            Err(e) => return Err(FcVmError::Kill(pid, e)),
        }
        if self.exited_within(Duration::from_secs(5)).await {
            Ok(())
        } else {
            Err(FcVmError::Survived(pid))
        }
    }

    /// Stop the VM: Ctrl+Alt+Del and up to `grace` for the guest to go down
    /// (a wedged API counts against the same grace), then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Result<Stopped, FcVmError> {
        if !self.alive() {
            return Ok(Stopped::AlreadyExited);
        }
        let t = tokio::time::Instant::now();
        let asked = tokio::time::timeout(grace, self.client.send_ctrl_alt_del()).await;
        if matches!(asked, Ok(Ok(())))
            && self.exited_within(grace.saturating_sub(t.elapsed())).await
        {
            return Ok(Stopped::Graceful);
        }
        self.kill().await?;
        Ok(Stopped::Killed)
    }
}

/// Resolves once process `pid` has exited (at once if it already has): its
/// pidfd polls readable; without one (no pidfd, no reactor) `proc_root` is
/// looked at every `tick`.
async fn exited(proc_root: &Path, pid: i32, tick: Duration) {
    let fd = banger_sys::pidfd::open(pid).ok().and_then(|fd| {
        // SAFETY: `fd` is an open pidfd the AsyncFd owns from here on;
        // nothing else closes or replaces it.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
    });
    if let Some(fd) = fd {
        if fd.readable().await.is_ok() {
            return;
        }
    }
    while alive(proc_root, pid) {
        tokio::time::sleep(tick).await;
    }
}

/// `<proc_root>/<pid>` exists (the helper reaps its children, so an exited
/// Firecracker does not linger as a zombie); on the real `/proc`, a jailed
/// VMM hidden from the daemon (`ProtectProc=invisible`, another uid) still
/// counts: `kill(pid, 0)` answers `EPERM`, not `ESRCH`.
fn alive(proc_root: &Path, pid: i32) -> bool {
    if proc_root.join(pid.to_string()).exists() {
        return true;
    }
    proc_root == Path::new("/proc")
        && rustix::process::Pid::from_raw(pid).is_some_and(|p| {
            !matches!(
                rustix::process::test_kill_process(p),
                Err(rustix::io::Errno::SRCH)
            )
        })
}

#[cfg(test)]
#[path = "fc_process_tests.rs"]
mod tests;
