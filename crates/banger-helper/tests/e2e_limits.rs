//! The helper never parks a worker on a file planted where an image is
//! expected: a FIFO under StateDir (which would block a plain open(2)
//! forever) is refused at once, and the helper keeps serving.

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use banger_proto::helper as m;
use banger_testkit::{require_root, SystemUser};
use harness::{call_as, error, layout, result, HelperProc};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn root_fifo_image_is_refused_at_once() {
    if !require_root("root_fifo_image_is_refused_at_once") {
        return;
    }
    let owner = SystemUser::create("e2ehfi");
    let l = layout(&owner, "bgtest-fi0");
    let root = l.cfg.owner_home.clone();
    let helper = HelperProc::start(
        &l.cfg_path,
        &l.cfg,
        &["--request-timeout", "30", "--max-concurrent", "1"],
        root.join("helper.log"),
    );
    let fifo = l.cfg.state_dir.join("bgtest-fifo.ext4");
    mkfifo(&fifo);
    // With one request slot, a parked worker would make the second call wait
    // for the 30 s timeout; both must come back at once.
    for _ in 0..2 {
        let t0 = Instant::now();
        let v = call_as(
            owner.uid,
            owner.gid,
            &helper.socket,
            m::READ_EXT4_FILE,
            json!({"image": fifo, "path": "/etc/hostname"}),
        );
        let (code, msg) = error(m::READ_EXT4_FILE, &v);
        assert_ne!(code, -32001, "{msg}");
        assert!(msg.contains("regular file"), "{msg}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    }
    let v = call_as(owner.uid, owner.gid, &helper.socket, m::VERSION, json!({}));
    result(m::VERSION, &v);
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}
