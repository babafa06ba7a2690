//! The `vms` table: its one row type and every statement on it. States,
//! backends and disk drivers are enums here and everywhere above.

use banger_core::disk::Driver;
use banger_core::machine::Backend;
use banger_core::vm::VmState;
use banger_proto::api::VmmChoice;
use rusqlite::{Connection, OptionalExtension, Row};
use std::net::Ipv4Addr;

/// A VM as recorded (with its image's name and its address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    pub id: String,
    pub name: String,
    pub image_id: String,
    /// The image's name.
    pub image: String,
    pub state: VmState,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub pid: Option<i64>,
    /// The backend it last ran on.
    pub backend: Option<Backend>,
    pub ip: Option<Ipv4Addr>,
    pub created_at: i64,
}

impl VmRow {
    /// The VM as the API shows it.
    pub fn view(&self) -> banger_proto::api::Vm {
        banger_proto::api::Vm {
            id: self.id.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
            state: self.state.as_str().to_string(),
            ip: self.ip.map(|ip| ip.to_string()),
            created_at: self.created_at,
            vcpus: Some(self.vcpus),
            memory_mib: Some(self.memory_mib),
            pid: self.pid,
            backend: self.backend.map(|b| b.as_str().to_string()),
            vmm: None,
            vmm_reason: None,
        }
    }
}

/// A row to insert (state `created`, no disk yet).
#[derive(Debug, Clone)]
pub struct NewVm<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub image_id: &'a str,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub created_at: i64,
}

const SELECT: &str = "SELECT v.id, v.name, v.image_id, i.name, v.state, v.vcpus, v.memory_mib,
        v.pid, v.backend, a.ip, v.created_at
     FROM vms v JOIN images i ON i.id = v.image_id
     LEFT JOIN ip_allocations a ON a.vm_id = v.id";

/// A recorded state this build does not know comes only from a newer
/// daemon: it reads as broken.
fn state_of(s: &str) -> VmState {
    s.parse().unwrap_or(VmState::Broken)
}

fn row(r: &Row<'_>) -> rusqlite::Result<VmRow> {
    Ok(VmRow {
        id: r.get(0)?,
        name: r.get(1)?,
        image_id: r.get(2)?,
        image: r.get(3)?,
        state: state_of(&r.get::<_, String>(4)?),
        vcpus: r.get::<_, i64>(5)?.clamp(1, 255) as u8,
        memory_mib: r.get::<_, i64>(6)?.max(0) as u32,
        pid: r.get(7)?,
        backend: r.get::<_, Option<String>>(8)?.and_then(|b| b.parse().ok()),
        ip: r.get::<_, Option<String>>(9)?.and_then(|s| s.parse().ok()),
        created_at: r.get(10)?,
    })
}

/// The VM called `name` (or with id `name`; a name wins).
pub fn find(c: &Connection, name: &str) -> rusqlite::Result<Option<VmRow>> {
    let sql = format!("{SELECT} WHERE v.name = ?1 OR v.id = ?1 ORDER BY v.name = ?1 DESC LIMIT 1");
    c.query_row(&sql, [name], row).optional()
}

/// Every VM, by name.
pub fn list(c: &Connection) -> rusqlite::Result<Vec<VmRow>> {
    let sql = format!("{SELECT} ORDER BY v.name");
    let mut st = c.prepare(&sql)?;
    let rows = st.query_map([], row)?;
    rows.collect()
}

/// The id of the VM called `name`, if any.
pub fn id_named(c: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    c.query_row("SELECT id FROM vms WHERE name=?1", [name], |r| r.get(0))
        .optional()
}

/// Record a new VM.
pub fn insert(c: &Connection, v: &NewVm<'_>) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_driver, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', ?7)",
        rusqlite::params![
            v.id,
            v.name,
            v.image_id,
            VmState::Created.as_str(),
            v.vcpus,
            v.memory_mib,
            v.created_at
        ],
    )?;
    Ok(())
}

/// Forget VM `id` (its address goes with it).
pub fn delete(c: &Connection, id: &str) -> rusqlite::Result<usize> {
    c.execute("DELETE FROM vms WHERE id=?1", [id])
}

/// VM `id`'s recorded state.
pub fn state(c: &Connection, id: &str) -> rusqlite::Result<VmState> {
    let s: String = c.query_row("SELECT state FROM vms WHERE id=?1", [id], |r| r.get(0))?;
    Ok(state_of(&s))
}

/// Record `state`; the pid is kept only while a process may exist.
pub fn set_state(c: &Connection, id: &str, state: VmState) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE vms SET state=?2, pid=CASE WHEN ?3 THEN pid ELSE NULL END WHERE id=?1",
        rusqlite::params![id, state.as_str(), state.may_have_process()],
    )?;
    Ok(())
}

/// Mark VM `id` broken; whether it was not already.
pub fn mark_broken(c: &Connection, id: &str) -> rusqlite::Result<bool> {
    let n = c.execute(
        "UPDATE vms SET state=?2 WHERE id=?1 AND state != ?2",
        [id, VmState::Broken.as_str()],
    )?;
    Ok(n > 0)
}

/// Record the VMM process VM `id` runs in.
pub fn set_process(c: &Connection, id: &str, pid: i64, backend: Backend) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE vms SET pid=?2, backend=?3 WHERE id=?1",
        rusqlite::params![id, pid, backend.as_str()],
    )?;
    Ok(())
}

/// Record the backend VM `id` is about to run on (before the launch, so a
/// failed start and a restart's reconcile know which VMM's leftovers to clean).
pub fn set_backend(c: &Connection, id: &str, backend: Backend) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE vms SET backend=?2 WHERE id=?1",
        rusqlite::params![id, backend.as_str()],
    )?;
    Ok(())
}

/// Record VM `id`'s VMM choice (`vms.vmm`).
pub fn set_vmm(c: &Connection, id: &str, vmm: VmmChoice) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE vms SET vmm=?2 WHERE id=?1",
        rusqlite::params![id, vmm.as_str()],
    )?;
    Ok(())
}

/// VM `id`'s VMM choice; `auto` when unset or unknown.
pub fn vmm(c: &Connection, id: &str) -> rusqlite::Result<VmmChoice> {
    let s: Option<String> = c
        .query_row("SELECT vmm FROM vms WHERE id=?1", [id], |r| r.get(0))
        .optional()?;
    Ok(s.and_then(|s| s.parse().ok()).unwrap_or_default())
}

/// Names of the VMs made from image `image_id`.
pub fn names_using_image(c: &Connection, image_id: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = c.prepare("SELECT name FROM vms WHERE image_id=?1 ORDER BY name")?;
    let rows = st.query_map([image_id], |r| r.get(0))?;
    rows.collect()
}

/// The address of the VM called `name` (case-insensitive).
pub fn ip_named(c: &Connection, name: &str) -> rusqlite::Result<Option<Ipv4Addr>> {
    let ip: Option<String> = c
        .query_row(
            "SELECT a.ip FROM vms v JOIN ip_allocations a ON a.vm_id = v.id
             WHERE lower(v.name) = lower(?1)",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(ip.and_then(|s| s.parse().ok()))
}

/// A VM's disk columns: the driver (`None`: no disk yet) and the handles
/// JSON as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskColumns {
    pub driver: Option<Driver>,
    pub handles: String,
}

/// Why a disk column does not read.
#[derive(Debug, thiserror::Error)]
pub enum DiskColumnError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    UnknownDriver(#[from] banger_core::disk::UnknownDriver),
}

/// VM `id`'s disk columns, if the VM exists.
pub fn disk(c: &Connection, id: &str) -> Result<Option<DiskColumns>, DiskColumnError> {
    let raw: Option<(String, String)> = c
        .query_row(
            "SELECT disk_driver, disk_handles FROM vms WHERE id=?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((drv, handles)) = raw else {
        return Ok(None);
    };
    let driver = match drv.as_str() {
        "" => None,
        s => Some(s.parse()?),
    };
    Ok(Some(DiskColumns { driver, handles }))
}

/// Record VM `id`'s disk columns; whether the VM exists.
pub fn set_disk(
    c: &Connection,
    id: &str,
    driver: Option<Driver>,
    handles: &str,
) -> rusqlite::Result<bool> {
    let n = c.execute(
        "UPDATE vms SET disk_driver=?2, disk_handles=?3 WHERE id=?1",
        rusqlite::params![id, driver.map_or("", Driver::as_str), handles],
    )?;
    Ok(n > 0)
}

/// Every VM's `(id, state, disk handles JSON)`, by id.
pub fn disks(c: &Connection) -> rusqlite::Result<Vec<(String, VmState, String)>> {
    let mut st = c.prepare("SELECT id, state, disk_handles FROM vms ORDER BY id")?;
    let rows = st.query_map([], |r| {
        Ok((r.get(0)?, state_of(&r.get::<_, String>(1)?), r.get(2)?))
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store_with_vm() -> (tempfile::TempDir, Store) {
        let dir = banger_testkit::tmp();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        store
            .write(|tx| {
                tx.execute(
                    "INSERT INTO images VALUES ('img1','base','r','k',NULL,'s','k',1,'import',0)",
                    [],
                )?;
                insert(
                    tx,
                    &NewVm {
                        id: "v1",
                        name: "web",
                        image_id: "img1",
                        vcpus: 2,
                        memory_mib: 256,
                        created_at: 7,
                    },
                )
            })
            .unwrap();
        (dir, store)
    }

    #[test]
    fn a_row_reads_back_with_enums_and_its_view() {
        let (_dir, store) = store_with_vm();
        let r = store.read(|c| find(c, "web")).unwrap().unwrap();
        assert_eq!(
            (r.state, r.backend, r.image.as_str()),
            (VmState::Created, None, "base")
        );
        store
            .write(|tx| {
                set_state(tx, "v1", VmState::Running)?;
                set_process(tx, "v1", 42, Backend::QemuTcg)
            })
            .unwrap();
        let r = store.read(|c| find(c, "v1")).unwrap().unwrap();
        assert_eq!((r.pid, r.backend), (Some(42), Some(Backend::QemuTcg)));
        assert_eq!(r.view().backend.as_deref(), Some("qemu-tcg"));
        assert_eq!(r.view().state, "running");
        // Leaving the states that may have a process drops the pid.
        store
            .write(|tx| set_state(tx, "v1", VmState::Stopped))
            .unwrap();
        assert_eq!(store.read(|c| find(c, "v1")).unwrap().unwrap().pid, None);
    }

    #[test]
    fn unknown_states_read_broken_and_unknown_drivers_are_refused() {
        let (_dir, store) = store_with_vm();
        let d = store.read(|c| disk(c, "v1")).unwrap().unwrap();
        assert_eq!(d.driver, None, "no disk yet");
        store
            .write(|tx| set_disk(tx, "v1", Some(Driver::Copy), "{}"))
            .unwrap();
        let d = store.read(|c| disk(c, "v1")).unwrap().unwrap();
        assert_eq!(d.driver, Some(Driver::Copy));
        store
            .write(|tx| {
                tx.execute(
                    "UPDATE vms SET state='hibernating', disk_driver='zfs' WHERE id='v1'",
                    [],
                )
            })
            .unwrap();
        assert_eq!(store.read(|c| state(c, "v1")).unwrap(), VmState::Broken);
        assert!(matches!(
            store.read(|c| disk(c, "v1")),
            Err(DiskColumnError::UnknownDriver(_))
        ));
        assert!(store.read(|c| disk(c, "nope")).unwrap().is_none());
    }
}
