//! Virtual machine monitors the daemon drives: Firecracker over its HTTP
//! API (launched through the helper), and QEMU `microvm` where Firecracker
//! cannot run; both booted from one backend-neutral machine spec.

pub mod adopted;
pub mod fc_process;
pub mod firecracker;
pub mod plan;
pub mod qemu;
pub mod registry;
pub mod socket_access;

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The guest shut down after Ctrl+Alt+Del.
    Graceful,
    /// QEMU quit on request (QMP `quit`) after the grace period.
    Quit,
    /// SIGKILL: the VMM answered nothing in time.
    Killed,
    /// It had exited already.
    AlreadyExited,
}
