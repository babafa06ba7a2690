//! ext4 images in user space: `debugfs` (argv only) to read and write guest
//! files, `e2fsck -fy`. A guest-written image is never mounted in the host.

pub mod read;
mod tools;

pub use tools::Ext4Tools;

use crate::runner::{Cmd, Privilege, RunError};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
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

/// One `stat` answer: what the path is, or what debugfs said instead.
pub type Probe = Result<Entry, String>;

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
