//! Each VM's root disk: created from its image (a dm snapshot through the
//! helper, or the copy fallback), recorded in `vms.disk_driver` /
//! `vms.disk_handles`, customised before first boot, and destroyed exactly.

pub mod clone;
pub mod custom;
pub mod driver;
pub mod error;
pub mod grow;
pub mod handles;
pub mod known_hosts;
pub mod orphans;
pub mod reconcile;

use crate::daemon::Daemon;
use crate::images::catalog::Stored;
use banger_proto::helper::{self as m, method};
use banger_sys::runner::{HostRunner, Runner};
use driver::Driver;
use handles::call;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub use error::{CustomError, VmDiskError};
pub use handles::{check_vm_id, load, save, DiskHandles};

/// The COW file of a dm-snapshot VM, inside its directory.
pub const COW_FILE: &str = "cow.img";
/// The disk of a copy-driver VM, inside its directory.
pub const COPY_FILE: &str = "rootfs.ext4";
/// Prefix of every banger dm snapshot name.
pub const DM_PREFIX: &str = "fc-rootfs-";

/// A VM's disk as the VMM should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    pub driver: Driver,
    /// What the VMM opens: `/dev/mapper/fc-rootfs-<id>` or the copy.
    pub device: PathBuf,
    pub handles: DiskHandles,
}

/// Size of a new COW file: enough for the whole base rewritten plus the
/// snapshot's exception metadata (sparse: costs nothing until written).
pub fn cow_size_for(base_len: u64) -> u64 {
    let s = base_len + base_len / 8 + (16 << 20);
    s.div_ceil(512) * 512
}

/// Create the VM's disk — the one place a VM disk is made — with the
/// driver the registry pins (tests) or else the one this host supports
/// ([`driver::select`] on `/proc`); `size`: grown to that many bytes
/// (with its ext4) before first boot. A dm snapshot is as large as its
/// image, so a grown disk is a copy whatever the host supports.
pub fn create(
    d: &Daemon,
    vm_id: &str,
    image: &Stored,
    size: Option<u64>,
) -> Result<DiskInfo, VmDiskError> {
    let drv = match d.vmms.disk_driver {
        Some(drv) => drv,
        None => driver::select(Path::new("/proc"), &d.paths.state_dir).driver,
    };
    create_sized(d, vm_id, image, drv, size, &HostRunner)
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
#[cfg(test)]
pub(crate) fn create_with(
    d: &Daemon,
    vm_id: &str,
    image: &Stored,
    drv: Driver,
) -> Result<DiskInfo, VmDiskError> {
    create_sized(d, vm_id, image, drv, None, &HostRunner)
}

/// [`create_with`], the disk grown to `size` bytes when given (a copy,
/// even where `drv` is the dm driver; `runner` runs e2fsck and resize2fs).
pub(crate) fn create_sized(
    d: &Daemon,
    vm_id: &str,
    image: &Stored,
    drv: Driver,
    size: Option<u64>,
    runner: &dyn Runner,
) -> Result<DiskInfo, VmDiskError> {
    check_vm_id(vm_id)?;
    let drv = match (drv, size) {
        (Driver::DmSnapshot, Some(n)) => {
            tracing::info!(
                vm = vm_id,
                bytes = n,
                "a dm snapshot is as large as its image: the grown disk is a copy"
            );
            Driver::Copy
        }
        (drv, _) => drv,
    };
    let (_, old) = load(d, vm_id)?;
    if !old.file.is_empty() {
        return Err(VmDiskError::HasDisk(vm_id.into()));
    }
    let vms = d.paths.vms_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&vms)
        .map_err(|e| VmDiskError::CreateDir(vms.clone(), e))?;
    let dir = d.paths.vm_dir(vm_id);
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
            let r = call::<method::CreateDmSnapshot>(
                d,
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
            if let Some(n) = size {
                grow::grow(&file, n, runner).map_err(|e| VmDiskError::Grow(n, e))?;
                tracing::info!(vm = vm_id, bytes = n, "VM disk grown");
            }
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
    if let Err(e) = save(d, vm_id, Some(drv), &handles) {
        if let Some(dm) = &handles.dm {
            let _ = call::<method::CleanupDmSnapshot>(
                d,
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
    let (recorded, mut h) = load(d, vm_id)?;
    if h.file.is_empty() {
        return Err(VmDiskError::NoDisk(vm_id.into()));
    }
    let drv = recorded.ok_or_else(|| VmDiskError::UnknownDriver(vm_id.into(), String::new()))?;
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
        let r = call::<method::CreateDmSnapshot>(
            d,
            &m::CreateDmSnapshot {
                name: format!("{DM_PREFIX}{vm_id}"),
                base_image: h.base.clone(),
                cow_file: h.file.clone(),
                cow_size_bytes: cow_size_for(len),
            },
        )?;
        h.dm = Some(r.handles);
        save(d, vm_id, recorded, &h)?;
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
        call::<method::CleanupDmSnapshot>(d, &m::CleanupDmSnapshot { handles: dm })?;
        save(d, vm_id, drv, &h)?;
    }
    Ok(())
}

/// `priv.fsck_snapshot` on the VM's active dm snapshot; e2fsck's exit code.
pub fn fsck(d: &Daemon, vm_id: &str) -> Result<i32, VmDiskError> {
    check_vm_id(vm_id)?;
    let (drv, h) = load(d, vm_id)?;
    let drv = drv.ok_or_else(|| VmDiskError::UnknownDriver(vm_id.into(), String::new()))?;
    if drv == Driver::Copy {
        return Err(VmDiskError::FsckNeedsDm(vm_id.into()));
    }
    let dm = h.dm.ok_or_else(|| VmDiskError::NotActive(vm_id.into()))?;
    let r = call::<method::FsckSnapshot>(
        d,
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
        call::<method::CleanupDmSnapshot>(d, &m::CleanupDmSnapshot { handles: dm })?;
        h.dm = None;
        save(d, vm_id, drv, &h)?;
    }
    let dir = d.paths.vm_dir(vm_id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(VmDiskError::RemoveDir(dir, e)),
    }
    if !h.known_hosts.is_empty() {
        known_hosts::unpin_host(d, &h.known_hosts)?;
    }
    save(d, vm_id, drv, &DiskHandles::default())?;
    Ok(())
}

#[cfg(test)]
mod boot_tests;
#[cfg(test)]
mod grow_tests;
#[cfg(test)]
pub(crate) mod guest_cache;
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
#[cfg(test)]
mod trim_tests;
