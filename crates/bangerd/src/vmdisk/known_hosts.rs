//! The VMs' pinned SSH host keys in `<state>/known_hosts`: a VM's line
//! appended (or its old lines replaced) at customisation, dropped on destroy.

use super::error::CustomError;
use crate::daemon::Daemon;
use banger_core::guest;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Serialises every change to the file within this daemon.
static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Replace every line naming any of `names` with `add` (or nothing). When
/// no line names them and the file is a well-formed private regular file,
/// `add` is appended with one `O_APPEND` write and synced (a create's
/// common case: the cost does not grow with the pins held); otherwise the
/// whole file is rewritten atomically (temp file 0600 + rename).
pub fn pin_host(d: &Daemon, names: &[String], add: Option<&str>) -> Result<(), CustomError> {
    pin_at(&d.paths.known_hosts(), names, add)
}

/// [`pin_host`] on the file at `path`.
pub fn pin_at(path: &Path, names: &[String], add: Option<&str>) -> Result<(), CustomError> {
    let path = path.to_path_buf();
    let held = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let appended = match add {
        Some(line) => {
            try_append(&path, names, line).map_err(|e| CustomError::KnownHosts(path.clone(), e))?
        }
        None => None,
    };
    match appended {
        Some(f) => {
            // Synced outside the lock: concurrent creates' syncs may share a
            // journal commit. A rewrite in between read this line and
            // synced its own copy.
            drop(held);
            f.sync_data()
                .map_err(|e| CustomError::KnownHosts(path.clone(), e))
        }
        None => rewrite(&path, names, add),
    }
}

/// Append `line` when that is all a replace would do: the file exists as
/// a regular file of ours, mode 0600, ending in a newline, and no line
/// names any of `names`. Returns the file to sync, or None (rewrite).
fn try_append(path: &Path, names: &[String], line: &str) -> std::io::Result<Option<std::fs::File>> {
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A symlink (ELOOP) or anything odd: the rewrite replaces it.
        Err(_) => return Ok(None),
    };
    let meta = f.metadata()?;
    if !meta.is_file()
        || meta.mode() & 0o7777 != 0o600
        || meta.uid() != rustix::process::geteuid().as_raw()
    {
        return Ok(None);
    }
    let mut old = String::new();
    if f.read_to_string(&mut old).is_err() {
        return Ok(None);
    }
    let line = if line.ends_with('\n') {
        line.to_string()
    } else {
        format!("{line}\n")
    };
    let unchanged_but_appended = {
        let mut with = old.clone();
        with.push_str(&line);
        with
    };
    if !(old.is_empty() || old.ends_with('\n'))
        || guest::known_hosts_replace(&old, names, Some(&line)) != unchanged_but_appended
    {
        return Ok(None);
    }
    // One write: readers see the file without or with the whole line.
    let n = f.write(line.as_bytes())?;
    if n != line.len() {
        // Short write (a full disk): take the partial line back out.
        f.set_len(old.len() as u64)?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "short append to known_hosts",
        ));
    }
    Ok(Some(f))
}

/// The whole file rewritten: temp file 0600, synced, renamed over.
fn rewrite(path: &Path, names: &[String], add: Option<&str>) -> Result<(), CustomError> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(CustomError::KnownHosts(path.into(), e)),
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
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CustomError::KnownHosts(path.into(), e)
    })
}

/// Drop the VM's `known_hosts` lines (on destroy).
pub fn unpin_host(d: &Daemon, names: &[String]) -> Result<(), CustomError> {
    pin_host(d, names, None)
}

#[cfg(test)]
#[path = "known_hosts_tests.rs"]
mod tests;
