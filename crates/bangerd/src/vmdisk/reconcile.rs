//! At daemon start: clean orphaned dm snapshots, loops and VM directories
//! (no VM row records them) through the helper, and mark VM rows whose disk
//! vanished `broken` (never deleted).

use super::{DiskHandles, VmDiskError};
use crate::daemon::Daemon;
use crate::store::vms as table;
use crate::vmdisk::orphans::{self as plan, HostDisks, Recorded};
use banger_core::vm::VmState;
use banger_proto::helper::{self as m, method};
use banger_sys::loopdev::{KernelLoops, LoopInfo, LoopOps};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Orphaned snapshots / loops cleaned (`dm_name` or loop device).
    pub cleaned: Vec<String>,
    /// Orphaned VM directories removed.
    pub removed_dirs: Vec<PathBuf>,
    /// VM ids whose recorded dm snapshot is gone (stopped VM, host
    /// rebooted, or broken): stale handles cleared, so a start re-creates
    /// the snapshot and nothing ever acts on a reused loop number.
    pub deactivated: Vec<String>,
    /// VM ids newly marked broken.
    pub broken: Vec<String>,
    /// Steps that failed (logged; reconcile goes on).
    pub errors: Vec<String>,
}

/// Reconcile with the real host (`/sys`) and log the outcome.
pub fn at_start(d: &Daemon) {
    match run(d, Path::new("/sys")) {
        Ok(r) => {
            for c in &r.cleaned {
                tracing::info!(object = %c, "reconcile: cleaned orphaned disk object");
            }
            for p in &r.removed_dirs {
                tracing::info!(dir = %p.display(), "reconcile: removed orphaned VM directory");
            }
            for v in &r.deactivated {
                tracing::info!(vm = %v, "reconcile: dm snapshot gone; recorded as inactive");
            }
            for v in &r.broken {
                tracing::warn!(vm = %v, "reconcile: VM disk vanished; marked broken");
            }
            for e in &r.errors {
                tracing::warn!(error = %e, "reconcile: step failed");
            }
        }
        Err(e) => tracing::warn!(error = %crate::render_chain(&e), "reconcile failed"),
    }
}

/// Whether dm device `name` sits on a loop backed by a file under `state`
/// (its `<sys>/block/dm-N/slaves`).
fn dm_on_state(sys_root: &Path, name: &str, loops: &[LoopInfo], state: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(sys_root.join("block")) else {
        return false;
    };
    for e in rd.flatten() {
        let named = std::fs::read_to_string(e.path().join("dm/name"))
            .is_ok_and(|n| n.trim_end_matches('\n') == name);
        if !named {
            continue;
        }
        let Ok(slaves) = std::fs::read_dir(e.path().join("slaves")) else {
            return false;
        };
        return slaves.flatten().any(|s| {
            loops.iter().any(|l| {
                l.device.file_name() == Some(s.file_name().as_os_str())
                    && l.backing_file.starts_with(state)
            })
        });
    }
    false
}

/// Read rows and the host under `sys_root`, decide with
/// [`crate::vmdisk::orphans::plan`], act.
pub fn run(d: &Daemon, sys_root: &Path) -> Result<Report, VmDiskError> {
    let rows = d.store.read(table::disks)?;
    let mut report = Report::default();
    let ids: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut running = BTreeSet::new();
    let mut recorded = Vec::new();
    for (id, state, json) in &rows {
        let h: DiskHandles = match serde_json::from_str(json) {
            Ok(h) => h,
            Err(e) => {
                report
                    .errors
                    .push(format!("VM {id}: disk handles do not parse: {e}"));
                continue;
            }
        };
        if matches!(state, VmState::Running | VmState::Starting) {
            running.insert(id.clone());
        }
        if h.file.is_empty() {
            continue;
        }
        recorded.push(Recorded {
            vm_id: id.clone(),
            handles: h.dm.unwrap_or_default(),
            disk_file: h.file.into(),
        });
    }
    let state = d
        .paths
        .state_dir
        .canonicalize()
        .unwrap_or_else(|_| d.paths.state_dir.clone());
    let loops = KernelLoops::new(sys_root);
    let mut host = HostDisks {
        loops: loops.list().unwrap_or_default(),
        dm: banger_sys::dm::list_sysfs(sys_root).unwrap_or_default(),
    };
    // Another daemon's snapshots (another StateDir) are not ours to clean.
    host.dm.retain(|(name, _)| {
        recorded.iter().any(|r| r.handles.dm_name == *name)
            || dm_on_state(sys_root, name, &host.loops, &state)
    });
    let p = plan::plan(&host, &recorded, &state, &|id| running.contains(id));
    for h in p.cleanup {
        let what = if h.dm_name.is_empty() {
            h.cow_loop.clone()
        } else {
            h.dm_name.clone()
        };
        let r = d
            .privops
            .call::<method::CleanupDmSnapshot>(&m::CleanupDmSnapshot { handles: h });
        match r {
            Ok(_) => report.cleaned.push(what),
            Err(e) => report
                .errors
                .push(format!("cleanup {what}: {}", crate::render_chain(&e))),
        }
    }
    // Orphaned VM directories (a COW file or copy with no row), unless a
    // loop still holds a file in them.
    let still: Vec<PathBuf> = loops
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.backing_file)
        .collect();
    let vms = d.paths.vms_dir();
    if let Ok(rd) = std::fs::read_dir(&vms) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ids.contains(&name) {
                continue;
            }
            let dir = e.path();
            let real = state.join("vms").join(&name);
            if still.iter().any(|b| b.starts_with(&real)) {
                report.errors.push(format!(
                    "{} is orphaned but a loop device still uses it; kept",
                    dir.display()
                ));
                continue;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => report.removed_dirs.push(dir),
                Err(e) => report.errors.push(format!("remove {}: {e}", dir.display())),
            }
        }
    }
    for r in &recorded {
        let gone =
            !r.handles.dm_name.is_empty() && !host.dm.iter().any(|(n, _)| *n == r.handles.dm_name);
        if gone {
            let (drv, mut h) = super::load(d, &r.vm_id)?;
            h.dm = None;
            super::save(d, &r.vm_id, drv, &h)?;
            report.deactivated.push(r.vm_id.clone());
        }
    }
    for id in p.broken {
        if d.store.write(|tx| table::mark_broken(tx, &id))? {
            report.broken.push(id);
        }
    }
    Ok(report)
}
