//! A read-only ext2/3/4 path lookup in user space (superblock, group descriptors, inodes, extent trees and block maps, linear directory scan): what each guest path names, without forking debugfs; anything not fully understood is [`Unsupported`] and the caller asks debugfs instead.
//!
//! The image may be guest-written: every offset, count and length read from
//! it is bounds-checked (no panic, no unbounded loop or allocation). Only
//! answers are read here; every write still goes through debugfs.

use super::{check_guest_path, Entry, ImageRef, Probe};
use crate::runner::Privilege;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Why this image (or path) cannot be answered here: the caller falls back
/// to debugfs, which answers everything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("in-process ext4 lookup: {0}")]
pub struct Unsupported(pub String);

fn no<T>(why: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(why.into()))
}

/// Most directory bytes scanned for one name.
pub const MAX_DIR_BYTES: u64 = 16 << 20;
/// Most extent-tree nodes visited for one directory.
const MAX_EXTENT_NODES: usize = 1024;
const ROOT_INO: u32 = 2;

// Incompatible features this reader understands (anything else: Unsupported).
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
const INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;

// Inode flags a directory must not carry here.
const FL_ENCRYPT: u32 = 0x800;
const FL_EXTENTS: u32 = 0x80000;
const FL_INLINE_DATA: u32 = 0x1000_0000;
const FL_CASEFOLD: u32 = 0x4000_0000;

/// Reading `buf.len()` bytes at `off`, all or an error.
pub trait ReadAt {
    fn read_at_exact(&self, buf: &mut [u8], off: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn read_at_exact(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.read_exact_at(buf, off)
    }
}

impl ReadAt for [u8] {
    fn read_at_exact(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let src = usize::try_from(off)
            .ok()
            .and_then(|o| self.get(o..o.checked_add(buf.len())?))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// What each of `paths` is in `image`, read here: the file behind the fd
/// the caller holds (an `O_PATH` fd, e.g. a dm node's, reopened through
/// `/proc/self/fd/N` as the tool would), or the path when the tool would run
/// with the caller's own privileges. The file must be one the tool's
/// privileges could read by its mode: nothing is read here that the tool
/// itself could not.
pub fn probe_image(image: &ImageRef, paths: &[String]) -> Result<Vec<Probe>, Unsupported> {
    let file = match (image.pass_fd, image.privilege) {
        (Some(fd), _) => {
            let proc = format!("/proc/self/fd/{fd}");
            // SAFETY: an ImageRef's pass_fd is an open fd the caller keeps
            // open for the whole call (ImageRef::fd); it is only borrowed
            // here for fcntl and the dup.
            let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let flags = rustix::fs::fcntl_getfl(b)
                .map_err(|e| Unsupported(format!("fcntl image fd: {e}")))?;
            if flags.contains(rustix::fs::OFlags::PATH) {
                File::open(&proc).map_err(|e| Unsupported(format!("reopen {proc}: {e}")))?
            } else {
                File::from(
                    b.try_clone_to_owned()
                        .map_err(|e| Unsupported(format!("dup image fd: {e}")))?,
                )
            }
        }
        (None, Privilege::Inherit) => File::open(&image.name)
            .map_err(|e| Unsupported(format!("open {}: {e}", image.name.display())))?,
        (None, _) => return no("the tool would open the image with other privileges"),
    };
    let meta = file
        .metadata()
        .map_err(|e| Unsupported(format!("stat image: {e}")))?;
    if !may_read(&meta, image.privilege) {
        return no("the tool's privileges could not read the image");
    }
    probe_paths_in(&file, paths)
}

/// Whether a process with `p` (no capability unless `Inherit`) may read a
/// file of this owner and mode.
pub fn may_read(meta: &std::fs::Metadata, p: Privilege) -> bool {
    use std::os::unix::fs::MetadataExt;
    let m = meta.mode();
    match p {
        Privilege::Inherit => true,
        Privilege::RootNoCaps => meta.uid() == 0 && m & 0o400 != 0,
        Privilege::User { uid, gid } => {
            if meta.uid() == uid {
                m & 0o400 != 0
            } else if meta.gid() == gid {
                m & 0o040 != 0
            } else {
                m & 0o004 != 0
            }
        }
    }
}

/// What each of `paths` (checked guest paths) names in the ext4 image `r`,
/// as debugfs' `stat` would answer: a directory, something else, missing,
/// or (beneath a non-directory) what debugfs would report.
pub fn probe_paths_in<R: ReadAt + ?Sized>(
    r: &R,
    paths: &[String],
) -> Result<Vec<Probe>, Unsupported> {
    let fs = Fs::open(r)?;
    let root = fs.inode(ROOT_INO)?;
    if !root.is_dir() {
        return no("root inode is not a directory");
    }
    // Resolved prefixes: path → inode (None: missing).
    let mut memo: HashMap<String, Option<(u32, Inode)>> = HashMap::new();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        if check_guest_path(p).is_err() {
            return no(format!("unchecked guest path {p:?}"));
        }
        out.push(fs.answer(p, &root, &mut memo)?);
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
struct Inode {
    mode: u16,
    size: u64,
    flags: u32,
    block: [u8; 60],
}

impl Inode {
    fn is_dir(&self) -> bool {
        self.mode & 0xF000 == 0x4000
    }
    fn is_symlink(&self) -> bool {
        self.mode & 0xF000 == 0xA000
    }
}

struct Fs<'a, R: ?Sized> {
    r: &'a R,
    bs: u64,
    inode_size: u64,
    ipg: u32,
    inodes: u32,
    blocks: u64,
    desc_size: u64,
    gdt: u64,
    groups: u64,
    filetype: bool,
}

fn u16le(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32le(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a, R: ReadAt + ?Sized> Fs<'a, R> {
    fn read(&self, off: u64, len: usize) -> Result<Vec<u8>, Unsupported> {
        let mut buf = vec![0u8; len];
        self.r
            .read_at_exact(&mut buf, off)
            .map_err(|e| Unsupported(format!("read {len} bytes at {off}: {e}")))?;
        Ok(buf)
    }

    fn open(r: &'a R) -> Result<Self, Unsupported> {
        let mut sb = vec![0u8; 1024];
        r.read_at_exact(&mut sb, 1024)
            .map_err(|e| Unsupported(format!("read superblock: {e}")))?;
        if u16le(&sb, 56) != 0xEF53 {
            return no("no ext2/3/4 superblock");
        }
        let incompat = u32le(&sb, 96);
        if incompat & !INCOMPAT_KNOWN != 0 {
            return no(format!(
                "incompatible features {:#x} (needs_recovery, meta_bg, mmp, … are left to debugfs)",
                incompat & !INCOMPAT_KNOWN
            ));
        }
        let log = u32le(&sb, 24);
        if log > 6 {
            return no(format!("block size 1024 << {log}"));
        }
        let bs = 1024u64 << log;
        let rev = u32le(&sb, 76);
        let inode_size = if rev == 0 {
            128
        } else {
            u64::from(u16le(&sb, 88))
        };
        if !(128..=bs).contains(&inode_size) || !inode_size.is_power_of_two() {
            return no(format!("inode size {inode_size}"));
        }
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let desc_size = if is64 { u64::from(u16le(&sb, 254)) } else { 32 };
        if !(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
            return no(format!("group descriptor size {desc_size}"));
        }
        let mut blocks = u64::from(u32le(&sb, 4));
        if is64 {
            blocks |= u64::from(u32le(&sb, 336)) << 32;
        }
        let first_data = u64::from(u32le(&sb, 20));
        let bpg = u64::from(u32le(&sb, 32));
        let ipg = u32le(&sb, 40);
        let inodes = u32le(&sb, 0);
        if bpg == 0 || ipg == 0 || blocks <= first_data || u64::from(ipg) > bs * 8 {
            return no("inconsistent group geometry");
        }
        let groups = (blocks - first_data).div_ceil(bpg);
        if u64::from(inodes) > groups.saturating_mul(u64::from(ipg)) {
            return no("more inodes than groups hold");
        }
        Ok(Fs {
            r,
            bs,
            inode_size,
            ipg,
            inodes,
            blocks,
            desc_size,
            gdt: first_data + 1,
            groups,
            filetype: incompat & INCOMPAT_FILETYPE != 0,
        })
    }

    fn block_ok(&self, b: u64) -> Result<u64, Unsupported> {
        if b == 0 || b >= self.blocks {
            return no(format!("block {b} outside the filesystem"));
        }
        Ok(b)
    }

    /// Byte offset of `within` bytes into block `b` (checked).
    fn at(&self, b: u64, within: u64) -> Result<u64, Unsupported> {
        b.checked_mul(self.bs)
            .and_then(|o| o.checked_add(within))
            .ok_or_else(|| Unsupported(format!("offset of block {b} overflows")))
    }

    /// Block `b`, checked to lie inside the filesystem.
    fn block(&self, b: u64) -> Result<Vec<u8>, Unsupported> {
        let off = self.at(self.block_ok(b)?, 0)?;
        self.read(off, self.bs as usize)
    }

    fn inode(&self, ino: u32) -> Result<Inode, Unsupported> {
        if ino == 0 || ino > self.inodes {
            return no(format!("inode {ino} out of range"));
        }
        let g = u64::from((ino - 1) / self.ipg);
        let idx = u64::from((ino - 1) % self.ipg);
        if g >= self.groups {
            return no(format!("inode {ino}: group {g} out of range"));
        }
        let desc = self.read(
            self.at(self.gdt, g * self.desc_size)?,
            64.min(self.desc_size as usize),
        )?;
        let mut table = u64::from(u32le(&desc, 8));
        if self.desc_size >= 64 {
            table |= u64::from(u32le(&desc, 0x28)) << 32;
        }
        let table = self.block_ok(table)?;
        let raw = self.read(self.at(table, idx * self.inode_size)?, 128)?;
        let mut block = [0u8; 60];
        block.copy_from_slice(&raw[40..100]);
        Ok(Inode {
            mode: u16le(&raw, 0),
            size: u64::from(u32le(&raw, 4)) | (u64::from(u32le(&raw, 108)) << 32),
            flags: u32le(&raw, 32),
            block,
        })
    }

    /// The answer for `p`, resolving each prefix once.
    fn answer(
        &self,
        p: &str,
        root: &Inode,
        memo: &mut HashMap<String, Option<(u32, Inode)>>,
    ) -> Result<Probe, Unsupported> {
        let mut dir = (ROOT_INO, *root);
        let mut prefix = String::new();
        let comps: Vec<&str> = p[1..].split('/').collect();
        for (i, c) in comps.iter().enumerate() {
            if i > 0 {
                // An intermediate component: debugfs follows a symlink here
                // and reports a non-directory; neither is ever consulted (the
                // parent is checked first, and refused), but say so exactly.
                if dir.1.is_symlink() {
                    return Ok(Err(format!("{p}: beneath a symbolic link")));
                }
                if !dir.1.is_dir() {
                    return Ok(Err(format!("{p}: Ext2 inode is not a directory")));
                }
            }
            prefix.push('/');
            prefix.push_str(c);
            let found = match memo.get(&prefix) {
                Some(f) => *f,
                None => {
                    let f = match self.find(&dir.1, c.as_bytes())? {
                        Some(ino) => Some((ino, self.inode(ino)?)),
                        None => None,
                    };
                    memo.insert(prefix.clone(), f);
                    f
                }
            };
            match found {
                Some(next) => dir = next,
                None => return Ok(Ok(Entry::Missing)),
            }
        }
        Ok(Ok(if dir.1.is_dir() {
            Entry::Dir
        } else {
            Entry::Other
        }))
    }

    /// The inode `name` names in directory `d`: a linear scan of every
    /// block (an htree directory reads the same way).
    fn find(&self, d: &Inode, name: &[u8]) -> Result<Option<u32>, Unsupported> {
        if d.flags & (FL_INLINE_DATA | FL_ENCRYPT | FL_CASEFOLD) != 0 {
            return no("inline, encrypted or case-folded directory");
        }
        if d.size > MAX_DIR_BYTES {
            return no(format!("directory of {} bytes", d.size));
        }
        let map = if d.flags & FL_EXTENTS != 0 {
            Some(self.extents(d)?)
        } else {
            None
        };
        let n = d.size.div_ceil(self.bs);
        for l in 0..n {
            let pb = match &map {
                Some(m) => m
                    .iter()
                    .find(|e| l >= e.0 && l < e.0 + e.2)
                    .map(|e| e.1 + (l - e.0)),
                None => self.mapped(d, l)?,
            };
            let Some(pb) = pb else {
                return no(format!("hole at directory block {l}"));
            };
            let blk = self.block(pb)?;
            if let Some(ino) = self.scan(&blk, name)? {
                return Ok(Some(ino));
            }
        }
        Ok(None)
    }

    /// One directory block's entries.
    fn scan(&self, blk: &[u8], name: &[u8]) -> Result<Option<u32>, Unsupported> {
        let bs = blk.len();
        let mut off = 0usize;
        while off + 8 <= bs {
            let ino = u32le(blk, off);
            let raw = usize::from(u16le(blk, off + 4));
            let rec = if bs < 65536 {
                raw
            } else if raw == 65535 || raw == 0 {
                bs
            } else {
                (raw & 65532) | ((raw & 3) << 16)
            };
            let len = if self.filetype {
                usize::from(blk[off + 6])
            } else {
                usize::from(u16le(blk, off + 6))
            };
            if rec < 8 || rec % 4 != 0 || off + rec > bs || 8 + len > rec {
                return no(format!("bad directory entry at {off}"));
            }
            if ino != 0 && blk.get(off + 8..off + 8 + len) == Some(name) {
                return Ok(Some(ino));
            }
            off += rec;
        }
        Ok(None)
    }

    /// Every extent of `d` as (logical, physical, length), from its tree.
    fn extents(&self, d: &Inode) -> Result<Vec<(u64, u64, u64)>, Unsupported> {
        let mut out = Vec::new();
        let mut visited = 0usize;
        self.walk(&d.block, None, &mut out, &mut visited)?;
        Ok(out)
    }

    fn walk(
        &self,
        node: &[u8],
        want_depth: Option<u16>,
        out: &mut Vec<(u64, u64, u64)>,
        visited: &mut usize,
    ) -> Result<(), Unsupported> {
        *visited += 1;
        if *visited > MAX_EXTENT_NODES {
            return no("extent tree too large");
        }
        let (magic, entries, depth) = (u16le(node, 0), usize::from(u16le(node, 2)), u16le(node, 6));
        if magic != 0xF30A || 12 + entries * 12 > node.len() || depth > 5 {
            return no("bad extent node");
        }
        if want_depth.is_some_and(|w| w != depth) {
            return no("extent node at the wrong depth");
        }
        for i in 0..entries {
            let e = &node[12 + i * 12..24 + i * 12];
            let lblk = u64::from(u32le(e, 0));
            if depth == 0 {
                let len = u64::from(u16le(e, 4));
                if len > 32768 {
                    return no("uninitialised extent in a directory");
                }
                let start = u64::from(u32le(e, 8)) | (u64::from(u16le(e, 6)) << 32);
                if len == 0 || !matches!(start.checked_add(len), Some(end) if end <= self.blocks) {
                    return no("extent outside the filesystem");
                }
                out.push((lblk, start, len));
            } else {
                let leaf = u64::from(u32le(e, 4)) | (u64::from(u16le(e, 8)) << 32);
                let child = self.block(leaf)?;
                self.walk(&child, Some(depth - 1), out, visited)?;
            }
        }
        Ok(())
    }

    /// Logical block `l` of a block-mapped inode (None: a hole).
    fn mapped(&self, d: &Inode, l: u64) -> Result<Option<u64>, Unsupported> {
        let ptr = |i: usize| u64::from(u32le(&d.block, i * 4));
        let per = self.bs / 4;
        let mut l = l;
        if l < 12 {
            return Ok(Some(ptr(l as usize)).filter(|b| *b != 0));
        }
        l -= 12;
        let mut span = per;
        for (slot, levels) in [(12usize, 1u32), (13, 2), (14, 3)] {
            if l < span {
                let mut b = ptr(slot);
                for lvl in (0..levels).rev() {
                    if b == 0 {
                        return Ok(None);
                    }
                    let blk = self.block(b)?;
                    let idx = (l / per.pow(lvl)) % per;
                    b = u64::from(u32le(&blk, idx as usize * 4));
                }
                return Ok(Some(b).filter(|b| *b != 0));
            }
            l -= span;
            span = span.saturating_mul(per);
        }
        no("block beyond the triple-indirect map")
    }
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
