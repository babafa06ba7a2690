//! The daemon context: what every operation may use (config, paths, store,
//! privileged ops, image host paths, the VMM registry).

use crate::privops::PrivOps;
use crate::store::Store;
use banger_core::paths::{Mode, Paths};
use banger_proto::install::InstallConfig;
use std::sync::Arc;

/// Everything a request handler may use.
pub struct Daemon {
    /// Effective install metadata (system) or its development equivalent.
    pub cfg: InstallConfig,
    pub paths: Paths,
    pub mode: Mode,
    pub store: Store,
    pub privops: Arc<dyn PrivOps>,
    /// Where host kernels and busybox are found for image builds.
    pub host_paths: crate::images::kernel::HostPaths,
    /// Running VMMs and VM operations under way.
    pub vmms: crate::vmm::registry::Registry,
}
