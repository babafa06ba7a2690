//! A process that dies between two writes of one transaction leaves the
//! old state: the child is this very test binary, killed mid-transaction.

use bangerd::store::{Store, StoreError};
use std::process::Command;

const ENV: &str = "BANGER_CRASH_DB";

#[test]
fn crash_between_two_writes_of_one_transaction_leaves_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    {
        let store = Store::open(&db).unwrap();
        store
            .write(|tx| {
                tx.execute(
                    "INSERT INTO images VALUES ('i1','before','r','k',NULL,'x','y',1,'import',0)",
                    [],
                )?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(ENV, &db)
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die, not finish");

    let store = Store::open(&db).unwrap();
    let name = store
        .query_one_string("SELECT name FROM images WHERE id='i1'", [])
        .unwrap();
    assert_eq!(name.as_deref(), Some("before"), "first write rolled back");
    let second = store
        .query_one_string("SELECT name FROM images WHERE id='i2'", [])
        .unwrap();
    assert_eq!(second, None, "second write never landed");
}

/// Runs only as the child of the test above.
#[test]
#[ignore = "child process of crash_between_two_writes_of_one_transaction_leaves_the_old_state"]
fn crash_child() {
    let Some(db) = std::env::var_os(ENV) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&db)).unwrap();
    let _: Result<(), StoreError> = store.write(|tx| {
        tx.execute("UPDATE images SET name='after' WHERE id='i1'", [])?;
        tx.execute(
            "INSERT INTO images VALUES ('i2','new','r','k',NULL,'x','y',1,'import',0)",
            [],
        )?;
        // Die between the writes and the commit: no unwinding, no Drop.
        std::process::abort();
    });
}
