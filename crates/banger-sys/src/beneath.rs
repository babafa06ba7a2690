//! Opening files strictly beneath a directory (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so no symlink or `..` can lead out.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

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
    #[error("{0} has {1} hard links; refusing it")]
    HardLinked(PathBuf, u64),
    #[error("{0} is owned by uid {1}, not by {2}; refusing it")]
    ForeignOwner(PathBuf, u32, &'static str),
    #[error("{0} must name a file below the directory")]
    NoName(PathBuf),
    #[error("clear O_NONBLOCK on {0}")]
    Flags(PathBuf, #[source] io::Error),
    #[error("remove {0}")]
    Unlink(PathBuf, #[source] io::Error),
}

/// Who may own a file the helper opens on the daemon's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// Only the owner uid (e.g. an image file a tool will open as the owner).
    Owner(u32),
    /// The owner uid or root (e.g. a base image or COW file root may have made).
    OwnerOrRoot(u32),
}

impl Owners {
    fn allows(self, uid: u32) -> bool {
        match self {
            Owners::Owner(o) => uid == o,
            Owners::OwnerOrRoot(o) => uid == o || uid == 0,
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Owners::Owner(_) => "the owner",
            Owners::OwnerOrRoot(_) => "the owner or root",
        }
    }
}

/// Resolve flags for every daemon-named path: no symlink, no magic link,
/// no escape by `..`, and no mount crossed — a FUSE (or any) mount placed
/// below the anchor could otherwise park a helper thread in its `open`.
pub fn strict() -> ResolveFlags {
    ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV
}

fn open_anchor(dir: &Path) -> Result<OwnedFd, BeneathError> {
    rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| BeneathError::OpenDir(dir.into(), e.into()))
}

/// The checks every daemon-named regular file gets, on the opened fd:
/// a regular file (a FIFO, socket or device is refused: it was opened
/// `O_NONBLOCK`, so opening it could not block), exactly one link, owned
/// as `owners` says; then `O_NONBLOCK` is cleared.
fn check_regular(file: &File, rel: &Path, owners: Owners) -> Result<(), BeneathError> {
    let meta = file
        .metadata()
        .map_err(|e| BeneathError::Stat(rel.into(), e))?;
    if !meta.file_type().is_file() {
        return Err(BeneathError::NotRegular(rel.into()));
    }
    if meta.nlink() != 1 {
        return Err(BeneathError::HardLinked(rel.into(), meta.nlink()));
    }
    if !owners.allows(meta.uid()) {
        return Err(BeneathError::ForeignOwner(
            rel.into(),
            meta.uid(),
            owners.rule(),
        ));
    }
    let fl =
        rustix::fs::fcntl_getfl(file).map_err(|e| BeneathError::Flags(rel.into(), e.into()))?;
    rustix::fs::fcntl_setfl(file, fl - OFlags::NONBLOCK)
        .map_err(|e| BeneathError::Flags(rel.into(), e.into()))
}

fn access_flags(access: Access) -> OFlags {
    OFlags::CLOEXEC
        | OFlags::NOFOLLOW
        | OFlags::NOCTTY
        | OFlags::NONBLOCK
        | match access {
            Access::Read => OFlags::RDONLY,
            Access::ReadWrite => OFlags::RDWR,
            Access::CreateNew => OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        }
}

/// Open the existing regular file `rel` beneath `dir` for the daemon:
/// resolved with [`strict`] flags, opened `O_NONBLOCK`, then checked on the
/// fd (regular file, one link, owned as `owners` says).
pub fn open_checked(
    dir: &Path,
    rel: &Path,
    access: Access,
    owners: Owners,
) -> Result<File, BeneathError> {
    let anchor = open_anchor(dir)?;
    let access = if access == Access::CreateNew {
        Access::ReadWrite
    } else {
        access
    };
    let fd = rustix::fs::openat2(&anchor, rel, access_flags(access), Mode::empty(), strict())
        .map_err(|e| BeneathError::Open(rel.into(), dir.into(), e.into()))?;
    let file = File::from(fd);
    check_regular(&file, rel, owners)?;
    Ok(file)
}

/// A file the helper created beneath an anchor, with what it takes to
/// remove exactly that file again: the parent directory's fd (opened
/// beneath the anchor) and the new file's identity.
#[derive(Debug)]
pub struct Created {
    pub file: File,
    /// The path as given, for messages.
    pub path: PathBuf,
    parent: OwnedFd,
    name: OsString,
    dev: u64,
    ino: u64,
}

/// Create `rel` beneath `dir` (exclusively, mode 0600, read/write): the
/// parent is opened beneath `dir` with [`strict`] flags and kept, the file
/// is created in it (no symlink followed at the leaf either).
pub fn create_new(dir: &Path, rel: &Path) -> Result<Created, BeneathError> {
    let Some(Component::Normal(name)) = rel.components().next_back() else {
        return Err(BeneathError::NoName(rel.into()));
    };
    let anchor = open_anchor(dir)?;
    let parent_rel = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = rustix::fs::openat2(
        &anchor,
        parent_rel,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        strict(),
    )
    .map_err(|e| BeneathError::Open(parent_rel.into(), dir.into(), e.into()))?;
    let fd = rustix::fs::openat2(
        &parent,
        Path::new(name),
        access_flags(Access::CreateNew),
        Mode::from_raw_mode(0o600),
        strict(),
    )
    .map_err(|e| BeneathError::Open(rel.into(), dir.into(), e.into()))?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| BeneathError::Stat(rel.into(), e))?;
    let fl =
        rustix::fs::fcntl_getfl(&file).map_err(|e| BeneathError::Flags(rel.into(), e.into()))?;
    rustix::fs::fcntl_setfl(&file, fl - OFlags::NONBLOCK)
        .map_err(|e| BeneathError::Flags(rel.into(), e.into()))?;
    Ok(Created {
        file,
        path: dir.join(rel),
        parent,
        name: name.to_os_string(),
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

impl Created {
    /// Unlink the created file through the parent fd, only if the name
    /// there still is the very file created (same device and inode).
    /// Returns whether it was removed; a name that is gone or now names
    /// another file is left alone.
    pub fn unlink(&self) -> Result<bool, BeneathError> {
        let st = match rustix::fs::statat(&self.parent, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(false),
            Err(e) => return Err(BeneathError::Stat(self.path.clone(), e.into())),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || st.st_dev != self.dev
            || st.st_ino != self.ino
        {
            return Ok(false);
        }
        rustix::fs::unlinkat(&self.parent, &self.name, AtFlags::empty())
            .map_err(|e| BeneathError::Unlink(self.path.clone(), e.into()))?;
        Ok(true)
    }
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
    let flags = access_flags(access);
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

    #[test]
    fn open_checked_refuses_fifos_links_and_foreign_owners_on_the_fd() {
        let tmp = tempfile::Builder::new()
            .prefix("bgtest-")
            .tempdir()
            .unwrap();
        let d = tmp.path();
        let me = rustix::process::geteuid().as_raw();
        std::fs::write(d.join("f"), b"ok").unwrap();
        let f = open_checked(d, Path::new("f"), Access::Read, Owners::Owner(me)).unwrap();
        let fl = rustix::fs::fcntl_getfl(&f).unwrap();
        assert!(!fl.contains(OFlags::NONBLOCK), "O_NONBLOCK left set");
        assert!(matches!(
            open_checked(d, Path::new("f"), Access::Read, Owners::Owner(me + 1)),
            Err(BeneathError::ForeignOwner(_, uid, "the owner")) if uid == me
        ));
        std::fs::hard_link(d.join("f"), d.join("g")).unwrap();
        assert!(matches!(
            open_checked(d, Path::new("g"), Access::Read, Owners::OwnerOrRoot(me)),
            Err(BeneathError::HardLinked(_, 2))
        ));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Opened O_NONBLOCK (no reader needed), then refused by type.
        for a in [Access::Read, Access::ReadWrite] {
            assert!(matches!(
                open_checked(d, Path::new("fifo"), a, Owners::OwnerOrRoot(me)),
                Err(BeneathError::NotRegular(_))
            ));
        }
    }

    #[test]
    fn created_files_are_unlinked_through_their_parent_only_if_unchanged() {
        let tmp = tempfile::Builder::new()
            .prefix("bgtest-")
            .tempdir()
            .unwrap();
        let d = tmp.path().join("state");
        std::fs::create_dir_all(d.join("vm")).unwrap();
        let c = create_new(&d, Path::new("vm/cow")).unwrap();
        assert!(c.unlink().unwrap());
        assert!(!d.join("vm/cow").exists());
        assert!(!c.unlink().unwrap(), "already gone is not an error");

        // The parent swapped for a symlink: the unlink stays in the real parent.
        let c = create_new(&d, Path::new("vm/cow")).unwrap();
        std::fs::create_dir(tmp.path().join("decoy")).unwrap();
        std::fs::write(tmp.path().join("decoy/cow"), b"decoy").unwrap();
        std::fs::rename(d.join("vm"), d.join("moved")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("decoy"), d.join("vm")).unwrap();
        assert!(c.unlink().unwrap());
        assert!(!d.join("moved/cow").exists());
        assert_eq!(
            std::fs::read(tmp.path().join("decoy/cow")).unwrap(),
            b"decoy"
        );

        // Another file under the created name is left alone.
        let c = create_new(&d, Path::new("moved/cow")).unwrap();
        std::fs::rename(d.join("moved/cow"), d.join("moved/aside")).unwrap();
        std::fs::write(d.join("moved/cow"), b"other").unwrap();
        assert!(!c.unlink().unwrap());
        assert_eq!(std::fs::read(d.join("moved/cow")).unwrap(), b"other");

        // Creating through a symlinked parent is refused.
        assert!(create_new(&d, Path::new("vm/new")).is_err());
        assert!(!tmp.path().join("decoy/new").exists());
    }
}
