//! Per-VM root disks: the fallback copy driver (the dm-snapshot driver lives
//! in the helper, `priv.create_dm_snapshot`).

pub mod clone;
pub mod driver;
pub mod reconcile;
