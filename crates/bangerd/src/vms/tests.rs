//! The lifecycle against the helper's recording double: the exact helper
//! calls of start, stop and rm, refusals, and the undo of a failed create.

use super::*;
use crate::daemon::Daemon;
use crate::images::catalog::CatalogError;
use crate::privops::RecordingPriv;
use crate::progress::Progress;
use crate::vmdisk;
use crate::vmdisk::driver::Driver;
use crate::vmm::registry::Registry;
use banger_core::machine::Backend;
use banger_core::paths::{Mode, Paths};
use banger_core::vm::VmState;
use banger_proto::install::InstallConfig;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

pub(super) struct Fx {
    pub tmp: tempfile::TempDir,
    pub d: Daemon,
}

/// A daemon over a temp StateDir with one image `base` (a 1 MiB "rootfs"),
/// an owner key, the copy disk driver and QEMU under TCG.
pub(super) fn fx(privops: Arc<dyn crate::privops::PrivOps>) -> Fx {
    let tmp = tempfile::Builder::new()
        .prefix("bgtest-vms-")
        .tempdir()
        .unwrap();
    let state = tmp.path().join("state");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(
        home.join(".ssh/id_ed25519.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3rGf9oUq0v0cW1m8lJp7Jm2r7l4vG1m5m0r8m0bq1 bgtest\n",
    )
    .unwrap();
    let paths = Paths {
        state_dir: state.clone(),
        runtime_dir: tmp.path().join("run"),
    };
    let me = rustix::process::getuid().as_raw();
    let mut cfg = InstallConfig::for_owner(me, me, home);
    cfg.state_dir = state.clone();
    cfg.runtime_dir = paths.runtime_dir.clone();
    let store = crate::store::Store::open(&paths.database()).unwrap();
    let dir = state.join("images/img1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rootfs.ext4"), vec![7u8; 1 << 20]).unwrap();
    std::fs::write(dir.join("vmlinux"), b"kernel").unwrap();
    store
        .write(|tx| {
            tx.execute(
                "INSERT INTO images VALUES ('img1','base',?1,'k',NULL,'s','k',1,'import',0)",
                [dir.join("rootfs.ext4").display().to_string()],
            )
        })
        .unwrap();
    let mut vms = Registry::default();
    vms.backend = Some(Backend::QemuTcg);
    vms.disk_driver = Some(Driver::Copy);
    let d = Daemon {
        cfg,
        paths,
        mode: Mode::Dev,
        store,
        privops,
        host_paths: Default::default(),
        vmms: vms,
    };
    Fx { tmp, d }
}

pub(super) fn progress() -> Progress {
    Progress::new(tokio::sync::mpsc::unbounded_channel().0)
}

pub(super) fn req(name: &str, start: bool) -> CreateReq {
    CreateReq {
        name: name.into(),
        image: "base".into(),
        vcpus: 1,
        memory_mib: 256,
        start,
        vmm: None,
        disk_size: None,
    }
}

fn methods(rec: &RecordingPriv) -> Vec<String> {
    rec.calls().into_iter().map(|c| c.0).collect()
}

fn count(d: &Daemon, sql: &str) -> i64 {
    d.store
        .read(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap()
}

fn set_state(d: &Daemon, id: &str, state: &str) {
    d.store
        .write(|tx| tx.execute("UPDATE vms SET state=?2 WHERE id=?1", [id, state]))
        .unwrap();
}

fn net_calls(tap: &str, ip: &str) -> Vec<(String, Value)> {
    vec![
        ("priv.clear_nat".into(), json!({"guest_ip": ip, "tap": tap})),
        ("priv.delete_tap".into(), json!({"name": tap})),
    ]
}

#[tokio::test]
async fn create_no_start_records_the_vm_its_address_and_its_customised_disk() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fx(rec.clone());
    let row = create(&f.d, &req("web", false), &progress()).await.unwrap();
    assert_eq!(row.name, "web");
    assert_eq!(row.state, VmState::Created);
    assert_eq!(row.ip, Some("172.30.0.2".parse().unwrap()));
    assert_eq!(row.pid, None);
    // The disk is made and customised; nothing else touches the host.
    assert_eq!(methods(&rec), vec!["priv.write_ext4_files"]);
    let files = &rec.calls()[0].1["files"];
    let hostname = files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/hostname")
        .unwrap();
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD
        .decode(hostname["content_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(text, b"web\n");
    let disk = f.d.paths.vm_dir(&row.id).join(vmdisk::COPY_FILE);
    assert!(disk.is_file());
    let kh = std::fs::read_to_string(f.d.paths.known_hosts()).unwrap();
    assert!(kh.contains("web.vm") && kh.contains("172.30.0.2"), "{kh}");
    // The name is taken now; a second VM gets the next address.
    assert!(matches!(
        create(&f.d, &req("web", false), &progress()).await,
        Err(VmError::Exists(_))
    ));
    let other = create(&f.d, &req("db", false), &progress()).await.unwrap();
    assert_eq!(other.ip, Some("172.30.0.3".parse().unwrap()));
}

#[tokio::test]
async fn a_failed_create_leaves_no_row_no_address_no_disk_no_pin() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fx(rec.clone());
    rec.answer(
        "priv.write_ext4_files",
        Err((-32000, "bgtest: disk full".into())),
    );
    let e = create(&f.d, &req("web", false), &progress())
        .await
        .unwrap_err();
    assert!(matches!(e, VmError::Disk(_)), "{e:?}");
    assert_eq!(count(&f.d, "SELECT count(*) FROM vms"), 0);
    assert_eq!(count(&f.d, "SELECT count(*) FROM ip_allocations"), 0);
    let vms = f.d.paths.vms_dir();
    assert_eq!(std::fs::read_dir(&vms).unwrap().count(), 0);
    let kh = std::fs::read_to_string(f.d.paths.known_hosts()).unwrap_or_default();
    assert!(!kh.contains("web.vm"), "{kh}");
}

#[tokio::test]
async fn bad_names_and_unknown_images_are_refused_before_anything_is_made() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fx(rec.clone());
    let e = create(&f.d, &req("Bad_Name", false), &progress())
        .await
        .unwrap_err();
    assert!(matches!(e, VmError::BadName(_)), "{e:?}");
    let mut r = req("web", false);
    r.image = "nope".into();
    let e = create(&f.d, &r, &progress()).await.unwrap_err();
    assert!(
        matches!(e, VmError::Image(CatalogError::NotFound(_))),
        "{e:?}"
    );
    assert!(rec.calls().is_empty());
    assert_eq!(count(&f.d, "SELECT count(*) FROM vms"), 0);
}

#[tokio::test]
async fn a_start_that_cannot_launch_removes_nat_and_tap_and_leaves_broken() {
    let rec = Arc::new(RecordingPriv::new());
    let mut f = fx(rec.clone());
    f.d.vmms.qemu_bin = f.tmp.path().join("no-such-qemu");
    let row = create(&f.d, &req("web", false), &progress()).await.unwrap();
    let before = rec.calls().len();
    let e = start(&f.d, "web", &progress()).await.unwrap_err();
    assert!(matches!(e, VmError::NoQemu(_)), "{e:?}");
    let tap = banger_core::net::tap_for(&row.id);
    let mut want = vec![
        (
            "priv.create_tap".to_string(),
            json!({"name": tap, "bridge": "banger0"}),
        ),
        (
            "priv.ensure_nat".to_string(),
            json!({"guest_ip": "172.30.0.2", "tap": tap}),
        ),
        // A QEMU VM's cgroup goes too (absent is fine to the helper).
        (
            "priv.remove_qemu_cgroup".to_string(),
            json!({"vm_id": row.id}),
        ),
    ];
    want.extend(net_calls(&tap, "172.30.0.2"));
    assert_eq!(rec.calls()[before..].to_vec(), want);
    let row = find(&f.d, "web").unwrap();
    assert_eq!(row.state, VmState::Broken);
    assert_eq!(row.pid, None);
    assert!(!f.d.vmms.holds(&row.id));
    // Broken: only rm helps; start is refused with the CLI's wording.
    let e = start(&f.d, "web", &progress()).await.unwrap_err();
    assert!(e.to_string().contains("is broken"), "{e}");
    // rm of a broken VM needs no force, and tries the start's cleanup once
    // more (its own may have failed with the helper gone mid-call).
    let n = rec.calls().len();
    remove(&f.d, "web", false, &progress()).await.unwrap();
    assert_eq!(rec.calls()[n..].to_vec(), want[2..].to_vec());
    assert_eq!(count(&f.d, "SELECT count(*) FROM vms"), 0);
}

#[tokio::test]
async fn create_whose_start_fails_is_undone_entirely() {
    let rec = Arc::new(RecordingPriv::new());
    let mut f = fx(rec.clone());
    f.d.vmms.qemu_bin = f.tmp.path().join("no-such-qemu");
    let e = create(&f.d, &req("web", true), &progress())
        .await
        .unwrap_err();
    assert!(matches!(e, VmError::NoQemu(_)), "{e:?}");
    let m = methods(&rec);
    assert_eq!(
        m,
        vec![
            "priv.write_ext4_files",
            "priv.create_tap",
            "priv.ensure_nat",
            "priv.remove_qemu_cgroup",
            "priv.clear_nat",
            "priv.delete_tap"
        ]
    );
    assert_eq!(count(&f.d, "SELECT count(*) FROM vms"), 0);
    assert_eq!(count(&f.d, "SELECT count(*) FROM ip_allocations"), 0);
    assert_eq!(std::fs::read_dir(f.d.paths.vms_dir()).unwrap().count(), 0);
}

#[tokio::test]
async fn rm_of_a_running_vm_is_refused_without_force_and_cleans_up_with_it() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fx(rec.clone());
    let row = create(&f.d, &req("web", false), &progress()).await.unwrap();
    set_state(&f.d, &row.id, "running");
    let n = rec.calls().len();
    let e = remove(&f.d, "web", false, &progress()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "VM web is running; stop it first or use `banger vm rm --force`"
    );
    assert_eq!(rec.calls().len(), n);
    assert_eq!(find(&f.d, "web").unwrap().state, VmState::Running);

    remove(&f.d, "web", true, &progress()).await.unwrap();
    let tap = banger_core::net::tap_for(&row.id);
    assert_eq!(rec.calls()[n..].to_vec(), net_calls(&tap, "172.30.0.2"));
    assert!(matches!(find(&f.d, "web"), Err(VmError::NotFound(_))));
    assert_eq!(count(&f.d, "SELECT count(*) FROM ip_allocations"), 0);
    assert!(!f.d.paths.vm_dir(&row.id).exists());
    let kh = std::fs::read_to_string(f.d.paths.known_hosts()).unwrap();
    assert!(!kh.contains("web.vm"), "{kh}");
}

#[tokio::test]
async fn stop_removes_nat_and_tap_then_records_stopped_and_is_idempotent() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fx(rec.clone());
    let row = create(&f.d, &req("web", false), &progress()).await.unwrap();
    // Stopping what never started does nothing on the host.
    let n = rec.calls().len();
    let r = stop(&f.d, "web", false, &progress()).await.unwrap();
    assert_eq!(r.state, VmState::Created);
    assert_eq!(rec.calls().len(), n);

    set_state(&f.d, &row.id, "running");
    let r = stop(&f.d, "web", true, &progress()).await.unwrap();
    assert_eq!(r.state, VmState::Stopped);
    let tap = banger_core::net::tap_for(&row.id);
    assert_eq!(rec.calls()[n..].to_vec(), net_calls(&tap, "172.30.0.2"));
    let n = rec.calls().len();
    stop(&f.d, "web", false, &progress()).await.unwrap();
    assert_eq!(rec.calls().len(), n);
}

#[tokio::test]
async fn a_failed_teardown_leaves_the_vm_broken() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fx(rec.clone());
    let row = create(&f.d, &req("web", false), &progress()).await.unwrap();
    set_state(&f.d, &row.id, "running");
    rec.answer("priv.delete_tap", Err((-32000, "bgtest: busy".into())));
    let e = stop(&f.d, "web", false, &progress()).await.unwrap_err();
    assert!(matches!(e, VmError::Priv("priv.delete_tap", _)), "{e:?}");
    assert_eq!(find(&f.d, "web").unwrap().state, VmState::Broken);
}

#[tokio::test]
async fn a_teardown_reports_every_step_that_failed() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fx(rec.clone());
    let row = create(&f.d, &req("web", false), &progress()).await.unwrap();
    set_state(&f.d, &row.id, "running");
    rec.answer("priv.clear_nat", Err((-32000, "bgtest: nft gone".into())));
    rec.answer("priv.delete_tap", Err((-32000, "bgtest: busy".into())));
    let e = stop(&f.d, "web", false, &progress()).await.unwrap_err();
    let VmError::Teardown(name, Failures(all)) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(name, "web");
    assert!(
        matches!(
            &all[..],
            [
                VmError::Priv("priv.clear_nat", _),
                VmError::Priv("priv.delete_tap", _)
            ]
        ),
        "{all:?}"
    );
    let text = crate::render_chain(&e);
    assert!(text.contains("nft gone") && text.contains("busy"), "{text}");
    assert_eq!(find(&f.d, "web").unwrap().state, VmState::Broken);
}

#[tokio::test]
async fn a_second_operation_on_a_busy_vm_is_refused() {
    let rec = Arc::new(RecordingPriv::new());
    let mut f = fx(rec.clone());
    f.d.vmms.cancel_wait = std::time::Duration::from_millis(300);
    let row = create(&f.d, &req("web", false), &progress()).await.unwrap();
    let held = f.d.vmms.claim(&row.id, &row.name).unwrap();
    let e = start(&f.d, "web", &progress()).await.unwrap_err();
    assert!(matches!(e, VmError::Busy(_)), "{e:?}");
    let e = remove(&f.d, "web", false, &progress()).await.unwrap_err();
    assert!(matches!(e, VmError::Busy(_)), "{e:?}");
    assert!(!held.cancelled());
    // Forced: the operation is asked to give up; one that does not within
    // the wait leaves the VM as it was.
    let e = remove(&f.d, "web", true, &progress()).await.unwrap_err();
    assert!(matches!(e, VmError::Busy(_)), "{e:?}");
    assert!(held.cancelled());
    assert_eq!(find(&f.d, "web").unwrap().state, VmState::Created);
}

mod reconcile_tests {
    use super::*;
    use crate::vmm::adopted::tests::proc_with;
    use crate::vms::reconcile::run as reconcile;
    use banger_core::vm::Repair;

    fn record(d: &Daemon, id: &str, state: &str, pid: Option<i64>, backend: &str) {
        d.store
            .write(|tx| {
                tx.execute(
                    "UPDATE vms SET state=?2, pid=?3, backend=?4 WHERE id=?1",
                    rusqlite::params![id, state, pid, backend],
                )
            })
            .unwrap();
    }

    #[tokio::test]
    async fn restart_reconcile_fixes_each_recorded_state() {
        let rec = Arc::new(RecordingPriv::new());
        let f = fx(rec.clone());
        let procs = f.tmp.path().join("proc");
        let mk = |name: &'static str| {
            let d = &f.d;
            async move { create(d, &req(name, false), &progress()).await.unwrap() }
        };
        let alive = mk("alive").await; // running, its VMM alive and answering: re-adopted
        let fake = mk("fake").await; // running, a live process that does not answer: killed, stopped
        let died = mk("died").await; // running, VMM gone: stopped + network cleared
        let half = mk("half").await; // starting, VMM alive: killed, stopped
        let nodisk = mk("nodisk").await; // stopped, disk vanished: broken
        let del = mk("del").await; // deleting: finished
        proc_with(&procs, 101, &["firecracker", "--id", &alive.id]);
        proc_with(&procs, 103, &["firecracker", "--id", &half.id]);
        proc_with(&procs, 104, &["firecracker", "--id", &fake.id]);
        // `alive`'s API answers with its id as Firecracker's instance id.
        let rt = f.d.paths.vm_runtime_dir(&alive.id);
        std::fs::create_dir_all(&rt).unwrap();
        let listener = tokio::net::UnixListener::bind(rt.join("fc.sock")).unwrap();
        let cfg = banger_fc_double::DoubleConfig {
            instance_id: alive.id.clone(),
            guest_shutdown: None,
            ..Default::default()
        };
        tokio::spawn(banger_fc_double::serve(
            listener,
            cfg,
            std::future::pending(),
        ));
        record(&f.d, &alive.id, "running", Some(101), "firecracker");
        record(&f.d, &fake.id, "running", Some(104), "firecracker");
        record(&f.d, &died.id, "running", Some(102), "qemu-tcg");
        record(&f.d, &half.id, "starting", Some(103), "firecracker");
        record(&f.d, &nodisk.id, "stopped", None, "qemu-tcg");
        record(&f.d, &del.id, "deleting", None, "qemu-tcg");
        std::fs::remove_file(f.d.paths.vm_dir(&nodisk.id).join(vmdisk::COPY_FILE)).unwrap();
        let n = rec.calls().len();

        let fixed = reconcile(&f.d, &procs).await;
        let got: Vec<(String, VmState, Repair)> = fixed
            .into_iter()
            .map(|x| (x.name, x.to, x.repair))
            .collect();
        assert_eq!(
            got,
            vec![
                ("del".to_string(), VmState::Deleting, Repair::FinishDelete),
                ("died".to_string(), VmState::Stopped, Repair::Nothing),
                ("fake".to_string(), VmState::Stopped, Repair::KillProcess),
                ("half".to_string(), VmState::Stopped, Repair::KillProcess),
                ("nodisk".to_string(), VmState::Broken, Repair::Nothing),
            ]
        );
        assert_eq!(find(&f.d, "alive").unwrap().state, VmState::Running);
        assert_eq!(find(&f.d, "alive").unwrap().pid, Some(101));
        assert!(f.d.vmms.holds(&alive.id), "re-adopted");
        assert!(!f.d.vmms.holds(&fake.id));
        assert!(matches!(find(&f.d, "del"), Err(VmError::NotFound(_))));
        let died_row = find(&f.d, "died").unwrap();
        assert_eq!((died_row.state, died_row.pid), (VmState::Stopped, None));
        let tap = |r: &VmRow| banger_core::net::tap_for(&r.id);
        let nat = |r: &VmRow, ip: &str| {
            (
                "priv.clear_nat".to_string(),
                json!({"guest_ip": ip, "tap": tap(r)}),
            )
        };
        let del_tap = |r: &VmRow| ("priv.delete_tap".to_string(), json!({"name": tap(r)}));
        let cgroup = |r: &VmRow| {
            (
                "priv.remove_qemu_cgroup".to_string(),
                json!({"vm_id": r.id}),
            )
        };
        assert_eq!(
            rec.calls()[n..].to_vec(),
            vec![
                cgroup(&del),
                nat(&del, "172.30.0.7"),
                del_tap(&del),
                nat(&died, "172.30.0.4"),
                del_tap(&died),
                cgroup(&died),
                ("priv.kill_process".to_string(), json!({"pid": 104})),
                nat(&fake, "172.30.0.3"),
                del_tap(&fake),
                ("priv.kill_process".to_string(), json!({"pid": 103})),
                nat(&half, "172.30.0.5"),
                del_tap(&half),
            ]
        );
        // A second run finds nothing to do.
        assert!(reconcile(&f.d, &procs).await.is_empty());
    }
}

#[tokio::test]
async fn stop_kills_a_vmm_adopted_from_a_previous_daemon() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fx(rec.clone());
    let row = create(&f.d, &req("web", false), &progress()).await.unwrap();
    // A stand-in QEMU: `sleep` under QEMU's name, in a folder named after the VM.
    let dir = f.tmp.path().join(&row.id);
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("qemu-system-x86_64");
    std::fs::copy("/bin/sleep", &fake).unwrap();
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(
        std::process::Command::new(&fake)
            .arg("600")
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id() as i64;
    let t = std::time::Instant::now();
    while !crate::vmm::adopted::alive(Path::new("/proc"), pid, &row.id) {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "stand-in not seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    f.d.store
        .write(|tx| {
            tx.execute(
                "UPDATE vms SET state='running', pid=?2, backend='qemu-tcg' WHERE id=?1",
                rusqlite::params![row.id, pid],
            )
        })
        .unwrap();
    let r = stop(&f.d, "web", false, &progress()).await.unwrap();
    assert_eq!((r.state, r.pid), (VmState::Stopped, None));
    let status = child.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status}");
}

/// The API path: jobs stream the lifecycle from the runtime (blocking calls
/// handed off at their leaves).
#[test]
fn the_api_streams_create_start_failure_and_rm() {
    use banger_testkit::http_unix;
    let rec = Arc::new(RecordingPriv::new());
    let mut f = fx(rec.clone());
    f.d.vmms.qemu_bin = f.tmp.path().join("no-such-qemu");
    let Fx { tmp, d } = f;
    let socket = d.paths.daemon_socket();
    let me = rustix::process::getuid().as_raw();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn({
        let socket = socket.clone();
        async move {
            let listener = crate::http::bind_socket(&socket, me, me).unwrap();
            crate::http::serve(Arc::new(d), listener, async {
                let _ = rx.await;
            })
            .await
        }
    });
    assert!(banger_testkit::wait_until(
        std::time::Duration::from_secs(10),
        || socket.exists()
    ));
    let (status, text) = http_unix(
        &socket,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"web","image":"base","start":false}"#),
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""type":"done""#), "{text}");
    assert!(text.contains(r#""state":"created""#), "{text}");
    assert!(text.contains(r#""ip":"172.30.0.2""#), "{text}");

    // Refused before any job: a taken name, an unknown image.
    let (status, text) = http_unix(
        &socket,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"web","image":"base"}"#),
    )
    .unwrap();
    assert_eq!(status, 409, "{text}");
    let (status, _) = http_unix(
        &socket,
        "POST",
        "/v1/vms",
        Some(r#"{"name":"x","image":"nope"}"#),
    )
    .unwrap();
    assert_eq!(status, 404);

    // A start that fails ends the stream with an error; the VM is broken.
    let (status, text) = http_unix(&socket, "POST", "/v1/vms/web/start", None).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""type":"error""#), "{text}");
    assert!(text.contains("no qemu-system-x86_64"), "{text}");
    let (_, text) = http_unix(&socket, "GET", "/v1/vms/web", None).unwrap();
    assert!(text.contains(r#""state":"broken""#), "{text}");

    let (status, text) = http_unix(&socket, "DELETE", "/v1/vms/web", None).unwrap();
    assert_eq!(status, 200, "{text}");
    let (status, _) = http_unix(&socket, "GET", "/v1/vms/web", None).unwrap();
    assert_eq!(status, 404);
    let _ = tx.send(());
    rt.block_on(server).unwrap().unwrap();
    drop(tmp);
}
