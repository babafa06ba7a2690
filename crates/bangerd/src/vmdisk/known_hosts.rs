//! The VMs' pinned SSH host keys in `<state>/known_hosts`: a VM's lines
//! replaced at customisation and dropped on destroy.

use super::error::CustomError;
use crate::daemon::Daemon;
use banger_core::guest;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

/// Replace every line naming any of `names` with `add` (or nothing), written
/// atomically (temp file 0600 + rename).
pub fn pin_host(d: &Daemon, names: &[String], add: Option<&str>) -> Result<(), CustomError> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let path = d.paths.known_hosts();
    let old = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(CustomError::KnownHosts(path, e)),
    };
    let new = guest::known_hosts_replace(&old, names, add);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(new.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CustomError::KnownHosts(path.clone(), e)
    })
}

/// Drop the VM's `known_hosts` lines (on destroy).
pub fn unpin_host(d: &Daemon, names: &[String]) -> Result<(), CustomError> {
    pin_host(d, names, None)
}
