//! What `/proc/<pid>` says about a process — start time, executable
//! identity, real uid — with the proc root injected so tests use fixtures.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A failed `/proc` read, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ProcInfoError {
    #[error("read {0}")]
    Read(PathBuf, #[source] io::Error),
    #[error("{0} does not have the expected format")]
    Format(PathBuf),
    #[error("stat {0}")]
    Stat(PathBuf, #[source] io::Error),
}

impl ProcInfoError {
    /// Whether the process (or its `/proc` entry) is simply gone.
    pub fn is_gone(&self) -> bool {
        match self {
            ProcInfoError::Read(_, e) | ProcInfoError::Stat(_, e) => {
                matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
            }
            ProcInfoError::Format(_) => false,
        }
    }
}

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(md: &std::fs::Metadata) -> Self {
        FileId {
            dev: md.dev(),
            ino: md.ino(),
        }
    }
}

fn pid_path(proc_root: &Path, pid: i32, leaf: &str) -> PathBuf {
    proc_root.join(pid.to_string()).join(leaf)
}

/// Field 22 of `<proc_root>/<pid>/stat`: the start time in clock ticks
/// after boot. With the pid it names one process for the life of the boot.
pub fn start_time(proc_root: &Path, pid: i32) -> Result<u64, ProcInfoError> {
    let path = pid_path(proc_root, pid, "stat");
    let text = std::fs::read_to_string(&path).map_err(|e| ProcInfoError::Read(path.clone(), e))?;
    parse_start_time(&text).ok_or(ProcInfoError::Format(path))
}

/// Field 22 of a `stat` line. `comm` (field 2) may hold spaces and `)`, so
/// fields are counted from the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")" come fields 3, 4, …; field 22 is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Device and inode of the executable `<proc_root>/<pid>/exe` points at
/// (`stat` follows the magic link, so it works across mount namespaces
/// and chroots).
pub fn exe_id(proc_root: &Path, pid: i32) -> Result<FileId, ProcInfoError> {
    let path = pid_path(proc_root, pid, "exe");
    let md = std::fs::metadata(&path).map_err(|e| ProcInfoError::Stat(path, e))?;
    Ok(FileId::of(&md))
}

/// The real, effective uids and `CapEff` from `<proc_root>/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub ruid: u32,
    pub euid: u32,
    pub rgid: u32,
    pub cap_eff: u64,
}

/// Parse `<proc_root>/<pid>/status`.
pub fn status(proc_root: &Path, pid: i32) -> Result<Status, ProcInfoError> {
    let path = pid_path(proc_root, pid, "status");
    let text = std::fs::read_to_string(&path).map_err(|e| ProcInfoError::Read(path.clone(), e))?;
    parse_status(&text).ok_or(ProcInfoError::Format(path))
}

/// `Uid:`, `Gid:` and `CapEff:` of a `status` text.
pub fn parse_status(text: &str) -> Option<Status> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::split_whitespace)
    };
    let mut uids = field("Uid:")?;
    let ruid = uids.next()?.parse().ok()?;
    let euid = uids.next()?.parse().ok()?;
    let rgid = field("Gid:")?.next()?.parse().ok()?;
    let cap_eff = u64::from_str_radix(field("CapEff:")?.next()?, 16).ok()?;
    Some(Status {
        ruid,
        euid,
        rgid,
        cap_eff,
    })
}

/// Every numeric entry of `proc_root` (the pids alive when it was read).
pub fn pids(proc_root: &Path) -> Result<Vec<i32>, ProcInfoError> {
    let rd = std::fs::read_dir(proc_root).map_err(|e| ProcInfoError::Read(proc_root.into(), e))?;
    Ok(rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|p: &i32| *p > 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_counts_from_the_last_paren() {
        let line = "4242 (fire) cracker) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 123 4 18446744073709551615\n";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
        assert_eq!(parse_start_time("no paren"), None);
    }

    #[test]
    fn own_process_reads() {
        let me = std::process::id() as i32;
        let proc = Path::new("/proc");
        let t = start_time(proc, me).unwrap();
        assert_eq!(start_time(proc, me).unwrap(), t);
        let exe = exe_id(proc, me).unwrap();
        let md = std::fs::metadata(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(exe, FileId::of(&md));
        let st = status(proc, me).unwrap();
        assert_eq!(st.ruid, rustix::process::getuid().as_raw());
        assert!(pids(proc).unwrap().contains(&me));
        let gone = start_time(proc, i32::MAX).unwrap_err();
        assert!(gone.is_gone(), "{gone:?}");
    }

    #[test]
    fn status_fields() {
        let t = "Name:\tfirecracker\nUid:\t900001\t900001\t900001\t900001\nGid:\t900001\t900001\t900001\t900001\nCapEff:\t0000000000000000\n";
        assert_eq!(
            parse_status(t),
            Some(Status {
                ruid: 900001,
                euid: 900001,
                rgid: 900001,
                cap_eff: 0
            })
        );
        assert_eq!(parse_status("Uid:\tx\n"), None);
    }
}
