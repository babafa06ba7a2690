//! The host operations the helper's methods call. Real ones in production,
//! recording fakes in tests (see `banger_sys`).

use banger_sys::runner::{HostRunner, Runner};
use std::sync::Arc;

/// Every host-side capability a method may use.
pub struct Host {
    /// Runs host tools (argv only).
    pub runner: Arc<dyn Runner>,
}

impl Host {
    /// The real host.
    pub fn real() -> Self {
        Host {
            runner: Arc::new(HostRunner),
        }
    }
}
