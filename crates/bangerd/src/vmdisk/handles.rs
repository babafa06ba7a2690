//! The disk columns of a VM's row (`vms.disk_driver`, `vms.disk_handles`)
//! and the helper calls that change the disk.

use super::driver::Driver;
use super::error::VmDiskError;
use crate::daemon::Daemon;
use crate::store::vms as table;
use banger_proto::helper::{self as m, Method};
use serde::{Deserialize, Serialize};

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

pub(crate) fn call<M: Method>(d: &Daemon, p: &M::Params) -> Result<M::Result, VmDiskError> {
    d.privops
        .call::<M>(p)
        .map_err(|e| VmDiskError::Priv(M::NAME, Box::new(e)))
}

/// The row's disk driver (`None`: no disk yet) and handles.
pub fn load(d: &Daemon, vm_id: &str) -> Result<(Option<Driver>, DiskHandles), VmDiskError> {
    let cols = d
        .store
        .read(|c| table::disk(c, vm_id))
        .map_err(|e| match e {
            table::DiskColumnError::Sql(e) => VmDiskError::from(e),
            table::DiskColumnError::UnknownDriver(u) => {
                VmDiskError::UnknownDriver(vm_id.into(), u.0)
            }
        })?
        .ok_or_else(|| VmDiskError::NoVm(vm_id.into()))?;
    let h =
        serde_json::from_str(&cols.handles).map_err(|e| VmDiskError::Handles(vm_id.into(), e))?;
    Ok((cols.driver, h))
}

/// Record `driver` and `handles` on the row.
pub fn save(
    d: &Daemon,
    vm_id: &str,
    drv: Option<Driver>,
    h: &DiskHandles,
) -> Result<(), VmDiskError> {
    let json = serde_json::to_string(h).expect("handles serialise");
    if !d.store.write(|tx| table::set_disk(tx, vm_id, drv, &json))? {
        return Err(VmDiskError::NoVm(vm_id.into()));
    }
    Ok(())
}
