//! A VM's row through the daemon: lookup, the API list, and state
//! transitions persisted in one transaction (the SQL is `store::vms`).

use super::VmError;
use crate::daemon::Daemon;
use crate::store::{vms as table, Store, StoreError};
use banger_core::vm::{self, Event, Transition};
use banger_proto::api::Vm;

pub use crate::store::vms::VmRow;

/// The VM called `name` (or with id `name`).
pub fn find(d: &Daemon, name: &str) -> Result<VmRow, VmError> {
    d.store
        .read(|c| table::find(c, name))?
        .ok_or_else(|| VmError::NotFound(name.to_string()))
}

/// Apply `event` to the recorded state in one transaction (refused
/// transitions change nothing); the pid is kept only while a process may
/// exist.
pub fn transition(d: &Daemon, row: &VmRow, event: Event) -> Result<Transition, VmError> {
    d.store.write(|tx| {
        let from = table::state(tx, &row.id)?;
        let t = vm::next(from, event).map_err(|r| VmError::Refused(row.name.clone(), r))?;
        table::set_state(tx, &row.id, t.to)?;
        Ok(t)
    })
}

/// Every VM in the store, as the API shows it.
pub fn list(store: &Store) -> Result<Vec<Vm>, StoreError> {
    let rows = store.read(table::list)?;
    Ok(rows.iter().map(VmRow::view).collect())
}
