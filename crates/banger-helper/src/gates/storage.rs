//! Gates for the storage methods: dm names/devices, loops, ext4 images, guest paths.

use super::Refused;
use banger_proto::helper::DmHandles;
use banger_sys::beneath::BeneathError;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

/// Every dm device banger creates is named `fc-rootfs-<id>`.
pub const DM_PREFIX: &str = "fc-rootfs-";
/// Where device-mapper exposes its devices.
pub const DM_MAPPER_DIR: &str = "/dev/mapper/";
/// The kernel's limit on a dm name (`DM_NAME_LEN` 128 incl. NUL) is 127;
/// banger's names must also leave room for the `BANGER-` UUID prefix inside
/// `DM_UUID_LEN` (129 incl. NUL), hence 128 - 7.
pub const DM_NAME_MAX: usize = 121;
/// Longest guest path accepted by the ext4 methods.
pub const GUEST_PATH_MAX: usize = 1024;
/// Longest component of a guest path (ext4's `EXT4_NAME_LEN`).
pub const GUEST_COMPONENT_MAX: usize = 255;

const DM_NAME_RULE: &str = "dm name must be fc-rootfs-<id> ([A-Za-z0-9_-], at most 121 chars)";
const DM_DEVICE_RULE: &str = "device must be /dev/mapper/fc-rootfs-*";
const LOOP_RULE: &str = "loop device must be /dev/loopN";
const GUEST_PATH_RULE: &str =
    "guest path must be absolute, without . or .. components, in [A-Za-z0-9._/@+-], at most 1024 chars";

/// `fc-rootfs-<id>`: id non-empty, `[A-Za-z0-9_-]`, total ≤ [`DM_NAME_MAX`].
pub fn dm_name(name: &str) -> Result<&str, Refused> {
    let ok = name.len() <= DM_NAME_MAX
        && name
            .strip_prefix(DM_PREFIX)
            .is_some_and(|id| !id.is_empty() && id.bytes().all(is_dm_id_byte));
    if ok {
        Ok(name)
    } else {
        Err(Refused::new(DM_NAME_RULE))
    }
}

fn is_dm_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// `/dev/mapper/fc-rootfs-*`; returns the dm name.
pub fn dm_device(device: &str) -> Result<&str, Refused> {
    device
        .strip_prefix(DM_MAPPER_DIR)
        .and_then(|name| dm_name(name).ok())
        .ok_or_else(|| Refused::new(DM_DEVICE_RULE))
}

/// `priv.remove_dm_snapshot` target: an `fc-rootfs-*` name or a
/// `/dev/mapper/fc-rootfs-*` path; returns the dm name.
pub fn remove_target(target: &str) -> Result<&str, Refused> {
    if target.starts_with('/') {
        dm_device(target)
            .map_err(|_| Refused::new("target must be fc-rootfs-* or /dev/mapper/fc-rootfs-*"))
    } else {
        dm_name(target)
            .map_err(|_| Refused::new("target must be fc-rootfs-* or /dev/mapper/fc-rootfs-*"))
    }
}

/// `/dev/loopN` with N a decimal number without leading zeros (fits u32).
pub fn loop_device(dev: &str) -> Result<&str, Refused> {
    let ok = dev.strip_prefix("/dev/loop").is_some_and(|n| {
        !n.is_empty()
            && n.len() <= 10
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'))
            && n.parse::<u32>().is_ok()
    });
    if ok {
        Ok(dev)
    } else {
        Err(Refused::new(LOOP_RULE))
    }
}

/// `priv.fsck_snapshot` device: only banger's dm snapshots.
pub fn fsck_device(device: &str) -> Result<&str, Refused> {
    dm_device(device)
}

/// Every non-empty Handles field valid; a dm device, when given with a
/// name, must be that name's device.
pub fn handles(h: &DmHandles) -> Result<(), Refused> {
    if !h.dm_name.is_empty() {
        dm_name(&h.dm_name)?;
    }
    if !h.dm_device.is_empty() {
        let name = dm_device(&h.dm_device)?;
        if !h.dm_name.is_empty() && name != h.dm_name {
            return Err(Refused::new("dm_device must be /dev/mapper/<dm_name>"));
        }
    }
    for l in [&h.base_loop, &h.cow_loop] {
        if !l.is_empty() {
            loop_device(l)?;
        }
    }
    if !h.base_loop.is_empty() && h.base_loop == h.cow_loop {
        return Err(Refused::new("base_loop and cow_loop must differ"));
    }
    Ok(())
}

/// Where an ext4 method may act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ext4Target {
    /// A banger dm snapshot, by name.
    Dm(String),
    /// An image file under StateDir: the path relative to the resolved StateDir.
    File(PathBuf),
}

/// An image path for the ext4 methods: `/dev/mapper/fc-rootfs-*`, or a path
/// that, after resolving symlinks and `..`, lies under `state_dir` (itself
/// resolved). A symlink pointing out of StateDir is refused. Looks at the
/// filesystem (to resolve); the method opens the result again beneath
/// StateDir without following symlinks, so a later swap is refused too.
pub fn ext4_image(image: &str, state_dir: &Path) -> Result<Ext4Target, Refused> {
    const RULE: &str = "image must be under StateDir or /dev/mapper/fc-rootfs-*";
    if image.starts_with(DM_MAPPER_DIR) {
        return dm_device(image)
            .map(|n| Ext4Target::Dm(n.to_string()))
            .map_err(|_| Refused::new(RULE));
    }
    state_file(image, state_dir)
        .map(Ext4Target::File)
        .map_err(|_| Refused::new(RULE))
}

/// Resolve `path` (absolute, spelled below `state_dir` as configured or as
/// its canonical path) beneath StateDir: `openat2(O_PATH)` from the StateDir
/// anchor with `RESOLVE_BENEATH | RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS`,
/// so symlinks and `..` may move it only within StateDir and no mount below
/// StateDir is entered (a FUSE mount there could otherwise park the helper
/// thread in a lookup). Returns the resolved path relative to the canonical
/// StateDir (possibly empty).
fn resolve_in_state(path: &Path, state_dir: &Path, dir: bool) -> Option<PathBuf> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let base = state_dir.canonicalize().ok()?;
    let rel = path
        .strip_prefix(state_dir)
        .or_else(|_| path.strip_prefix(&base))
        .ok()?;
    let anchor = rustix::fs::open(
        &base,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let flags = OFlags::PATH
        | OFlags::CLOEXEC
        | if dir {
            OFlags::DIRECTORY
        } else {
            OFlags::empty()
        };
    let fd = rustix::fs::openat2(
        &anchor,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_XDEV | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    real.strip_prefix(&base).ok().map(Path::to_path_buf)
}

/// A path that resolves (symlinks, `..`) to a location strictly under the
/// resolved `state_dir`, without leaving it or crossing a mount on the way
/// (see `resolve_in_state`); returns it relative to that StateDir.
pub fn state_file(path: &str, state_dir: &Path) -> Result<PathBuf, Refused> {
    const RULE: &str = "path must resolve to a file under StateDir";
    let p = Path::new(path);
    if !p.is_absolute() || path.contains('\0') {
        return Err(Refused::new(RULE));
    }
    match resolve_in_state(p, state_dir, false) {
        Some(rel) if rel.components().next().is_some() => Ok(rel),
        _ => Err(Refused::new(RULE)),
    }
}

/// A file that may not exist yet (a COW file): its parent resolves under
/// `state_dir` (as for [`state_file`]), its last component is a plain name.
/// Returns it relative to the resolved StateDir; the method creates/opens
/// it beneath StateDir without following symlinks.
pub fn new_state_file(path: &str, state_dir: &Path) -> Result<PathBuf, Refused> {
    const RULE: &str = "path must be a file under StateDir";
    let p = Path::new(path);
    if !p.is_absolute() || path.contains('\0') || path.ends_with('/') {
        return Err(Refused::new(RULE));
    }
    let (Some(parent), Some(Component::Normal(name))) = (p.parent(), p.components().next_back())
    else {
        return Err(Refused::new(RULE));
    };
    match resolve_in_state(parent, state_dir, true) {
        Some(rel) => Ok(rel.join(name)),
        None => Err(Refused::new(RULE)),
    }
}

/// A path inside the guest filesystem: absolute, no `.`/`..`/empty
/// components, `[A-Za-z0-9._/@+-]`, ≤ [`GUEST_PATH_MAX`] chars, each
/// component ≤ 255. The charset is what makes it safe as a debugfs argument.
pub fn guest_path(path: &str) -> Result<&str, Refused> {
    let refuse = || Refused::new(GUEST_PATH_RULE);
    if path.len() > GUEST_PATH_MAX || !path.starts_with('/') || path.len() < 2 {
        return Err(refuse());
    }
    if !path.bytes().all(is_guest_byte) {
        return Err(refuse());
    }
    for comp in path[1..].split('/') {
        if comp.is_empty() || comp == "." || comp == ".." || comp.len() > GUEST_COMPONENT_MAX {
            return Err(refuse());
        }
    }
    debug_assert!(Path::new(path)
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
    Ok(path)
}

fn is_guest_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'@' | b'+' | b'-')
}

/// A file mode: permission and setuid/setgid/sticky bits only (≤ 0o7777).
pub fn file_mode(mode: u32) -> Result<u32, Refused> {
    if mode <= 0o7777 {
        Ok(mode)
    } else {
        Err(Refused::new("mode must be at most 0o7777"))
    }
}

/// The rule a daemon-named file broke when the helper opened it (checked on
/// the fd, or refused by the kernel's resolve flags), or `None` when the
/// open failed for another reason (a host failure, not a refusal).
pub fn opened(what: &str, e: &BeneathError) -> Option<Refused> {
    let rule = match e {
        BeneathError::NotRegular(_) => {
            format!("{what} must be a regular file (not a FIFO, socket, device or directory)")
        }
        BeneathError::HardLinked(_, n) => format!("{what} must have exactly one link (it has {n})"),
        BeneathError::ForeignOwner(_, uid, who) => {
            format!("{what} must be owned by {who} (it is owned by uid {uid})")
        }
        BeneathError::Open(_, _, io) => match io.raw_os_error() {
            Some(libc::ELOOP) => format!("{what} must not pass through a symlink"),
            Some(libc::EXDEV) => format!("{what} must not cross a mount below StateDir"),
            _ => return None,
        },
        _ => return None,
    };
    Some(Refused::new(rule))
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
