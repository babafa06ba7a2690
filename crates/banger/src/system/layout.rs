//! Where the system install puts things, and small root-side file helpers.

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const CONFIG: &str = banger_proto::install::SYSTEM_CONFIG_PATH;
pub const UNIT_DIR: &str = "/etc/systemd/system";
pub const TMPFILES: &str = "/etc/tmpfiles.d/banger.conf";
pub const BIN_DIR: &str = "/usr/local/bin";
/// Where `system install` puts the man pages (on `man`'s default path).
pub const MAN_DIR: &str = "/usr/local/share/man/man1";
pub const BINARIES: [&str; 3] = ["banger", "bangerd", "banger-helper"];

pub fn unit_path(unit: &str) -> PathBuf {
    Path::new(UNIT_DIR).join(unit)
}

/// Write `content` to `path` atomically (temp file + rename) with `mode`,
/// root-owned. Returns whether the content changed.
pub fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<bool> {
    if std::fs::read(path).ok().as_deref() == Some(content) {
        set_mode(path, mode)?;
        return Ok(false);
    }
    let dir = path.parent().context("path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.banger-tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    set_mode(&tmp, mode)?;
    std::os::unix::fs::chown(&tmp, Some(0), Some(0))
        .with_context(|| format!("chown {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("installing {}", path.display()))?;
    Ok(true)
}

pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {:o} {}", mode, path.display()))
}

/// Create `dir` (and parents) and give it exactly this owner and mode.
pub fn ensure_dir(dir: &Path, uid: u32, gid: u32, mode: u32) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        anyhow::bail!("{} exists and is not a directory", dir.display());
    }
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", dir.display()))?;
    set_mode(dir, mode)
}

/// Remove a file if present.
pub fn remove_file(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}
