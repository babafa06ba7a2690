//! The VM lifecycle: create, start, stop, restart and remove, each state
//! transition persisted in the `vms` row before the host is touched.

pub mod create;
pub mod default_image;
pub mod exec;
pub mod file_sync;
pub mod forward;
pub mod ports;
pub mod ready;
pub mod reconcile;
pub mod record;
pub mod remove;
pub mod run;
pub mod sweep;

use crate::images::catalog::CatalogError;
use crate::network::NetworkError;
use crate::privops::PrivError;
use crate::store::StoreError;
use crate::vmdisk::VmDiskError;
use banger_core::vm::{Refused, VmState};
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use create::{create, identity, CreateReq};
pub use record::{find, list, transition, VmRow};
pub use remove::remove;
pub use run::{restart, start, stop};

/// Why a lifecycle step failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}")]
    BadName(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("VM {0}: cancelled by `banger vm rm --force`")]
    Cancelled(String),
    #[error("no VM {0:?}")]
    NotFound(String),
    #[error("a VM named {0:?} exists already")]
    Exists(String),
    #[error("VM {0} {1}")]
    Refused(String, Refused),
    #[error(transparent)]
    Busy(#[from] crate::vmm::registry::Busy),
    #[error("VM {0} is {1}; stop it first or use `banger vm rm --force`")]
    IsRunning(String, VmState),
    #[error("VM {0} is {1}; start it with `banger vm start {0}`")]
    NotRunning(String, VmState),
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
    #[error("starting Firecracker for VM {0}{tail}", tail = log_tail(.2))]
    Firecracker(
        String,
        #[source] Box<crate::vmm::fc_process::FcVmError>,
        /// The end of Firecracker's log (its console), if any.
        String,
    ),
    #[error("the firecracker boot plan")]
    Plan(#[source] crate::vmm::plan::NotUtf8),
    #[error("VM {0}'s VMM exited before the guest was ready (see `banger vm logs {0}`)")]
    ExitedEarly(String),
    #[error("VM {0} did not answer SSH on {1}:22 within {2}s (see `banger vm logs {0}`)")]
    NotReady(String, Ipv4Addr, u64),
    #[error("removing {0}")]
    RemoveDir(PathBuf, #[source] std::io::Error),
    #[error("VM {0}'s VMM")]
    Kill(String, #[source] crate::vmm::adopted::KillError),
    #[error("stopping VM {0}'s VMM: {1}")]
    StopVmm(String, String),
    #[error("tearing down VM {0}: {1}")]
    Teardown(String, Failures),
    #[error("state database")]
    Store(#[from] StoreError),
    #[error(transparent)]
    FileSync(#[from] file_sync::FileSyncError),
    #[error(transparent)]
    Port(#[from] forward::PortError),
    #[error(transparent)]
    DefaultImage(Box<default_image::DefaultImageError>),
    #[error(transparent)]
    DiskSize(#[from] banger_core::size::SizeError),
}

impl From<default_image::DefaultImageError> for VmError {
    fn from(e: default_image::DefaultImageError) -> Self {
        VmError::DefaultImage(Box::new(e))
    }
}

fn log_tail(t: &str) -> String {
    if t.trim().is_empty() {
        String::new()
    } else {
        format!(" (its log ends: {})", t.trim())
    }
}

/// Every teardown step that failed, in order.
#[derive(Debug)]
pub struct Failures(pub Vec<VmError>);

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.0.iter().map(|e| crate::render_chain(e)).collect();
        write!(f, "{} steps failed: {}", all.len(), all.join("; "))
    }
}

crate::store::sql_errors_into_store!(VmError);

#[cfg(test)]
mod cancel_tests;
#[cfg(test)]
mod jailed_root_tests;
#[cfg(test)]
mod jailed_tests;
#[cfg(test)]
mod phase_tests;
#[cfg(test)]
mod root_tests;
#[cfg(test)]
mod tests;
