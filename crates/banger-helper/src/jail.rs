//! The helper's side of a jailed launch: allocate the VM's jail uid slot,
//! build its chroot (only this VM's kernel, initrd and root disk, owned by
//! the jail uid), and bind `<RuntimeDir>/jails/<vm_id>` onto the chroot's
//! `/api` so the API socket can be handed to the owner below RuntimeDir.

use crate::gates::jail::{RootDisk, Spec};
use crate::gates::Refused;
use crate::helper::Helper;
use crate::jail_disk::{self, DiskError, Granted};
use banger_proto::helper as m;
use banger_proto::install::JailRange;
use banger_sys::beneath::{self, Access};
use banger_sys::jail::{DirFd, JailFsError};
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Directory below RuntimeDir holding one directory per jailed VM (its
/// chroot's `/api` on the host side).
pub const JAILS_DIR: &str = "jails";

/// Why a jail could not be built.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A refusal that depends on host state (still a gate refusal).
    #[error("{0}")]
    Refused(Refused),
    #[error(transparent)]
    Fs(#[from] JailFsError),
    #[error("open {0} beneath StateDir")]
    Source(PathBuf, #[source] beneath::BeneathError),
    #[error("stat {0}")]
    Stat(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Disk(DiskError),
}

impl From<DiskError> for JailError {
    fn from(e: DiskError) -> Self {
        match e {
            DiskError::Refused(r) => JailError::Refused(r),
            other => JailError::Disk(other),
        }
    }
}

/// A built jail, before the jailer runs.
#[derive(Debug)]
pub struct Built {
    pub exec_name: String,
    pub vm_id: String,
    pub uid: u32,
    /// `<jailer_base>/<exec name>/<vm_id>/root`.
    pub chroot: PathBuf,
    /// `<RuntimeDir>/jails/<vm_id>`, bound onto `<chroot>/run`.
    pub run_dir: PathBuf,
    /// A root disk file handed to the jail uid (bound onto `<chroot>/rootfs`).
    pub disk: Option<Granted>,
}

impl Built {
    /// The API socket as the host (and the daemon) sees it.
    pub fn api_socket(&self) -> PathBuf {
        self.run_dir.join("firecracker.socket")
    }
}

fn refused(msg: impl Into<String>) -> JailError {
    JailError::Refused(Refused::new(msg))
}

/// A daemon-named file opened beneath StateDir for reading: a regular file
/// with one link, owned by the owner or root (checked on the fd).
fn open_source(h: &Helper, path: &Path, what: &str) -> Result<File, JailError> {
    let rel = path
        .strip_prefix(&h.cfg.state_dir)
        .map_err(|_| refused(format!("{what} must be below StateDir")))?;
    let f = beneath::open_file(&h.cfg.state_dir, rel, Access::Read)
        .map_err(|e| JailError::Source(path.into(), e))?;
    let md = f.metadata().map_err(|e| JailError::Stat(path.into(), e))?;
    if md.nlink() != 1 {
        return Err(refused(format!("{what} must have exactly one hard link")));
    }
    if md.uid() != 0 && md.uid() != h.cfg.owner_uid {
        return Err(refused(format!(
            "{what} must be owned by the owner or root"
        )));
    }
    Ok(f)
}

/// The root disk, opened or looked up before anything is built.
enum RootSrc {
    /// The device number of the dm device.
    Node(u64),
    /// The disk file (checked on the fd) and its path below StateDir.
    File(File, PathBuf),
}

/// The block device behind `/dev/mapper/<dm_name>` (udev's symlink to
/// `../dm-N` is followed: `/dev` is root's).
fn root_disk_rdev(dm_name: &str) -> Result<u64, JailError> {
    let p = PathBuf::from(format!("/dev/mapper/{dm_name}"));
    let md = std::fs::metadata(&p).map_err(|e| JailError::Stat(p.clone(), e))?;
    if !md.file_type().is_block_device() {
        return Err(refused("jail.root_disk must be a block device"));
    }
    Ok(md.rdev())
}

/// Undo a half-built jail: unmount `<chroot>/api` if bound, unmount
/// `<chroot>/rootfs` and give a granted disk file back (through its fd),
/// remove the VM directory and its RuntimeDir directory.
struct Undo<'a> {
    h: &'a Helper,
    vm_dir: Option<PathBuf>,
    bound: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    disk: Option<(PathBuf, &'a Granted)>,
}

impl Undo<'_> {
    fn disarm(mut self) {
        self.vm_dir = None;
        self.bound = None;
        self.run_dir = None;
        self.disk = None;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if let Some(t) = &self.bound {
            let _ = banger_sys::mounts::unmount_detach_nofollow(t);
        }
        if let Some((t, g)) = &self.disk {
            let _ = banger_sys::mounts::unmount_detach_nofollow(t);
            let _ = jail_disk::give_back(&g.file, &g.grant);
        }
        if let Some(d) = &self.vm_dir {
            let _ = banger_sys::fsops::remove_tree_beneath(&self.h.cfg.jailer_base, d);
        }
        if let Some(d) = &self.run_dir {
            let _ = banger_sys::fsops::remove_tree_beneath(&self.h.cfg.runtime_dir, d);
        }
    }
}

/// The uids of the jails that exist (owners of `<exec dir>/*/root`).
fn used_uids(exec_dir: &DirFd) -> Result<(usize, Vec<u32>), JailError> {
    let names = exec_dir.names()?;
    let mut uids = Vec::new();
    for n in &names {
        if let Ok(d) = exec_dir.open_subdir(n) {
            if let Some(st) = d.stat_at("root")? {
                uids.push(st.st_uid);
            }
        }
    }
    Ok((names.len(), uids))
}

/// Build the jail for `vm_id`: under an exclusive lock of
/// `<jailer_base>/<exec name>`, refuse if this VM's jail exists or
/// `max_launches` jails do; take the lowest free slot of the range (its
/// uid = gid = `base + slot`, never root or the owner: the range is checked
/// against both); create `<vm_id>/` (root 0700) and `root/` (jail uid
/// 0700); copy the kernel and initrd in (jail uid, 0400); `mknod` the root
/// disk (jail uid, 0600), or for a disk file, [`jail_disk::grant`] it;
/// create `<RuntimeDir>/jails/<vm_id>` (jail uid,
/// owner group, 0750) and bind it onto `root/api`.
pub fn build(h: &Helper, range: JailRange, vm_id: &str, spec: &Spec) -> Result<Built, JailError> {
    let (exec_name, _) = crate::launched::exec_dir(&h.cfg)
        .ok_or_else(|| refused("firecracker_bin must have a file name"))?;
    // Sources first: nothing is created for a launch whose files are refused.
    let mut kernel = open_source(h, &spec.kernel, "jail.kernel")?;
    let mut initrd = match &spec.initrd {
        Some(p) => Some(open_source(h, p, "jail.initrd")?),
        None => None,
    };
    let root_src = match &spec.root {
        RootDisk::Dm(name) => RootSrc::Node(root_disk_rdev(name)?),
        RootDisk::File(p) => {
            let (f, rel) = jail_disk::open_disk(h, p)?;
            RootSrc::File(f, rel)
        }
    };

    let base = DirFd::open_trusted(&h.cfg.jailer_base, 0)?;
    let exec_dir = base.ensure_subdir(&exec_name, 0o700, 0, 0)?;
    let _lock = exec_dir.lock()?;
    if exec_dir.stat_at(vm_id)?.is_some() {
        return Err(refused(format!(
            "the jail of {vm_id} already exists: remove it with priv.cleanup_jailer_chroot first"
        )));
    }
    let (count, used) = used_uids(&exec_dir)?;
    if count >= h.cfg.max_launches as usize {
        return Err(refused(format!(
            "at most {} jailed VMs may exist at once (max_launches)",
            h.cfg.max_launches
        )));
    }
    let uid = (0..range.count)
        .filter_map(|s| range.id(s))
        .find(|id| !used.contains(id))
        .ok_or_else(|| refused("every jail uid of the reserved range is in use"))?;
    debug_assert!(uid != 0 && uid != h.cfg.owner_uid && uid != h.cfg.owner_gid);

    // Granted below; declared first so the undo that borrows it drops first.
    let granted: Option<Granted>;
    let mut undo = Undo {
        h,
        vm_dir: None,
        bound: None,
        run_dir: None,
        disk: None,
    };
    let vm_dir = exec_dir.create_subdir(vm_id, 0o700, 0, 0)?;
    undo.vm_dir = Some(vm_dir.path().to_path_buf());
    let root = vm_dir.create_subdir("root", 0o700, uid, uid)?;
    root.copy_in(&m::JAILED_KERNEL[1..], &mut kernel, 0o400, uid, uid)?;
    if let Some(f) = initrd.as_mut() {
        root.copy_in(&m::JAILED_INITRD[1..], f, 0o400, uid, uid)?;
    }
    granted = match root_src {
        RootSrc::Node(rdev) => {
            root.mknod_block(&m::JAILED_ROOT_DISK[1..], rdev, 0o600, uid, uid)?;
            None
        }
        RootSrc::File(file, rel) => Some(jail_disk::grant(&vm_dir, &root, file, rel, uid)?),
    };
    if let Some(g) = &granted {
        undo.disk = Some((root.path().join(&m::JAILED_ROOT_DISK[1..]), g));
    }
    let run = root.create_subdir(&m::JAILED_SOCKET_DIR[1..], 0o700, uid, uid)?;

    let rt = DirFd::open(&h.cfg.runtime_dir)?;
    let jails = rt.ensure_subdir(JAILS_DIR, 0o750, 0, h.cfg.owner_gid)?;
    if jails.stat_at(vm_id)?.is_some() {
        // Left by a jail whose chroot is gone (checked above): only root
        // can create entries here.
        banger_sys::fsops::remove_tree_beneath(&h.cfg.runtime_dir, &jails.path().join(vm_id))
            .map_err(|e| {
                refused(format!(
                    "a stale {}: {e}",
                    jails.path().join(vm_id).display()
                ))
            })?;
    }
    let sock_dir = jails.create_subdir(vm_id, 0o750, uid, h.cfg.owner_gid)?;
    undo.run_dir = Some(sock_dir.path().to_path_buf());
    banger_sys::jail::bind_dir(&sock_dir, &run)?;
    undo.bound = Some(run.path().to_path_buf());
    let built = Built {
        exec_name,
        vm_id: vm_id.to_string(),
        uid,
        chroot: root.path().to_path_buf(),
        run_dir: sock_dir.path().to_path_buf(),
        disk: None,
    };
    undo.disarm();
    Ok(Built {
        disk: granted,
        ..built
    })
}

/// The RuntimeDir side of the jail at `vm_dir`
/// (`<jailer_base>/<exec name>/<vm_id>`): `<RuntimeDir>/jails/<vm_id>`;
/// `None` for a path of another shape.
pub fn run_dir_of(h: &Helper, vm_dir: &Path) -> Option<PathBuf> {
    let (_, exec_dir) = crate::launched::exec_dir(&h.cfg)?;
    let mut c = vm_dir.strip_prefix(&exec_dir).ok()?.components();
    match (c.next(), c.next()) {
        (Some(std::path::Component::Normal(id)), None) => {
            Some(h.cfg.runtime_dir.join(JAILS_DIR).join(id))
        }
        _ => None,
    }
}

/// Undo [`build`] after a failed launch.
pub fn unbuild(h: &Helper, b: &Built) {
    drop(Undo {
        h,
        vm_dir: b.chroot.parent().map(Path::to_path_buf),
        bound: Some(b.chroot.join(&m::JAILED_SOCKET_DIR[1..])),
        run_dir: Some(b.run_dir.clone()),
        disk: b
            .disk
            .as_ref()
            .map(|g| (b.chroot.join(&m::JAILED_ROOT_DISK[1..]), g)),
    });
}
