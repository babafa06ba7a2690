//! One module per area of the privileged surface; each handler runs its
//! gate(s) first, then the host operation.

pub mod files;
pub mod network;
pub mod process;
pub mod qemu;
pub mod storage;
