//! A QEMU VM's own cgroup on the host: made with its limits, the process
//! moved in, and removed once empty (v1 controllers or the v2 hierarchy,
//! under an injected `/sys`).

use crate::gates::jail::CgroupVersion;
use crate::gates::qemu::{cgroup_dirs, limit_files, Limits};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A failed cgroup operation.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("creating cgroup {0}")]
    Create(PathBuf, #[source] std::io::Error),
    #[error("cgroup {0} exists and still holds processes")]
    Busy(PathBuf),
    #[error("writing {1} into {0}")]
    Write(PathBuf, String, #[source] std::io::Error),
    #[error("removing cgroup {0}")]
    Remove(PathBuf, #[source] std::io::Error),
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| CgroupError::Write(path.into(), value.into(), e))
}

/// Remove `dir` if it exists, waiting up to `wait` while it is busy (a
/// process that just exited leaves its cgroup a moment later).
fn remove_dir(dir: &Path, wait: Duration) -> Result<(), CgroupError> {
    let t = Instant::now();
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && t.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(CgroupError::Remove(dir.into(), e)),
        }
    }
}

/// Make VM `vm_id`'s cgroup(s) with `limits` and move `pid` in. A stale
/// empty cgroup of that id is replaced; one that holds processes is
/// refused. On failure the process goes back to the hierarchy's root and
/// what was made is removed.
pub fn place(
    sys_root: &Path,
    v: CgroupVersion,
    vm_id: &str,
    limits: Limits,
    pid: i32,
) -> Result<Vec<PathBuf>, CgroupError> {
    let dirs = cgroup_dirs(sys_root, v, vm_id);
    let cg = sys_root.join("fs/cgroup");
    // Made directories, and whether the process was moved into each.
    let mut made: Vec<(PathBuf, bool)> = Vec::new();
    let undo = |made: &[(PathBuf, bool)]| {
        for (d, moved) in made {
            if *moved {
                let root = d.parent().unwrap_or(&cg);
                let _ = std::fs::write(root.join("cgroup.procs"), pid.to_string());
            }
            let _ = remove_dir(d, Duration::from_millis(500));
        }
    };
    let r = (|| {
        if v == CgroupVersion::V2 {
            // The root's children get memory and pids (systemd usually has
            // enabled both already; writing them again changes nothing).
            write(&cg.join("cgroup.subtree_control"), "+memory +pids")?;
        }
        for d in &dirs {
            if d.exists() {
                remove_dir(d, Duration::ZERO).map_err(|_| CgroupError::Busy(d.clone()))?;
            }
            std::fs::create_dir(d).map_err(|e| CgroupError::Create(d.clone(), e))?;
            made.push((d.clone(), false));
        }
        for (ctrl, file, value) in limit_files(v, limits) {
            let d = match ctrl {
                Some(c) => dirs
                    .iter()
                    .find(|d| d.parent().and_then(Path::file_name) == Some(c.as_ref()))
                    .unwrap_or(&dirs[0]),
                None => &dirs[0],
            };
            write(&d.join(file), &value)?;
        }
        for (d, moved) in made.iter_mut() {
            *moved = true;
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    })();
    match r {
        Ok(()) => Ok(dirs),
        Err(e) => {
            undo(&made);
            Err(e)
        }
    }
}

/// Remove VM `vm_id`'s cgroup(s) under either version (absent is fine),
/// waiting up to `wait` for the last process to leave.
pub fn remove(sys_root: &Path, vm_id: &str, wait: Duration) -> Result<(), CgroupError> {
    for v in [CgroupVersion::V1, CgroupVersion::V2] {
        for d in cgroup_dirs(sys_root, v, vm_id) {
            remove_dir(&d, wait)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_fixture() -> tempfile::TempDir {
        let t = tempfile::Builder::new()
            .prefix("bgtest-cgroup-")
            .tempdir()
            .unwrap();
        for c in ["memory", "pids"] {
            std::fs::create_dir_all(t.path().join("fs/cgroup").join(c)).unwrap();
        }
        t
    }

    #[test]
    fn place_writes_the_limits_and_the_pid_on_v1() {
        let t = v1_fixture();
        let l = Limits {
            memory_bytes: 768 << 20,
            pids: 130,
        };
        let dirs = place(t.path(), CgroupVersion::V1, "vm1", l, 4242).unwrap();
        let cg = t.path().join("fs/cgroup");
        assert_eq!(
            dirs,
            [cg.join("memory/banger-vm1"), cg.join("pids/banger-vm1")]
        );
        let read = |p: &str| std::fs::read_to_string(cg.join(p)).unwrap();
        assert_eq!(read("memory/banger-vm1/memory.limit_in_bytes"), "805306368");
        assert_eq!(read("pids/banger-vm1/pids.max"), "130");
        assert_eq!(read("memory/banger-vm1/cgroup.procs"), "4242");
        assert_eq!(read("pids/banger-vm1/cgroup.procs"), "4242");
        // A fixture directory is never "empty" to rmdir (plain files): a
        // second place of the same id is refused as busy, nothing changed.
        let e = place(t.path(), CgroupVersion::V1, "vm1", l, 1).unwrap_err();
        assert!(matches!(e, CgroupError::Busy(_)), "{e}");
        assert_eq!(read("memory/banger-vm1/cgroup.procs"), "4242");
    }

    #[test]
    fn a_failed_place_leaves_nothing() {
        let t = v1_fixture();
        // No pids hierarchy: the memory cgroup made first is taken back.
        std::fs::remove_dir(t.path().join("fs/cgroup/pids")).unwrap();
        let l = Limits {
            memory_bytes: 1 << 30,
            pids: 130,
        };
        assert!(place(t.path(), CgroupVersion::V1, "vm1", l, 7).is_err());
        assert!(!t.path().join("fs/cgroup/memory/banger-vm1").exists());
        assert!(
            !t.path().join("fs/cgroup/memory/cgroup.procs").exists(),
            "the process was never moved, so not moved back either"
        );
    }

    #[test]
    fn remove_of_an_absent_cgroup_is_fine() {
        let t = v1_fixture();
        remove(t.path(), "vm1", Duration::ZERO).unwrap();
        std::fs::create_dir(t.path().join("fs/cgroup/memory/banger-vm1")).unwrap();
        remove(t.path(), "vm1", Duration::ZERO).unwrap();
        assert!(!t.path().join("fs/cgroup/memory/banger-vm1").exists());
    }
}
