//! Gates for a QEMU VM's own cgroup: the VM's size, the cgroup's name and
//! limits, and the process, which must be the owner's QEMU of that very VM.

use super::jail::{CgroupVersion, MAX_MEMORY_MIB, MAX_VCPUS};
use super::Refused;
use banger_sys::procinfo::{self, FileId};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Memory QEMU itself may use on top of the guest's (TCG's 64 MiB code
/// cache, device emulation, I/O buffers).
pub const QEMU_OVERHEAD_MIB: u64 = 256;
/// Tasks QEMU may have beyond two per vCPU (main loop, RCU, QMP, and its
/// block I/O thread pool of up to 64 workers).
pub const QEMU_PIDS_BASE: u32 = 128;
/// Prefix of every cgroup this helper makes for a QEMU VM.
pub const CGROUP_PREFIX: &str = "banger-";

/// Rule text of the process gate.
pub const QEMU_RULE: &str =
    "pid must be the owner's QEMU of this VM (running as the owner uid, its executable a qemu-system-* file with one link, it and its directory owned by root and writable by no one else, its QMP socket <RuntimeDir>/vms/<vm_id>/qmp.sock)";

/// A VM's cgroup limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u32,
}

/// `memory_mib` 1..=[`MAX_MEMORY_MIB`], `vcpus` 1..=[`MAX_VCPUS`]; the
/// limits: memory plus [`QEMU_OVERHEAD_MIB`], [`QEMU_PIDS_BASE`] plus two
/// tasks per vCPU.
pub fn limits(memory_mib: u32, vcpus: u32) -> Result<Limits, Refused> {
    if !(1..=MAX_MEMORY_MIB).contains(&memory_mib) {
        return Err(Refused::new(format!(
            "memory_mib must be 1..={MAX_MEMORY_MIB}"
        )));
    }
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(Refused::new(format!("vcpus must be 1..={MAX_VCPUS}")));
    }
    Ok(Limits {
        memory_bytes: (u64::from(memory_mib) + QEMU_OVERHEAD_MIB) << 20,
        pids: QEMU_PIDS_BASE + 2 * vcpus,
    })
}

/// `(file, value)` pairs that set `l` under cgroup version `v`, each with
/// the controller directory it belongs to (`None` on v2: one directory).
pub fn limit_files(
    v: CgroupVersion,
    l: Limits,
) -> Vec<(Option<&'static str>, &'static str, String)> {
    match v {
        CgroupVersion::V1 => vec![
            (
                Some("memory"),
                "memory.limit_in_bytes",
                l.memory_bytes.to_string(),
            ),
            (Some("pids"), "pids.max", l.pids.to_string()),
        ],
        CgroupVersion::V2 => vec![
            (None, "memory.max", l.memory_bytes.to_string()),
            (None, "pids.max", l.pids.to_string()),
        ],
    }
}

/// VM `vm_id`'s cgroup directories: `<sys>/fs/cgroup/{memory,pids}/banger-<id>`
/// on v1, `<sys>/fs/cgroup/banger-<id>` on v2. `vm_id` must have passed
/// [`super::process::vm_id`].
pub fn cgroup_dirs(sys_root: &Path, v: CgroupVersion, vm_id: &str) -> Vec<PathBuf> {
    let cg = sys_root.join("fs/cgroup");
    let name = format!("{CGROUP_PREFIX}{vm_id}");
    match v {
        CgroupVersion::V1 => ["memory", "pids"]
            .iter()
            .map(|c| cg.join(c).join(&name))
            .collect(),
        CgroupVersion::V2 => vec![cg.join(name)],
    }
}

/// The QMP argument the daemon gives VM `vm_id`'s QEMU (commas doubled as
/// QEMU escapes them), up to the first unescaped option separator.
fn qmp_prefix(runtime_dir: &Path, vm_id: &str) -> String {
    let sock = runtime_dir.join("vms").join(vm_id).join("qmp.sock");
    format!("unix:{},", sock.display().to_string().replace(',', ",,"))
}

/// Whether `pid` (under `proc_root`) is the owner's QEMU of VM `vm_id`:
/// real and effective uid `owner_uid`; its executable (the file `exe`
/// names, the same device and inode the process runs) a regular file
/// called `qemu-system-*` with one link, it and its directory owned by
/// root and writable by no one else (so neither the name nor the content
/// is the owner's choice); its argv `-qmp unix:<runtime_dir>/vms/<vm_id>/qmp.sock,…`.
pub fn qemu_process(
    proc_root: &Path,
    pid: i32,
    owner_uid: u32,
    runtime_dir: &Path,
    vm_id: &str,
) -> Result<(), Refused> {
    let no = || Refused::new(QEMU_RULE);
    let st = procinfo::status(proc_root, pid).map_err(|_| no())?;
    if st.ruid != owner_uid || st.euid != owner_uid {
        return Err(no());
    }
    let link = proc_root.join(pid.to_string()).join("exe");
    let exe = std::fs::read_link(&link).map_err(|_| no())?;
    let named = exe
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("qemu-system-"));
    let md = std::fs::symlink_metadata(&exe).map_err(|_| no())?;
    let running = procinfo::exe_id(proc_root, pid).map_err(|_| no())?;
    let root_only = |m: &std::fs::Metadata| m.uid() == 0 && m.mode() & 0o022 == 0;
    let dir_md = exe.parent().and_then(|d| std::fs::symlink_metadata(d).ok());
    if !named
        || !md.is_file()
        || md.nlink() != 1
        || !root_only(&md)
        || !dir_md.is_some_and(|d| d.is_dir() && root_only(&d))
        || FileId::of(&md) != running
    {
        return Err(no());
    }
    let argv = banger_sys::pidfd::read_cmdline(proc_root, pid).map_err(|_| no())?;
    let want = qmp_prefix(runtime_dir, vm_id);
    let names_vm = argv
        .windows(2)
        .any(|w| w[0] == b"-qmp" && w[1].starts_with(want.as_bytes()));
    if names_vm {
        Ok(())
    } else {
        Err(no())
    }
}

#[cfg(test)]
#[path = "qemu_tests.rs"]
mod tests;
