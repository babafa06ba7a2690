//! Privileged methods: storage — dm snapshots over loop devices, fsck, and
//! ext4 file reads/writes through debugfs (never a host mount).

use crate::error::{gate, RpcError};
use crate::gates::storage as g;
use crate::gates::Refused;
use crate::helper::Helper;
use banger_proto::helper as m;
use banger_sys::beneath::{self, Access, Owners};
use banger_sys::dm::{self, DmError, SnapshotTable};
use banger_sys::ext4::{GuestFile, ImageRef};
use banger_sys::runner::Privilege;
use base64::Engine;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
/// Largest file `priv.read_ext4_file` returns (base64 must fit a 1 MiB message).
pub const READ_MAX_BYTES: usize = 512 << 10;
/// Most files in one `priv.write_ext4_files`.
pub const WRITE_MAX_FILES: usize = 256;

fn failed(e: impl std::error::Error + 'static) -> RpcError {
    RpcError::failed(&e)
}

/// A failed open of a daemon-named file: a refusal (`-32602`, the rule
/// named) when the file broke a rule, otherwise a host failure.
fn open_failed(method: &'static str, what: &str, e: beneath::BeneathError) -> RpcError {
    match g::opened(what, &e) {
        Some(refused) => RpcError::Gate { method, refused },
        None => failed(e),
    }
}

fn state_dir(h: &Helper) -> Result<PathBuf, RpcError> {
    h.cfg.state_dir.canonicalize().map_err(|e| {
        RpcError::Failed(format!(
            "resolve StateDir {}: {e}",
            h.cfg.state_dir.display()
        ))
    })
}

/// Check that `name` exists and carries banger's UUID.
fn banger_dm(h: &Helper, name: &str) -> Result<(), RpcError> {
    let want = dm::uuid_for(name);
    match h.host.dm.info(name).map_err(failed)? {
        Some(u) if u == want => Ok(()),
        Some(u) => Err(failed(DmError::UuidMismatch {
            name: name.into(),
            expected: want,
            found: u,
        })),
        None => Err(failed(DmError::Missing(name.into()))),
    }
}

/// `priv.create_dm_snapshot`: loop (ro) over the base, loop over a sparse
/// COW file, `snapshot` target `fc-rootfs-<id>`; undone on any failure.
pub fn create_dm_snapshot(
    h: &Helper,
    p: m::CreateDmSnapshot,
) -> Result<m::CreateDmSnapshotResult, RpcError> {
    const M: &str = m::CREATE_DM_SNAPSHOT;
    let name = gate(M, g::dm_name(&p.name))?.to_string();
    let base_rel = gate(M, g::state_file(&p.base_image, &h.cfg.state_dir))?;
    let cow_rel = gate(M, g::new_state_file(&p.cow_file, &h.cfg.state_dir))?;
    if base_rel == cow_rel {
        return Err(RpcError::Gate {
            method: M,
            refused: Refused::new("cow_file must differ from base_image"),
        });
    }
    let max_cow = h.cfg.max_cow_bytes;
    if p.cow_size_bytes == 0 || p.cow_size_bytes > max_cow {
        return Err(RpcError::Gate {
            method: M,
            refused: Refused::new(format!(
                "cow_size_bytes must be 1..={max_cow} (max_cow_bytes of install.toml)"
            )),
        });
    }
    let state = state_dir(h)?;
    let owners = Owners::OwnerOrRoot(h.cfg.owner_uid);
    let base = beneath::open_checked(&state, &base_rel, Access::Read, owners)
        .map_err(|e| open_failed(M, "base_image", e))?;
    let base_len = base
        .metadata()
        .map_err(|e| RpcError::Failed(format!("stat base image: {e}")))?
        .len();
    if base_len == 0 || base_len % 512 != 0 {
        return Err(RpcError::Failed(
            "base image size must be a non-zero multiple of 512".into(),
        ));
    }
    let cow_path = state.join(&cow_rel);
    let mut undo = Undo {
        h,
        loops: Vec::new(),
        cow: None,
    };
    let cow = match beneath::create_new(&state, &cow_rel) {
        Ok(c) => {
            let f = c.file.try_clone().map_err(|e| {
                RpcError::Failed(format!("duplicate COW fd {}: {e}", cow_path.display()))
            })?;
            undo.cow = Some(c);
            f.set_len(p.cow_size_bytes).map_err(|e| {
                RpcError::Failed(format!("size COW file {}: {e}", cow_path.display()))
            })?;
            f
        }
        Err(beneath::BeneathError::Open(_, _, e))
            if e.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            beneath::open_checked(&state, &cow_rel, Access::ReadWrite, owners)
                .map_err(|e| open_failed(M, "cow_file", e))?
        }
        Err(e) => return Err(open_failed(M, "cow_file", e)),
    };
    let base_loop = h
        .host
        .loops
        .attach(&base, &state.join(&base_rel), true)
        .map_err(failed)?;
    undo.loops.push(base_loop.clone());
    let cow_loop = h
        .host
        .loops
        .attach(&cow, &cow_path, false)
        .map_err(failed)?;
    undo.loops.push(cow_loop.clone());
    let table = SnapshotTable::new(
        base_len / 512,
        base_loop.to_string_lossy(),
        cow_loop.to_string_lossy(),
    );
    h.host
        .dm
        .create(&name, &dm::uuid_for(&name), &table)
        .map_err(failed)?;
    undo.disarm();
    Ok(m::CreateDmSnapshotResult {
        handles: m::DmHandles {
            dm_device: format!("{}{name}", g::DM_MAPPER_DIR),
            dm_name: name,
            base_loop: base_loop.to_string_lossy().into_owned(),
            cow_loop: cow_loop.to_string_lossy().into_owned(),
        },
    })
}

/// What a half-made snapshot leaves behind, undone on drop. The COW file
/// is removed through the parent directory fd it was created in, and only
/// if that name still is the very file created (dev/ino): a parent swapped
/// for a symlink, or the name swapped for another file, is never followed.
struct Undo<'a> {
    h: &'a Helper,
    loops: Vec<PathBuf>,
    cow: Option<beneath::Created>,
}

impl Undo<'_> {
    fn disarm(&mut self) {
        self.loops.clear();
        self.cow = None;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for l in self.loops.iter().rev() {
            if let Err(e) = self.h.host.loops.detach(l) {
                tracing::warn!(loop_dev = %l.display(), error = %e, "undo: detach failed");
            }
        }
        if let Some(c) = &self.cow {
            match c.unlink() {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    cow = %c.path.display(),
                    "undo: the COW file name no longer names the file created; left alone"
                ),
                Err(e) => {
                    tracing::warn!(cow = %c.path.display(), error = %e, "undo: remove failed")
                }
            }
        }
    }
}

/// `priv.cleanup_dm_snapshot`: remove what the handles name (skipping what
/// is already gone); loops only when backed by a file under StateDir.
pub fn cleanup_dm_snapshot(h: &Helper, p: m::CleanupDmSnapshot) -> Result<m::Empty, RpcError> {
    const M: &str = m::CLEANUP_DM_SNAPSHOT;
    gate(M, g::handles(&p.handles))?;
    let hd = &p.handles;
    let name = if !hd.dm_name.is_empty() {
        Some(hd.dm_name.clone())
    } else if !hd.dm_device.is_empty() {
        Some(gate(M, g::dm_device(&hd.dm_device))?.to_string())
    } else {
        None
    };
    if let Some(name) = name {
        match h.host.dm.remove(&name, &dm::uuid_for(&name)) {
            Ok(()) | Err(DmError::Missing(_)) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    let state = state_dir(h)?;
    for l in [&hd.base_loop, &hd.cow_loop] {
        if l.is_empty() {
            continue;
        }
        let dev = Path::new(l);
        match h.host.loops.backing_file(dev).map_err(failed)? {
            None => {}
            Some(b) if b.starts_with(&state) => h.host.loops.detach(dev).map_err(failed)?,
            Some(b) => {
                return Err(RpcError::Failed(format!(
                    "{l} is backed by {}, not a file under StateDir: not detaching it",
                    b.display()
                )))
            }
        }
    }
    Ok(m::Empty {})
}

/// `priv.remove_dm_snapshot`: only banger's (name and UUID); gone is fine.
pub fn remove_dm_snapshot(h: &Helper, p: m::RemoveDmSnapshot) -> Result<m::Empty, RpcError> {
    let name = gate(m::REMOVE_DM_SNAPSHOT, g::remove_target(&p.target))?;
    match h.host.dm.remove(name, &dm::uuid_for(name)) {
        Ok(()) | Err(DmError::Missing(_)) => Ok(m::Empty {}),
        Err(e) => Err(failed(e)),
    }
}

/// `priv.fsck_snapshot`: `e2fsck -fy` on a banger dm snapshot only, as
/// uid 0 with no capability.
pub fn fsck_snapshot(h: &Helper, p: m::FsckSnapshot) -> Result<m::FsckResult, RpcError> {
    const M: &str = m::FSCK_SNAPSHOT;
    let name = gate(M, g::fsck_device(&p.device))?;
    let img = dm_image(h, M, name, &p.device)?;
    let code = h.host.ext4.fsck_ref(&img.image).map_err(failed)?;
    Ok(m::FsckResult { exit_code: code })
}

/// A banger dm device (name and UUID checked) for a tool run as uid 0 with
/// no capability: with a real host, its node opened beneath `/dev` and
/// checked on the fd (root-owned block device sysfs names `name`), passed
/// as `/proc/self/fd/N`; with the recording host, named by its path.
fn dm_image(
    h: &Helper,
    method: &'static str,
    name: &str,
    device: &str,
) -> Result<OpenImage, RpcError> {
    use banger_sys::dmnode::DmNodeError;
    banger_dm(h, name)?;
    let Some(nodes) = &h.host.dm_nodes else {
        return Ok(OpenImage {
            image: ImageRef {
                name: PathBuf::from(device),
                privilege: Privilege::RootNoCaps,
                pass_fd: None,
            },
            _fd: None,
        });
    };
    let fd = nodes.open(name).map_err(|e| match e {
        DmNodeError::NotBlock(_) | DmNodeError::NotRoot(..) | DmNodeError::Mismatch { .. } => {
            RpcError::Gate {
                method,
                refused: Refused::new(format!(
                    "device node must be a root-owned block device that sysfs names {name} ({e})"
                )),
            }
        }
        other => failed(other),
    })?;
    Ok(OpenImage {
        image: ImageRef::fd(&fd, Privilege::RootNoCaps),
        _fd: Some(fd),
    })
}

/// An image a tool may open: a banger dm device node (the tool runs as uid
/// 0 with no capability: root owns the node), or a file under StateDir
/// (regular, one link, the owner's; the tool runs as the owner with no
/// capability). Either is opened and checked by the helper and passed as an
/// inherited fd named `/proc/self/fd/N`, so what was checked is what is used.
struct OpenImage {
    image: ImageRef,
    _fd: Option<OwnedFd>,
}

fn open_image(
    h: &Helper,
    method: &'static str,
    image: &str,
    access: Access,
) -> Result<OpenImage, RpcError> {
    match gate(method, g::ext4_image(image, &h.cfg.state_dir))? {
        g::Ext4Target::Dm(name) => dm_image(h, method, &name, image),
        g::Ext4Target::File(rel) => {
            let state = state_dir(h)?;
            let f = beneath::open_checked(&state, &rel, access, Owners::Owner(h.cfg.owner_uid))
                .map_err(|e| open_failed(method, "image", e))?;
            let privilege = Privilege::User {
                uid: h.cfg.owner_uid,
                gid: h.cfg.owner_gid,
            };
            Ok(OpenImage {
                image: ImageRef::fd(&f, privilege),
                _fd: Some(f.into()),
            })
        }
    }
}

/// `priv.read_ext4_file`.
pub fn read_ext4_file(h: &Helper, p: m::ReadExt4File) -> Result<m::ReadExt4FileResult, RpcError> {
    const M: &str = m::READ_EXT4_FILE;
    let path = gate(M, g::guest_path(&p.path))?;
    let img = open_image(h, M, &p.image, Access::Read)?;
    let bytes = h
        .host
        .ext4
        .read(&img.image, path, READ_MAX_BYTES)
        .map_err(failed)?;
    Ok(m::ReadExt4FileResult {
        content_b64: base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// `priv.write_ext4_files`.
pub fn write_ext4_files(h: &Helper, p: m::WriteExt4Files) -> Result<m::Empty, RpcError> {
    const M: &str = m::WRITE_EXT4_FILES;
    if p.files.len() > WRITE_MAX_FILES {
        return Err(RpcError::Gate {
            method: M,
            refused: Refused::new("at most 256 files per call"),
        });
    }
    let mut files = Vec::with_capacity(p.files.len());
    for f in &p.files {
        gate(M, g::guest_path(&f.path))?;
        gate(M, g::file_mode(f.mode))?;
        let content = base64::engine::general_purpose::STANDARD
            .decode(&f.content_b64)
            .map_err(|_| RpcError::Gate {
                method: M,
                refused: Refused::new("content_b64 must be base64"),
            })?;
        files.push(GuestFile {
            path: f.path.clone(),
            content,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
        });
    }
    let img = open_image(h, M, &p.image, Access::ReadWrite)?;
    h.host.ext4.write(&img.image, &files).map_err(failed)?;
    Ok(m::Empty {})
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
