//! The VM lifecycle: create, start, stop, restart and remove, each state
//! transition persisted in the `vms` row before the host is touched.

pub mod reconcile;
pub mod run;

use crate::catalog::{self, CatalogError};
use crate::daemon::Daemon;
use crate::disks::driver::Driver;
use crate::jobs::Progress;
use crate::network::{self, NetPlan, NetworkError};
use crate::privops::PrivError;
use crate::store::StoreError;
use crate::vmdisk::custom::{self, Customisation};
use crate::vmdisk::{self, VmDiskError};
use banger_core::guest::{GuestIdentity, GuestNet};
use banger_core::machine::Backend;
use banger_core::vm::{self, Event, Refused, Transition, VmState};
use banger_sys::runner::HostRunner;
use rusqlite::OptionalExtension;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

pub use run::{restart, start, stop};

/// Why a lifecycle step failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}")]
    BadName(String),
    #[error("no VM {0:?}")]
    NotFound(String),
    #[error("a VM named {0:?} exists already")]
    Exists(String),
    #[error("VM {0} {1}")]
    Refused(String, Refused),
    #[error("VM {0} is busy with another operation; try again when it finishes")]
    Busy(String),
    #[error("VM {0} is {1}; stop it first or use `banger vm rm --force`")]
    IsRunning(String, VmState),
    #[error("VM {0} has no IP address")]
    NoIp(String),
    #[error(transparent)]
    Image(#[from] CatalogError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Disk(#[from] VmDiskError),
    #[error("{0}")]
    Priv(&'static str, #[source] Box<PrivError>),
    #[error("create directory {0}")]
    CreateDir(PathBuf, #[source] std::io::Error),
    #[error("no qemu-system-x86_64 found at {0}")]
    NoQemu(PathBuf),
    #[error("starting QEMU for VM {0}")]
    Qemu(String, #[source] Box<crate::vmm::qemu::QemuError>),
    #[error("starting Firecracker for VM {0}")]
    Firecracker(String, #[source] Box<crate::vmm::fc_process::FcVmError>),
    #[error("the firecracker boot plan")]
    Plan(#[source] crate::vmm::plan::NotUtf8),
    #[error("VM {0}'s VMM exited before the guest was ready (see `banger vm logs {0}`)")]
    ExitedEarly(String),
    #[error("VM {0} did not answer SSH on {1}:22 within {2}s (see `banger vm logs {0}`)")]
    NotReady(String, Ipv4Addr, u64),
    #[error("removing {0}")]
    RemoveDir(PathBuf, #[source] std::io::Error),
    #[error("state database")]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for VmError {
    fn from(e: rusqlite::Error) -> Self {
        VmError::Store(StoreError::Sql(e))
    }
}

/// A VM as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub state: VmState,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub pid: Option<i64>,
    pub backend: Option<String>,
    pub ip: Option<Ipv4Addr>,
}

/// A VMM the daemon launched and still holds.
pub enum Vmm {
    Qemu(crate::vmm::qemu::QemuVm),
    Firecracker(crate::vmm::fc_process::FirecrackerVm),
}

/// Lifecycle state that is not in the database: the running VMMs, the VMs
/// with an operation under way, and how VMMs are launched.
pub struct Registry {
    handles: Mutex<HashMap<String, Vmm>>,
    busy: Mutex<HashSet<String>>,
    /// `qemu-system-x86_64`.
    pub qemu_bin: PathBuf,
    /// argv before the VMM (tests: `ip netns exec NS`); empty in the daemon.
    pub wrapper: Vec<String>,
    /// The backend, when not chosen from the host (tests).
    pub backend: Option<Backend>,
    /// The disk driver, when not chosen from the host (tests).
    pub disk_driver: Option<Driver>,
    /// How long `start` waits for the SSH banner.
    pub ready_timeout: std::time::Duration,
    /// How long `stop` waits for a graceful shutdown.
    pub grace: std::time::Duration,
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
            ready_timeout: std::time::Duration::from_secs(300),
            grace: std::time::Duration::from_secs(60),
        }
    }
}

impl Registry {
    pub(crate) fn put(&self, id: &str, vmm: Vmm) {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), vmm);
    }

    pub(crate) fn take(&self, id: &str) -> Option<Vmm> {
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

    /// Mark `id` busy until the claim drops.
    pub(crate) fn claim<'a>(&'a self, row: &VmRow) -> Result<Claim<'a>, VmError> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(row.id.clone()) {
            return Err(VmError::Busy(row.name.clone()));
        }
        Ok(Claim {
            reg: self,
            id: row.id.clone(),
        })
    }
}

/// One VM's operation under way; released on drop.
pub struct Claim<'a> {
    reg: &'a Registry,
    id: String,
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

/// The VM called `name` (or with id `name`).
pub fn find(d: &Daemon, name: &str) -> Result<VmRow, VmError> {
    let row = d.store.read(|c| {
        c.query_row(
            "SELECT v.id, v.name, v.image_id, v.state, v.vcpus, v.memory_mib, v.pid, v.backend, a.ip
             FROM vms v LEFT JOIN ip_allocations a ON a.vm_id = v.id
             WHERE v.name = ?1 OR v.id = ?1 ORDER BY v.name = ?1 DESC LIMIT 1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            },
        )
        .optional()
    })?;
    let (id, name_, image_id, state, vcpus, mem, pid, backend, ip) =
        row.ok_or_else(|| VmError::NotFound(name.to_string()))?;
    Ok(VmRow {
        id,
        name: name_,
        image_id,
        // An unknown state only comes from a newer daemon: treat it as broken.
        state: state.parse().unwrap_or(VmState::Broken),
        vcpus: vcpus.clamp(1, 255) as u8,
        memory_mib: mem.max(0) as u32,
        pid,
        backend,
        ip: ip.and_then(|s| s.parse().ok()),
    })
}

/// Apply `event` to the recorded state in one transaction (refused
/// transitions change nothing). `pid` is recorded with the new state.
pub fn transition(d: &Daemon, row: &VmRow, event: Event) -> Result<Transition, VmError> {
    d.store.write(|tx| {
        let state: String =
            tx.query_row("SELECT state FROM vms WHERE id=?1", [&row.id], |r| r.get(0))?;
        let from = state.parse().unwrap_or(VmState::Broken);
        let t = vm::next(from, event).map_err(|r| VmError::Refused(row.name.clone(), r))?;
        tx.execute(
            "UPDATE vms SET state=?2 WHERE id=?1",
            rusqlite::params![row.id, t.to.as_str()],
        )?;
        if !t.to.may_have_process() {
            tx.execute("UPDATE vms SET pid=NULL WHERE id=?1", [&row.id])?;
        }
        Ok(t)
    })
}

/// `POST /v1/vms` body, checked.
#[derive(Debug, Clone)]
pub struct CreateReq {
    pub name: String,
    pub image: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub start: bool,
}

/// Undoes a half-made create unless disarmed: disk destroyed, row deleted
/// (which frees the IP).
struct CreateUndo<'a> {
    d: &'a Daemon,
    id: Option<String>,
}

impl Drop for CreateUndo<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            if let Err(e) = vmdisk::destroy(self.d, &id) {
                tracing::error!(vm = %id, error = %crate::render_chain(&e), "undoing create: disk");
            }
            let _ = network::release_ip(&self.d.store, &id);
            let r: Result<usize, StoreError> = self
                .d
                .store
                .write(|tx| Ok(tx.execute("DELETE FROM vms WHERE id=?1", [&id])?));
            if let Err(e) = r {
                tracing::error!(vm = %id, error = %crate::render_chain(&e), "undoing create: row");
            }
        }
    }
}

/// The guest identity of VM `row` on `plan`.
pub fn identity(plan: &NetPlan, row: &VmRow, ip: Ipv4Addr) -> GuestIdentity {
    GuestIdentity {
        hostname: row.name.clone(),
        domain: plan.domain.clone(),
        net: GuestNet {
            ip,
            prefix: plan.subnet.prefix(),
            gateway: plan.gateway(),
            dns: vec![plan.gateway()],
            mac: banger_core::net::mac_for(&row.id),
            iface: "eth0".into(),
        },
    }
}

/// Create a VM: row (`created`), IP, disk, customisation; then start it
/// unless `req.start` is false. Any failure undoes everything.
pub async fn create(d: &Daemon, req: &CreateReq, p: &Progress) -> Result<VmRow, VmError> {
    banger_core::names::validate_vm_name(&req.name).map_err(VmError::BadName)?;
    let plan = NetPlan::from_config(&d.cfg)?;
    let image = catalog::find(&d.store, &req.image)?
        .ok_or_else(|| CatalogError::NotFound(req.image.clone()))?;
    let id = catalog::new_id();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs() as i64);
    let inserted = d.store.write(|tx| {
        let taken: Option<String> = tx
            .query_row("SELECT id FROM vms WHERE name=?1", [&req.name], |r| {
                r.get(0)
            })
            .optional()?;
        if taken.is_some() {
            return Err(VmError::Exists(req.name.clone()));
        }
        tx.execute(
            "INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_driver, created_at)
             VALUES (?1, ?2, ?3, 'created', ?4, ?5, '', ?6)",
            rusqlite::params![id, req.name, image.image.id, req.vcpus, req.memory_mib, now],
        )?;
        Ok(())
    });
    inserted?;
    let mut undo = CreateUndo {
        d,
        id: Some(id.clone()),
    };
    p.log(format!("VM {} ({id}) recorded", req.name));
    // No other operation on the VM until it is made (and started).
    let _claim = d.vms.claim(&find(d, &id)?)?;
    let ip = network::allocate_ip(&d.store, &plan.subnet, &id)?;
    p.log(format!("address {ip}"));
    let driver = match d.vms.disk_driver {
        Some(drv) => drv,
        None => {
            crate::disks::driver::select(std::path::Path::new("/proc"), &d.paths.state_dir).driver
        }
    };
    p.step("disk", 0, Some(1));
    vmdisk::create_with(d, &id, &image, driver)?;
    let row = find(d, &id)?;
    let c = Customisation {
        identity: identity(&plan, &row, ip),
        ssh_public_key: None,
        file_sync: vec![],
    };
    custom::customise(d, &id, &c, &HostRunner)?;
    // A dm snapshot is re-activated by start.
    vmdisk::deactivate(d, &id)?;
    p.step("disk", 1, Some(1));
    if req.start {
        run::start_claimed(d, &find(d, &id)?, p).await?;
    }
    undo.id = None;
    find(d, &id)
}

/// Remove a VM: refused while it runs unless `force`; otherwise its VMM
/// stopped (forced), tap and NAT removed, disk destroyed, IP freed, row gone.
pub async fn remove(d: &Daemon, name: &str, force: bool, p: &Progress) -> Result<VmRow, VmError> {
    let row = find(d, name)?;
    let _claim = d.vms.claim(&row)?;
    if matches!(
        row.state,
        VmState::Starting | VmState::Running | VmState::Stopping
    ) && !force
    {
        return Err(VmError::IsRunning(row.name.clone(), row.state));
    }
    let had_host = row.state.may_have_process() || d.vms.holds(&row.id);
    transition(d, &row, Event::Delete)?;
    if had_host {
        p.log(format!("stopping {}", row.name));
        run::tear_down(d, &row, std::time::Duration::ZERO).await?;
    }
    p.log(format!("removing {}'s disk", row.name));
    vmdisk::destroy(d, &row.id)?;
    let rt = run::runtime_dir(d, &row.id);
    match std::fs::remove_dir_all(&rt) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(VmError::RemoveDir(rt, e)),
    }
    network::release_ip(&d.store, &row.id)?;
    d.store
        .write(|tx| Ok::<_, StoreError>(tx.execute("DELETE FROM vms WHERE id=?1", [&row.id])?))?;
    Ok(row)
}

#[cfg(test)]
mod root_tests;
#[cfg(test)]
mod tests;
