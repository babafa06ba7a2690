//! The helper's request limits over its real socket: the per-request
//! timeout answers `-32001`, and the concurrency cap holds. A request is
//! made to block inside the helper without any test hook: its image is a
//! FIFO under StateDir that nobody writes, so the helper's open(2) waits.

#[path = "e2e/harness.rs"]
mod harness;

use banger_proto::helper as m;
use banger_testkit::{require_root, wait_until, SystemUser};
use harness::{call_as, error, layout, result, HelperProc};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A request blocked in the helper (the image is a FIFO nobody writes:
/// opening it blocks) runs past `--request-timeout` and is answered
/// `-32001`; the connection keeps serving.
#[test]
fn root_request_timeout_answers_32001() {
    if !require_root("root_request_timeout_answers_32001") {
        return;
    }
    let owner = SystemUser::create("e2ehto");
    let l = layout(&owner, "bgtest-to0");
    let root = l.cfg.owner_home.clone();
    let helper = HelperProc::start(
        &l.cfg_path,
        &l.cfg,
        &["--request-timeout", "1"],
        root.join("helper.log"),
    );
    let fifo = l.cfg.state_dir.join("bgtest-fifo.ext4");
    mkfifo(&fifo);
    let t0 = Instant::now();
    let v = call_as(
        owner.uid,
        owner.gid,
        &helper.socket,
        m::READ_EXT4_FILE,
        json!({"image": fifo, "path": "/etc/hostname"}),
    );
    let took = t0.elapsed();
    let (code, msg) = error(m::READ_EXT4_FILE, &v);
    assert_eq!(code, -32001, "{msg}");
    assert!(msg.contains("timed out after 1s"), "{msg}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    release_fifo(&fifo);
    let v = call_as(owner.uid, owner.gid, &helper.socket, m::VERSION, json!({}));
    result(m::VERSION, &v);
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Open `fifo` for writing without blocking and close it: a reader blocked
/// in open(2) is released. True when there was such a reader.
fn release_fifo(fifo: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .is_ok()
}

/// How many of `pid`'s threads are blocked in openat2(2) right now
/// (`/proc/<pid>/task/<tid>/syscall` starts with the syscall number).
fn threads_in_openat2(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|it| {
            it.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("syscall"))
                        .map(|s| {
                            s.split_whitespace().next() == Some(&libc::SYS_openat2.to_string())
                        })
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// `--max-concurrent 2`: with three requests blocked in the helper, exactly
/// two execute; releasing one lets the third in; all three are answered.
#[test]
fn root_concurrency_cap_holds() {
    if !require_root("root_concurrency_cap_holds") {
        return;
    }
    let owner = SystemUser::create("e2ehcap");
    let l = layout(&owner, "bgtest-cap0");
    let root = l.cfg.owner_home.clone();
    let helper = HelperProc::start(
        &l.cfg_path,
        &l.cfg,
        &["--max-concurrent", "2", "--request-timeout", "60"],
        root.join("helper.log"),
    );
    let fifos: Vec<PathBuf> = (0..3)
        .map(|i| {
            let f = l.cfg.state_dir.join(format!("bgtest-fifo{i}.ext4"));
            mkfifo(&f);
            f
        })
        .collect();
    let (uid, gid, sock) = (owner.uid, owner.gid, helper.socket.clone());
    let calls: Vec<_> = fifos
        .iter()
        .cloned()
        .map(|f| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                call_as(
                    uid,
                    gid,
                    &sock,
                    m::READ_EXT4_FILE,
                    json!({"image": f, "path": "/x"}),
                )
            })
        })
        .collect();
    let pid = helper.pid();
    assert!(
        wait_until(Duration::from_secs(20), || threads_in_openat2(pid) == 2),
        "two requests never started"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(threads_in_openat2(pid), 2, "more than the cap executing");
    // Release whichever FIFOs have a reader: each release lets the waiting
    // request in, until all three have run.
    let mut released = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while released < 3 && Instant::now() < deadline {
        for f in &fifos {
            if release_fifo(f) {
                released += 1;
                assert!(threads_in_openat2(pid) <= 2, "cap exceeded");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(released, 3, "not every request reached its open");
    for c in calls {
        let v = c.join().unwrap();
        let (code, msg) = error(m::READ_EXT4_FILE, &v);
        // The FIFO opened once a writer came; it is not a regular file.
        assert_eq!(code, -32000, "{msg}");
    }
}
