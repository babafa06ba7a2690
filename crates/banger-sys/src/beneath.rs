//! Opening files strictly beneath a directory (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so no symlink or `..` can lead out.

use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// A failed open beneath a directory.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    #[error("open directory {0}")]
    OpenDir(PathBuf, #[source] io::Error),
    #[error("open {0} beneath {1}")]
    Open(PathBuf, PathBuf, #[source] io::Error),
    #[error("stat {0}")]
    Stat(PathBuf, #[source] io::Error),
    #[error("{0} is not a regular file")]
    NotRegular(PathBuf),
}

/// How to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
    /// Create (exclusively, mode 0600) for reading and writing.
    CreateNew,
}

/// Open `rel` (relative) beneath `dir`: no symlink anywhere in `rel`, no
/// escape by `..`, and the result must be a regular file.
pub fn open_file(dir: &Path, rel: &Path, access: Access) -> Result<File, BeneathError> {
    let dfd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| BeneathError::OpenDir(dir.into(), e.into()))?;
    // O_NONBLOCK: opening a FIFO (or a device) planted where a file is
    // expected must not park a helper thread; regular-file I/O ignores it.
    let flags = OFlags::CLOEXEC
        | OFlags::NOFOLLOW
        | OFlags::NOCTTY
        | OFlags::NONBLOCK
        | match access {
            Access::Read => OFlags::RDONLY,
            Access::ReadWrite => OFlags::RDWR,
            Access::CreateNew => OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        };
    let fd = rustix::fs::openat2(
        &dfd,
        rel,
        flags,
        // openat2 refuses a mode without O_CREAT.
        if access == Access::CreateNew {
            Mode::from_raw_mode(0o600)
        } else {
            Mode::empty()
        },
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| BeneathError::Open(rel.into(), dir.into(), e.into()))?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| BeneathError::Stat(rel.into(), e))?;
    let ft = meta.file_type();
    if !ft.is_file() || ft.is_block_device() {
        return Err(BeneathError::NotRegular(rel.into()));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_regular_files_beneath() {
        let tmp = tempfile::Builder::new()
            .prefix("bgtest-")
            .tempdir()
            .unwrap();
        let d = tmp.path().join("state");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/f"), b"ok").unwrap();
        std::fs::write(tmp.path().join("outside"), b"no").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), d.join("link")).unwrap();
        std::os::unix::fs::symlink("sub", d.join("dirlink")).unwrap();
        open_file(&d, Path::new("sub/f"), Access::Read).unwrap();
        for bad in [
            "link",
            "dirlink/f",
            "../outside",
            "sub",
            "/etc/passwd",
            "missing",
        ] {
            assert!(
                open_file(&d, Path::new(bad), Access::Read).is_err(),
                "{bad}"
            );
        }
        let f = open_file(&d, Path::new("sub/new"), Access::CreateNew).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert!(open_file(&d, Path::new("sub/new"), Access::CreateNew).is_err());
    }
}
