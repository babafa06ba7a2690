//! `banger system …`: the two-service install (root only), its status,
//! restart and uninstall.

mod install;
mod layout;
mod status;
mod uninstall;

pub use install::{install, Opts as InstallOpts};
pub use status::{restart, status};
pub use uninstall::uninstall;

use anyhow::{bail, Result};
use std::path::Path;

/// Refuse clearly unless running as root.
pub fn require_root(what: &str) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("`banger system {what}` must run as root (try: sudo banger system {what})");
    }
    Ok(())
}

/// True when systemd is PID 1 on this host.
pub fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
}
