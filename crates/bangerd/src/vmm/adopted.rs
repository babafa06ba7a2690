//! VMMs a previous daemon started (adopted at reconcile): recognised under
//! `/proc` by binary and VM id, and killed (Firecracker, a jailed root
//! process, through the helper; QEMU, the daemon's own user, directly).

use crate::privops::{PrivError, PrivOps};
use banger_proto::helper::{self as m, method};
use std::path::Path;

/// A kill that failed.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("killing Firecracker {0} through the helper")]
    Helper(i64, #[source] Box<PrivError>),
    #[error("killing QEMU {0}")]
    Kill(i64, #[source] std::io::Error),
}

/// Whether `pid` under `proc_root` is a VMM (QEMU or Firecracker) of VM `id`:
/// its command line names the binary and the VM's id (its disk, socket or
/// `--id`), so a reused pid is never taken for the VM.
pub fn alive(proc_root: &Path, pid: i64, id: &str) -> bool {
    let Ok(raw) = std::fs::read(proc_root.join(pid.to_string()).join("cmdline")) else {
        return false;
    };
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let is_vmm = args.first().is_some_and(|a0| {
        let base = a0.rsplit('/').next().unwrap_or(a0);
        base.starts_with("qemu-system") || base == "firecracker"
    });
    is_vmm && args.iter().any(|a| a.contains(id))
}

/// SIGKILL the VMM `pid`; `jailed`: a Firecracker the helper launched.
pub fn kill(privops: &dyn PrivOps, jailed: bool, pid: i64) -> Result<(), KillError> {
    if jailed {
        return privops
            .call::<method::KillProcess>(&m::KillProcess { pid: pid as i32 })
            .map(drop)
            .map_err(|e| KillError::Helper(pid, Box::new(e)));
    }
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => rustix::process::kill_process(p, rustix::process::Signal::Kill)
            .map_err(|e| KillError::Kill(pid, e.into())),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake `<root>/<pid>/cmdline` holding `argv`.
    pub(crate) fn proc_with(root: &Path, pid: i64, argv: &[&str]) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut raw = argv.join("\0").into_bytes();
        raw.push(0);
        std::fs::write(dir.join("cmdline"), raw).unwrap();
    }

    #[test]
    fn a_vmm_is_recognised_by_binary_and_vm_id() {
        let tmp = tempfile::tempdir().unwrap();
        proc_with(
            tmp.path(),
            10,
            &[
                "/usr/bin/qemu-system-x86_64",
                "-drive",
                "file=/s/vms/abc/rootfs.ext4",
            ],
        );
        proc_with(
            tmp.path(),
            11,
            &[
                "/usr/bin/qemu-system-x86_64",
                "-drive",
                "file=/s/vms/other/rootfs.ext4",
            ],
        );
        proc_with(tmp.path(), 12, &["/bin/sleep", "abc"]);
        proc_with(tmp.path(), 13, &["firecracker", "--id", "abc"]);
        assert!(alive(tmp.path(), 10, "abc"));
        assert!(!alive(tmp.path(), 11, "abc"), "another VM's QEMU");
        assert!(!alive(tmp.path(), 12, "abc"), "a reused pid");
        assert!(alive(tmp.path(), 13, "abc"));
        assert!(!alive(tmp.path(), 14, "abc"), "gone");
    }
}
