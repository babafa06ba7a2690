//! Why a VM-disk step failed: [`VmDiskError`], and [`CustomError`] for
//! the customisation before first boot.

use super::clone::CloneError;
use crate::privops::PrivError;
use crate::store::StoreError;
use banger_core::guest::GuestError;
use banger_sys::beneath::BeneathError;
use std::path::PathBuf;

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
    #[error("grow the VM disk to {} bytes", .0)]
    Grow(u64, #[source] super::grow::GrowError),
    #[error("{0}")]
    Priv(&'static str, #[source] Box<PrivError>),
    #[error("disk handles of VM {0} do not parse")]
    Handles(String, #[source] serde_json::Error),
    #[error(transparent)]
    Custom(#[from] CustomError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

crate::store::sql_errors_into_store!(VmDiskError);

/// Why customisation failed.
#[derive(Debug, thiserror::Error)]
pub enum CustomError {
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("resolve owner home {0}")]
    Home(PathBuf, #[source] std::io::Error),
    #[error("resolve {0}")]
    Resolve(PathBuf, #[source] std::io::Error),
    #[error("{0} resolves outside the owner's home: refused")]
    OutsideHome(PathBuf),
    #[error("open {0} in the owner's home")]
    Open(PathBuf, #[source] BeneathError),
    #[error("read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0} is larger than {1} bytes")]
    TooLarge(PathBuf, u64),
    #[error("list {0}")]
    ListKeys(PathBuf, #[source] std::io::Error),
    #[error("banger's SSH key")]
    BangerKey(#[source] crate::sshkey::KeyError),
    #[error("{0} is not an SSH public key")]
    BadKey(PathBuf, #[source] GuestError),
    #[error("invalid file_sync destination {0:?}: absolute, [A-Za-z0-9._/@+-], no . or ..")]
    BadDest(String),
    #[error("read random bytes for the machine id")]
    Random(#[source] std::io::Error),
    #[error("generate the VM's ed25519 host key")]
    Keygen(#[source] ssh_key::Error),
    #[error("write {0}")]
    KnownHosts(PathBuf, #[source] std::io::Error),
}
