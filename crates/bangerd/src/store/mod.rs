//! The state store: SQLite under StateDir (WAL, 0600), schema migrations,
//! every change in one transaction.

pub mod vms;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// `impl From<rusqlite::Error>` for domain errors that hold a
/// `Store(StoreError)`: a statement's `?` inside [`Store::write`] and
/// [`Store::read`] lands there as [`StoreError::Sql`]. One definition for
/// every domain error (the orphan rule forbids a blanket impl).
macro_rules! sql_errors_into_store {
    ($($t:ident),+ $(,)?) => {$(
        impl From<rusqlite::Error> for $t {
            fn from(e: rusqlite::Error) -> Self {
                $t::Store($crate::store::StoreError::Sql(e))
            }
        }
    )+};
}
pub(crate) use sql_errors_into_store;

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many ran. Never edit a shipped entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: images, VMs, IP allocations.
    r#"
    CREATE TABLE images (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        rootfs        TEXT NOT NULL,
        kernel        TEXT NOT NULL,
        initrd        TEXT,
        rootfs_sha256 TEXT NOT NULL,
        kernel_sha256 TEXT NOT NULL,
        size_bytes    INTEGER NOT NULL,
        source        TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE vms (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        image_id     TEXT NOT NULL REFERENCES images(id),
        state        TEXT NOT NULL,
        vcpus        INTEGER NOT NULL,
        memory_mib   INTEGER NOT NULL,
        disk_driver  TEXT NOT NULL,
        disk_handles TEXT NOT NULL DEFAULT '{}',
        pid          INTEGER,
        created_at   INTEGER NOT NULL
    );
    CREATE TABLE ip_allocations (
        ip     TEXT PRIMARY KEY,
        vm_id  TEXT NOT NULL UNIQUE REFERENCES vms(id) ON DELETE CASCADE
    );
    "#,
    // 2: the backend a VM last ran on (inspect, reconcile).
    r#"
    ALTER TABLE vms ADD COLUMN backend TEXT;
    "#,
    // 3: the VM's VMM choice (auto | firecracker | qemu).
    r#"
    ALTER TABLE vms ADD COLUMN vmm TEXT NOT NULL DEFAULT 'auto';
    "#,
];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating state directory {0}")]
    CreateDir(PathBuf, #[source] std::io::Error),
    #[error("opening database {0}")]
    Open(PathBuf, #[source] rusqlite::Error),
    #[error("setting mode 0600 on {0}")]
    Chmod(PathBuf, #[source] std::io::Error),
    #[error("migrating database to schema {0}")]
    Migrate(usize, #[source] rusqlite::Error),
    #[error("database schema {found} is newer than this bangerd knows ({known}); left unchanged: upgrade banger")]
    TooNew { found: usize, known: usize },
    #[error("database {0} is not a banger database or is damaged; left unchanged: move it aside or restore a backup")]
    Unreadable(PathBuf, #[source] rusqlite::Error),
    #[error("database {0} is damaged ({1}); left unchanged: move it aside or restore a backup")]
    Damaged(PathBuf, String),
    #[error("database query failed")]
    Sql(#[from] rusqlite::Error),
}

/// The one handle on the database: a writing connection and a reading
/// one. Writes are serialised by the writer's mutex and by SQLite's `BEGIN
/// IMMEDIATE`; reads go to the reader (`query_only`), which under WAL sees
/// the last commit and never waits for a write's fsync.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    reader: Mutex<Connection>,
    commits: AtomicU64,
}

/// Before anything writes to an existing database: it must read as
/// SQLite, pass `quick_check`, and carry a schema this build knows. A
/// refusal leaves the file byte for byte as it was.
fn check_existing(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let unreadable = |e| StoreError::Unreadable(path.into(), e);
    let version: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(unreadable)?;
    let verdict: String = conn
        .pragma_query_value(None, "quick_check", |r| r.get(0))
        .map_err(unreadable)?;
    if verdict != "ok" {
        let first = verdict.lines().next().unwrap_or("").to_string();
        return Err(StoreError::Damaged(path.into(), first));
    }
    if version > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    Ok(())
}

impl Store {
    /// Open (creating if needed) the database at `path`, make it 0600, turn
    /// on WAL and foreign keys, and run pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::CreateDir(dir.into(), e))?;
        }
        let existed = path.exists();
        let conn = Connection::open(path).map_err(|e| StoreError::Open(path.into(), e))?;
        if existed {
            check_existing(&conn, path)?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Chmod(path.into(), e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let reader = Connection::open(path).map_err(|e| StoreError::Open(path.into(), e))?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        reader.pragma_update(None, "query_only", "ON")?;
        let mut store = Store {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
            commits: AtomicU64::new(0),
        };
        store.migrate()?;
        // WAL and SHM side files exist now; keep them private too.
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", path.display()));
            if side.exists() {
                std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| StoreError::Chmod(side.clone(), e))?;
            }
        }
        Ok(store)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let conn = self.conn.get_mut().expect("store mutex not poisoned");
        let current: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if current > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                found: current,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let version = i + 1;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| StoreError::Migrate(version, e))?;
            tx.execute_batch(sql)
                .map_err(|e| StoreError::Migrate(version, e))?;
            tx.pragma_update(None, "user_version", version)
                .map_err(|e| StoreError::Migrate(version, e))?;
            tx.commit().map_err(|e| StoreError::Migrate(version, e))?;
        }
        Ok(())
    }

    /// The schema version in force.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        Ok(self
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` in one `BEGIN IMMEDIATE` transaction: committed if it returns
    /// `Ok`, rolled back otherwise (and by SQLite if the process dies first).
    /// Blocking (see [`crate::blocking::leaf`]).
    pub fn write<T, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<rusqlite::Error>,
    {
        // A write waits for the one before it and for its own fsync: on the
        // daemon's runtime the worker hands its other tasks away meanwhile.
        crate::blocking::leaf(|| {
            let mut conn = self.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            self.commits.fetch_add(1, Ordering::Relaxed);
            Ok(out)
        })
    }

    /// How many write transactions this handle committed (each one fsync
    /// of the WAL: `synchronous = FULL`).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run a read-only closure on the reading connection: it sees every
    /// committed write and does not wait for one under way.
    pub fn read<T, E>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E> {
        f(&self.reader())
    }

    /// Convenience: one optional string value from a query.
    pub fn query_one_string(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .reader()
            .query_row(sql, params, |r| r.get(0))
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn migrates_from_empty_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len());
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let mode: String = store
            .read(|c| c.pragma_query_value(None, "journal_mode", |r| r.get(0)))
            .unwrap();
        assert_eq!(mode, "wal");
        for t in ["images", "vms", "ip_allocations"] {
            let n: i64 = store
                .read(|c| {
                    c.query_row(
                        "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?1",
                        [t],
                        |r| r.get(0),
                    )
                })
                .unwrap();
            assert_eq!(n, 1, "table {t}");
        }
        drop(store);
        // Reopening runs nothing new and keeps the version.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 999).unwrap();
        }
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 999, .. })
        ));
    }

    #[test]
    fn failed_closure_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let r: Result<(), StoreError> = store.write(|tx| {
            tx.execute(
                "INSERT INTO images VALUES ('i1','a','r','k',NULL,'x','y',1,'import',0)",
                [],
            )?;
            Err(StoreError::TooNew { found: 0, known: 0 })
        });
        assert!(r.is_err());
        assert_eq!(
            store
                .query_one_string("SELECT name FROM images", [])
                .unwrap(),
            None
        );
    }

    #[test]
    fn reads_do_not_wait_for_a_write_under_way_and_see_only_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let names = |s: &Store| {
            s.read(|c| {
                c.prepare("SELECT name FROM images ORDER BY name")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
        };
        store
            .write(|tx| {
                tx.execute(
                    "INSERT INTO images VALUES ('i1','a','r','k',NULL,'x','y',1,'import',0)",
                    [],
                )?;
                // The writer is held, its transaction open: a read (on this
                // very thread) still answers, from the last commit.
                assert!(names(&store).is_empty());
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(names(&store), ["a"]);
        let refused: Result<usize, rusqlite::Error> =
            store.read(|c| c.execute("DELETE FROM images", []));
        assert!(refused.is_err(), "the reading connection writes nothing");
        assert_eq!(names(&store), ["a"]);
    }
}
