//! Privileged methods: files — Firecracker socket hand-over and jailer
//! chroot teardown.

use crate::error::{gate, RpcError};
use crate::gates::files::{self, Chroot};
use crate::helper::Helper;
use banger_proto::helper as m;
use banger_sys::{fsops, mounts};

/// `priv.ensure_socket_access`: hand a Firecracker socket under RuntimeDir
/// to the registered owner (from install metadata), mode
/// [`fsops::SOCKET_MODE`] (0600).
pub fn ensure_socket_access(h: &Helper, p: m::EnsureSocketAccess) -> Result<m::Empty, RpcError> {
    let path = gate(
        m::ENSURE_SOCKET_ACCESS,
        files::socket_path(&h.cfg.runtime_dir, &p.path),
    )?;
    // A jailed Firecracker's socket is its jail uid's until handed over.
    let jails = h.cfg.jail_range().ok().flatten().map(|r| (r.base, r.count));
    fsops::chown_chmod_socket_from(
        &h.cfg.runtime_dir,
        &path,
        h.cfg.owner_uid,
        h.cfg.owner_gid,
        fsops::SOCKET_MODE,
        &h.host.proc_root,
        jails,
    )
    .map_err(|e| match files::socket_opened(&e) {
        Some(refused) => RpcError::Gate {
            method: m::ENSURE_SOCKET_ACCESS,
            refused,
        },
        None => RpcError::failed(&e),
    })?;
    Ok(m::Empty {})
}

/// `priv.cleanup_jailer_chroot`: give a root disk file the jail held back
/// to the owner ([`crate::jail_disk::restore`]), unmount everything at or
/// below the chroot (deepest first), refuse if anything is still mounted,
/// remove the tree; then remove the jail's socket directory
/// `<RuntimeDir>/jails/<vm_id>` (also when the chroot is already gone).
pub fn cleanup_jailer_chroot(h: &Helper, p: m::CleanupJailerChroot) -> Result<m::Empty, RpcError> {
    let chroot = gate(
        m::CLEANUP_JAILER_CHROOT,
        files::jailer_chroot(&h.cfg.jailer_base, &p.path),
    )?;
    let path = match chroot {
        Chroot::Present(path) => {
            // A disk file the jail held goes back to the owner first (found
            // by fd through the bind that is about to go, or beneath StateDir).
            crate::jail_disk::restore(h, &path).map_err(|e| RpcError::failed(&e))?;
            mounts::cleanup_chroot(&h.cfg.jailer_base, &path, &h.host.mountinfo_path())
                .map_err(|e| RpcError::failed(&e))?;
            path
        }
        Chroot::Absent(path) => path,
    };
    // The jail's socket directory, once nothing binds it into the chroot.
    if let Some(run) = crate::jail::run_dir_of(h, &path) {
        fsops::remove_tree_beneath(&h.cfg.runtime_dir, &run).map_err(|e| RpcError::failed(&e))?;
    }
    Ok(m::Empty {})
}
