//! `banger vm rm`: refused while the VM runs unless forced; VMM, tap, NAT,
//! disk, runtime directory, address and row all go.

use super::record::{find, transition, VmRow};
use super::{run, VmError};
use crate::blocking::leaf;
use crate::daemon::Daemon;
use crate::network;
use crate::progress::Progress;
use crate::store::{vms as table, StoreError};
use crate::vmdisk;
use crate::vmm::registry::Claim;
use banger_core::vm::{Event, VmState};
use std::time::{Duration, Instant};

/// Remove a VM: refused while it runs unless `force`; otherwise its VMM
/// stopped (forced), tap and NAT removed, disk destroyed, IP freed, row gone.
/// Forced, an operation under way (a create, a start) is cancelled first; a
/// cancelled create undoes itself, VM included.
pub async fn remove(d: &Daemon, name: &str, force: bool, p: &Progress) -> Result<VmRow, VmError> {
    let mut row = find(d, name)?;
    let _claim = match d.vmms.claim(&row.id, &row.name) {
        Ok(c) => c,
        Err(busy) if !force => return Err(busy.into()),
        Err(_) => {
            // Forced: the operation under way (a create, a start) gives up
            // and undoes itself; a create's undo takes the VM with it.
            p.log(format!("{} is busy: cancelling its operation", row.name));
            let claim = cancel_and_claim(d, &row).await?;
            match find(d, &row.id) {
                Ok(now) => row = now,
                Err(VmError::NotFound(_)) => return Ok(row),
                Err(e) => return Err(e),
            }
            claim
        }
    };
    if matches!(
        row.state,
        VmState::Starting | VmState::Running | VmState::Stopping
    ) && !force
    {
        return Err(VmError::IsRunning(row.name.clone(), row.state));
    }
    let had_host = row.state.may_have_process() || d.vmms.holds(&row.id);
    transition(d, &row, Event::Delete)?;
    if had_host {
        p.log(format!("stopping {}", row.name));
        run::tear_down(d, &row, std::time::Duration::ZERO).await?;
    } else if row.state == VmState::Broken {
        // A start that failed and could not clean up after itself (the
        // helper gone mid-call) left its tap, NAT element or cgroup: try
        // again, best effort (each step is a no-op on what is absent).
        if let Err(e) = run::tear_down(d, &row, std::time::Duration::ZERO).await {
            tracing::warn!(vm = %row.name, error = %crate::render_chain(&e), "cleanup of a broken VM");
        }
    }
    crate::vms::ports::forget_vm(&row.id);
    tracing::info!(vm = %row.name, "removing the disk");
    leaf(|| vmdisk::destroy(d, &row.id))?;
    let rt = d.paths.vm_runtime_dir(&row.id);
    match leaf(|| std::fs::remove_dir_all(&rt)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(VmError::RemoveDir(rt, e)),
    }
    network::release_ip(&d.store, &row.id)?;
    d.store
        .write(|tx| Ok::<_, StoreError>(table::delete(tx, &row.id)?))?;
    Ok(row)
}

/// Cancel the operation under way on `row` and claim the VM once it ended.
async fn cancel_and_claim<'a>(d: &'a Daemon, row: &VmRow) -> Result<Claim<'a>, VmError> {
    let t = Instant::now();
    loop {
        d.vmms.cancel(&row.id);
        match d.vmms.claim(&row.id, &row.name) {
            Ok(c) => return Ok(c),
            Err(busy) if t.elapsed() >= d.vmms.cancel_wait => return Err(busy.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
