//! Applying one image layer (a tar stream) onto a rootfs directory, safely:
//! every path resolves inside the root (`openat2` `RESOLVE_IN_ROOT`), leaves
//! are never followed, `..` entries are refused, whiteouts are honoured.
//! Ownership, modes and device numbers are recorded in a [`FakeDb`], not
//! applied on disk, so no privilege is needed.

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A failed layer application.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("read layer")]
    Read(#[source] io::Error),
    #[error("layer entry {0:?} escapes the root (`..`)")]
    Escape(String),
    #[error("layer entry {0:?}: hardlink target {1:?} escapes the root")]
    LinkEscape(String, String),
    #[error("layer entry {0:?}: {1}")]
    Apply(String, #[source] io::Error),
}

/// What `mke2fs -d` should see for one inode (through fakeroot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub rdev: u64,
}

/// Faked inode metadata keyed by `(st_dev, st_ino)`: fakeroot's save format.
/// Also the extended attributes seen, applied to the image afterwards
/// (fakeroot hides on-disk xattrs from `mke2fs -d`).
#[derive(Debug, Default)]
pub struct FakeDb {
    pub inodes: HashMap<(u64, u64), Meta>,
    /// `(path in the image, name, value)`.
    pub xattrs: Vec<(String, String, Vec<u8>)>,
}

impl FakeDb {
    /// Render fakeroot's `-i` database for the inodes under `root` (walked
    /// without following symlinks); inodes never recorded get root:root.
    /// Returns the text, the content bytes and the inode count.
    pub fn render(&self, root: &Path) -> io::Result<(String, u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut out = String::new();
        let mut bytes = 0u64;
        let mut count = 0u64;
        let mut stack = vec![root.to_path_buf()];
        let mut seen = HashSet::new();
        while let Some(p) = stack.pop() {
            let m = std::fs::symlink_metadata(&p)?;
            count += 1;
            if m.is_dir() {
                for e in std::fs::read_dir(&p)? {
                    stack.push(e?.path());
                }
            }
            if !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            bytes += m.len().div_ceil(4096) * 4096;
            let meta = self
                .inodes
                .get(&(m.dev(), m.ino()))
                .copied()
                .unwrap_or(Meta {
                    mode: m.mode() & 0o170000 | if m.is_dir() { 0o755 } else { 0o644 },
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                });
            out.push_str(&format!(
                "dev={:x},ino={},mode={:o},uid={},gid={},nlink={},rdev={}\n",
                m.dev(),
                m.ino(),
                meta.mode,
                meta.uid,
                meta.gid,
                m.nlink(),
                meta.rdev
            ));
        }
        Ok((out, bytes, count))
    }
}

/// A normalised entry path: components without `.`/empty; `..` refused.
fn normalise(raw: &[u8]) -> Option<Vec<String>> {
    let s = String::from_utf8_lossy(raw);
    let mut out = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c.to_string()),
        }
    }
    Some(out)
}

fn io_err(e: rustix::io::Errno) -> io::Error {
    e.into()
}

/// Open `comps` (a directory path) inside `root`, symlinks resolved as if
/// `root` were `/`; creates missing directories (recorded root:root 0755),
/// also where a dangling symlink points (inside the root).
fn open_dir(root: &OwnedFd, comps: &[String], db: &mut FakeDb) -> io::Result<OwnedFd> {
    open_dir_depth(root, comps, db, 0)
}

fn open_dir_depth(
    root: &OwnedFd,
    comps: &[String],
    db: &mut FakeDb,
    depth: u32,
) -> io::Result<OwnedFd> {
    if depth > 40 {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut cur = rustix::fs::openat2(root, ".", flags, Mode::empty(), how).map_err(io_err)?;
    for (i, c) in comps.iter().enumerate() {
        let path: PathBuf = comps[..=i].iter().collect();
        match rustix::fs::openat2(root, &path, flags, Mode::empty(), how) {
            Ok(fd) => cur = fd,
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::statat(&cur, c.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Err(rustix::io::Errno::NOENT) => {
                        rustix::fs::mkdirat(&cur, c.as_str(), Mode::from_raw_mode(0o700))
                            .map_err(io_err)?;
                        record(&cur, c, db, 0o040755, 0, 0, 0)?;
                        cur = rustix::fs::openat2(root, &path, flags, Mode::empty(), how)
                            .map_err(io_err)?;
                    }
                    Ok(st) if st.st_mode & 0o170000 == 0o120000 => {
                        // A dangling symlink: continue at its target, lexically
                        // inside the root (`..` stops at the root).
                        let target =
                            rustix::fs::readlinkat(&cur, c.as_str(), Vec::new()).map_err(io_err)?;
                        let t = target.to_bytes();
                        let mut next: Vec<String> = if t.starts_with(b"/") {
                            Vec::new()
                        } else {
                            comps[..i].to_vec()
                        };
                        for tc in String::from_utf8_lossy(t).split('/') {
                            match tc {
                                "" | "." => {}
                                ".." => {
                                    next.pop();
                                }
                                tc => next.push(tc.to_string()),
                            }
                        }
                        next.extend_from_slice(&comps[i + 1..]);
                        return open_dir_depth(root, &next, db, depth + 1);
                    }
                    Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                    Err(e) => return Err(io_err(e)),
                }
            }
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(cur)
}

fn record(
    dir: &impl AsFd,
    name: &str,
    db: &mut FakeDb,
    mode: u32,
    uid: u64,
    gid: u64,
    rdev: u64,
) -> io::Result<()> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err)?;
    db.inodes.insert(
        (st.st_dev, st.st_ino),
        Meta {
            mode,
            uid,
            gid,
            rdev,
        },
    );
    Ok(())
}

/// Remove `name` in `dir` (recursively, never following symlinks); absent is fine.
pub fn remove_all(dir: &impl AsFd, name: &str) -> io::Result<()> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(io_err(e)),
    };
    if st.st_mode & 0o170000 == 0o040000 {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err)?;
        for child in children(&fd)? {
            remove_all(&fd, &child)?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(io_err)
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(io_err)
    }
}

fn children(dir: &impl AsFd) -> io::Result<Vec<String>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)?;
    let mut d = rustix::fs::Dir::read_from(&fd).map_err(io_err)?;
    let mut out = Vec::new();
    while let Some(e) = d.read() {
        let e = e.map_err(io_err)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(String::from_utf8_lossy(n).into_owned());
        }
    }
    Ok(out)
}

/// Create `name` in `dir`: new (never an existing entry), not through a
/// symlink, private until the image is made.
fn create_new(dir: &impl AsFd, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
}

/// Apply one uncompressed layer tar stream onto the directory `root`.
pub fn apply(root: &Path, layer: impl Read, db: &mut FakeDb) -> Result<(), LayerError> {
    let rootfd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::Apply(root.display().to_string(), e.into()))?;
    let mut ar = tar::Archive::new(layer);
    let mut created: HashSet<Vec<String>> = HashSet::new();
    for entry in ar.entries().map_err(LayerError::Read)? {
        let mut entry = entry.map_err(LayerError::Read)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let comps = normalise(&raw).ok_or_else(|| LayerError::Escape(shown.clone()))?;
        let ap = |e: io::Error| LayerError::Apply(shown.clone(), e);
        let hdr = entry.header().clone();
        let perm = hdr.mode().map_err(LayerError::Read)? & 0o7777;
        let uid = hdr.uid().map_err(LayerError::Read)?;
        let gid = hdr.gid().map_err(LayerError::Read)?;
        let Some((leaf, parent)) = comps.split_last() else {
            // The root directory itself.
            let st = rustix::fs::fstat(&rootfd).map_err(|e| ap(e.into()))?;
            db.inodes.insert(
                (st.st_dev, st.st_ino),
                Meta {
                    mode: 0o040000 | perm,
                    uid,
                    gid,
                    rdev: 0,
                },
            );
            continue;
        };
        let dir = open_dir(&rootfd, parent, db).map_err(ap)?;
        if let Some(target) = leaf.strip_prefix(".wh.") {
            if target == ".wh..opq" {
                for child in children(&dir).map_err(ap)? {
                    let mut p = parent.to_vec();
                    p.push(child.clone());
                    if !created.contains(&p) {
                        remove_all(&dir, &child).map_err(ap)?;
                    }
                }
            } else if target.is_empty() || target == "." || target == ".." {
                return Err(LayerError::Escape(shown));
            } else {
                remove_all(&dir, target).map_err(ap)?;
            }
            continue;
        }
        let kind = hdr.entry_type();
        let existing = rustix::fs::statat(&dir, leaf.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_dir = existing
            .as_ref()
            .is_some_and(|st| st.st_mode & 0o170000 == 0o040000);
        if existing.is_some() && !(kind.is_dir() && existing_dir) {
            remove_all(&dir, leaf).map_err(ap)?;
        }
        let name = leaf.as_str();
        let ifmt = match kind {
            tar::EntryType::Directory => {
                if !existing_dir {
                    rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| ap(e.into()))?;
                }
                0o040000
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = create_new(&dir, name).map_err(|e| ap(e.into()))?;
                let mut f = File::from(fd);
                io::copy(&mut entry, &mut f).map_err(ap)?;
                f.flush().map_err(ap)?;
                0o100000
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                rustix::fs::symlinkat(std::ffi::OsStr::from_bytes(&target), &dir, name)
                    .map_err(|e| ap(e.into()))?;
                0o120000
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                let tshown = String::from_utf8_lossy(&target).into_owned();
                let tcomps = normalise(&target)
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| LayerError::LinkEscape(shown.clone(), tshown.clone()))?;
                let (tleaf, tparent) = tcomps.split_last().expect("non-empty");
                let tdir = open_dir(&rootfd, tparent, db).map_err(ap)?;
                rustix::fs::linkat(&tdir, tleaf.as_str(), &dir, name, AtFlags::empty())
                    .map_err(|e| ap(e.into()))?;
                created.insert(comps);
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                // A placeholder file; fakeroot presents it as the device.
                create_new(&dir, name).map_err(|e| ap(e.into()))?;
                match kind {
                    tar::EntryType::Char => 0o020000,
                    tar::EntryType::Block => 0o060000,
                    _ => 0o010000,
                }
            }
            // pax/GNU long-name headers are consumed by the tar crate;
            // anything else (sockets, sparse) is skipped.
            _ => continue,
        };
        let rdev = match (hdr.device_major(), hdr.device_minor()) {
            (Ok(Some(ma)), Ok(Some(mi))) if ifmt == 0o020000 || ifmt == 0o060000 => {
                rustix::fs::makedev(ma, mi)
            }
            _ => 0,
        };
        let mode = if ifmt == 0o120000 {
            0o120777
        } else {
            ifmt | perm
        };
        let image_path = format!("/{}", comps.join("/"));
        db.xattrs.retain(|(p, _, _)| *p != image_path);
        if ifmt != 0o120000 {
            collect_xattrs(&mut entry, &image_path, db);
        }
        record(&dir, name, db, mode, uid, gid, rdev).map_err(ap)?;
        if let Ok(mtime) = hdr.mtime() {
            let t = rustix::fs::Timespec {
                tv_sec: mtime as i64,
                tv_nsec: 0,
            };
            let _ = rustix::fs::utimensat(
                &dir,
                name,
                &rustix::fs::Timestamps {
                    last_access: t,
                    last_modification: t,
                },
                AtFlags::SYMLINK_NOFOLLOW,
            );
        }
        created.insert(comps);
    }
    Ok(())
}

/// `SCHILY.xattr.*` pax records, kept for the image.
fn collect_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, path: &str, db: &mut FakeDb) {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return;
    };
    for ext in exts.flatten() {
        if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            db.xattrs.push((
                path.to_string(),
                String::from_utf8_lossy(name).into_owned(),
                ext.value_bytes().to_vec(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_refuses_dotdot() {
        assert_eq!(
            normalise(b"./etc//passwd"),
            Some(vec!["etc".into(), "passwd".into()])
        );
        assert_eq!(normalise(b"/abs/x"), Some(vec!["abs".into(), "x".into()]));
        assert_eq!(normalise(b"./"), Some(vec![]));
        assert_eq!(normalise(b"a/../../x"), None);
        assert_eq!(normalise(b".."), None);
    }
}
