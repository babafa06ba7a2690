//! Jailer chroot teardown: unmount every mount at or below the chroot,
//! deepest first, prove nothing is left mounted, then remove the tree.

use crate::fsops::{self, FsError};
use crate::mountinfo::{self, MountInfo, MountInfoError};
use crate::runner::Cmd;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::UnmountFlags;
use std::io;
use std::path::{Path, PathBuf};

/// A failed teardown step, naming the path it was about.
#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    #[error("read {0}")]
    ReadMountInfo(PathBuf, #[source] io::Error),
    #[error("parse {0}")]
    ParseMountInfo(PathBuf, #[source] MountInfoError),
    #[error("open the parent of mount point {0}")]
    OpenMountParent(PathBuf, #[source] FsError),
    #[error("isolate the unmount thread's working directory")]
    Unshare(#[source] io::Error),
    #[error("enter the parent of mount point {0}")]
    EnterMountParent(PathBuf, #[source] io::Error),
    #[error("unmount {0}")]
    Unmount(PathBuf, #[source] io::Error),
    #[error("still mounted below the chroot after unmounting: {}", .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    StillMounted(Vec<PathBuf>),
    #[error("remove the chroot")]
    Remove(#[source] FsError),
    #[error("the unmount thread panicked")]
    Thread,
}

/// What a teardown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Mount points unmounted, in order (deepest first).
    pub unmounted: Vec<PathBuf>,
}

/// Read and parse a mountinfo file (the caller passes
/// `<proc_root>/thread-self/mountinfo`: the calling thread's namespace).
pub fn read_mountinfo(path: &Path) -> Result<Vec<MountInfo>, MountsError> {
    let bytes =
        std::fs::read(path).map_err(|e| MountsError::ReadMountInfo(path.to_path_buf(), e))?;
    mountinfo::parse_all(&String::from_utf8_lossy(&bytes))
        .map_err(|e| MountsError::ParseMountInfo(path.to_path_buf(), e))
}

/// Tear down the jail `chroot` (strictly below the trusted `base`):
///
/// 1. every mount at or below `chroot` from `mountinfo_path`, deepest first,
///    is detached with `umount2(leaf, MNT_DETACH|UMOUNT_NOFOLLOW)` issued
///    from inside its parent directory, which was opened beneath `base`
///    with no symlink in any component (`openat2`) and entered with
///    `fchdir` on a thread whose working directory is private
///    (`unshare(CLONE_FS)`): a directory swapped for a symlink cannot
///    redirect the unmount, and a symlink leaf is refused by the kernel;
/// 2. mountinfo is read again: anything still mounted at or below the chroot
///    refuses the removal;
/// 3. the tree is removed by fd, never following a symlink nor crossing a
///    mount ([`fsops::remove_tree_beneath`]).
pub fn cleanup_chroot(
    base: &Path,
    chroot: &Path,
    mountinfo_path: &Path,
) -> Result<CleanupReport, MountsError> {
    let mounts = read_mountinfo(mountinfo_path)?;
    let targets: Vec<PathBuf> = mountinfo::at_or_below(&mounts, chroot)
        .into_iter()
        .map(|m| m.mount_point.clone())
        .collect();
    let mut report = CleanupReport::default();
    if !targets.is_empty() {
        let base = base.to_path_buf();
        report.unmounted = std::thread::scope(|s| {
            s.spawn(|| unmount_all(&base, &targets))
                .join()
                .map_err(|_| MountsError::Thread)
        })??;
    }
    let left: Vec<PathBuf> = mountinfo::at_or_below(&read_mountinfo(mountinfo_path)?, chroot)
        .into_iter()
        .map(|m| m.mount_point.clone())
        .collect();
    if !left.is_empty() {
        return Err(MountsError::StillMounted(left));
    }
    fsops::remove_tree_beneath(base, chroot).map_err(MountsError::Remove)?;
    Ok(report)
}

/// Runs on its own thread: changes that thread's working directory only.
fn unmount_all(base: &Path, targets: &[PathBuf]) -> Result<Vec<PathBuf>, MountsError> {
    rustix::thread::unshare(rustix::thread::UnshareFlags::FS)
        .map_err(|e| MountsError::Unshare(io::Error::from_raw_os_error(e.raw_os_error())))?;
    let anchor = fsops::open_anchor(base)
        .map_err(|e| MountsError::OpenMountParent(base.to_path_buf(), e))?;
    let mut done = Vec::new();
    for target in targets {
        let rel = fsops::rel_below(base, target)
            .map_err(|e| MountsError::OpenMountParent(target.clone(), e))?;
        let leaf = rel.file_name().expect("rel_below has a last component");
        let parent = fsops::openat_beneath(
            &anchor,
            rel.parent().unwrap_or(Path::new("")),
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
            ResolveFlags::empty(),
        )
        .map_err(|e| {
            MountsError::OpenMountParent(target.clone(), FsError::Open(target.clone(), e))
        })?;
        rustix::process::fchdir(&parent).map_err(|e| {
            MountsError::EnterMountParent(
                target.clone(),
                io::Error::from_raw_os_error(e.raw_os_error()),
            )
        })?;
        unmount_detach_nofollow(Path::new(leaf))
            .map_err(|e| MountsError::Unmount(target.clone(), e))?;
        done.push(target.clone());
    }
    Ok(done)
}

/// `umount2(target, MNT_DETACH|UMOUNT_NOFOLLOW)`.
pub fn unmount_detach_nofollow(target: &Path) -> io::Result<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW)
        .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))
}

/// Development-mode fallback (run by the daemon through sudo): one
/// `sudo -n umount --lazy -- <mount point>` per mount at or below
/// `chroot`, deepest first.
pub fn sudo_umount_lazy_cmds(mounts: &[MountInfo], chroot: &Path) -> Vec<Cmd> {
    mountinfo::at_or_below(mounts, chroot)
        .into_iter()
        .map(|m| {
            Cmd::new("sudo")
                .args(["-n", "umount", "--lazy", "--"])
                .arg(&m.mount_point)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_fallback_is_lazy_and_deepest_first() {
        let all = mountinfo::parse_all(
            "\
1 0 0:1 / / rw - ext4 /dev/vda rw
10 1 0:2 / /srv/jailer/firecracker/a/root/dev rw - tmpfs t rw
11 1 0:3 / /srv/jailer/firecracker/a/root/dev/net/x rw - tmpfs t rw
12 1 0:4 / /srv/jailer/firecracker/a/root rw - tmpfs t rw
13 1 0:5 / /srv/jailer/firecracker/ab/root/dev rw - tmpfs t rw
",
        )
        .unwrap();
        let cmds = sudo_umount_lazy_cmds(&all, Path::new("/srv/jailer/firecracker/a/root"));
        let argv: Vec<Vec<String>> = cmds.iter().map(Cmd::argv).collect();
        assert_eq!(
            argv,
            vec![
                vec![
                    "sudo",
                    "-n",
                    "umount",
                    "--lazy",
                    "--",
                    "/srv/jailer/firecracker/a/root/dev/net/x"
                ],
                vec![
                    "sudo",
                    "-n",
                    "umount",
                    "--lazy",
                    "--",
                    "/srv/jailer/firecracker/a/root/dev"
                ],
                vec![
                    "sudo",
                    "-n",
                    "umount",
                    "--lazy",
                    "--",
                    "/srv/jailer/firecracker/a/root"
                ],
            ]
        );
    }

    #[test]
    fn nothing_mounted_gives_no_commands() {
        let all = mountinfo::parse_all("1 0 0:1 / / rw - ext4 /dev/vda rw\n").unwrap();
        assert!(sudo_umount_lazy_cmds(&all, Path::new("/srv/jailer/x")).is_empty());
    }
}
