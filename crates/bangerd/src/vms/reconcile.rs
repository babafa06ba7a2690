//! At daemon start: recorded VM states against the VMM processes that
//! exist ([`banger_core::vm::reconcile`]): a half-done start or stop and a
//! running VM whose process died become `stopped` (their tap and NAT
//! removed, the disk deactivated), a vanished disk `broken`, an unfinished
//! delete is finished, and no process outlives a state that may not have one.
//! A running VM whose VMM still runs is **re-adopted**: held by pidfd (QEMU)
//! or pid (Firecracker, the helper's), its argv naming the VM, its QMP/API
//! socket answering (Firecracker's instance id is the VM id); it stays
//! `running` and `stop`/`rm` drive it as the daemon's own. A live VMM that
//! fails the proof is killed and its VM stopped.

use super::{find, VmRow};
use crate::blocking::leaf;
use crate::daemon::Daemon;
use crate::store::vms as table;
use crate::vmdisk;
use crate::vmm::adopted::{self, AdoptedQemu};
use crate::vmm::fc_process::{jailed_api_socket, FirecrackerVm};
use crate::vmm::registry::Vmm;
use banger_core::machine::Backend;
use banger_core::vm::{self, Found, Repair, VmState};
use banger_proto::helper::{self as m, method};
use std::path::Path;

/// What reconcile did to one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    pub name: String,
    pub from: VmState,
    pub to: VmState,
    pub repair: Repair,
}

fn disk_present(d: &Daemon, id: &str) -> bool {
    match vmdisk::load(d, id) {
        Ok((_, h)) => !h.file.is_empty() && Path::new(&h.file).exists(),
        Err(_) => false,
    }
}

/// Tap and NAT of a VM whose process is gone; best effort (either may be
/// gone already).
fn clear_network(d: &Daemon, row: &VmRow) {
    let tap = banger_core::net::tap_for(&row.id);
    if let Some(ip) = row.ip {
        let _ = d.privops.call::<method::ClearNat>(&m::Nat {
            guest_ip: ip.to_string(),
            tap: tap.clone(),
        });
    }
    let _ = d
        .privops
        .call::<method::DeleteTap>(&m::DeleteTap { name: tap });
    if super::run::ran_jailed(d, row) {
        let dir =
            crate::vmm::fc_process::jail_dir(&d.cfg.jailer_base, &d.cfg.firecracker_bin, &row.id);
        let _ = d
            .privops
            .call::<method::CleanupJailerChroot>(&m::CleanupJailerChroot {
                path: dir.display().to_string(),
            });
    }
    if let Err(e) = super::run::release_qemu_cgroup(d, row) {
        tracing::warn!(vm = %row.name, error = %crate::render_chain(&e), "reconcile: removing QEMU's cgroup");
    }
    if let Err(e) = vmdisk::deactivate(d, &row.id) {
        tracing::warn!(vm = %row.name, error = %crate::render_chain(&e), "reconcile: deactivating the disk");
    }
}

/// Re-adopt running VM `row`'s VMM, if it proves to be the VM's.
async fn adopt(d: &Daemon, row: &VmRow, proc_root: &Path) -> Option<Vmm> {
    let pid = row.pid?;
    match row.backend? {
        Backend::Firecracker => {
            let api = if super::run::ran_jailed(d, row) {
                jailed_api_socket(&d.paths.runtime_dir, &row.id)
            } else {
                d.paths.vm_runtime_dir(&row.id).join("fc.sock")
            };
            FirecrackerVm::adopt(d.privops.clone(), proc_root, pid as i32, &row.id, &api)
                .await
                .map(Vmm::Firecracker)
        }
        Backend::QemuKvm | Backend::QemuTcg => {
            let qmp = d.paths.vm_runtime_dir(&row.id).join("qmp.sock");
            match AdoptedQemu::adopt(proc_root, pid, &row.id, qmp).await {
                Ok(q) => Some(Vmm::AdoptedQemu(q)),
                Err(e) => {
                    tracing::warn!(vm = %row.name, error = %crate::render_chain(&e), "reconcile: not re-adopting");
                    None
                }
            }
        }
    }
}

/// Reconcile every recorded VM, with processes read under `proc_root`.
pub async fn run(d: &Daemon, proc_root: &Path) -> Vec<Fixed> {
    let ids: Vec<String> = d
        .store
        .read(table::list)
        .map(|rows| rows.into_iter().map(|r| r.id).collect())
        .unwrap_or_default();
    let mut fixed = Vec::new();
    for id in ids {
        let Ok(row) = find(d, &id) else { continue };
        let alive = row
            .pid
            .is_some_and(|p| adopted::alive(proc_root, p, &row.id));
        let held = if row.state == VmState::Running && !d.vmms.holds(&row.id) {
            adopt(d, &row, proc_root).await
        } else {
            None
        };
        let found = Found {
            process_alive: alive || held.is_some(),
            disk_present: disk_present(d, &row.id),
        };
        let (mut to, mut repair) = vm::reconcile(row.state, found);
        match held {
            Some(vmm) if to == VmState::Running => {
                tracing::info!(vm = %row.name, pid = vmm.pid(), "reconcile: re-adopted the running VMM");
                d.vmms.put(&row.id, vmm);
            }
            Some(_) => {}
            // Alive but not proven to be the VM's: not kept.
            None if to == VmState::Running
                && row.state == VmState::Running
                && !d.vmms.holds(&row.id) =>
            {
                to = VmState::Stopped;
                repair = if alive {
                    Repair::KillProcess
                } else {
                    Repair::Nothing
                };
            }
            None => {}
        }
        if to == row.state && repair == Repair::Nothing {
            continue;
        }
        if repair == Repair::KillProcess {
            if let Some(pid) = row.pid {
                let jailed = row.backend == Some(Backend::Firecracker);
                if let Err(e) = leaf(|| adopted::kill(d.privops.as_ref(), jailed, pid)) {
                    tracing::warn!(vm = %row.name, error = %crate::render_chain(&e), "reconcile: killing the VMM");
                }
            }
        }
        if repair == Repair::FinishDelete {
            // remove() clears tap and NAT too (both absent is fine).
            let p = crate::progress::Progress::new(tokio::sync::mpsc::unbounded_channel().0);
            if let Err(e) = super::remove(d, &row.id, true, &p).await {
                tracing::warn!(vm = %row.name, error = %crate::render_chain(&e), "reconcile: finishing the delete");
            }
        } else {
            if row.state.may_have_process() && to != VmState::Running {
                leaf(|| clear_network(d, &row));
            }
            let r = d.store.write(|tx| table::set_state(tx, &row.id, to));
            if let Err(e) = r {
                tracing::warn!(vm = %row.name, error = %crate::render_chain(&e), "reconcile: recording the state");
            }
        }
        tracing::info!(vm = %row.name, from = %row.state, to = %to, ?repair, "reconcile: VM");
        fixed.push(Fixed {
            name: row.name.clone(),
            from: row.state,
            to,
            repair,
        });
    }
    fixed
}
