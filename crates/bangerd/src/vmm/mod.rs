//! Virtual machine monitors the daemon drives: Firecracker over its HTTP API.

pub mod firecracker;
