//! The fallback disk driver: a copy that never writes the base — `FICLONE`
//! reflink where the filesystem supports it, else a sparse-aware copy
//! (`SEEK_DATA`/`SEEK_HOLE` + `copy_file_range`).

use rustix::fs::{Mode, OFlags, SeekFrom};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How a clone was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloneMethod {
    /// Shared extents (`FICLONE`): O(1) in data size.
    Reflink,
    /// Only the data extents copied; holes stay holes.
    SparseCopy,
}

/// A failed clone.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("open base {0}")]
    OpenSource(PathBuf, #[source] io::Error),
    #[error("create clone {0}")]
    CreateDest(PathBuf, #[source] io::Error),
    #[error("stat {0}")]
    Stat(PathBuf, #[source] io::Error),
    #[error("{0} is not a regular file")]
    NotRegular(PathBuf),
    #[error("size clone {0}")]
    SetLen(PathBuf, #[source] io::Error),
    #[error("find data in {0}")]
    Seek(PathBuf, #[source] io::Error),
    #[error("copy data from {0} to {1}")]
    Copy(PathBuf, PathBuf, #[source] io::Error),
}

/// Clone `src` to a new file `dst` (created exclusively, mode 0600).
/// `progress(done, total)` is called as data is copied. On error the
/// partial `dst` is removed.
pub fn clone_file(
    src: &Path,
    dst: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CloneMethod, CloneError> {
    let s = rustix::fs::open(
        src,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(|e| CloneError::OpenSource(src.into(), e.into()))?;
    let meta = s.metadata().map_err(|e| CloneError::Stat(src.into(), e))?;
    if !meta.is_file() {
        return Err(CloneError::NotRegular(src.into()));
    }
    let d = rustix::fs::open(
        dst,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map(File::from)
    .map_err(|e| CloneError::CreateDest(dst.into(), e.into()))?;
    let r = clone_into(&s, &d, meta.len(), src, dst, progress);
    if r.is_err() {
        drop(d);
        let _ = std::fs::remove_file(dst);
    }
    r
}

fn clone_into(
    s: &File,
    d: &File,
    len: u64,
    src: &Path,
    dst: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CloneMethod, CloneError> {
    if rustix::fs::ioctl_ficlone(d, s).is_ok() {
        progress(len, len);
        return Ok(CloneMethod::Reflink);
    }
    d.set_len(len)
        .map_err(|e| CloneError::SetLen(dst.into(), e))?;
    let mut pos = 0u64;
    let mut done = 0u64;
    let mut use_cfr = true;
    while pos < len {
        let start = match rustix::fs::seek(s, SeekFrom::Data(pos as i64)) {
            Ok(o) => o,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(CloneError::Seek(src.into(), e.into())),
        };
        let end = rustix::fs::seek(s, SeekFrom::Hole(start as i64))
            .map_err(|e| CloneError::Seek(src.into(), e.into()))?
            .min(len);
        let mut off = start;
        while off < end {
            let chunk = (end - off).min(64 << 20) as usize;
            let n = if use_cfr {
                let mut off_in = off;
                let mut off_out = off;
                match rustix::fs::copy_file_range(
                    s,
                    Some(&mut off_in),
                    d,
                    Some(&mut off_out),
                    chunk,
                ) {
                    Ok(0) => {
                        return Err(CloneError::Copy(
                            src.into(),
                            dst.into(),
                            io::ErrorKind::UnexpectedEof.into(),
                        ))
                    }
                    Ok(n) => n,
                    Err(
                        rustix::io::Errno::XDEV
                        | rustix::io::Errno::NOSYS
                        | rustix::io::Errno::OPNOTSUPP
                        | rustix::io::Errno::INVAL,
                    ) => {
                        use_cfr = false;
                        continue;
                    }
                    Err(e) => return Err(CloneError::Copy(src.into(), dst.into(), e.into())),
                }
            } else {
                copy_chunk(s, d, off, chunk.min(1 << 20))
                    .map_err(|e| CloneError::Copy(src.into(), dst.into(), e))?
            };
            off += n as u64;
            done += n as u64;
            progress(done, len);
        }
        pos = end;
    }
    Ok(CloneMethod::SparseCopy)
}

/// `pread` + `pwrite` of one chunk, for filesystems without `copy_file_range`.
fn copy_chunk(s: &File, d: &File, off: u64, len: usize) -> io::Result<usize> {
    let mut buf = vec![0u8; len];
    let n = s.read_at(&mut buf, off)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    d.write_all_at(&buf[..n], off)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn sparse_base(dir: &Path) -> PathBuf {
        let p = dir.join("bgtest-base.img");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[1u8; 8192], 0).unwrap();
        f.write_all_at(&[2u8; 100_000], 10 << 20).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        p
    }

    #[test]
    fn clone_keeps_content_and_sparseness_and_never_writes_the_base() {
        let tmp = banger_testkit::tmp();
        let base = sparse_base(tmp.path());
        let before = std::fs::read(&base).unwrap();
        let mtime = std::fs::metadata(&base).unwrap().mtime_nsec();
        let dst = tmp.path().join("bgtest-clone.img");
        let mut last = (0, 0);
        let how = clone_file(&base, &dst, &mut |d, t| last = (d, t)).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), before);
        let (bm, dm) = (
            std::fs::metadata(&base).unwrap(),
            std::fs::metadata(&dst).unwrap(),
        );
        assert_eq!(dm.len(), 64 << 20);
        assert_eq!(dm.mode() & 0o777, 0o600);
        if how == CloneMethod::SparseCopy {
            // Allocated blocks about the data written (~116 KiB), not 64 MiB.
            assert!(
                dm.blocks() * 512 <= bm.blocks() * 512 + (64 << 10),
                "{} vs {}",
                dm.blocks(),
                bm.blocks()
            );
            assert!(dm.blocks() * 512 < 1 << 20);
            assert_eq!(last.1, 64 << 20);
            assert!(last.0 >= 8192 + 100_000 + 4);
        }
        // Writing the clone leaves the base alone.
        File::options()
            .write(true)
            .open(&dst)
            .unwrap()
            .write_all_at(&[9u8; 4096], 0)
            .unwrap();
        assert_eq!(std::fs::read(&base).unwrap(), before);
        assert_eq!(std::fs::metadata(&base).unwrap().mtime_nsec(), mtime);
    }

    #[test]
    fn existing_destination_is_refused_and_kept() {
        let tmp = banger_testkit::tmp();
        let base = sparse_base(tmp.path());
        let dst = tmp.path().join("bgtest-exists");
        std::fs::write(&dst, b"mine").unwrap();
        assert!(matches!(
            clone_file(&base, &dst, &mut |_, _| {}),
            Err(CloneError::CreateDest(..))
        ));
        assert_eq!(std::fs::read(&dst).unwrap(), b"mine");
        let link = tmp.path().join("bgtest-link");
        std::os::unix::fs::symlink(&base, &link).unwrap();
        assert!(matches!(
            clone_file(&link, &tmp.path().join("x"), &mut |_, _| {}),
            Err(CloneError::OpenSource(..))
        ));
        assert!(matches!(
            clone_file(tmp.path(), &tmp.path().join("y"), &mut |_, _| {}),
            Err(CloneError::NotRegular(..))
        ));
        assert!(!tmp.path().join("y").exists());
    }

    #[test]
    fn empty_and_fully_dense_files() {
        let tmp = banger_testkit::tmp();
        let e = tmp.path().join("bgtest-empty");
        File::create(&e).unwrap();
        clone_file(&e, &tmp.path().join("e2"), &mut |_, _| {}).unwrap();
        assert_eq!(std::fs::metadata(tmp.path().join("e2")).unwrap().len(), 0);
        let dense = tmp.path().join("bgtest-dense");
        let data: Vec<u8> = (0..3_000_001u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&dense, &data).unwrap();
        clone_file(&dense, &tmp.path().join("d2"), &mut |_, _| {}).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("d2")).unwrap(), data);
    }

    #[test]
    fn pread_pwrite_fallback_copies_a_chunk() {
        let tmp = banger_testkit::tmp();
        let a = tmp.path().join("a");
        std::fs::write(&a, b"0123456789").unwrap();
        let b = File::create(tmp.path().join("b")).unwrap();
        let n = copy_chunk(&File::open(&a).unwrap(), &b, 3, 4).unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            std::fs::read(tmp.path().join("b")).unwrap(),
            b"\0\0\x003456"
        );
    }

    #[test]
    fn base_bytes_unchanged_after_ten_vms_wrote_their_disks() {
        use banger_sys::ext4::{Ext4Tools, GuestFile};
        use banger_sys::runner::{Cmd, HostRunner, Runner};
        use std::sync::Arc;
        let tmp = banger_testkit::tmp();
        let base = tmp.path().join("bgtest-base.ext4");
        File::create(&base).unwrap().set_len(32 << 20).unwrap();
        HostRunner
            .run(&Cmd::new("mkfs.ext4").args(["-q", "-F"]).arg(&base))
            .unwrap();
        let before = std::fs::read(&base).unwrap();
        let tools = Ext4Tools::new(Arc::new(HostRunner));
        for i in 0..10 {
            let disk = tmp.path().join(format!("bgtest-vm{i}.ext4"));
            clone_file(&base, &disk, &mut |_, _| {}).unwrap();
            let files = [
                GuestFile {
                    path: "/etc/hostname".into(),
                    content: format!("vm{i}\n").into_bytes(),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
                GuestFile {
                    path: "/var/lib/big".into(),
                    content: vec![i as u8; 1 << 20],
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                },
            ];
            tools.write_files(&disk, &files).unwrap();
        }
        for i in 0..10 {
            let disk = tmp.path().join(format!("bgtest-vm{i}.ext4"));
            assert_eq!(
                tools.read_file(&disk, "/etc/hostname", 100).unwrap(),
                format!("vm{i}\n").into_bytes()
            );
        }
        assert!(
            std::fs::read(&base).unwrap() == before,
            "base image bytes changed"
        );
        assert!(
            tools.read_file(&base, "/etc/hostname", 100).is_err(),
            "base has no hostname"
        );
    }
}
