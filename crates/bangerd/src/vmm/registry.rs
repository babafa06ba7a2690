//! The VMMs the daemon holds and the VMs with an operation under way (not
//! in the database), plus how VMMs are launched (overridable in tests).

use super::fc_process::FirecrackerVm;
use super::qemu::QemuVm;
use super::Stopped;
use banger_core::disk::Driver;
use banger_core::machine::Backend;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A VMM the daemon launched and still holds.
pub enum Vmm {
    Qemu(QemuVm),
    Firecracker(FirecrackerVm),
    /// A QEMU a previous daemon started (a re-adopted Firecracker is a
    /// [`FirecrackerVm`] like any other).
    AdoptedQemu(super::adopted::AdoptedQemu),
}

impl Vmm {
    pub fn pid(&self) -> i64 {
        match self {
            Vmm::Qemu(q) => q.pid() as i64,
            Vmm::Firecracker(f) => f.pid() as i64,
            Vmm::AdoptedQemu(q) => i64::from(q.pid()),
        }
    }

    fn exited(&mut self) -> bool {
        match self {
            Vmm::Qemu(q) => !matches!(q.try_exited(), Ok(None)),
            Vmm::Firecracker(f) => !f.is_alive(),
            Vmm::AdoptedQemu(q) => q.exited(),
        }
    }

    /// Ctrl+Alt+Del, `grace`, then forced; the error rendered.
    pub async fn stop(&mut self, grace: Duration) -> Result<Stopped, String> {
        match self {
            Vmm::Qemu(q) => q.stop(grace).await.map_err(|e| crate::render_chain(&e)),
            Vmm::Firecracker(f) => f.stop(grace).await.map_err(|e| crate::render_chain(&e)),
            Vmm::AdoptedQemu(q) => q.stop(grace).await.map_err(|e| crate::render_chain(&e)),
        }
    }
}

/// Another operation holds the VM (its name).
#[derive(Debug, thiserror::Error)]
#[error("VM {0} is busy with another operation; try again when it finishes")]
pub struct Busy(pub String);

/// Lifecycle state that is not in the database: the running VMMs, the VMs
/// with an operation under way, and how VMMs are launched.
pub struct Registry {
    handles: Mutex<HashMap<String, Vmm>>,
    /// The VMs with an operation under way, each with its cancel flag.
    busy: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// `qemu-system-x86_64`.
    pub qemu_bin: PathBuf,
    /// argv before the VMM (tests: `ip netns exec NS`); empty in the daemon.
    pub wrapper: Vec<String>,
    /// The backend, when not chosen from the host (tests).
    pub backend: Option<Backend>,
    /// The disk driver, when not chosen from the host (tests).
    pub disk_driver: Option<Driver>,
    /// Whether Firecracker runs under the jailer, when not taken from the
    /// mode (system install: jailed; `--dev`: not) (tests).
    pub jailed: Option<bool>,
    /// Where readiness looks for the SSH banner, instead of `<guest ip>:22`
    /// (tests without a guest network).
    pub ready_addr: Option<std::net::SocketAddr>,
    /// How long `start` waits for the SSH banner.
    pub ready_timeout: Duration,
    /// How long `stop` waits for a graceful shutdown.
    pub grace: Duration,
    /// How long a forced rm waits for the operation it cancelled to give up
    /// (a disk copy or a graceful stop under way finishes first).
    pub cancel_wait: Duration,
}

impl Default for Registry {
    fn default() -> Self {
        let qemu_bin = ["/usr/bin", "/usr/local/bin"]
            .iter()
            .map(|d| PathBuf::from(d).join("qemu-system-x86_64"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("/usr/bin/qemu-system-x86_64"));
        Registry {
            handles: Mutex::default(),
            busy: Mutex::default(),
            qemu_bin,
            wrapper: Vec::new(),
            backend: None,
            disk_driver: None,
            jailed: None,
            ready_addr: None,
            ready_timeout: Duration::from_secs(300),
            grace: Duration::from_secs(60),
            cancel_wait: Duration::from_secs(300),
        }
    }
}

impl Registry {
    /// Hold `vmm` as VM `id`'s.
    pub fn put(&self, id: &str, vmm: Vmm) {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), vmm);
    }

    /// Give up VM `id`'s VMM (to stop it).
    pub fn take(&self, id: &str) -> Option<Vmm> {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// Whether the daemon holds a VMM for `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Whether VM `id`'s VMM is gone (never held, or exited).
    pub fn exited(&self, id: &str) -> bool {
        let mut h = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        h.get_mut(id).is_none_or(|v| v.exited())
    }

    /// Mark VM `id` (called `name`) busy until the claim drops.
    pub fn claim<'a>(&'a self, id: &str, name: &str) -> Result<Claim<'a>, Busy> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if busy.contains_key(id) {
            return Err(Busy(name.to_string()));
        }
        busy.insert(id.to_string(), Arc::new(AtomicBool::new(false)));
        Ok(Claim {
            reg: self,
            id: id.to_string(),
        })
    }

    /// Ask the operation under way on VM `id` to give up at its next
    /// cancellation point; whether one was under way.
    pub fn cancel(&self, id: &str) -> bool {
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.get(id)
            .map(|f| f.store(true, Ordering::SeqCst))
            .is_some()
    }

    /// Whether the operation under way on VM `id` was asked to give up.
    pub fn cancelled(&self, id: &str) -> bool {
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.get(id).is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Whether an operation on VM `id` is under way.
    pub fn busy(&self, id: &str) -> bool {
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.contains_key(id)
    }
}

/// One VM's operation under way; released on drop.
pub struct Claim<'a> {
    reg: &'a Registry,
    id: String,
}

impl Claim<'_> {
    /// Whether this operation was asked to give up ([`Registry::cancel`]).
    pub fn cancelled(&self) -> bool {
        self.reg.cancelled(&self.id)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.reg
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}
