//! The jailed Firecracker path through the daemon against the recording
//! helper: exact `priv.*` params (jail spec, jail-uid tap, chroot cleanup),
//! chroot paths in the API calls, and nothing left after `rm`.

use super::tests::{fx, progress, req};
use super::*;
use crate::privops::RecordingPriv;
use banger_core::machine::Backend;
use banger_proto::helper as m;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A stand-in VMM process (`sleep`), reaped by a thread so `/proc/<pid>`
/// goes away when it is killed.
fn stand_in() -> i32 {
    let mut c = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let pid = c.id() as i32;
    std::thread::spawn(move || c.wait());
    pid
}

type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A minimal Firecracker API on `sock`: records every request, answers 204
/// (`GET`: `{}`), and on `SendCtrlAltDel` kills the current stand-in.
fn fake_api(sock: &std::path::Path, id: &str, current: Arc<Mutex<i32>>) -> Seen {
    let info =
        json!({"app_name": "Firecracker", "id": id, "state": "Running", "vmm_version": "1.16.1"})
            .to_string();
    let seen: Seen = Arc::default();
    let l = tokio::net::UnixListener::bind(sock).unwrap();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let s = s.clone();
            let info = info.clone();
            let current = current.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(n) = c.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let head = &text[..end];
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                    buf.drain(..end + 4 + len);
                    let mut first = head.lines().next().unwrap_or("").split(' ');
                    let (method, path) = (
                        first.next().unwrap_or("").to_string(),
                        first.next().unwrap_or("").to_string(),
                    );
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    if v["action_type"] == "SendCtrlAltDel" {
                        let pid = *current.lock().unwrap();
                        // SAFETY: kill(2) on the stand-in this test started.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    s.lock().unwrap().push((method.clone(), path, v));
                    let answer = if method == "GET" {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{info}",
                            info.len()
                        )
                    } else {
                        "HTTP/1.1 204 No Content\r\n\r\n".to_string()
                    };
                    if c.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jailed_vm_goes_create_running_stop_start_rm_with_exact_helper_calls() {
    let rec = Arc::new(RecordingPriv::new());
    let mut f = fx(rec.clone());
    f.d.vmms.backend = Some(Backend::Firecracker);
    f.d.vmms.jailed = Some(true);
    f.d.vmms.ready_addr = Some(banger_testkit::ssh_banner_listener());
    f.d.cfg.jailer_base = f.tmp.path().join("jail");
    f.d.cfg.firecracker_bin = "/usr/local/bin/firecracker".into();
    let row = create(
        &f.d,
        &CreateReq {
            vcpus: 2,
            ..req("web", false)
        },
        &progress(),
    )
    .await
    .unwrap();
    let id = row.id.clone();
    let rt = f.d.paths.runtime_dir.clone();
    let api = rt.join("jails").join(&id).join("firecracker.socket");
    std::fs::create_dir_all(api.parent().unwrap()).unwrap();
    let current = Arc::new(Mutex::new(0));
    let seen = fake_api(&api, &id, current.clone());
    let chroot = f.tmp.path().join("jail/firecracker").join(&id);
    let state = f.d.paths.state_dir.clone();
    let tap = banger_core::net::tap_for(&id);

    let launch_answer = |pid: i32| json!({"pid": pid, "api_socket": api, "chroot": chroot.join("root"), "jail_uid": 900_001});
    let pid = stand_in();
    *current.lock().unwrap() = pid;
    rec.answer(m::LAUNCH_FIRECRACKER, Ok(launch_answer(pid)));
    let n = rec.calls().len();
    let r = start(&f.d, "web", &progress()).await.unwrap();
    assert_eq!((r.state, r.pid), (VmState::Running, Some(i64::from(pid))));
    assert_eq!(r.backend, Some(banger_core::machine::Backend::Firecracker));
    let ip = "172.30.0.2";
    let launch = json!({
        "vm_id": id,
        "api_socket": "",
        "jailed": true,
        "log_file": state.join("vms").join(&id).join("console.log"),
        "jail": {
            "kernel": state.join("images/img1/vmlinux"),
            "initrd": "",
            "root_disk_file": state.join("vms").join(&id).join("rootfs.ext4"),
            "memory_mib": 256,
            "vcpus": 2,
        }
    });
    let started = vec![
        (
            "priv.ensure_nat".to_string(),
            json!({"guest_ip": ip, "tap": tap}),
        ),
        ("priv.launch_firecracker".to_string(), launch.clone()),
        (
            "priv.ensure_socket_access".to_string(),
            json!({"path": api}),
        ),
        (
            "priv.create_tap".to_string(),
            json!({"name": tap, "bridge": "banger0", "jail_uid": 900_001}),
        ),
    ];
    let mut calls = rec.calls()[n..].to_vec();
    // The hand-over races the launch; both orders are right.
    calls.sort_by_key(|c| c.0 != "priv.ensure_nat");
    let mut want = started.clone();
    want.sort_by_key(|c| c.0 != "priv.ensure_nat");
    let names = |v: &[(String, Value)]| {
        let mut n: Vec<String> = v.iter().map(|c| c.0.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&calls), names(&want), "{calls:#?}");
    for w in &want {
        assert!(calls.contains(w), "missing {w:?} in {calls:#?}");
    }
    // The API saw only chroot paths.
    let api_calls = seen.lock().unwrap().clone();
    let boot = api_calls.iter().find(|c| c.1 == "/boot-source").unwrap();
    assert_eq!(boot.2["kernel_image_path"], "/vmlinux");
    assert!(boot.2.get("initrd_path").is_none_or(Value::is_null));
    let drive = api_calls.iter().find(|c| c.1 == "/drives/rootfs").unwrap();
    assert_eq!(drive.2["path_on_host"], "/rootfs");
    let nic = api_calls
        .iter()
        .find(|c| c.1 == "/network-interfaces/eth0")
        .unwrap();
    assert_eq!(nic.2["host_dev_name"], tap.as_str());

    // Stop: Ctrl+Alt+Del (the stand-in dies), then the chroot, NAT and tap.
    let n = rec.calls().len();
    let r = stop(&f.d, "web", false, &progress()).await.unwrap();
    assert_eq!((r.state, r.pid), (VmState::Stopped, None));
    let cleanup = (
        "priv.cleanup_jailer_chroot".to_string(),
        json!({"path": chroot}),
    );
    assert_eq!(
        rec.calls()[n..].to_vec(),
        vec![
            cleanup.clone(),
            ("priv.clear_nat".into(), json!({"guest_ip": ip, "tap": tap})),
            ("priv.delete_tap".into(), json!({"name": tap})),
        ]
    );
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    // Start again: a fresh launch with the same params.
    let pid2 = stand_in();
    *current.lock().unwrap() = pid2;
    rec.answer(m::LAUNCH_FIRECRACKER, Ok(launch_answer(pid2)));
    let n = rec.calls().len();
    let r = start(&f.d, "web", &progress()).await.unwrap();
    assert_eq!((r.state, r.pid), (VmState::Running, Some(i64::from(pid2))));
    assert!(rec.calls()[n..].contains(&("priv.launch_firecracker".into(), launch)));

    // rm --force of the running VM: no grace, so `priv.kill_process`; the
    // recording helper cannot kill, so a watcher does what the helper would.
    let n = rec.calls().len();
    let (r2, done) = (
        rec.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let d2 = done.clone();
    let watcher = std::thread::spawn(move || {
        while !d2.load(std::sync::atomic::Ordering::Relaxed) {
            if r2.calls()[n..]
                .iter()
                .any(|c| c == &("priv.kill_process".to_string(), json!({"pid": pid2})))
            {
                // SAFETY: kill(2) on the stand-in this test started.
                unsafe { libc::kill(pid2, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    remove(&f.d, "web", true, &progress()).await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    let after: Vec<String> = rec.calls()[n..].iter().map(|c| c.0.clone()).collect();
    assert!(
        after.contains(&"priv.cleanup_jailer_chroot".to_string()),
        "{after:?}"
    );
    assert!(rec.calls()[n..].contains(&cleanup));
    let t = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid2}")).exists() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "stand-in survived rm"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(matches!(find(&f.d, "web"), Err(VmError::NotFound(_))));
    assert!(!f.d.paths.vm_dir(&id).exists());
    assert!(!f.d.paths.vm_runtime_dir(&id).exists());
    let rows: i64 =
        f.d.store
            .read(|c| c.query_row("SELECT count(*) FROM ip_allocations", [], |r| r.get(0)))
            .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_refused_jailed_launch_is_a_clear_error_and_leaves_nothing() {
    let rec = Arc::new(RecordingPriv::new());
    let mut f = fx(rec.clone());
    f.d.vmms.backend = Some(Backend::Firecracker);
    f.d.vmms.jailed = Some(true);
    f.d.cfg.jailer_base = f.tmp.path().join("jail");
    rec.answer(
        m::LAUNCH_FIRECRACKER,
        Err((
            -32602,
            "priv.launch_firecracker: install.toml must reserve a jail uid range".into(),
        )),
    );
    let e = create(&f.d, &req("web", true), &progress())
        .await
        .unwrap_err();
    let text = crate::render_chain(&e);
    assert!(
        text.contains("the helper refused to launch Firecracker")
            && text.contains("must reserve a jail uid range"),
        "{text}"
    );
    let m: Vec<String> = rec.calls().into_iter().map(|c| c.0).collect();
    assert!(!text.contains("its log ends"), "no log, no tail: {text}");
    assert!(
        m.contains(&"priv.cleanup_jailer_chroot".to_string()),
        "{m:?}"
    );
    assert!(!m.contains(&"priv.create_tap".to_string()), "{m:?}");
    let n: i64 =
        f.d.store
            .read(|c| c.query_row("SELECT count(*) FROM vms", [], |r| r.get(0)))
            .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_firecracker_that_cannot_boot_fails_with_its_own_reason_and_leaves_nothing() {
    let rec = Arc::new(RecordingPriv::new());
    let mut f = fx(rec.clone());
    f.d.vmms.backend = None; // the VM's choice decides
    f.d.vmms.jailed = Some(false);
    let pid = stand_in();
    rec.answer(m::LAUNCH_FIRECRACKER, Ok(json!({ "pid": pid })));
    // Once launched: a Firecracker API (the double) whose host has no tap,
    // and a console log with its last words.
    let (rt, state, r2) = (
        f.d.paths.runtime_dir.clone(),
        f.d.paths.state_dir.clone(),
        rec.clone(),
    );
    tokio::spawn(async move {
        let id = loop {
            if let Some(c) = r2
                .calls()
                .into_iter()
                .find(|c| c.0 == m::LAUNCH_FIRECRACKER)
            {
                break c.1["vm_id"].as_str().unwrap().to_string();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        std::fs::write(
            state.join("vms").join(&id).join("console.log"),
            "boot\nbgtest: cannot open the tap\n",
        )
        .unwrap();
        let l = tokio::net::UnixListener::bind(rt.join("vms").join(&id).join("fc.sock")).unwrap();
        let cfg = banger_fc_double::DoubleConfig {
            instance_id: id,
            sys_root: "/nonexistent-sys".into(),
            guest_shutdown: None,
            ..Default::default()
        };
        let _ = banger_fc_double::serve(l, cfg, std::future::pending()).await;
    });
    let e = create(
        &f.d,
        &CreateReq {
            vmm: Some(banger_proto::api::VmmChoice::Firecracker),
            ..req("web", true)
        },
        &progress(),
    )
    .await
    .unwrap_err();
    // SAFETY: kill(2) on the stand-in this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let text = crate::render_chain(&e);
    assert!(text.contains("starting Firecracker for VM web"), "{text}");
    assert!(
        text.contains("its log ends: boot | bgtest: cannot open the tap"),
        "{text}"
    );
    assert!(
        text.contains("network interface"),
        "Firecracker's own refusal: {text}"
    );
    let n: i64 =
        f.d.store
            .read(|c| c.query_row("SELECT count(*) FROM vms", [], |r| r.get(0)))
            .unwrap();
    assert_eq!(n, 0, "the create undid itself");
    assert_eq!(std::fs::read_dir(f.d.paths.vms_dir()).unwrap().count(), 0);
}
