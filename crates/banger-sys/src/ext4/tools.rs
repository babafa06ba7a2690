//! The ext4 tools run on an image: `debugfs` (argv only, commands on
//! stdin from checked paths) to read and write guest files, `e2fsck -fy`;
//! parents and targets looked up in process first ([`super::read`]).

use super::*;
use crate::runner::{CmdOutput, Limits, Overflow, Privilege, RunError, Runner};
use std::io::Write;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// debugfs / e2fsck through a [`Runner`].
pub struct Ext4Tools {
    pub runner: Arc<dyn Runner>,
    /// Where private temp dirs are made (normally the system temp dir).
    pub temp_root: PathBuf,
}

/// Lines debugfs prints on stderr that are not failures.
fn benign(line: &str) -> bool {
    line.is_empty()
        || line.starts_with("debugfs ")
        || line.starts_with("rm: File not found by ext2_lookup")
}

/// The first line debugfs wrote to stderr beyond its version banner.
fn reported(stderr: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .find(|l| !l.is_empty() && !l.starts_with("debugfs "))
        .map(str::to_string)
}

impl Ext4Tools {
    pub fn new(runner: Arc<dyn Runner>) -> Self {
        Ext4Tools {
            runner,
            temp_root: std::env::temp_dir(),
        }
    }

    /// Run one read-only request (`debugfs -R "VERB GUEST" IMAGE`); the
    /// guest path passed the strict charset, so it cannot add a command.
    /// stdout is capped at `max` bytes: past it debugfs is killed.
    fn request(
        &self,
        image: &ImageRef,
        verb: &str,
        guest: &str,
        max: usize,
    ) -> Result<CmdOutput, Ext4Error> {
        check_guest_path(guest)?;
        let cmd = image
            .cmd("debugfs")
            .arg("-R")
            .arg(format!("{verb} {guest}"))
            .arg(&image.name)
            .limits(Limits::new(DEBUGFS_TIMEOUT, max));
        self.runner
            .run(&cmd)
            .map_err(|e| Ext4Error::Debugfs(image.name.clone(), e))
    }

    /// The content of `guest` in `image` (at most `max` bytes).
    pub fn read_file(&self, image: &Path, guest: &str, max: usize) -> Result<Vec<u8>, Ext4Error> {
        self.read(&ImageRef::path(image), guest, max)
    }

    /// The content of `guest` in `image` (at most `max` bytes). debugfs'
    /// output is read with a hard cap of `max` bytes: a larger (e.g. huge
    /// sparse) file kills it and fails with [`Ext4Error::TooLarge`]; never
    /// more than `max` bytes are held.
    pub fn read(&self, image: &ImageRef, guest: &str, max: usize) -> Result<Vec<u8>, Ext4Error> {
        let out = match self.request(image, "cat", guest, max) {
            Err(Ext4Error::Debugfs(
                _,
                RunError::OutputTooLarge {
                    stream: "stdout", ..
                },
            )) => return Err(Ext4Error::TooLarge(guest.into(), max)),
            r => r?,
        };
        if let Some(bad) = reported(&out.stderr) {
            return Err(Ext4Error::DebugfsReported(image.name.clone(), bad));
        }
        if out.stdout.len() > max {
            return Err(Ext4Error::TooLarge(guest.into(), max));
        }
        Ok(out.stdout)
    }

    /// What `guest` is in `image`.
    pub fn probe(&self, image: &Path, guest: &str) -> Result<Entry, Ext4Error> {
        self.probe_ref(&ImageRef::path(image), guest)
    }

    fn probe_ref(&self, image: &ImageRef, guest: &str) -> Result<Entry, Ext4Error> {
        let out = self.request(image, "stat", guest, DEBUGFS_OUTPUT_MAX)?;
        if String::from_utf8_lossy(&out.stderr).contains("File not found by ext2_lookup") {
            return Ok(Entry::Missing);
        }
        if let Some(bad) = reported(&out.stderr) {
            return Err(Ext4Error::DebugfsReported(image.name.clone(), bad));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let first = stdout.lines().next().unwrap_or("");
        Ok(if first.contains("Type: directory") {
            Entry::Dir
        } else {
            Entry::Other
        })
    }

    /// The debugfs command file for `files`, whose contents sit in `dir/<i>`;
    /// `mkdirs` are the missing parent directories, parents first.
    /// Every line is built from checked paths only: content never appears.
    pub fn command_file(
        dir: &Path,
        mkdirs: &[String],
        files: &[GuestFile],
    ) -> Result<String, Ext4Error> {
        let mut text = String::new();
        for d in mkdirs {
            check_guest_path(d)?;
            text.push_str(&format!("mkdir {d}\n"));
        }
        for (i, f) in files.iter().enumerate() {
            check_guest_path(&f.path)?;
            if f.mode > 0o7777 {
                return Err(Ext4Error::BadMode(f.mode));
            }
            let host = dir.join(i.to_string());
            let host = check_host_path(&host)?;
            let p = &f.path;
            text.push_str(&format!("rm {p}\n"));
            text.push_str(&format!("write {host} {p}\n"));
            text.push_str(&format!("sif {p} mode 0{:o}\n", 0o100000 | f.mode));
            text.push_str(&format!("sif {p} uid {}\n", f.uid));
            text.push_str(&format!("sif {p} gid {}\n", f.gid));
        }
        Ok(text)
    }

    /// Write `files` into `image` (replacing existing ones), creating
    /// missing parent directories; then read each back to verify.
    pub fn write_files(&self, image: &Path, files: &[GuestFile]) -> Result<(), Ext4Error> {
        self.write(&ImageRef::path(image), files)
    }

    /// Write `files` into `image` (replacing existing ones), creating
    /// missing parent directories, in one debugfs run: every parent and
    /// target is first looked up in process ([`read`]: what to
    /// create, what to refuse), then one `-w` run writes and reads every
    /// file back (`cat`), its output compared byte for byte. An image the
    /// lookup does not fully understand (or cannot open as the tool would)
    /// is probed by one read-only debugfs run (`stat` per path) instead.
    /// Command lists go on stdin (`-f -`) and hold checked paths only; the
    /// contents sit in a private temp dir, handed to the tool's uid when
    /// it runs as another.
    ///
    /// The probes cannot be left to the writing run: debugfs has no
    /// conditionals, and a blind `mkdir` under a non-directory corrupts
    /// the image, a blind `sif` retypes a directory.
    pub fn write(&self, image: &ImageRef, files: &[GuestFile]) -> Result<(), Ext4Error> {
        for f in files {
            check_guest_path(&f.path)?;
        }
        // tempfile makes the dir 0700 (we are root: nobody else can read
        // the contents, e.g. an SSH host key, while debugfs runs).
        let dir = tempfile::Builder::new()
            .prefix("banger-debugfs-")
            .tempdir_in(&self.temp_root)
            .map_err(Ext4Error::TempDir)?;
        for (i, f) in files.iter().enumerate() {
            let p = dir.path().join(i.to_string());
            let mut h = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .map_err(|e| Ext4Error::TempFile(p.clone(), e))?;
            h.write_all(&f.content)
                .map_err(|e| Ext4Error::TempFile(p.clone(), e))?;
            if let Privilege::User { uid, gid } = image.privilege {
                std::os::unix::fs::fchown(&h, Some(uid), Some(gid))
                    .map_err(|e| Ext4Error::TempOwner(p.clone(), e))?;
            }
        }
        if let Privilege::User { uid, gid } = image.privilege {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| Ext4Error::TempOwner(dir.path().into(), e))?;
        }
        let paths = probe_paths(files);
        let found = match read::probe_image(image, &paths) {
            Ok(found) => found,
            Err(why) => {
                tracing::debug!(image = %image.name.display(), %why, "probing with debugfs");
                self.probe_all(image, &paths)?
            }
        };
        let mkdirs = plan_mkdirs(&image.name, files, &found)?;
        let mut cmds = Self::command_file(dir.path(), &mkdirs, files)?;
        let mut expected = Vec::new();
        for f in files {
            cmds.push_str(&format!("cat {}\n", f.path));
            expected.extend_from_slice(format!("debugfs: cat {}\n", f.path).as_bytes());
            expected.extend_from_slice(&f.content);
        }
        let cmd = image
            .cmd("debugfs")
            .arg("-w")
            .arg("-f")
            .arg("-")
            .arg(&image.name)
            .stdin(cmds)
            .limits(Limits::new(
                DEBUGFS_TIMEOUT,
                DEBUGFS_OUTPUT_MAX + expected.len(),
            ));
        let out = self
            .runner
            .run(&cmd)
            .map_err(|e| Ext4Error::Debugfs(image.name.clone(), e))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(bad) = stderr.lines().find(|l| !benign(l)) {
            return Err(Ext4Error::DebugfsReported(
                image.name.clone(),
                bad.to_string(),
            ));
        }
        verify_read_back(&out.stdout, files)
    }

    /// What each of `paths` is in `image`, from one read-only debugfs run:
    /// `stat` per path, each preceded by a `#` comment line carrying a
    /// random marker (debugfs echoes comments as they are), so no text
    /// from the image can pass for another path's answer.
    pub(crate) fn probe_all(
        &self,
        image: &ImageRef,
        paths: &[String],
    ) -> Result<Vec<Probe>, Ext4Error> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let mut script = String::new();
        let mark = marker()?;
        for (i, p) in paths.iter().enumerate() {
            check_guest_path(p)?;
            script.push_str(&format!("{mark} {i}\nstat {p}\n"));
        }
        let cmd = image
            .cmd("debugfs")
            .arg("-f")
            .arg("-")
            .arg(&image.name)
            .stdin(script)
            .limits(Limits::new(DEBUGFS_TIMEOUT, DEBUGFS_OUTPUT_MAX));
        let out = self
            .runner
            .run(&cmd)
            .map_err(|e| Ext4Error::Debugfs(image.name.clone(), e))?;
        Ok(parse_probes(&out.stdout, &out.stderr, &mark, paths))
    }

    /// `e2fsck -fy DEVICE`; its exit code (0 clean, 1 corrected, ≥ 4 errors left).
    pub fn fsck(&self, device: &Path) -> Result<i32, Ext4Error> {
        self.fsck_ref(&ImageRef::path(device))
    }

    /// `e2fsck -fy IMAGE` within [`FSCK_TIMEOUT`] (its process group is
    /// killed past it), its output truncated at [`FSCK_OUTPUT_MAX`].
    pub fn fsck_ref(&self, image: &ImageRef) -> Result<i32, Ext4Error> {
        let mut limits = Limits::new(FSCK_TIMEOUT, FSCK_OUTPUT_MAX);
        limits.on_overflow = Overflow::Truncate;
        let cmd = image
            .cmd("e2fsck")
            .arg("-fy")
            .arg(&image.name)
            .limits(limits);
        let out = self
            .runner
            .output(&cmd)
            .map_err(|e| Ext4Error::Fsck(image.name.clone(), e))?;
        Ok(out.status)
    }
}

/// A `#` comment line with 128 random bits: debugfs echoes it on stdout.
fn marker() -> Result<String, Ext4Error> {
    let mut b = [0u8; 16];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| Ext4Error::TempDir(e.into()))?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("# banger-probe-{hex}"))
}
