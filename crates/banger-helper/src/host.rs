//! The host operations the helper's methods call. Real ones in production,
//! recording fakes in tests (see `banger_sys`).

use banger_sys::runner::{HostRunner, Runner};
use std::path::PathBuf;
use std::sync::Arc;

/// Every host-side capability a method may use.
pub struct Host {
    /// Runs host tools (argv only).
    pub runner: Arc<dyn Runner>,
    /// Root of the proc filesystem (`/proc`; a fixture in tests).
    pub proc_root: PathBuf,
    /// Pidfds of the Firecracker processes this helper launched, by pid.
    pub launched: banger_sys::pidfd::Registry,
}

impl Host {
    /// The real host.
    pub fn real() -> Self {
        Host {
            runner: Arc::new(HostRunner),
            proc_root: PathBuf::from("/proc"),
            launched: banger_sys::pidfd::Registry::new(),
        }
    }
}

impl Host {
    /// `<proc_root>/thread-self/mountinfo`: the mount table of the calling
    /// thread's mount namespace.
    pub fn mountinfo_path(&self) -> PathBuf {
        self.proc_root.join("thread-self/mountinfo")
    }
}
