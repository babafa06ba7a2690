//! Phase timings of create and start against the recording helper and the
//! Firecracker API double: every phase arrives on the progress stream, in
//! order, with its duration; a failed step ends the phases before it.

use super::tests::fx;
use super::*;
use crate::privops::RecordingPriv;
use crate::progress::Progress;
use banger_core::machine::Backend;
use banger_proto::api::{Event, PHASES, PHASE_UNIT};
use banger_proto::helper as m;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// A stand-in VMM process (`sleep`), reaped by a thread.
fn stand_in() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap()
}

/// Once the recording helper sees the launch: a sysfs fixture holding the
/// VM's tap and the Firecracker double on the VM's API socket.
fn serve_double_on_launch(f: &tests::Fx, rec: Arc<RecordingPriv>) {
    let (rt, sys) = (f.d.paths.runtime_dir.clone(), f.tmp.path().join("sys"));
    tokio::spawn(async move {
        let id = loop {
            if let Some(c) = rec
                .calls()
                .into_iter()
                .find(|c| c.0 == m::LAUNCH_FIRECRACKER)
            {
                break c.1["vm_id"].as_str().unwrap().to_string();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let tap = banger_core::net::tap_for(&id);
        std::fs::create_dir_all(sys.join("class/net").join(tap)).unwrap();
        let l = tokio::net::UnixListener::bind(rt.join("vms").join(&id).join("fc.sock")).unwrap();
        let cfg = banger_fc_double::DoubleConfig {
            instance_id: id,
            sys_root: sys,
            guest_shutdown: None,
            ..Default::default()
        };
        let _ = banger_fc_double::serve(l, cfg, std::future::pending()).await;
    });
}

/// Every event sent so far.
fn drain(rx: &mut UnboundedReceiver<Event>) -> Vec<Event> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push(e);
    }
    v
}

/// The phase events among `events`: name and duration, checked to be
/// well-formed (`done` = `total`, unit `us`).
fn phases(events: &[Event]) -> Vec<(String, Duration)> {
    events
        .iter()
        .filter_map(|e| {
            let (name, took) = e.as_phase()?;
            let Event::Progress {
                done, total, unit, ..
            } = e
            else {
                unreachable!("a phase is a progress event")
            };
            assert_eq!((Some(*done), unit.as_deref()), (*total, Some(PHASE_UNIT)));
            Some((name.to_string(), took))
        })
        .collect()
}

fn names(p: &[(String, Duration)]) -> Vec<&str> {
    p.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_start_on_firecracker_report_every_phase_in_order_with_durations() {
    let rec = Arc::new(RecordingPriv::new());
    let mut f = fx(rec.clone());
    f.d.vmms.backend = Some(Backend::Firecracker);
    f.d.vmms.jailed = Some(false);
    f.d.vmms.ready_addr = Some(banger_testkit::ssh_banner_listener());
    let mut vmm = stand_in();
    rec.answer(m::LAUNCH_FIRECRACKER, Ok(json!({ "pid": vmm.id() })));
    serve_double_on_launch(&f, rec.clone());

    // Created only: the phases up to the customisation.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let p = Progress::new(tx);
    let t = Instant::now();
    let mut r = CreateReq::from_api(banger_proto::api::VmCreate {
        name: "web".into(),
        image: Some("base".into()),
        vcpus: None,
        memory_mib: None,
        start: Some(false),
        vmm: None,
        disk_size_bytes: None,
    });
    let commits = f.d.store.commits();
    let row = create(&f.d, &r, &p).await.unwrap();
    let wall = t.elapsed();
    // Row + address, the disk's handles, the customisation's pins.
    assert_eq!(
        f.d.store.commits() - commits,
        3,
        "SQLite commits of a create"
    );
    let created = phases(&drain(&mut rx));
    assert_eq!(
        names(&created),
        ["validate", "ip", "disk_clone", "customise"]
    );
    let sum: Duration = created.iter().map(|x| x.1).sum();
    assert!(sum <= wall, "phases {sum:?} within the create's {wall:?}");
    assert!(
        created.iter().any(|x| !x.1.is_zero()),
        "durations measured: {created:?}"
    );
    // The stream's microseconds of what the operation kept.
    let kept: Vec<(String, Duration)> = p
        .phases()
        .into_iter()
        .map(|(n, d)| (n.to_string(), Duration::from_micros(d.as_micros() as u64)))
        .collect();
    assert_eq!(kept, created, "the stream carries what the operation kept");

    // Started: the rest, in order, on the Firecracker double.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t = Instant::now();
    let commits = f.d.store.commits();
    let started = start(&f.d, "web", &Progress::new(tx)).await.unwrap();
    // `starting`, the backend, the pid, `running`.
    assert_eq!(
        f.d.store.commits() - commits,
        4,
        "SQLite commits of a start"
    );
    let wall = t.elapsed();
    assert_eq!(started.state, banger_core::vm::VmState::Running);
    let events = drain(&mut rx);
    let ran = phases(&events);
    assert_eq!(
        names(&ran),
        [
            "disk_activate",
            "tap",
            "nat",
            "vmm_spawn",
            "vmm_configure",
            "boot_to_ssh"
        ]
    );
    let all: Vec<&str> = names(&created).into_iter().chain(names(&ran)).collect();
    assert_eq!(all, PHASES, "create + start = every phase, in order");
    let sum: Duration = ran.iter().map(|x| x.1).sum();
    assert!(sum <= wall, "phases {sum:?} within the start's {wall:?}");
    // The configure phase covers the API calls the double answered.
    assert!(!ran[4].1.is_zero(), "{ran:?}");
    // Older clients read a phase as a finished step.
    let raw =
        serde_json::to_value(events.iter().find(|e| e.as_phase().is_some()).unwrap()).unwrap();
    assert_eq!(raw["type"], "progress");
    assert_eq!(raw["done"], raw["total"]);
    assert_eq!(raw["step"], "disk_activate");

    // A refused NAT ends the phases at the tap: nothing after is reported.
    let _ = vmm.kill();
    let _ = vmm.wait();
    r.name = "db".into();
    r.start = true;
    rec.answer(m::ENSURE_NAT, Err((-32602, "ensure_nat: bgtest".into())));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let e = create(&f.d, &r, &Progress::new(tx)).await.unwrap_err();
    assert!(crate::render_chain(&e).contains("bgtest"), "{e}");
    let failed = phases(&drain(&mut rx));
    assert_eq!(
        names(&failed),
        [
            "validate",
            "ip",
            "disk_clone",
            "customise",
            "disk_activate",
            "tap"
        ]
    );
    let _ = row;
}

/// The row and the address are one commit: a create that finds no free
/// address commits nothing (no row to undo).
#[tokio::test]
async fn a_create_with_no_free_address_commits_nothing() {
    let rec = Arc::new(RecordingPriv::new());
    let mut f = fx(rec.clone());
    f.d.cfg.subnet = "10.9.9.0/29".into();
    let mut made = 0;
    let e = loop {
        let r = CreateReq {
            name: format!("vm{made}"),
            image: "base".into(),
            vcpus: 1,
            memory_mib: 128,
            start: false,
            vmm: None,
            disk_size: None,
        };
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let commits = f.d.store.commits();
        match create(&f.d, &r, &Progress::new(tx)).await {
            Ok(_) => made += 1,
            Err(e) => {
                assert_eq!(f.d.store.commits(), commits, "nothing committed");
                break e;
            }
        }
        assert!(made < 10, "a /29 ran out long ago");
    };
    assert!(crate::render_chain(&e).contains("10.9.9.0/29"), "{e}");
    let rows: i64 =
        f.d.store
            .read(|c| c.query_row("SELECT count(*) FROM vms", [], |r| r.get(0)))
            .unwrap();
    assert_eq!(rows, made, "no row of the failed create");
    assert!(made > 0);
}
