//! `vm rm --force` during a create: the create gives up at its next
//! cancellation point and undoes everything it made; the rm then succeeds.

use super::tests::{fx, progress, req};
use super::*;
use crate::daemon::Daemon;
use crate::privops::{PrivError, PrivOps, RecordingPriv};
use banger_core::vm::VmState;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn count(d: &Daemon, sql: &str) -> i64 {
    d.store
        .read(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap()
}

/// Nothing of any VM is left: no row, lease, VM directory or pin.
fn assert_nothing_left(d: &Daemon) {
    assert_eq!(count(d, "SELECT count(*) FROM vms"), 0);
    assert_eq!(count(d, "SELECT count(*) FROM ip_allocations"), 0);
    let vms = std::fs::read_dir(d.paths.vms_dir()).map_or(0, |r| r.count());
    assert_eq!(vms, 0, "VM directories left");
    let kh = std::fs::read_to_string(d.paths.known_hosts()).unwrap_or_default();
    assert!(!kh.contains("web.vm"), "{kh}");
}

/// A stand-in QEMU: no `-sandbox` in its help; with `-qmp unix:PATH,…` it
/// serves QMP on PATH, answering every command with an empty return.
const FAKE_QEMU: &str = r#"#!/usr/bin/env python3
import json, socket, sys
a = sys.argv
if "-qmp" not in a:
    sys.exit(0)
path = a[a.index("-qmp") + 1].split(",")[0][len("unix:"):]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(4)
while True:
    c, _ = s.accept()
    f = c.makefile("rw")
    f.write(json.dumps({"QMP": {"version": {}, "capabilities": []}}) + "\r\n")
    f.flush()
    for line in f:
        f.write('{"return": {}}\r\n')
        f.flush()
"#;

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_force_while_the_create_waits_for_the_guest_cancels_and_undoes_it() {
    let rec = Arc::new(RecordingPriv::new());
    let mut f = fx(rec.clone());
    // A "QEMU" that answers QMP (the start resumes it) and runs a guest
    // that never answers; readiness looks at a closed port.
    let qemu = f.tmp.path().join("qemu-system-x86_64");
    std::fs::write(&qemu, FAKE_QEMU).unwrap();
    std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
    f.d.vmms.qemu_bin = qemu;
    f.d.vmms.ready_addr = Some("127.0.0.1:1".parse().unwrap());
    // Without cancellation the create would end here instead (and fail the test).
    f.d.vmms.ready_timeout = Duration::from_secs(30);
    let d = Arc::new(f.d);
    let job = tokio::spawn({
        let d = d.clone();
        async move { create(&d, &req("web", true), &progress()).await }
    });
    let mut pid = 0;
    wait_until("the VM waits for its guest", || {
        match find(&d, "web") {
            Ok(r) if r.state == VmState::Starting && r.pid.is_some() => pid = r.pid.unwrap(),
            _ => return false,
        }
        true
    })
    .await;
    let proc_dir = format!("/proc/{pid}");
    assert!(std::path::Path::new(&proc_dir).exists());

    let removed = remove(&d, "web", true, &progress()).await.unwrap();
    assert_eq!(removed.name, "web");
    let e = job.await.unwrap().unwrap_err();
    assert!(matches!(e, VmError::Cancelled(_)), "{e:?}");
    assert_eq!(e.to_string(), "VM web: cancelled by `banger vm rm --force`");
    // The VMM is gone (reaped), its cgroup, tap and NAT undone, then disk, lease,
    // row and pin.
    assert!(!std::path::Path::new(&proc_dir).exists(), "VMM {pid} left");
    assert!(!d.vmms.holds(&removed.id));
    let rt = d.paths.vm_runtime_dir(&removed.id);
    assert!(!rt.exists(), "runtime dir {} left", rt.display());
    let m: Vec<String> = rec.calls().into_iter().map(|c| c.0).collect();
    assert_eq!(
        m,
        vec![
            "priv.write_ext4_files",
            "priv.create_tap",
            "priv.ensure_nat",
            "priv.place_qemu_cgroup",
            "priv.remove_qemu_cgroup",
            "priv.clear_nat",
            "priv.delete_tap"
        ]
    );
    assert_nothing_left(&d);
    assert!(!d.vmms.busy(&removed.id), "claim left");
    // The name is free again.
    let again = create(&d, &req("web", false), &progress()).await.unwrap();
    assert_eq!(again.state, VmState::Created);
}

/// The helper double that holds the customisation until rm has begun.
struct SlowCustomise {
    inner: RecordingPriv,
    reached: AtomicBool,
    rm_begun: Arc<AtomicBool>,
}

impl PrivOps for SlowCustomise {
    fn kind(&self) -> &'static str {
        "recording"
    }

    fn call_value(&self, method: &str, params: Value) -> Result<Value, PrivError> {
        if method == "priv.write_ext4_files" {
            self.reached.store(true, Ordering::SeqCst);
            let t = Instant::now();
            while !self.rm_begun.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(10));
            }
            // rm cancels right after it begins.
            std::thread::sleep(Duration::from_millis(300));
        }
        self.inner.call_value(method, params)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_force_during_the_disk_steps_cancels_before_anything_starts() {
    let rm_begun = Arc::new(AtomicBool::new(false));
    let slow = Arc::new(SlowCustomise {
        inner: RecordingPriv::new(),
        reached: AtomicBool::new(false),
        rm_begun: rm_begun.clone(),
    });
    let f = fx(slow.clone());
    let d = Arc::new(f.d);
    let job = tokio::spawn({
        let d = d.clone();
        async move { create(&d, &req("web", true), &progress()).await }
    });
    wait_until("the create customises its disk", || {
        slow.reached.load(Ordering::SeqCst)
    })
    .await;
    let id = find(&d, "web").unwrap().id;
    // Without force the busy VM is refused and nothing changes.
    let e = remove(&d, "web", false, &progress()).await.unwrap_err();
    assert!(matches!(e, VmError::Busy(_)), "{e:?}");
    rm_begun.store(true, Ordering::SeqCst);
    remove(&d, "web", true, &progress()).await.unwrap();
    let e = job.await.unwrap().unwrap_err();
    assert!(matches!(e, VmError::Cancelled(_)), "{e:?}");
    // It never started: no tap, no NAT, no VMM.
    let m: Vec<String> = slow.inner.calls().into_iter().map(|c| c.0).collect();
    assert_eq!(m, vec!["priv.write_ext4_files"]);
    assert!(!d.vmms.holds(&id));
    assert_nothing_left(&d);
}

#[tokio::test]
async fn sizes_out_of_range_are_refused_before_anything_is_made() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fx(rec.clone());
    for (vcpus, mem, what) in [
        (0, 512, "vcpus 0"),
        (33, 512, "vcpus 33"),
        (255, 512, "vcpus 255"),
        (1, 64, "memory 64 MiB"),
        (1, (1 << 20) + 1, "memory 1048577 MiB"),
        (1, u32::MAX, "memory 4294967295 MiB"),
    ] {
        let mut r = req("web", false);
        r.vcpus = vcpus;
        r.memory_mib = mem;
        let e = create(&f.d, &r, &progress()).await.unwrap_err();
        assert!(matches!(e, VmError::OutOfRange(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with(what) && !text.contains('\n'), "{text}");
    }
    assert!(rec.calls().is_empty());
    assert_nothing_left(&f.d);
    // The API defaults are in range.
    let r = CreateReq::from_api(serde_json::from_str(r#"{"name":"web"}"#).unwrap());
    assert_eq!((r.vcpus, r.memory_mib), (1, 512));
}
