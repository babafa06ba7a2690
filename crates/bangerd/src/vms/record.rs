//! The `vms` row: lookup, the API view, and state transitions persisted
//! in one transaction.

use super::VmError;
use crate::daemon::Daemon;
use crate::store::{Store, StoreError};
use banger_core::vm::{self, Event, Transition, VmState};
use banger_proto::api::Vm;
use rusqlite::OptionalExtension;
use std::net::Ipv4Addr;

/// A VM as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub state: VmState,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub pid: Option<i64>,
    pub backend: Option<String>,
    pub ip: Option<Ipv4Addr>,
}

/// The VM called `name` (or with id `name`).
pub fn find(d: &Daemon, name: &str) -> Result<VmRow, VmError> {
    let row = d.store.read(|c| {
        c.query_row(
            "SELECT v.id, v.name, v.image_id, v.state, v.vcpus, v.memory_mib, v.pid, v.backend, a.ip
             FROM vms v LEFT JOIN ip_allocations a ON a.vm_id = v.id
             WHERE v.name = ?1 OR v.id = ?1 ORDER BY v.name = ?1 DESC LIMIT 1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            },
        )
        .optional()
    })?;
    let (id, name_, image_id, state, vcpus, mem, pid, backend, ip) =
        row.ok_or_else(|| VmError::NotFound(name.to_string()))?;
    Ok(VmRow {
        id,
        name: name_,
        image_id,
        // An unknown state only comes from a newer daemon: treat it as broken.
        state: state.parse().unwrap_or(VmState::Broken),
        vcpus: vcpus.clamp(1, 255) as u8,
        memory_mib: mem.max(0) as u32,
        pid,
        backend,
        ip: ip.and_then(|s| s.parse().ok()),
    })
}

/// Apply `event` to the recorded state in one transaction (refused
/// transitions change nothing). `pid` is recorded with the new state.
pub fn transition(d: &Daemon, row: &VmRow, event: Event) -> Result<Transition, VmError> {
    d.store.write(|tx| {
        let state: String =
            tx.query_row("SELECT state FROM vms WHERE id=?1", [&row.id], |r| r.get(0))?;
        let from = state.parse().unwrap_or(VmState::Broken);
        let t = vm::next(from, event).map_err(|r| VmError::Refused(row.name.clone(), r))?;
        tx.execute(
            "UPDATE vms SET state=?2 WHERE id=?1",
            rusqlite::params![row.id, t.to.as_str()],
        )?;
        if !t.to.may_have_process() {
            tx.execute("UPDATE vms SET pid=NULL WHERE id=?1", [&row.id])?;
        }
        Ok(t)
    })
}

/// Every VM in the store.
pub fn list(store: &Store) -> Result<Vec<Vm>, StoreError> {
    store.read(|c| {
        let mut st = c.prepare(
            "SELECT v.id, v.name, i.name, v.state, a.ip, v.created_at,
                    v.vcpus, v.memory_mib, v.pid, v.backend
             FROM vms v JOIN images i ON i.id = v.image_id
             LEFT JOIN ip_allocations a ON a.vm_id = v.id ORDER BY v.name",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Vm {
                id: r.get(0)?,
                name: r.get(1)?,
                image: r.get(2)?,
                state: r.get(3)?,
                ip: r.get(4)?,
                created_at: r.get(5)?,
                vcpus: r.get(6)?,
                memory_mib: r.get(7)?,
                pid: r.get(8)?,
                backend: r.get(9)?,
                vmm: None,
                vmm_reason: None,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}
