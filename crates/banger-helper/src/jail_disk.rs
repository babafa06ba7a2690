//! A jailed VM's root disk as a file below StateDir (the copy/reflink
//! driver): opened and checked on the fd, handed to the jail uid, bound
//! onto the chroot's `/rootfs`, and given back to the owner on cleanup.

use crate::gates::Refused;
use crate::helper::Helper;
use banger_proto::helper as m;
use banger_sys::beneath::{self, Access, BeneathError, Owners};
use banger_sys::jail::{DirFd, JailFsError};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Beside the chroot, in `<jailer_base>/<exec name>/<vm_id>/` (root 0700,
/// out of the jail's reach): which file was handed to the jail uid, and
/// the owner and mode to give back.
pub const GRANT_RECORD: &str = "rootfs.grant";

/// Why a disk file could not be granted or given back.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A refusal of the file the daemon named (a gate refusal).
    #[error("{0}")]
    Refused(Refused),
    #[error(transparent)]
    Fs(#[from] JailFsError),
    #[error("open {0} beneath StateDir")]
    Source(PathBuf, #[source] BeneathError),
    #[error("stat {0}")]
    Stat(PathBuf, #[source] std::io::Error),
    #[error("hand {0} to uid {1}")]
    Chown(PathBuf, u32, #[source] std::io::Error),
    #[error("read the grant record {0}")]
    ReadRecord(PathBuf, #[source] std::io::Error),
    #[error("the grant record {0} is not a root-owned file in the expected form")]
    BadRecord(PathBuf),
}

/// What a disk file was before it was handed to a jail uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub dev: u64,
    pub ino: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub jail_uid: u32,
    /// The file, below StateDir.
    pub rel: PathBuf,
}

impl Grant {
    fn render(&self) -> String {
        format!(
            "{} {} {} {} {:o} {} {}\n",
            self.dev,
            self.ino,
            self.uid,
            self.gid,
            self.mode,
            self.jail_uid,
            self.rel.display()
        )
    }

    fn parse(text: &str) -> Option<Grant> {
        let line = text.strip_suffix('\n')?;
        let mut it = line.splitn(7, ' ');
        let g = Grant {
            dev: it.next()?.parse().ok()?,
            ino: it.next()?.parse().ok()?,
            uid: it.next()?.parse().ok()?,
            gid: it.next()?.parse().ok()?,
            mode: u32::from_str_radix(it.next()?, 8).ok()?,
            jail_uid: it.next()?.parse().ok()?,
            rel: PathBuf::from(it.next()?),
        };
        let rel_ok = g.rel.is_relative()
            && g.rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        rel_ok.then_some(g)
    }
}

/// A disk file handed to a jail uid: the fd it was checked and changed
/// through, and what it was.
#[derive(Debug)]
pub struct Granted {
    pub file: File,
    pub grant: Grant,
}

fn refused(msg: &str) -> DiskError {
    DiskError::Refused(Refused::new(msg))
}

/// Open the daemon-named disk file beneath StateDir for reading and
/// writing, resolved with no symlink, no `..`, no mount crossed, opened
/// `O_NONBLOCK`, and checked on the fd: a regular file with one link,
/// owned by the owner (a file a jail holds is the jail uid's: refused).
/// Changes nothing.
pub fn open_disk(h: &Helper, path: &Path) -> Result<(File, PathBuf), DiskError> {
    let rel = path
        .strip_prefix(&h.cfg.state_dir)
        .map_err(|_| refused("jail.root_disk_file must be below StateDir"))?;
    let f = beneath::open_checked(
        &h.cfg.state_dir,
        rel,
        Access::ReadWrite,
        Owners::Owner(h.cfg.owner_uid),
    )
    .map_err(|e| match e {
        BeneathError::NotRegular(_) => refused("jail.root_disk_file must be a regular file"),
        BeneathError::HardLinked(..) => {
            refused("jail.root_disk_file must have exactly one hard link")
        }
        BeneathError::ForeignOwner(..) => refused("jail.root_disk_file must be owned by the owner"),
        BeneathError::Open(_, _, ref io)
            if matches!(
                io.raw_os_error(),
                Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR)
            ) =>
        {
            refused("jail.root_disk_file must be reached beneath StateDir with no symlink or mount")
        }
        other => DiskError::Source(path.into(), other),
    })?;
    Ok((f, rel.to_path_buf()))
}

/// Hand `disk` to the jail: record what it was in `vm_dir` ([`GRANT_RECORD`],
/// root 0600), create the empty `/rootfs` in `root` (the chroot, jail uid
/// 0600), `fchown`/`fchmod` the disk to the jail uid 0600 through its fd,
/// and bind exactly that file onto `/rootfs` (through `/proc/self/fd`).
/// On failure the disk is given back; the files made stay for the
/// caller's undo (it removes `vm_dir`).
pub fn grant(
    vm_dir: &DirFd,
    root: &DirFd,
    disk: File,
    rel: PathBuf,
    jail_uid: u32,
) -> Result<Granted, DiskError> {
    let name = &m::JAILED_ROOT_DISK[1..];
    let md = disk
        .metadata()
        .map_err(|e| DiskError::Stat(rel.clone(), e))?;
    let grant = Grant {
        dev: md.dev(),
        ino: md.ino(),
        uid: md.uid(),
        gid: md.gid(),
        mode: md.mode() & 0o777,
        jail_uid,
        rel,
    };
    vm_dir.write_new(GRANT_RECORD, grant.render().as_bytes(), 0o600, 0, 0)?;
    let target = root.write_new(name, b"", 0o600, jail_uid, jail_uid)?;
    let granted = Granted { file: disk, grant };
    let done =
        set_owner(&granted.file, &granted.grant.rel, jail_uid, jail_uid, 0o600).and_then(|()| {
            banger_sys::jail::bind_file(
                &granted.file,
                &granted.grant.rel,
                &target,
                &root.path().join(name),
            )
            .map_err(DiskError::from)
        });
    if let Err(e) = done {
        let _ = give_back(&granted.file, &granted.grant);
        return Err(e);
    }
    Ok(granted)
}

fn set_owner(f: &File, what: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), DiskError> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::fchown(f, Some(uid), Some(gid))
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(mode)))
        .map_err(|e| DiskError::Chown(what.into(), uid, e))
}

/// Give the granted file behind `f` back (owner, group and mode of the
/// record), if it is that very file (device and inode) and still the jail
/// uid's. Returns whether it did.
pub fn give_back(f: &File, g: &Grant) -> Result<bool, DiskError> {
    let md = f
        .metadata()
        .map_err(|e| DiskError::Stat(g.rel.clone(), e))?;
    if !md.is_file() || md.dev() != g.dev || md.ino() != g.ino || md.uid() != g.jail_uid {
        return Ok(false);
    }
    set_owner(f, &g.rel, g.uid, g.gid, g.mode)?;
    Ok(true)
}

/// Read `vm_dir`'s grant record: `None` if it has none.
fn read_record(vm_dir: &DirFd) -> Result<Option<Grant>, DiskError> {
    let path = vm_dir.path().join(GRANT_RECORD);
    let Some(mut f) = vm_dir.open_file(Path::new(GRANT_RECORD), false)? else {
        return Ok(None);
    };
    let md = f.metadata().map_err(|e| DiskError::Stat(path.clone(), e))?;
    if !md.is_file() || md.uid() != 0 || md.nlink() != 1 || md.len() > 8192 {
        return Err(DiskError::BadRecord(path));
    }
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|e| DiskError::ReadRecord(path.clone(), e))?;
    Grant::parse(&text)
        .map(Some)
        .ok_or(DiskError::BadRecord(path))
}

/// Before `priv.cleanup_jailer_chroot` unmounts anything: give the disk
/// file of the jail at `vm_dir` (`<jailer_base>/<exec>/<vm_id>`) back to
/// the owner, found by fd — through the chroot's `/rootfs` bind (opened
/// beneath the jailer base), or, when that is gone (a reboot dropped the
/// mount), the recorded path opened beneath StateDir — and changed only if
/// it is the recorded file (device and inode) still owned by the jail
/// uid. Returns whether a file was given back; a jail without a record,
/// or whose file is gone, has nothing to give back.
pub fn restore(h: &Helper, vm_dir: &Path) -> Result<bool, DiskError> {
    let Ok(rel) = banger_sys::fsops::rel_below(&h.cfg.jailer_base, vm_dir) else {
        return Ok(false);
    };
    let base = DirFd::open(&h.cfg.jailer_base)?;
    let vm = match base.open_subdir(&rel.display().to_string()) {
        Ok(d) => d,
        Err(JailFsError::Open(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(false)
        }
        Err(e) => return Err(e.into()),
    };
    let Some(g) = read_record(&vm)? else {
        return Ok(false);
    };
    let bound = Path::new("root").join(&m::JAILED_ROOT_DISK[1..]);
    if let Some(f) = vm.open_file(&bound, true)? {
        if give_back(&f, &g)? {
            return Ok(true);
        }
    }
    let state = DirFd::open(&h.cfg.state_dir)?;
    match state.open_file(&g.rel, false) {
        Ok(Some(f)) => {
            let nlink = f.metadata().map(|m| m.nlink()).unwrap_or(0);
            if nlink == 1 {
                return give_back(&f, &g);
            }
            Ok(false)
        }
        Ok(None) => Ok(false),
        // A path the owner broke (a symlink, a mount): that is not the file.
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_junk() {
        let g = Grant {
            dev: 2049,
            ino: 77,
            uid: 1000,
            gid: 1001,
            mode: 0o644,
            jail_uid: 900_000,
            rel: "vms/a b/rootfs.ext4".into(),
        };
        assert_eq!(Grant::parse(&g.render()), Some(g.clone()));
        let mut bad = g.clone();
        bad.rel = "vms/../../etc/shadow".into();
        assert_eq!(Grant::parse(&bad.render()), None);
        bad.rel = "/etc/shadow".into();
        assert_eq!(Grant::parse(&bad.render()), None);
        for junk in ["", "1 2 3\n", "1 2 3 4 999 5 x\n", "1 2 3 4 644 5 x"] {
            assert_eq!(Grant::parse(junk), None, "{junk:?}");
        }
    }
}
