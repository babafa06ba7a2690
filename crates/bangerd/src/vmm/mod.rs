//! Virtual machine monitors the daemon drives: Firecracker over its HTTP
//! API, with its boot plan rendered from a backend-neutral machine spec.

pub mod firecracker;
pub mod plan;
pub mod qemu;
pub mod socket_access;
