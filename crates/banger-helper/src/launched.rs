//! Which processes this helper launched: the pidfd registry, launch records
//! under a root-owned directory (they outlive a helper restart and every
//! one-shot helper), and jailed VMMs re-derived from their chroot.

use crate::helper::Helper;
use banger_proto::install::{InstallConfig, JailRange};
use banger_sys::procinfo::{self, FileId};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Rule text of the launched-process gate.
pub const LAUNCHED_RULE: &str =
    "pid must be a Firecracker process this helper launched (its kept pidfd, its launch record with the same start time and executable, or a jailed VMM running its chroot's copy as a jail uid)";

/// A failed launch record write.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("create the launch record directory {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("{0} must be a directory owned by root with mode 0700")]
    Untrusted(PathBuf),
    #[error("write the launch record {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("read the start time of pid {0}")]
    StartTime(i32, #[source] procinfo::ProcInfoError),
}

/// One launch: the pid's start time (`/proc/<pid>/stat` field 22) and the
/// device and inode of the binary the helper executed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub start_time: u64,
    pub exe: FileId,
}

impl Record {
    fn render(&self) -> String {
        format!("{} {} {}\n", self.start_time, self.exe.dev, self.exe.ino)
    }

    fn parse(text: &str) -> Option<Record> {
        let mut it = text.split_whitespace().map(str::parse::<u64>);
        let r = Record {
            start_time: it.next()?.ok()?,
            exe: FileId {
                dev: it.next()?.ok()?,
                ino: it.next()?.ok()?,
            },
        };
        it.next().is_none().then_some(r)
    }
}

/// The records directory, created root-owned 0700 if absent; an existing
/// one that is not exactly that is not trusted.
fn records_dir(dir: &Path) -> Result<&Path, RecordError> {
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(RecordError::Dir(dir.into(), e));
    }
    let md = std::fs::symlink_metadata(dir).map_err(|e| RecordError::Dir(dir.into(), e))?;
    if !md.is_dir() || md.uid() != rustix::process::geteuid().as_raw() || md.mode() & 0o077 != 0 {
        return Err(RecordError::Untrusted(dir.into()));
    }
    Ok(dir)
}

/// Record that this helper launched `pid` by executing `exe`.
pub fn record(h: &Helper, pid: i32, exe: FileId) -> Result<(), RecordError> {
    let dir = records_dir(&h.host.launch_records)?;
    let start_time =
        procinfo::start_time(&h.host.proc_root, pid).map_err(|e| RecordError::StartTime(pid, e))?;
    let path = dir.join(pid.to_string());
    let tmp = dir.join(format!(".{pid}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(Record { start_time, exe }.render().as_bytes())?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| RecordError::Write(path.clone(), e))
}

fn read_record(dir: &Path, pid: i32) -> Option<Record> {
    let text = std::fs::read_to_string(dir.join(pid.to_string())).ok()?;
    Record::parse(&text)
}

/// Whether `pid`'s record matches the process now behind `pid`: same start
/// time (so not a reused pid) and same executable. A record whose process
/// is gone or whose start time differs is stale and removed.
pub fn record_matches(h: &Helper, pid: i32) -> bool {
    let dir = &h.host.launch_records;
    let Some(rec) = read_record(dir, pid) else {
        return false;
    };
    match procinfo::start_time(&h.host.proc_root, pid) {
        Ok(t) if t == rec.start_time => {
            procinfo::exe_id(&h.host.proc_root, pid).is_ok_and(|exe| exe == rec.exe)
        }
        Ok(_) => {
            let _ = std::fs::remove_file(dir.join(pid.to_string()));
            false
        }
        Err(e) => {
            if e.is_gone() {
                let _ = std::fs::remove_file(dir.join(pid.to_string()));
            }
            false
        }
    }
}

/// Live launch records (stale ones are removed on the way).
pub fn live_records(h: &Helper) -> usize {
    let Ok(rd) = std::fs::read_dir(&h.host.launch_records) else {
        return 0;
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| record_matches(h, *pid))
        .count()
}

/// `<jailer_base>/<file name of firecracker_bin>`: where the jailer builds
/// every VM's chroot.
pub fn exec_dir(cfg: &InstallConfig) -> Option<(String, PathBuf)> {
    let name = banger_sys::jail::file_name(&cfg.firecracker_bin)?;
    Some((name.clone(), cfg.jailer_base.join(name)))
}

/// A jailed VMM this helper built: its real and effective uid are one jail
/// uid of the reserved range, and its executable is the Firecracker copy
/// inside the chroot whose root directory that uid owns
/// (`<jailer_base>/<exec name>/<vm_id>/root/<exec name>`, same device and
/// inode). Only root can create that tree (its parents are root-owned
/// 0700), and the jail uid owns nothing else.
pub fn jailed_identity(h: &Helper, range: JailRange, pid: i32) -> Option<String> {
    let st = procinfo::status(&h.host.proc_root, pid).ok()?;
    if st.ruid != st.euid || !range.contains(st.ruid) {
        return None;
    }
    let exe = procinfo::exe_id(&h.host.proc_root, pid).ok()?;
    let (name, dir) = exec_dir(&h.cfg)?;
    let base_md = std::fs::symlink_metadata(&dir).ok()?;
    if !base_md.is_dir() || base_md.uid() != 0 {
        return None;
    }
    for ent in std::fs::read_dir(&dir).ok()?.flatten() {
        let vm_id = ent.file_name().to_str()?.to_string();
        let root = dir.join(&vm_id).join("root");
        let Ok(rmd) = std::fs::symlink_metadata(&root) else {
            continue;
        };
        if !rmd.is_dir() || rmd.uid() != st.ruid {
            continue;
        }
        let Ok(bin) = std::fs::symlink_metadata(root.join(&name)) else {
            continue;
        };
        if bin.is_file() && FileId::of(&bin) == exe {
            return Some(vm_id);
        }
    }
    None
}

/// Whether `pid` is a process this helper launched, re-derived without the
/// in-memory registry: a matching launch record, or a jailed VMM.
pub fn is_launched(h: &Helper, pid: i32) -> bool {
    if record_matches(h, pid) {
        return true;
    }
    match h.cfg.jail_range() {
        Ok(Some(range)) => jailed_identity(h, range, pid).is_some(),
        _ => false,
    }
}

/// Rebuild the pidfd registry from `/proc` (at helper start): every
/// process [`is_launched`] says this helper launched gets a pidfd, checked
/// again after opening it so a pid reused in between is not adopted.
/// Returns how many were adopted; stale records are removed.
pub fn adopt(h: &Helper) -> usize {
    let Ok(pids) = procinfo::pids(&h.host.proc_root) else {
        return 0;
    };
    let mut n = 0;
    for pid in pids {
        if pid == std::process::id() as i32 || h.host.launched.get(pid).is_some() {
            continue;
        }
        if !is_launched(h, pid) {
            continue;
        }
        let Ok(fd) = banger_sys::pidfd::open(pid) else {
            continue;
        };
        if is_launched(h, pid) && banger_sys::pidfd::is_alive(pid, &fd).unwrap_or(false) {
            h.host.launched.insert(pid, fd);
            n += 1;
        }
    }
    let _ = live_records(h);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_junk() {
        let r = Record {
            start_time: 12,
            exe: FileId { dev: 3, ino: 4 },
        };
        assert_eq!(Record::parse(&r.render()), Some(r));
        for bad in ["", "1 2", "1 2 3 4", "a 2 3", "-1 2 3"] {
            assert_eq!(Record::parse(bad), None, "{bad}");
        }
    }
}
