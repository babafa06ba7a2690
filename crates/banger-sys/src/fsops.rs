//! Symlink-proof file operations: open beneath a trusted directory with no
//! symlink anywhere, chown/chmod through the opened fd, fd-relative tree removal.

use crate::runner::Cmd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Mode `ensure_socket_access` gives a Firecracker socket: owner read/write
/// only. The owner daemon is the only client; group/world get nothing.
pub const SOCKET_MODE: u32 = 0o600;

/// Deepest directory nesting `remove_tree_beneath` walks (a caller-built
/// tree cannot exhaust the helper's stack).
pub const MAX_REMOVE_DEPTH: usize = 128;

/// A failed file operation, naming the path it was about.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("open {0} (no symlink allowed in the path)")]
    Open(PathBuf, #[source] io::Error),
    #[error("stat {0}")]
    Stat(PathBuf, #[source] io::Error),
    #[error("{0} is not a {1}")]
    WrongType(PathBuf, &'static str),
    #[error("change owner of {0}")]
    ChangeFileOwner(PathBuf, #[source] io::Error),
    #[error("change mode of {0}")]
    ChangeFileMode(PathBuf, #[source] io::Error),
    #[error("{0} must be a path below {1}")]
    NotBeneath(PathBuf, PathBuf),
    #[error("read directory {0}")]
    ReadDir(PathBuf, #[source] io::Error),
    #[error("remove {0}")]
    Remove(PathBuf, #[source] io::Error),
    #[error("{0} is nested deeper than {MAX_REMOVE_DEPTH} directories")]
    TooDeep(PathBuf),
    #[error("{0} has {1} hard links; refusing to write to it")]
    HardLinked(PathBuf, u64),
    #[error("{0} is owned by uid {1}; refusing to write to it")]
    ForeignOwner(PathBuf, u32),
    #[error("clear O_NONBLOCK on {0}")]
    Flags(PathBuf, #[source] io::Error),
}

fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

fn resolve_strict() -> ResolveFlags {
    ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::BENEATH
}

/// `openat2(dirfd, rel, flags, RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS)`:
/// the one place a caller-influenced path is resolved. Any symlink in any
/// component, `..` escaping `dirfd`, or an absolute `rel` fails.
pub fn openat_beneath(
    dirfd: impl AsFd,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
    extra: ResolveFlags,
) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        dirfd,
        rel,
        flags | OFlags::CLOEXEC,
        mode,
        resolve_strict() | extra,
    )
    .map_err(io_err)
}

/// Open a trusted directory (from install metadata) as an `O_PATH` anchor,
/// refusing a symlink anywhere in its path.
pub fn open_anchor(dir: &Path) -> Result<OwnedFd, FsError> {
    rustix::fs::openat2(
        rustix::fs::CWD,
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| FsError::Open(dir.to_path_buf(), io_err(e)))
}

/// Open `path` with `O_PATH|O_NOFOLLOW` and `RESOLVE_NO_SYMLINKS` (a symlink
/// at the leaf or in any directory fails) and fstat it through that fd.
pub fn open_path_no_symlinks(path: &Path) -> Result<(OwnedFd, Stat), FsError> {
    let fd = rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| FsError::Open(path.to_path_buf(), io_err(e)))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| FsError::Stat(path.to_path_buf(), io_err(e)))?;
    Ok((fd, st))
}

/// `path` relative to `base`, refusing anything not strictly below it.
pub fn rel_below(base: &Path, path: &Path) -> Result<PathBuf, FsError> {
    match path.strip_prefix(base) {
        Ok(r)
            if r.components().all(|c| matches!(c, Component::Normal(_)))
                && r.components().next().is_some() =>
        {
            Ok(r.to_path_buf())
        }
        _ => Err(FsError::NotBeneath(path.to_path_buf(), base.to_path_buf())),
    }
}

/// Hand the socket at `path` (below `root`) to `uid:gid` with `mode`:
/// `openat2(O_PATH|O_NOFOLLOW)` beneath `root` with no symlink in any
/// component and no mount crossed, fstat through the fd (must be a socket
/// with one link, owned by root or `uid`), then
/// `fchownat(fd, "", AT_EMPTY_PATH)` and chmod of `<proc_root>/self/fd/N`.
/// A chown failure is returned as is and chmod is not tried.
pub fn chown_chmod_socket(
    root: &Path,
    path: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
    proc_root: &Path,
) -> Result<(), FsError> {
    chown_chmod_socket_from(root, path, uid, gid, mode, proc_root, None)
}

/// [`chown_chmod_socket`], also accepting a socket owned by one uid of
/// `also` (`(first, count)`): a jailed Firecracker's socket belongs to its
/// jail uid until it is handed to `uid`.
pub fn chown_chmod_socket_from(
    root: &Path,
    path: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
    proc_root: &Path,
    also: Option<(u32, u32)>,
) -> Result<(), FsError> {
    let rel = rel_below(root, path)?;
    let anchor = open_anchor(root)?;
    let fd = openat_beneath(
        &anchor,
        &rel,
        OFlags::PATH | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_XDEV,
    )
    .map_err(|e| FsError::Open(path.to_path_buf(), e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| FsError::Stat(path.to_path_buf(), io_err(e)))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Err(FsError::WrongType(path.to_path_buf(), "socket"));
    }
    if st.st_nlink != 1 {
        return Err(FsError::HardLinked(path.to_path_buf(), st.st_nlink));
    }
    let in_also = also.is_some_and(|(first, n)| st.st_uid >= first && st.st_uid - first < n);
    if st.st_uid != 0 && st.st_uid != uid && !in_also {
        return Err(FsError::ForeignOwner(path.to_path_buf(), st.st_uid));
    }
    fchown_empty_path(&fd, uid, gid)
        .map_err(|e| FsError::ChangeFileOwner(path.to_path_buf(), e))?;
    chmod_via_proc_fd(&fd, mode, proc_root)
        .map_err(|e| FsError::ChangeFileMode(path.to_path_buf(), e))
}

/// Remove the socket `path` (a direct or deeper child of `root`) through
/// its parent directory fd, opened beneath `root` with no symlink and no
/// mount crossed: only a socket is unlinked (never a symlink's target or
/// another file type). Gone already is fine.
pub fn unlink_socket_beneath(root: &Path, path: &Path) -> Result<(), FsError> {
    let rel = rel_below(root, path)?;
    let anchor = open_anchor(root)?;
    let parent = openat_beneath(
        &anchor,
        rel.parent().unwrap_or(Path::new("")),
        OFlags::PATH | OFlags::DIRECTORY,
        Mode::empty(),
        ResolveFlags::NO_XDEV,
    )
    .map_err(|e| FsError::Open(path.to_path_buf(), e))?;
    let leaf = rel.file_name().expect("rel_below has a last component");
    let st = match rustix::fs::statat(&parent, leaf, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(FsError::Stat(path.to_path_buf(), io_err(e))),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Err(FsError::WrongType(path.to_path_buf(), "socket"));
    }
    rustix::fs::unlinkat(&parent, leaf, AtFlags::empty())
        .map_err(|e| FsError::Remove(path.to_path_buf(), io_err(e)))
}

/// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH)`: changes exactly the inode
/// `fd` refers to (works on `O_PATH` fds).
pub fn fchown_empty_path(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    if uid == u32::MAX || gid == u32::MAX {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: `from_raw` is unsafe only because -1 means "unchanged"; both
    // values were checked to be other than u32::MAX just above.
    let (u, g) = unsafe {
        (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        )
    };
    rustix::fs::chownat(fd, "", Some(u), Some(g), AtFlags::EMPTY_PATH).map_err(io_err)
}

/// chmod through `<proc_root>/self/fd/N`: the magic link names the inode
/// held by `fd`, so a path swapped after the open is never touched.
pub fn chmod_via_proc_fd(fd: impl AsFd, mode: u32, proc_root: &Path) -> io::Result<()> {
    let link = proc_root
        .join("self/fd")
        .join(fd.as_fd().as_raw_fd().to_string());
    rustix::fs::chmod(&link, Mode::from_raw_mode(mode)).map_err(io_err)
}

/// Open (creating 0600 if needed) a log file at `path` below `root` for
/// appending, with no symlink in any component and no mount crossed,
/// `O_NONBLOCK` (a FIFO planted there fails or is refused instead of
/// blocking). An existing file must be a regular file with one link, owned
/// by root or `owner_uid`; the file is then handed to `owner_uid:owner_gid`
/// so the owner daemon can read it, and `O_NONBLOCK` is cleared.
pub fn open_log_beneath(
    root: &Path,
    path: &Path,
    owner_uid: u32,
    owner_gid: u32,
) -> Result<std::fs::File, FsError> {
    let rel = rel_below(root, path)?;
    let anchor = open_anchor(root)?;
    let fd = openat_beneath(
        &anchor,
        &rel,
        OFlags::WRONLY
            | OFlags::APPEND
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NOCTTY
            | OFlags::NONBLOCK,
        Mode::from_raw_mode(0o600),
        ResolveFlags::NO_XDEV,
    )
    .map_err(|e| FsError::Open(path.to_path_buf(), e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| FsError::Stat(path.to_path_buf(), io_err(e)))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(FsError::WrongType(path.to_path_buf(), "regular file"));
    }
    if st.st_nlink != 1 {
        return Err(FsError::HardLinked(path.to_path_buf(), st.st_nlink));
    }
    if st.st_uid != 0 && st.st_uid != owner_uid {
        return Err(FsError::ForeignOwner(path.to_path_buf(), st.st_uid));
    }
    fchown_empty_path(&fd, owner_uid, owner_gid)
        .map_err(|e| FsError::ChangeFileOwner(path.to_path_buf(), e))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600))
        .map_err(|e| FsError::ChangeFileMode(path.to_path_buf(), io_err(e)))?;
    let fl =
        rustix::fs::fcntl_getfl(&fd).map_err(|e| FsError::Flags(path.to_path_buf(), io_err(e)))?;
    rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK)
        .map_err(|e| FsError::Flags(path.to_path_buf(), io_err(e)))?;
    Ok(std::fs::File::from(fd))
}

/// Remove the directory `path` (below `base`) and everything in it, walking
/// by fd: no symlink is ever followed (`RESOLVE_NO_SYMLINKS`), no mount is
/// ever crossed (`RESOLVE_NO_XDEV`: a directory that is a mount point makes
/// the walk fail), and nesting is capped at [`MAX_REMOVE_DEPTH`].
/// A path that does not exist is already removed.
pub fn remove_tree_beneath(base: &Path, path: &Path) -> Result<(), FsError> {
    let rel = rel_below(base, path)?;
    let anchor = open_anchor(base)?;
    let parent_rel = rel.parent().unwrap_or(Path::new(""));
    let leaf = rel.file_name().expect("rel_below has a last component");
    let parent = match openat_beneath(
        &anchor,
        parent_rel,
        OFlags::PATH | OFlags::DIRECTORY,
        Mode::empty(),
        ResolveFlags::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::Open(path.to_path_buf(), e)),
    };
    let dir = match openat_beneath(
        &parent,
        Path::new(leaf),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_XDEV,
    ) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::Open(path.to_path_buf(), e)),
    };
    remove_contents(&dir, path, 0)?;
    drop(dir);
    rustix::fs::unlinkat(&parent, leaf, AtFlags::REMOVEDIR)
        .map_err(|e| FsError::Remove(path.to_path_buf(), io_err(e)))
}

fn remove_contents(dir: &OwnedFd, at: &Path, depth: usize) -> Result<(), FsError> {
    if depth >= MAX_REMOVE_DEPTH {
        return Err(FsError::TooDeep(at.to_path_buf()));
    }
    let mut names = Vec::new();
    let iter = rustix::fs::Dir::read_from(dir)
        .map_err(|e| FsError::ReadDir(at.to_path_buf(), io_err(e)))?;
    for ent in iter {
        let ent = ent.map_err(|e| FsError::ReadDir(at.to_path_buf(), io_err(e)))?;
        let name = ent.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    for name in names {
        let child = at.join(OsStr::from_bytes(name.as_bytes()));
        let st = rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FsError::Stat(child.clone(), io_err(e)))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = openat_beneath(
                dir,
                Path::new(OsStr::from_bytes(name.as_bytes())),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                Mode::empty(),
                ResolveFlags::NO_XDEV,
            )
            .map_err(|e| FsError::Open(child.clone(), e))?;
            remove_contents(&sub, &child, depth + 1)?;
            drop(sub);
            rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::REMOVEDIR)
                .map_err(|e| FsError::Remove(child, io_err(e)))?;
        } else {
            rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty())
                .map_err(|e| FsError::Remove(child, io_err(e)))?;
        }
    }
    Ok(())
}

/// Development-mode fallback of `ensure_socket_access`, run by the daemon
/// (not the helper): `sudo -n chown -h` never follows a symlink at the leaf;
/// the chmod then runs *without* sudo, as the owner, who now owns the
/// socket — so a leaf swapped for a symlink between the two commands can
/// only ever reach a file the owner already owns (GNU `chmod` follows
/// symlinks named on its command line). `--` ends option parsing.
pub fn sudo_socket_access_cmds(path: &Path, uid: u32, gid: u32, mode: u32) -> Vec<Cmd> {
    vec![
        Cmd::new("sudo")
            .args(["-n", "chown", "-h"])
            .arg(format!("{uid}:{gid}"))
            .arg("--")
            .arg(path),
        Cmd::new("chmod")
            .arg(format!("{mode:o}"))
            .arg("--")
            .arg(path),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{HostRunner, Runner};
    use std::os::unix::fs::MetadataExt;

    use banger_testkit::tmp;

    #[test]
    fn sudo_fallback_chowns_with_h_and_chmods_unprivileged() {
        let cmds = sudo_socket_access_cmds(Path::new("/run/banger/fc.sock"), 1000, 1001, 0o600);
        let argv: Vec<Vec<String>> = cmds.iter().map(Cmd::argv).collect();
        assert_eq!(
            argv,
            vec![
                vec![
                    "sudo",
                    "-n",
                    "chown",
                    "-h",
                    "1000:1001",
                    "--",
                    "/run/banger/fc.sock"
                ],
                vec!["chmod", "600", "--", "/run/banger/fc.sock"],
            ]
        );
    }

    #[test]
    fn root_a_socket_of_the_extra_range_is_handed_over_and_others_refused() {
        if !banger_testkit::require_root(
            "root_a_socket_of_the_extra_range_is_handed_over_and_others_refused",
        ) {
            return;
        }
        let d = tmp();
        let (owner, jail) = (4_000_123, 4_100_005);
        for (name, uid) in [
            ("jail.sock", jail),
            ("below.sock", 4_099_999),
            ("above.sock", 4_100_010),
        ] {
            // The socket file outlives its listener.
            drop(std::os::unix::net::UnixListener::bind(d.path().join(name)).unwrap());
            std::os::unix::fs::lchown(d.path().join(name), Some(uid), Some(uid)).unwrap();
        }
        let range = Some((4_100_000, 10));
        let proc = Path::new("/proc");
        let hand = |n: &str| {
            chown_chmod_socket_from(
                d.path(),
                &d.path().join(n),
                owner,
                owner,
                0o600,
                proc,
                range,
            )
        };
        hand("jail.sock").unwrap();
        let md = std::fs::symlink_metadata(d.path().join("jail.sock")).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o777), (owner, 0o600));
        for n in ["below.sock", "above.sock"] {
            assert!(matches!(hand(n), Err(FsError::ForeignOwner(..))), "{n}");
            assert_ne!(
                std::fs::symlink_metadata(d.path().join(n)).unwrap().uid(),
                owner
            );
        }
        // Without the range, a jail uid's socket is foreign too.
        std::os::unix::fs::lchown(d.path().join("jail.sock"), Some(jail), Some(jail)).unwrap();
        assert!(matches!(
            chown_chmod_socket(
                d.path(),
                &d.path().join("jail.sock"),
                owner,
                owner,
                0o600,
                proc
            ),
            Err(FsError::ForeignOwner(..))
        ));
    }

    #[test]
    fn root_chown_h_never_follows_a_symlink() {
        if !banger_testkit::require_root("root_chown_h_never_follows_a_symlink") {
            return;
        }
        let d = tmp();
        let canary = d.path().join("canary");
        std::fs::write(&canary, b"x").unwrap();
        let link = d.path().join("fc.sock");
        std::os::unix::fs::symlink(&canary, &link).unwrap();
        let chown = &sudo_socket_access_cmds(&link, 4242, 4243, 0o600)[0];
        // We are root already: run the same argv without the `sudo -n` prefix.
        let direct = Cmd::new(&chown.args[1]).args(chown.args[2..].iter().cloned());
        HostRunner.run(&direct).unwrap();
        let c = std::fs::metadata(&canary).unwrap();
        assert_eq!((c.uid(), c.gid()), (0, 0), "the symlink target was chowned");
        let l = std::fs::symlink_metadata(&link).unwrap();
        assert_eq!((l.uid(), l.gid()), (4242, 4243));
    }

    #[test]
    fn unlink_socket_beneath_removes_only_a_socket() {
        let d = tmp();
        let root = d.path();
        let sock = root.join("helper.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        unlink_socket_beneath(root, &sock).unwrap();
        assert!(!sock.exists());
        unlink_socket_beneath(root, &sock).unwrap();
        std::fs::write(root.join("keep"), b"x").unwrap();
        std::os::unix::fs::symlink(root.join("keep"), &sock).unwrap();
        assert!(matches!(
            unlink_socket_beneath(root, &sock),
            Err(FsError::WrongType(..))
        ));
        assert!(root.join("keep").exists() && sock.symlink_metadata().is_ok());
    }

    #[test]
    fn root_log_file_refuses_hard_links_and_foreign_owners() {
        if !banger_testkit::require_root("root_log_file_refuses_hard_links_and_foreign_owners") {
            return;
        }
        let d = tmp();
        let root = d.path();
        let f = open_log_beneath(root, &root.join("vm.log"), 4242, 4243).unwrap();
        drop(f);
        let md = std::fs::metadata(root.join("vm.log")).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (4242, 4243, 0o600)
        );
        // Reopening the owner's own log is fine.
        open_log_beneath(root, &root.join("vm.log"), 4242, 4243).unwrap();

        std::fs::write(root.join("secret"), b"s").unwrap();
        let before = std::fs::metadata(root.join("secret")).unwrap();
        std::fs::hard_link(root.join("secret"), root.join("linked.log")).unwrap();
        assert!(matches!(
            open_log_beneath(root, &root.join("linked.log"), 4242, 4243),
            Err(FsError::HardLinked(_, 2))
        ));
        std::fs::write(root.join("other.log"), b"").unwrap();
        std::os::unix::fs::chown(root.join("other.log"), Some(7), Some(7)).unwrap();
        assert!(matches!(
            open_log_beneath(root, &root.join("other.log"), 4242, 4243),
            Err(FsError::ForeignOwner(_, 7))
        ));
        std::os::unix::fs::symlink(root.join("secret"), root.join("sym.log")).unwrap();
        assert!(matches!(
            open_log_beneath(root, &root.join("sym.log"), 4242, 4243),
            Err(FsError::Open(..))
        ));
        let s = std::fs::metadata(root.join("secret")).unwrap();
        assert_eq!((s.uid(), s.mode()), (0, before.mode()));
        assert!(matches!(
            open_log_beneath(root, Path::new("/etc/passwd"), 4242, 4243),
            Err(FsError::NotBeneath(..))
        ));
    }
}
