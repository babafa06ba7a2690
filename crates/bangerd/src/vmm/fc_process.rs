//! A Firecracker VM's process, launched through the helper: the socket
//! hand-over raced against the launch (`EnsureSocketAccessForAsync`), the
//! API configured and started, and a stop that asks first (Ctrl+Alt+Del)
//! and then kills through the helper's pidfd-checked `priv.kill_process`.
//! Not jailed yet: the jailed API socket lives in the chroot.

use super::firecracker::{wait_for_api, BootPlan, FirecrackerClient, FirecrackerError};
use super::socket_access::{ensure_socket_access_for_async, SocketAccessError, WaitPolicy};
use super::Stopped;
use crate::privops::{PrivError, PrivOps};
use banger_proto::helper::{self as m, method};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A failed step of running a Firecracker VM.
#[derive(Debug, thiserror::Error)]
pub enum FcVmError {
    #[error("launching Firecracker for VM {0}")]
    Launch(String, #[source] PrivError),
    #[error("handing Firecracker's sockets to the owner")]
    SocketAccess(#[source] SocketAccessError),
    #[error("configuring and starting VM {0}")]
    Api(String, #[source] FirecrackerError),
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
    /// Under RuntimeDir.
    pub api_socket: PathBuf,
    /// Firecracker's stdout/stderr (the serial console), under StateDir.
    pub log_file: PathBuf,
}

/// A launched, started Firecracker VM.
pub struct FirecrackerVm {
    privops: Arc<dyn PrivOps>,
    pid: i32,
    client: FirecrackerClient,
    proc_root: PathBuf,
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
        let params: m::LaunchFirecrackerParams = m::LaunchFirecracker {
            vm_id: l.vm_id.clone(),
            api_socket: l.api_socket.display().to_string(),
            jailed: false,
            log_file: l.log_file.display().to_string(),
        }
        .into();
        let p = privops.clone();
        let launched = blocking(move || p.call::<method::LaunchFirecracker>(&params)).await?;
        let pid = match launched {
            Ok(r) => r.pid,
            Err(e) => {
                drop(cancel);
                let _ = access.await;
                return Err(FcVmError::Launch(l.vm_id.clone(), e));
            }
        };
        let mut vm = FirecrackerVm {
            privops,
            pid,
            client: FirecrackerClient::new(&l.api_socket),
            proc_root: "/proc".into(),
        };
        let ready = async {
            access
                .await
                .map_err(FcVmError::Task)?
                .map_err(FcVmError::SocketAccess)?;
            wait_for_api(&l.api_socket, policy.deadline)
                .await
                .map_err(|e| FcVmError::Api(l.vm_id.clone(), e))?;
            vm.client
                .configure_and_start(plan)
                .await
                .map_err(|e| FcVmError::Api(l.vm_id.clone(), e))
        }
        .await;
        if let Err(e) = ready {
            let _ = vm.kill().await;
            return Err(e);
        }
        Ok(vm)
    }

    pub fn pid(&self) -> i32 {
        self.pid
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

/// `<proc_root>/<pid>` exists (the helper reaps its children, so an exited
/// Firecracker does not linger as a zombie).
fn alive(proc_root: &Path, pid: i32) -> bool {
    proc_root.join(pid.to_string()).exists()
}

#[cfg(test)]
#[path = "fc_process_tests.rs"]
mod tests;
