//! Building a jailed Firecracker's chroot by directory fd: directories,
//! copies, device nodes, the bind of its `/run`, and the lock that
//! serialises jail slot allocation. No path is ever resolved twice.

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, ResolveFlags, Stat};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A failed jail operation, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum JailFsError {
    #[error("open {0}")]
    Open(PathBuf, #[source] io::Error),
    #[error("stat {0}")]
    Stat(PathBuf, #[source] io::Error),
    #[error("{0} must be a directory owned by uid {1} and not writable by group or others")]
    Untrusted(PathBuf, u32),
    #[error("create directory {0}")]
    Mkdir(PathBuf, #[source] io::Error),
    #[error("{0} already exists")]
    Exists(PathBuf),
    #[error("change owner or mode of {0}")]
    Chown(PathBuf, #[source] io::Error),
    #[error("lock {0}")]
    Lock(PathBuf, #[source] io::Error),
    #[error("read directory {0}")]
    ReadDir(PathBuf, #[source] io::Error),
    #[error("copy into {0}")]
    Copy(PathBuf, #[source] io::Error),
    #[error("write {0}")]
    Write(PathBuf, #[source] io::Error),
    #[error("make device node {0}")]
    Mknod(PathBuf, #[source] io::Error),
    #[error("bind {0} onto {1}")]
    Bind(PathBuf, PathBuf, #[source] io::Error),
}

fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

fn owner_uid(uid: u32) -> rustix::process::Uid {
    // SAFETY: `from_raw` is unsafe only because `u32::MAX` means "no
    // change" to chown; the ids here come from install metadata and the
    // jail range, which never include it (the range check refuses a wrap).
    unsafe { rustix::process::Uid::from_raw(uid) }
}

fn owner_gid(gid: u32) -> rustix::process::Gid {
    // SAFETY: as in `owner_uid`.
    unsafe { rustix::process::Gid::from_raw(gid) }
}

/// An open directory (`O_RDONLY|O_DIRECTORY`) and the path it was opened
/// at, for messages only.
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    path: PathBuf,
}

/// Held while jail slots are allocated; released on drop.
#[derive(Debug)]
pub struct DirLock(OwnedFd);

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, FlockOperation::Unlock);
    }
}

impl DirFd {
    /// Open a configured directory with no symlink in its path.
    pub fn open(path: &Path) -> Result<DirFd, JailFsError> {
        let fd = rustix::fs::openat2(
            rustix::fs::CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| JailFsError::Open(path.into(), io_err(e)))?;
        Ok(DirFd {
            fd,
            path: path.into(),
        })
    }

    /// [`DirFd::open`], then require it owned by `uid` and not writable by
    /// group or others.
    pub fn open_trusted(path: &Path, uid: u32) -> Result<DirFd, JailFsError> {
        let d = Self::open(path)?;
        d.require_owner(uid)?;
        Ok(d)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stat(&self) -> Result<Stat, JailFsError> {
        rustix::fs::fstat(&self.fd).map_err(|e| JailFsError::Stat(self.path.clone(), io_err(e)))
    }

    fn require_owner(&self, uid: u32) -> Result<(), JailFsError> {
        let st = self.stat()?;
        if st.st_uid != uid || st.st_mode & 0o022 != 0 {
            return Err(JailFsError::Untrusted(self.path.clone(), uid));
        }
        Ok(())
    }

    fn child(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Open the existing subdirectory `name` (no symlink, no `..`).
    pub fn open_subdir(&self, name: &str) -> Result<DirFd, JailFsError> {
        let fd = crate::fsops::openat_beneath(
            &self.fd,
            Path::new(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::empty(),
        )
        .map_err(|e| JailFsError::Open(self.child(name), e))?;
        Ok(DirFd {
            fd,
            path: self.child(name),
        })
    }

    /// Open `rel` beneath this directory read-only (`O_NONBLOCK`, so a FIFO
    /// cannot block; `O_NOFOLLOW`; no symlink or `..` anywhere), crossing
    /// mounts only if `cross_mounts`: the file, or `None` if absent.
    pub fn open_file(&self, rel: &Path, cross_mounts: bool) -> Result<Option<File>, JailFsError> {
        let mut resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        if !cross_mounts {
            resolve |= ResolveFlags::NO_XDEV;
        }
        match rustix::fs::openat2(
            &self.fd,
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        ) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(JailFsError::Open(self.path.join(rel), io_err(e))),
        }
    }

    /// `name` exists (lstat): its stat, or `None`.
    pub fn stat_at(&self, name: &str) -> Result<Option<Stat>, JailFsError> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(JailFsError::Stat(self.child(name), io_err(e))),
        }
    }

    /// Create the subdirectory `name` (it must not exist), owned by
    /// `uid:gid` with exactly `mode`.
    pub fn create_subdir(
        &self,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<DirFd, JailFsError> {
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => return Err(JailFsError::Exists(self.child(name))),
            Err(e) => return Err(JailFsError::Mkdir(self.child(name), io_err(e))),
        }
        let d = self.open_subdir(name)?;
        d.set_owner_mode(uid, gid, mode)?;
        Ok(d)
    }

    /// Open the subdirectory `name`, creating it (owned by `uid:gid`, with
    /// `mode`) if absent; an existing one must be owned by `uid` and not
    /// writable by group or others.
    pub fn ensure_subdir(
        &self,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<DirFd, JailFsError> {
        match self.create_subdir(name, mode, uid, gid) {
            Err(JailFsError::Exists(_)) => {
                let d = self.open_subdir(name)?;
                d.require_owner(uid)?;
                Ok(d)
            }
            r => r,
        }
    }

    /// `fchown` + `fchmod` through the fd.
    pub fn set_owner_mode(&self, uid: u32, gid: u32, mode: u32) -> Result<(), JailFsError> {
        rustix::fs::fchown(&self.fd, Some(owner_uid(uid)), Some(owner_gid(gid)))
            .and_then(|()| rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode)))
            .map_err(|e| JailFsError::Chown(self.path.clone(), io_err(e)))
    }

    /// `flock(LOCK_EX)`, held until the returned guard drops.
    pub fn lock(&self) -> Result<DirLock, JailFsError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| JailFsError::Lock(self.path.clone(), e))?;
        rustix::fs::flock(&fd, FlockOperation::LockExclusive)
            .map_err(|e| JailFsError::Lock(self.path.clone(), io_err(e)))?;
        Ok(DirLock(fd))
    }

    /// Names in the directory (without `.` and `..`).
    pub fn names(&self) -> Result<Vec<String>, JailFsError> {
        let err = |e| JailFsError::ReadDir(self.path.clone(), io_err(e));
        let mut out = Vec::new();
        for ent in rustix::fs::Dir::read_from(&self.fd).map_err(err)? {
            let ent = ent.map_err(err)?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        Ok(out)
    }

    /// The new, empty file `name` (`O_EXCL`, mode 0600, root's), open for
    /// writing.
    fn create_new(&self, name: &str) -> Result<File, JailFsError> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| JailFsError::Open(self.child(name), io_err(e)))?;
        Ok(File::from(fd))
    }

    fn hand_over(
        &self,
        name: &str,
        f: &File,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), JailFsError> {
        rustix::fs::fchown(f, Some(owner_uid(uid)), Some(owner_gid(gid)))
            .and_then(|()| rustix::fs::fchmod(f, Mode::from_raw_mode(mode)))
            .map_err(|e| JailFsError::Chown(self.child(name), io_err(e)))
    }

    /// Copy `src` into the new file `name` (`O_EXCL`), owned by `uid:gid`
    /// with `mode`.
    pub fn copy_in(
        &self,
        name: &str,
        src: &mut File,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), JailFsError> {
        let mut dst = self.create_new(name)?;
        io::copy(src, &mut dst).map_err(|e| JailFsError::Copy(self.child(name), e))?;
        self.hand_over(name, &dst, mode, uid, gid)
    }

    /// The new file `name` (`O_EXCL`) holding `bytes`, owned by `uid:gid`
    /// with `mode`; returned open (for writing).
    pub fn write_new(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<File, JailFsError> {
        let mut f = self.create_new(name)?;
        io::Write::write_all(&mut f, bytes).map_err(|e| JailFsError::Write(self.child(name), e))?;
        self.hand_over(name, &f, mode, uid, gid)?;
        Ok(f)
    }

    /// `mknodat` a block device `name` with `rdev`, then hand it to
    /// `uid:gid` with `mode` (`fchownat(AT_SYMLINK_NOFOLLOW)`).
    pub fn mknod_block(
        &self,
        name: &str,
        rdev: u64,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), JailFsError> {
        let path = self.child(name);
        rustix::fs::mknodat(
            &self.fd,
            name,
            FileType::BlockDevice,
            Mode::from_raw_mode(0o600),
            rdev,
        )
        .map_err(|e| JailFsError::Mknod(path.clone(), io_err(e)))?;
        rustix::fs::chownat(
            &self.fd,
            name,
            Some(owner_uid(uid)),
            Some(owner_gid(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .and_then(|()| {
            rustix::fs::chmodat(&self.fd, name, Mode::from_raw_mode(mode), AtFlags::empty())
        })
        .map_err(|e| JailFsError::Chown(path, io_err(e)))
    }
}

/// `/proc/self/fd/<n>` of an fd this process holds.
fn fd_path(fd: impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// Bind-mount the directory `src` onto the directory `target`, both named
/// by the fds opened earlier (through `/proc/self/fd`), so no path is
/// resolved again.
pub fn bind_dir(src: &DirFd, target: &DirFd) -> Result<(), JailFsError> {
    rustix::mount::mount_bind(fd_path(&src.fd), fd_path(&target.fd))
        .map_err(|e| JailFsError::Bind(src.path.clone(), target.path.clone(), io_err(e)))
}

/// Bind-mount the regular file `src` onto the (empty) regular file
/// `target`, both named by fds held open (through `/proc/self/fd`), so no
/// path is resolved again. The paths are for messages only.
pub fn bind_file(
    src: &File,
    src_path: &Path,
    target: &File,
    target_path: &Path,
) -> Result<(), JailFsError> {
    rustix::mount::mount_bind(fd_path(src), fd_path(target))
        .map_err(|e| JailFsError::Bind(src_path.into(), target_path.into(), io_err(e)))
}

/// The last component of `path` as a string, if it has one.
pub fn file_name(path: &Path) -> Option<String> {
    path.file_name()
        .map(|n| OsString::from(std::ffi::OsStr::from_bytes(n.as_bytes())))
        .and_then(|n| n.into_string().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn subdirs_are_exclusive_and_symlinks_refused() {
        let d = banger_testkit::tmp();
        let me = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let base = DirFd::open(d.path()).unwrap();
        let a = base.create_subdir("a", 0o750, me, gid).unwrap();
        let md = std::fs::metadata(d.path().join("a")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o750);
        assert!(matches!(
            base.create_subdir("a", 0o700, me, gid),
            Err(JailFsError::Exists(_))
        ));
        assert!(base.ensure_subdir("a", 0o700, me, gid).is_ok());
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("link")).unwrap();
        assert!(base.open_subdir("link").is_err());
        assert!(base.ensure_subdir("link", 0o700, me, gid).is_err());
        let mut src = File::open("/etc/hostname").unwrap();
        a.copy_in("f", &mut src, 0o400, me, gid).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("a/f")).unwrap(),
            std::fs::read("/etc/hostname").unwrap()
        );
        let mut src = File::open("/etc/hostname").unwrap();
        assert!(a.copy_in("f", &mut src, 0o400, me, gid).is_err());
        assert_eq!(base.names().unwrap().len(), 2);
        assert!(base.stat_at("nope").unwrap().is_none());
        let _l = base.lock().unwrap();
        assert_eq!(
            file_name(Path::new("/usr/bin/firecracker")).as_deref(),
            Some("firecracker")
        );
    }
}
