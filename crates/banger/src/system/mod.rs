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
use clap::Subcommand;
use std::path::Path;
use std::path::PathBuf;

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

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Install the two services (owner bangerd, root helper) and metadata.
    Install {
        /// The user who will own banger (default: $SUDO_USER).
        #[arg(long)]
        owner: Option<String>,
        /// Only lay down files; do not enable or start units (images,
        /// containers, hosts where systemd is not PID 1).
        #[arg(long)]
        no_start: bool,
        /// Firecracker binary to record (validated: root-owned, not
        /// group/world-writable, no symlink in its path).
        #[arg(long)]
        firecracker: Option<PathBuf>,
        /// Jailer binary to record (validated the same way).
        #[arg(long)]
        jailer: Option<PathBuf>,
    },
    /// Show both services, sockets, versions, owner, backend, disk driver.
    Status,
    /// Restart both services.
    Restart,
    /// Remove units, bridge, taps, firewall table, snapshots, routing.
    Uninstall {
        /// Also remove StateDir (images, VM disks, state).
        #[arg(long)]
        purge: bool,
    },
}
