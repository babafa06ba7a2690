//! The helper's state: the trusted install metadata and the host it acts
//! on. Methods take it; `dispatch` routes to them.

use crate::host::Host;
use banger_proto::install::InstallConfig;

/// The helper's state: trusted install metadata and the host.
pub struct Helper {
    /// Root-owned install metadata: the only source of the owner uid,
    /// StateDir, RuntimeDir, binary paths and the jailer base.
    pub cfg: InstallConfig,
    pub host: Host,
}
