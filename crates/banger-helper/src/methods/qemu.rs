//! Privileged methods: a QEMU VM's own cgroup — the daemon's QEMU of a VM
//! moved into `banger-<vm_id>` with memory and pids limits, and the empty
//! cgroup removed after the VM stops.

use crate::cgroup;
use crate::error::{gate, RpcError};
use crate::gates::jail::host_cgroup_version;
use crate::gates::qemu::{self as qemu_gate, QEMU_RULE};
use crate::gates::{process, Refused};
use crate::helper::Helper;
use banger_proto::helper as m;
use banger_sys::pidfd;
use std::time::Duration;

/// `priv.place_qemu_cgroup`: gate the VM id and size; hold `pid` by a
/// pidfd, then require it to be the owner's QEMU of this VM
/// ([`qemu_gate::qemu_process`]); make the VM's cgroup with its limits and
/// move the process in; the pidfd must still be alive afterwards (so the
/// pid written was that process, not a reused one).
pub fn place_qemu_cgroup(h: &Helper, p: m::PlaceQemuCgroup) -> Result<m::Empty, RpcError> {
    const M: &str = m::PLACE_QEMU_CGROUP;
    let vm_id = gate(M, process::vm_id(&p.vm_id))?;
    let limits = gate(M, qemu_gate::limits(p.memory_mib, p.vcpus))?;
    let pid = gate(M, process::pid_shape(p.pid))?;
    let fd = match pidfd::open(pid) {
        Ok(fd) => fd,
        Err(pidfd::PidfdError::Open(_, e)) if e.raw_os_error() == Some(libc::ESRCH) => {
            return gate(M, Err(Refused::new(QEMU_RULE)));
        }
        Err(e) => return Err(RpcError::failed(&e)),
    };
    gate(
        M,
        qemu_gate::qemu_process(
            &h.host.proc_root,
            pid,
            h.cfg.owner_uid,
            &h.cfg.runtime_dir,
            vm_id,
        ),
    )?;
    let version = host_cgroup_version(&h.host.sys_root).ok_or_else(|| {
        RpcError::Failed(format!(
            "no cgroup hierarchy with the memory and pids controllers under {}/fs/cgroup",
            h.host.sys_root.display()
        ))
    })?;
    cgroup::place(&h.host.sys_root, version, vm_id, limits, pid)
        .map_err(|e| RpcError::failed(&e))?;
    if !pidfd::is_alive(pid, &fd).map_err(|e| RpcError::failed(&e))? {
        let _ = cgroup::remove(&h.host.sys_root, vm_id, Duration::from_millis(500));
        return Err(RpcError::Failed(format!(
            "QEMU (pid {pid}) exited while being placed"
        )));
    }
    Ok(m::Empty {})
}

/// `priv.remove_qemu_cgroup`: gate the VM id; remove `banger-<vm_id>`
/// (only an empty cgroup can go; up to 2 s for a just-exited QEMU to leave).
pub fn remove_qemu_cgroup(h: &Helper, p: m::RemoveQemuCgroup) -> Result<m::Empty, RpcError> {
    let vm_id = gate(m::REMOVE_QEMU_CGROUP, process::vm_id(&p.vm_id))?;
    cgroup::remove(&h.host.sys_root, vm_id, Duration::from_secs(2))
        .map_err(|e| RpcError::failed(&e))?;
    Ok(m::Empty {})
}
