//! At daemon start: recorded VM states against the VMM processes that
//! exist ([`banger_core::vm::reconcile`]): a half-done start or stop and a
//! running VM whose process died become `stopped` (their tap and NAT
//! removed, the disk deactivated), a vanished disk `broken`, an unfinished
//! delete is finished, and no process outlives a state that may not have one.

use super::{find, VmRow};
use crate::blocking::leaf;
use crate::daemon::Daemon;
use crate::store::vms as table;
use crate::vmdisk;
use crate::vmm::adopted;
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
    if let Err(e) = vmdisk::deactivate(d, &row.id) {
        tracing::warn!(vm = %row.name, error = %crate::render_chain(&e), "reconcile: deactivating the disk");
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
        let found = Found {
            process_alive: alive,
            disk_present: disk_present(d, &row.id),
        };
        let (to, repair) = vm::reconcile(row.state, found);
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
