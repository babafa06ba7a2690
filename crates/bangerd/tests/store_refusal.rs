//! A damaged or newer-schema state database: the real `bangerd --dev`
//! refuses to start with one clear line, and the file is left byte for byte
//! (and mode, and mtime) as it was.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bangerd");

/// Run the daemon on `dir` (its `state/state.db` prepared by the caller);
/// it must exit on its own: (exit code, stderr).
fn run_daemon(dir: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .arg("--dev")
        .env("BANGER_STATE_DIR", dir.join("state"))
        .env("BANGER_RUNTIME_DIR", dir.join("run"))
        .env("BANGER_LOG", "warn")
        .env("BANGER_NO_NETWORK", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (st.code(), err);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bangerd started on a database it must refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Snapshot {
    bytes: Vec<u8>,
    mode: u32,
    mtime: (i64, i64),
}

fn snapshot(p: &Path) -> Snapshot {
    let md = std::fs::metadata(p).unwrap();
    Snapshot {
        bytes: std::fs::read(p).unwrap(),
        mode: md.mode(),
        mtime: (md.mtime(), md.mtime_nsec()),
    }
}

fn assert_refused_unchanged(prepare: impl FnOnce(&Path), expect: &str) {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-dbref-")
        .tempdir()
        .unwrap();
    let db = dir.path().join("state/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    prepare(&db);
    let before = snapshot(&db);
    let (code, err) = run_daemon(dir.path());
    assert_eq!(code, Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("bangerd: "), "{err}");
    assert!(lines[0].contains(expect), "{expect:?} in {err}");
    assert!(lines[0].contains("left unchanged"), "{err}");
    let after = snapshot(&db);
    assert!(before.bytes == after.bytes, "content changed");
    assert_eq!(before.mode, after.mode, "mode changed");
    assert_eq!(before.mtime, after.mtime, "mtime changed");
    assert!(!dir.path().join("run/bangerd.sock").exists());
}

fn real_db(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 400)
         INSERT INTO t SELECT i, hex(randomblob(64)) FROM n;
         CREATE INDEX t_v ON t(v);",
    )
    .unwrap();
}

#[test]
fn a_newer_schema_is_refused_and_left_unchanged() {
    assert_refused_unchanged(
        |db| {
            real_db(db);
            let c = rusqlite::Connection::open(db).unwrap();
            c.pragma_update(None, "user_version", 999).unwrap();
        },
        "database schema 999 is newer than this bangerd knows",
    );
}

#[test]
fn a_file_that_is_no_database_is_refused_and_left_unchanged() {
    assert_refused_unchanged(
        |db| std::fs::write(db, vec![0x5au8; 16384]).unwrap(),
        "is not a banger database or is damaged",
    );
}

#[test]
fn a_damaged_database_is_refused_and_left_unchanged() {
    assert_refused_unchanged(
        |db| {
            real_db(db);
            // Scribble over the middle of the file: b-tree pages, header kept.
            let mut bytes = std::fs::read(db).unwrap();
            let mid = bytes.len() / 2;
            for b in &mut bytes[mid..mid + 4096] {
                *b = 0xa5;
            }
            std::fs::write(db, bytes).unwrap();
        },
        "damaged",
    );
}
