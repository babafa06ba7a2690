//! ext4 images in user space: `debugfs` (argv only) to read and write guest
//! files, `e2fsck -fy`. A guest-written image is never mounted in the host.

use crate::runner::{Cmd, CmdOutput, Limits, Overflow, Privilege, RunError, Runner};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Longest guest path accepted.
pub const GUEST_PATH_MAX: usize = 1024;
/// Wall-clock budget of one `debugfs` run; past it its process group is killed.
pub const DEBUGFS_TIMEOUT: Duration = Duration::from_secs(60);
/// Wall-clock budget of one `e2fsck` run (below the helper's 120 s request budget).
pub const FSCK_TIMEOUT: Duration = Duration::from_secs(110);
/// Most output kept from a `debugfs stat` or `write` run (per stream).
pub const DEBUGFS_OUTPUT_MAX: usize = 1 << 20;
/// Most output kept from `e2fsck` (per stream; the rest is discarded, it runs on).
pub const FSCK_OUTPUT_MAX: usize = 64 << 10;

/// The image a tool works on: the name it is given, the privileges it runs
/// with, and the already-opened fd it inherits (when the name is
/// `/proc/self/fd/N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: PathBuf,
    pub privilege: Privilege,
    pub pass_fd: Option<RawFd>,
}

impl ImageRef {
    /// By path, with the caller's own privileges.
    pub fn path(p: &Path) -> Self {
        ImageRef {
            name: p.to_path_buf(),
            privilege: Privilege::Inherit,
            pass_fd: None,
        }
    }

    /// The open file `f` (kept open by the caller for the whole call),
    /// named to the tool as `/proc/self/fd/N` of the fd it inherits: the
    /// file checked is the file used. The tool reopens it through that magic
    /// link, so the file's mode must let `privilege` open it.
    pub fn fd(f: &impl AsRawFd, privilege: Privilege) -> Self {
        ImageRef {
            name: crate::child::proc_self_fd(f),
            privilege,
            pass_fd: Some(f.as_raw_fd()),
        }
    }

    fn cmd(&self, program: &str) -> Cmd {
        let c = Cmd::new(program).privilege(self.privilege);
        match self.pass_fd {
            Some(fd) => c.pass_fd(fd),
            None => c,
        }
    }
}

/// A failed ext4 operation.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("unsafe guest path {0:?}: must be absolute, [A-Za-z0-9._/@+-], no . or .. components")]
    UnsafeGuestPath(String),
    #[error("unsafe host path {0:?} for debugfs")]
    UnsafeHostPath(PathBuf),
    #[error("mode {0:#o} is more than 0o7777")]
    BadMode(u32),
    #[error("create private temp dir")]
    TempDir(#[source] std::io::Error),
    #[error("write temp file {0}")]
    TempFile(PathBuf, #[source] std::io::Error),
    #[error("run debugfs on {0}")]
    Debugfs(PathBuf, #[source] RunError),
    #[error("debugfs on {0}: {1}")]
    DebugfsReported(PathBuf, String),
    #[error("{0} in the image is larger than {1} bytes")]
    TooLarge(String, usize),
    #[error("after writing, {0} in the image does not hold the content written")]
    Verify(String),
    #[error("{0} in the image exists and is not a directory")]
    NotADirectory(String),
    #[error("{0} in the image is a directory")]
    IsADirectory(String),
    #[error("run e2fsck on {0}")]
    Fsck(PathBuf, #[source] RunError),
    #[error("hand temp file {0} to the tool's uid")]
    TempOwner(PathBuf, #[source] std::io::Error),
}

/// Guest path rule, asserted again here (the helper's gate checks it first):
/// only these bytes can never form a second debugfs command or argument.
pub fn check_guest_path(p: &str) -> Result<(), Ext4Error> {
    let ok = p.len() >= 2
        && p.len() <= GUEST_PATH_MAX
        && p.starts_with('/')
        && p.bytes().all(is_safe_byte)
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= 255);
    if ok {
        Ok(())
    } else {
        Err(Ext4Error::UnsafeGuestPath(p.to_string()))
    }
}

fn is_safe_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'@' | b'+' | b'-')
}

fn check_host_path(p: &Path) -> Result<&str, Ext4Error> {
    match p.to_str() {
        Some(s) if s.starts_with('/') && s.bytes().all(is_safe_byte) => Ok(s),
        _ => Err(Ext4Error::UnsafeHostPath(p.into())),
    }
}

/// What a guest path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Missing,
    Dir,
    Other,
}

/// One file to place in a guest image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    pub path: String,
    pub content: Vec<u8>,
    /// Permission bits (≤ 0o7777); the file type is always regular.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

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
    /// target is first looked up in process ([`crate::ext4read`]: what to
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
        let found = match crate::ext4read::probe_image(image, &paths) {
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

/// One `stat` answer: what the path is, or what debugfs said instead.
pub type Probe = Result<Entry, String>;

/// A `#` comment line with 128 random bits: debugfs echoes it on stdout.
fn marker() -> Result<String, Ext4Error> {
    let mut b = [0u8; 16];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| Ext4Error::TempDir(e.into()))?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("# banger-probe-{hex}"))
}

/// Every parent directory and every target of `files`, each once, in order.
pub fn probe_paths(files: &[GuestFile]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for f in files {
        let mut parent = String::new();
        let comps: Vec<&str> = f.path[1..].split('/').collect();
        for c in &comps[..comps.len() - 1] {
            parent.push('/');
            parent.push_str(c);
            if seen.insert(parent.clone()) {
                out.push(parent.clone());
            }
        }
        if seen.insert(f.path.clone()) {
            out.push(f.path.clone());
        }
    }
    out
}

/// Split the output of a [`Ext4Tools::probe_all`] run: the section after
/// `MARK i` must start with the echo `debugfs: stat PATH`, then stat's
/// `Inode: N   Type: T` line; an empty section is a missing path when
/// stderr says `PATH: File not found by ext2_lookup`, else that line.
pub fn parse_probes(stdout: &[u8], stderr: &[u8], mark: &str, paths: &[String]) -> Vec<Probe> {
    let out = String::from_utf8_lossy(stdout);
    let err = String::from_utf8_lossy(stderr);
    let mut sections: Vec<Option<Vec<&str>>> = vec![None; paths.len()];
    let mut cur: Option<usize> = None;
    for line in out.lines() {
        if let Some(i) = line
            .strip_prefix(mark)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|r| r.parse::<usize>().ok())
            .filter(|i| *i < paths.len())
        {
            cur = Some(i);
            sections[i] = Some(Vec::new());
        } else if let Some(s) = cur.and_then(|i| sections[i].as_mut()) {
            if s.len() < 2 {
                s.push(line);
            }
        }
    }
    paths
        .iter()
        .zip(sections)
        .map(|(p, s)| {
            let s = s.ok_or_else(|| format!("no answer for stat {p}"))?;
            if s.first() != Some(&format!("debugfs: stat {p}").as_str()) {
                return Err(format!("no answer for stat {p}"));
            }
            match s.get(1) {
                Some(l) if l.starts_with("Inode: ") && l.contains("Type: directory") => {
                    Ok(Entry::Dir)
                }
                Some(l) if l.starts_with("Inode: ") => Ok(Entry::Other),
                _ => {
                    let said = err
                        .lines()
                        .find_map(|l| l.strip_prefix(p.as_str())?.strip_prefix(": "))
                        .map(str::trim_end);
                    match said {
                        Some("File not found by ext2_lookup") => Ok(Entry::Missing),
                        Some(other) => Err(format!("{p}: {other}")),
                        None => Err(format!("no answer for stat {p}")),
                    }
                }
            }
        })
        .collect()
}

/// The missing parents of `files` to create, parents first (debugfs'
/// `mkdir` on an existing name leaks an inode); refuses a parent that is
/// not a directory and a target that is one (`sif` after a failed `write`
/// would retype it), including one this very call creates.
pub fn plan_mkdirs(
    image: &Path,
    files: &[GuestFile],
    found: &[Probe],
) -> Result<Vec<String>, Ext4Error> {
    let paths = probe_paths(files);
    let answers: std::collections::HashMap<&str, &Probe> =
        paths.iter().map(String::as_str).zip(found).collect();
    let mut made: std::collections::HashSet<String> = Default::default();
    let mut mkdirs = Vec::new();
    let kind = |p: &str, made: &std::collections::HashSet<String>| -> Result<Entry, Ext4Error> {
        if made.contains(p) {
            return Ok(Entry::Dir);
        }
        match answers.get(p) {
            Some(Ok(k)) => Ok(*k),
            Some(Err(said)) => Err(Ext4Error::DebugfsReported(image.into(), said.clone())),
            None => Err(Ext4Error::DebugfsReported(
                image.into(),
                format!("no answer for stat {p}"),
            )),
        }
    };
    for f in files {
        let comps: Vec<&str> = f.path[1..].split('/').collect();
        let mut parent = String::new();
        for c in &comps[..comps.len() - 1] {
            parent.push('/');
            parent.push_str(c);
            match kind(&parent, &made)? {
                Entry::Dir => {}
                Entry::Missing => {
                    made.insert(parent.clone());
                    mkdirs.push(parent.clone());
                }
                Entry::Other => return Err(Ext4Error::NotADirectory(parent)),
            }
        }
        if kind(&f.path, &made)? == Entry::Dir {
            return Err(Ext4Error::IsADirectory(f.path.clone()));
        }
    }
    Ok(mkdirs)
}

/// The tail of the writing run's stdout must be, per file, the echo
/// `debugfs: cat PATH` and then exactly the content written.
pub fn verify_read_back(stdout: &[u8], files: &[GuestFile]) -> Result<(), Ext4Error> {
    let want: usize = files
        .iter()
        .map(|f| "debugfs: cat \n".len() + f.path.len() + f.content.len())
        .sum();
    let Some(mut at) = stdout.len().checked_sub(want) else {
        return match files.first() {
            Some(f) => Err(Ext4Error::Verify(f.path.clone())),
            None => Ok(()),
        };
    };
    for f in files {
        let echo = format!("debugfs: cat {}\n", f.path);
        let end = at + echo.len() + f.content.len();
        if &stdout[at..at + echo.len()] != echo.as_bytes()
            || stdout[at + echo.len()..end] != f.content[..]
        {
            return Err(Ext4Error::Verify(f.path.clone()));
        }
        at = end;
    }
    Ok(())
}

#[cfg(test)]
#[path = "ext4_tests.rs"]
mod tests;
