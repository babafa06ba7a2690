//! A new VM's copy grown to its `--disk-size` before first boot: the file
//! lengthened (sparse), its ext4 checked (`e2fsck -fp`) then grown offline
//! (`resize2fs`), each a bounded child with argv only.

use banger_sys::runner::{Cmd, Limits, Overflow, RunError, Runner};
use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Budget for each of `e2fsck` and `resize2fs`.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(600);
/// Output kept from each tool (the rest is discarded; it runs on).
const OUTPUT_MAX: usize = 64 << 10;

/// Why a disk was not grown.
#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("open {0}")]
    Open(PathBuf, #[source] std::io::Error),
    #[error("{0} is {1} bytes already: a disk only grows")]
    Shrink(PathBuf, u64),
    #[error("lengthen {0}")]
    SetLen(PathBuf, #[source] std::io::Error),
    #[error("check the filesystem of {0} before growing it")]
    Fsck(PathBuf, #[source] RunError),
    #[error("e2fsck found errors it could not correct in {0} (exit {1}): {2}")]
    FsckErrors(PathBuf, i32, String),
    #[error("grow the filesystem of {0}")]
    Resize(PathBuf, #[source] RunError),
}

fn limits() -> Limits {
    let mut l = Limits::new(TOOL_TIMEOUT, OUTPUT_MAX);
    l.on_overflow = Overflow::Truncate;
    l.max_stderr = OUTPUT_MAX;
    l
}

/// Grow `file` (an ext4 image, no symlink followed) to `bytes` and its
/// filesystem to fill it.
pub fn grow(file: &Path, bytes: u64, runner: &dyn Runner) -> Result<(), GrowError> {
    let f = rustix::fs::open(
        file,
        OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(|e| GrowError::Open(file.into(), e.into()))?;
    let len = f
        .metadata()
        .map_err(|e| GrowError::Open(file.into(), e))?
        .len();
    if bytes < len {
        return Err(GrowError::Shrink(file.into(), len));
    }
    f.set_len(bytes)
        .map_err(|e| GrowError::SetLen(file.into(), e))?;
    drop(f);
    // resize2fs refuses a filesystem not checked since last written.
    let out = runner
        .output(
            &Cmd::new("e2fsck")
                .args(["-f", "-p"])
                .arg(file)
                .limits(limits()),
        )
        .map_err(|e| GrowError::Fsck(file.into(), e))?;
    if out.status >= 4 || out.status < 0 {
        let why = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return Err(GrowError::FsckErrors(file.into(), out.status, why));
    }
    runner
        .run(&Cmd::new("resize2fs").arg(file).limits(limits()))
        .map_err(|e| GrowError::Resize(file.into(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_sys::runner::{CmdOutput, HostRunner, RecordingRunner};

    fn ext4(dir: &Path, mib: u64) -> PathBuf {
        let p = dir.join("bgtest-grow.ext4");
        File::create(&p).unwrap().set_len(mib << 20).unwrap();
        HostRunner
            .run(&Cmd::new("mkfs.ext4").args(["-q", "-F"]).arg(&p))
            .unwrap();
        p
    }

    /// Block count × block size from `dumpe2fs -h`.
    fn fs_bytes(p: &Path) -> u64 {
        let out = HostRunner
            .run(&Cmd::new("dumpe2fs").arg("-h").arg(p))
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |k: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        field("Block count:") * field("Block size:")
    }

    #[test]
    fn file_and_filesystem_grow_and_content_stays() {
        use banger_sys::ext4::{Ext4Tools, GuestFile};
        let tmp = banger_testkit::tmp();
        let img = ext4(tmp.path(), 32);
        let tools = Ext4Tools::new(std::sync::Arc::new(HostRunner));
        let file = GuestFile {
            path: "/etc/kept".into(),
            content: b"kept\n".to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        tools.write_files(&img, &[file]).unwrap();
        assert_eq!(fs_bytes(&img), 32 << 20);
        let rec = RecordingRunner::forwarding_to_host();
        grow(&img, 96 << 20, &rec).unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 96 << 20);
        assert_eq!(fs_bytes(&img), 96 << 20);
        assert_eq!(tools.read_file(&img, "/etc/kept", 100).unwrap(), b"kept\n");
        let img_s = img.display().to_string();
        assert_eq!(
            rec.calls(),
            [
                vec![
                    "e2fsck".to_string(),
                    "-f".into(),
                    "-p".into(),
                    img_s.clone()
                ],
                vec!["resize2fs".to_string(), img_s],
            ]
        );
        assert!(rec
            .cmds()
            .iter()
            .all(|c| c.limits.timeout == Some(TOOL_TIMEOUT)));
    }

    #[test]
    fn shrinking_symlinks_and_a_broken_filesystem_are_refused() {
        let tmp = banger_testkit::tmp();
        let img = ext4(tmp.path(), 32);
        let rec = RecordingRunner::new();
        let e = grow(&img, 16 << 20, &rec).unwrap_err();
        assert!(
            matches!(e, GrowError::Shrink(_, n) if n == 32 << 20),
            "{e:?}"
        );
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 32 << 20);
        let link = tmp.path().join("bgtest-link");
        std::os::unix::fs::symlink(&img, &link).unwrap();
        assert!(matches!(
            grow(&link, 64 << 20, &rec),
            Err(GrowError::Open(..))
        ));
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 32 << 20);
        assert!(rec.calls().is_empty());
        // e2fsck leaves errors: resize2fs is never run.
        rec.answer(
            "e2fsck",
            CmdOutput {
                status: 4,
                stdout: b"UNEXPECTED INCONSISTENCY".to_vec(),
                stderr: vec![],
            },
        );
        let e = grow(&img, 64 << 20, &rec).unwrap_err();
        assert!(
            e.to_string().contains("exit 4): UNEXPECTED INCONSISTENCY"),
            "{e}"
        );
        assert_eq!(rec.calls().len(), 1);
        // Not ext4 at all: e2fsck (really run) says so.
        let junk = tmp.path().join("bgtest-junk");
        std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
        assert!(matches!(
            grow(&junk, 2 << 20, &HostRunner),
            Err(GrowError::FsckErrors(..))
        ));
    }
}
