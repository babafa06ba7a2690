//! Each VM's root disk: created from its image (a dm snapshot through the
//! helper, or the copy fallback), recorded in `vms.disk_driver` /
//! `vms.disk_handles`, customised before first boot, and destroyed exactly.

pub mod custom;
pub mod reconcile;

use crate::catalog::Stored;
use crate::daemon::Daemon;
use crate::disks::clone::{self, CloneError};
use crate::disks::driver::{self, Driver};
use crate::privops::{PrivError, PrivOps};
use crate::store::StoreError;
use banger_proto::helper as m;
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The COW file of a dm-snapshot VM, inside its directory.
pub const COW_FILE: &str = "cow.img";
/// The disk of a copy-driver VM, inside its directory.
pub const COPY_FILE: &str = "rootfs.ext4";
/// Prefix of every banger dm snapshot name.
pub const DM_PREFIX: &str = "fc-rootfs-";

/// Why a VM-disk step failed.
#[derive(Debug, thiserror::Error)]
pub enum VmDiskError {
    #[error("invalid VM id {0:?}: 1-32 of a-z, 0-9, '-'")]
    BadVmId(String),
    #[error("no VM with id {0:?}")]
    NoVm(String),
    #[error("VM {0} already has a disk")]
    HasDisk(String),
    #[error("VM {0} has no disk")]
    NoDisk(String),
    #[error("VM {0}'s dm snapshot is not active")]
    NotActive(String),
    #[error("VM {0} uses the copy driver: fsck runs only on dm snapshots")]
    FsckNeedsDm(String),
    #[error("unknown disk driver {1:?} recorded for VM {0}")]
    UnknownDriver(String, String),
    #[error("stat {0}")]
    Stat(PathBuf, #[source] std::io::Error),
    #[error("create VM directory {0}")]
    CreateDir(PathBuf, #[source] std::io::Error),
    #[error("remove VM directory {0}")]
    RemoveDir(PathBuf, #[source] std::io::Error),
    #[error("clone the image into the VM disk")]
    Clone(#[source] CloneError),
    #[error("{0}")]
    Priv(&'static str, #[source] Box<PrivError>),
    #[error("disk handles of VM {0} do not parse")]
    Handles(String, #[source] serde_json::Error),
    #[error(transparent)]
    Custom(#[from] custom::CustomError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for VmDiskError {
    fn from(e: rusqlite::Error) -> Self {
        VmDiskError::Store(StoreError::Sql(e))
    }
}

/// What `vms.disk_handles` holds (JSON). Every field defaults, so the
/// column's `{}` means "no disk yet".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskHandles {
    /// The active dm snapshot (dm driver), exactly as the helper made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dm: Option<m::DmHandles>,
    /// The COW file (dm driver) or the disk copy (copy driver).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
    /// The image rootfs the snapshot reads (dm driver).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base: String,
    /// Names pinned for this VM in `<state>/known_hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_hosts: Vec<String>,
}

/// A VM's disk as the VMM should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    pub driver: Driver,
    /// What the VMM opens: `/dev/mapper/fc-rootfs-<id>` or the copy.
    pub device: PathBuf,
    pub handles: DiskHandles,
}

/// The `disk_driver` column value.
pub fn driver_name(d: Driver) -> &'static str {
    match d {
        Driver::DmSnapshot => "dm_snapshot",
        Driver::Copy => "copy",
    }
}

fn parse_driver(vm_id: &str, s: &str) -> Result<Driver, VmDiskError> {
    match s {
        "dm_snapshot" => Ok(Driver::DmSnapshot),
        "copy" => Ok(Driver::Copy),
        other => Err(VmDiskError::UnknownDriver(vm_id.into(), other.into())),
    }
}

/// A VM id as used in `fc-rootfs-<id>` and `<state>/vms/<id>`.
pub fn check_vm_id(id: &str) -> Result<(), VmDiskError> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(VmDiskError::BadVmId(id.into()))
    }
}

/// `<state>/vms`.
pub fn vms_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("vms")
}

/// `<state>/vms/<id>`.
pub fn vm_dir(state_dir: &Path, vm_id: &str) -> PathBuf {
    vms_dir(state_dir).join(vm_id)
}

/// Size of a new COW file: enough for the whole base rewritten plus the
/// snapshot's exception metadata (sparse: costs nothing until written).
pub fn cow_size_for(base_len: u64) -> u64 {
    let s = base_len + base_len / 8 + (16 << 20);
    s.div_ceil(512) * 512
}

fn call<P: Serialize, R: serde::de::DeserializeOwned>(
    d: &Daemon,
    method: &'static str,
    p: &P,
) -> Result<R, VmDiskError> {
    <dyn PrivOps>::call(d.privops.as_ref(), method, p)
        .map_err(|e| VmDiskError::Priv(method, Box::new(e)))
}

/// The row's `(disk_driver, handles)`.
pub fn load(d: &Daemon, vm_id: &str) -> Result<(String, DiskHandles), VmDiskError> {
    let row: Option<(String, String)> = d.store.read(|c| {
        c.query_row(
            "SELECT disk_driver, disk_handles FROM vms WHERE id=?1",
            [vm_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
    })?;
    let (drv, json) = row.ok_or_else(|| VmDiskError::NoVm(vm_id.into()))?;
    let h = serde_json::from_str(&json).map_err(|e| VmDiskError::Handles(vm_id.into(), e))?;
    Ok((drv, h))
}

/// Record `driver` and `handles` on the row.
pub fn save(d: &Daemon, vm_id: &str, drv: &str, h: &DiskHandles) -> Result<(), VmDiskError> {
    let json = serde_json::to_string(h).expect("handles serialise");
    let n = d.store.write(|tx| {
        tx.execute(
            "UPDATE vms SET disk_driver=?2, disk_handles=?3 WHERE id=?1",
            rusqlite::params![vm_id, drv, json],
        )
    })?;
    if n == 0 {
        return Err(VmDiskError::NoVm(vm_id.into()));
    }
    Ok(())
}

/// Create the VM's disk with the driver this host supports
/// ([`driver::select`] on `/proc`).
pub fn create(d: &Daemon, vm_id: &str, image: &Stored) -> Result<DiskInfo, VmDiskError> {
    let choice = driver::select(Path::new("/proc"), &d.paths.state_dir);
    create_with(d, vm_id, image, choice.driver)
}

/// Removes a half-made VM directory unless disarmed.
struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Create the VM's disk with `drv`; the row `vm_id` must exist and have no
/// disk yet. The base image is never written by either driver.
pub fn create_with(
    d: &Daemon,
    vm_id: &str,
    image: &Stored,
    drv: Driver,
) -> Result<DiskInfo, VmDiskError> {
    check_vm_id(vm_id)?;
    let (_, old) = load(d, vm_id)?;
    if !old.file.is_empty() {
        return Err(VmDiskError::HasDisk(vm_id.into()));
    }
    let vms = vms_dir(&d.paths.state_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&vms)
        .map_err(|e| VmDiskError::CreateDir(vms.clone(), e))?;
    let dir = vm_dir(&d.paths.state_dir, vm_id);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| VmDiskError::CreateDir(dir.clone(), e))?;
    let mut guard = DirGuard(Some(dir.clone()));
    let base = image.rootfs();
    let (handles, device) = match drv {
        Driver::DmSnapshot => {
            let len = std::fs::metadata(&base)
                .map_err(|e| VmDiskError::Stat(base.clone(), e))?
                .len();
            let cow = dir.join(COW_FILE);
            let r: m::CreateDmSnapshotResult = call(
                d,
                m::CREATE_DM_SNAPSHOT,
                &m::CreateDmSnapshot {
                    name: format!("{DM_PREFIX}{vm_id}"),
                    base_image: base.display().to_string(),
                    cow_file: cow.display().to_string(),
                    cow_size_bytes: cow_size_for(len),
                },
            )?;
            let device = PathBuf::from(&r.handles.dm_device);
            (
                DiskHandles {
                    dm: Some(r.handles),
                    file: cow.display().to_string(),
                    base: base.display().to_string(),
                    known_hosts: vec![],
                },
                device,
            )
        }
        Driver::Copy => {
            let file = dir.join(COPY_FILE);
            let how =
                clone::clone_file(&base, &file, &mut |_, _| {}).map_err(VmDiskError::Clone)?;
            tracing::info!(vm = vm_id, method = ?how, "VM disk cloned");
            (
                DiskHandles {
                    dm: None,
                    file: file.display().to_string(),
                    base: base.display().to_string(),
                    known_hosts: vec![],
                },
                file,
            )
        }
    };
    if let Err(e) = save(d, vm_id, driver_name(drv), &handles) {
        if let Some(dm) = &handles.dm {
            let _: Result<m::Empty, _> = call(
                d,
                m::CLEANUP_DM_SNAPSHOT,
                &m::CleanupDmSnapshot {
                    handles: dm.clone(),
                },
            );
        }
        return Err(e);
    }
    guard.0 = None;
    Ok(DiskInfo {
        driver: drv,
        device,
        handles,
    })
}

/// The VM's disk as recorded, re-creating the dm snapshot over its kept COW
/// file when it is not active (after a stop or a host reboot).
pub fn activate(d: &Daemon, vm_id: &str) -> Result<DiskInfo, VmDiskError> {
    check_vm_id(vm_id)?;
    let (drv_s, mut h) = load(d, vm_id)?;
    if h.file.is_empty() {
        return Err(VmDiskError::NoDisk(vm_id.into()));
    }
    let drv = parse_driver(vm_id, &drv_s)?;
    if drv == Driver::Copy {
        let device = PathBuf::from(&h.file);
        return Ok(DiskInfo {
            driver: drv,
            device,
            handles: h,
        });
    }
    if h.dm.is_none() {
        let len = std::fs::metadata(&h.base)
            .map_err(|e| VmDiskError::Stat(h.base.clone().into(), e))?
            .len();
        let r: m::CreateDmSnapshotResult = call(
            d,
            m::CREATE_DM_SNAPSHOT,
            &m::CreateDmSnapshot {
                name: format!("{DM_PREFIX}{vm_id}"),
                base_image: h.base.clone(),
                cow_file: h.file.clone(),
                cow_size_bytes: cow_size_for(len),
            },
        )?;
        h.dm = Some(r.handles);
        save(d, vm_id, &drv_s, &h)?;
    }
    let device = PathBuf::from(&h.dm.as_ref().expect("set above").dm_device);
    Ok(DiskInfo {
        driver: drv,
        device,
        handles: h,
    })
}

/// Tear down the VM's dm snapshot (keeping its COW file) after it stopped.
/// A copy-driver disk has nothing to tear down.
pub fn deactivate(d: &Daemon, vm_id: &str) -> Result<(), VmDiskError> {
    check_vm_id(vm_id)?;
    let (drv, mut h) = load(d, vm_id)?;
    if let Some(dm) = h.dm.take() {
        call::<_, m::Empty>(
            d,
            m::CLEANUP_DM_SNAPSHOT,
            &m::CleanupDmSnapshot { handles: dm },
        )?;
        save(d, vm_id, &drv, &h)?;
    }
    Ok(())
}

/// `priv.fsck_snapshot` on the VM's active dm snapshot; e2fsck's exit code.
pub fn fsck(d: &Daemon, vm_id: &str) -> Result<i32, VmDiskError> {
    check_vm_id(vm_id)?;
    let (drv, h) = load(d, vm_id)?;
    if parse_driver(vm_id, &drv)? == Driver::Copy {
        return Err(VmDiskError::FsckNeedsDm(vm_id.into()));
    }
    let dm = h.dm.ok_or_else(|| VmDiskError::NotActive(vm_id.into()))?;
    let r: m::FsckResult = call(
        d,
        m::FSCK_SNAPSHOT,
        &m::FsckSnapshot {
            device: dm.dm_device,
        },
    )?;
    Ok(r.exit_code)
}

/// Remove the VM's disk exactly: `priv.cleanup_dm_snapshot` with the
/// recorded handles (dm driver), then the VM's directory (COW file or
/// copy), its `known_hosts` lines; the row's handles are cleared.
/// Idempotent: a VM without a disk is a no-op.
pub fn destroy(d: &Daemon, vm_id: &str) -> Result<(), VmDiskError> {
    check_vm_id(vm_id)?;
    let (drv, mut h) = load(d, vm_id)?;
    if let Some(dm) = h.dm.clone() {
        call::<_, m::Empty>(
            d,
            m::CLEANUP_DM_SNAPSHOT,
            &m::CleanupDmSnapshot { handles: dm },
        )?;
        h.dm = None;
        save(d, vm_id, &drv, &h)?;
    }
    let dir = vm_dir(&d.paths.state_dir, vm_id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(VmDiskError::RemoveDir(dir, e)),
    }
    if !h.known_hosts.is_empty() {
        custom::unpin_host(d, &h.known_hosts)?;
    }
    save(d, vm_id, &drv, &DiskHandles::default())?;
    Ok(())
}

#[cfg(test)]
mod boot_tests;
#[cfg(test)]
pub(crate) mod guest_fixture;
#[cfg(test)]
mod helper_tests;
#[cfg(test)]
mod reconcile_tests;
#[cfg(test)]
mod root_tests;
#[cfg(test)]
mod tests;
