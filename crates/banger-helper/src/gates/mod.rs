//! Validation gates: pure functions that decide whether root may act on an
//! argument. No I/O except where a gate must look at the filesystem
//! (symlinks, `/proc`), and then through injected roots so tests use fixtures.

/// A gate's refusal: one line saying what must hold, e.g.
/// `device must be /dev/mapper/fc-rootfs-*`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Refused {
    pub fn new(msg: impl Into<String>) -> Self {
        Refused(msg.into())
    }
}
pub mod files;
pub mod jail;
pub mod net;
pub mod process;
pub mod qemu;
pub mod storage;
