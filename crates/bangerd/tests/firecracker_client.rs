//! The daemon's Firecracker client against the fc-double: boot sequence,
//! refusals, and waiting for the API socket.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_fc_double::{serve, DoubleConfig, Outcome, Recorder};
use banger_proto::firecracker::{
    BootSource, Drive, InstanceState, LogLevel, Logger, MachineConfiguration, NetworkInterface,
    Vsock,
};
use bangerd::vmm::firecracker::{
    wait_for_api, BootPlan, CallError, FirecrackerClient, FirecrackerError,
};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;

const TAP: &str = "fctrtap0";

/// A double on `<dir>/bgtest-fc.sock` with a fixture sysfs holding [`TAP`].
struct Double {
    dir: TempDir,
    sock: PathBuf,
    recorder: Recorder,
    stop: Option<oneshot::Sender<()>>,
}

impl Double {
    fn sys(dir: &Path) -> PathBuf {
        let sys = dir.join("sys");
        std::fs::create_dir_all(sys.join("class/net").join(TAP)).unwrap();
        sys
    }

    fn start() -> Double {
        let dir = tempfile::Builder::new()
            .prefix("bgtest-fcc-")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("bgtest-fc.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let recorder = Recorder::default();
        let cfg = DoubleConfig {
            sys_root: Self::sys(dir.path()),
            recorder: recorder.clone(),
            guest_shutdown: None,
            ..DoubleConfig::default()
        };
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, cfg, async move {
            let _ = rx.await;
        }));
        Double {
            dir,
            sock,
            recorder,
            stop: Some(tx),
        }
    }

    fn file(&self, name: &str, len: usize) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, vec![0u8; len]).unwrap();
        p.to_str().unwrap().to_string()
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn plan(d: &Double) -> BootPlan {
    BootPlan {
        logger: Some(Logger {
            log_path: Some(d.file("bgtest-fc.log", 0)),
            level: Some(LogLevel::Info),
            ..Logger::default()
        }),
        machine: MachineConfiguration {
            vcpu_count: 2,
            mem_size_mib: 512,
            smt: None,
            cpu_template: None,
            track_dirty_pages: None,
            huge_pages: None,
        },
        boot_source: BootSource {
            kernel_image_path: d.file("bgtest-vmlinux", 16),
            boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
            initrd_path: None,
        },
        drives: vec![Drive {
            drive_id: "rootfs".into(),
            partuuid: None,
            is_root_device: true,
            cache_type: None,
            is_read_only: Some(false),
            path_on_host: Some(d.file("bgtest-rootfs.ext4", 4096)),
            rate_limiter: None,
            io_engine: None,
            socket: None,
        }],
        network_interfaces: vec![NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: TAP.into(),
            guest_mac: Some("06:00:ac:10:00:02".into()),
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }],
        vsock: Some(Vsock {
            guest_cid: 3,
            uds_path: d.dir.path().join("bgtest-v.sock").to_str().unwrap().into(),
            vsock_id: None,
        }),
    }
}

#[tokio::test]
async fn boot_sequence_sends_exactly_these_requests() {
    let d = Double::start();
    let p = plan(&d);
    let c = FirecrackerClient::new(&d.sock);
    c.configure_and_start(&p).await.unwrap();
    let got: Vec<(String, String, Value)> = d
        .recorder
        .requests()
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.path.clone(),
                r.json().unwrap_or(Value::Null),
            )
        })
        .collect();
    let put = |path: &str, body: Value| ("PUT".to_string(), path.to_string(), body);
    let want = vec![
        put(
            "/logger",
            json!({"log_path": p.logger.as_ref().unwrap().log_path, "level": "Info"}),
        ),
        put(
            "/machine-config",
            json!({"vcpu_count": 2, "mem_size_mib": 512}),
        ),
        put(
            "/boot-source",
            json!({"kernel_image_path": p.boot_source.kernel_image_path,
                   "boot_args": "console=ttyS0 reboot=k panic=1"}),
        ),
        put(
            "/drives/rootfs",
            json!({"drive_id": "rootfs", "is_root_device": true, "is_read_only": false,
                   "path_on_host": p.drives[0].path_on_host}),
        ),
        put(
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "host_dev_name": TAP, "guest_mac": "06:00:ac:10:00:02"}),
        ),
        put(
            "/vsock",
            json!({"guest_cid": 3, "uds_path": p.vsock.as_ref().unwrap().uds_path}),
        ),
        put("/actions", json!({"action_type": "InstanceStart"})),
    ];
    assert_eq!(got, want);

    let info = c.describe_instance().await.unwrap();
    assert_eq!(
        (info.id.as_str(), info.state),
        ("anonymous-instance", InstanceState::Running)
    );
    c.pause().await.unwrap();
    assert_eq!(
        c.describe_instance().await.unwrap().state,
        InstanceState::Paused
    );
    c.resume().await.unwrap();
    assert_eq!(
        c.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    assert_eq!(c.version().await.unwrap().firecracker_version, "1.16.1");
    c.send_ctrl_alt_del().await.unwrap();
    let tail: Vec<(String, String)> = d.recorder.requests()[7..]
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    let s = |m: &str, p: &str| (m.to_string(), p.to_string());
    assert_eq!(
        tail,
        [
            s("GET", "/"),
            s("PATCH", "/vm"),
            s("GET", "/"),
            s("PATCH", "/vm"),
            s("GET", "/"),
            s("GET", "/version"),
            s("PUT", "/actions")
        ]
    );
}

#[tokio::test]
async fn fault_message_surfaces_in_the_error() {
    let d = Double::start();
    let c = FirecrackerClient::new(&d.sock);
    let mut p = plan(&d);
    p.drives[0].path_on_host = Some("/nonexistent-bgtest.ext4".into());
    let err = c.configure_and_start(&p).await.unwrap_err();
    let want =
        "Drive config error: Unable to create the virtio block device: Virtio backend error: \
                Error manipulating the backing file: No such file or directory (os error 2) \
                /nonexistent-bgtest.ext4";
    assert_eq!(err.fault_message(), Some(want));
    match &err {
        FirecrackerError::PutDrive {
            socket,
            endpoint,
            source: CallError::Fault { status, .. },
        } => {
            assert_eq!(
                (socket, endpoint.as_str(), *status),
                (&d.sock, "/drives/rootfs", 400)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // The operation names itself; the cause carries Firecracker's text.
    assert!(
        err.to_string()
            .starts_with("attaching a drive (PUT /drives/rootfs on "),
        "{err}"
    );
    assert!(!err.to_string().contains("os error"), "{err}");
    assert!(err.source().unwrap().to_string().ends_with(want));
    // The sequence stopped at the refusal: no InstanceStart was sent.
    assert!(d.recorder.requests().iter().all(|r| r.path != "/actions"));

    let err = c.send_ctrl_alt_del().await.unwrap_err();
    assert!(matches!(err, FirecrackerError::SendCtrlAltDel { .. }));
    assert_eq!(
        err.fault_message(),
        Some("The requested operation is not supported before starting the microVM.")
    );
}

#[tokio::test]
async fn transport_errors_keep_their_cause() {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-fcc-")
        .tempdir()
        .unwrap();
    let sock = dir.path().join("bgtest-absent.sock");
    let err = FirecrackerClient::new(&sock).version().await.unwrap_err();
    assert!(matches!(
        &err,
        FirecrackerError::Version { source: CallError::Connect(e), .. }
            if e.kind() == std::io::ErrorKind::NotFound
    ));
    assert_eq!(err.fault_message(), None);
    assert!(err.to_string().contains(sock.to_str().unwrap()));
}

#[tokio::test]
async fn wait_for_api_returns_once_a_late_socket_answers() {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-fcc-")
        .tempdir()
        .unwrap();
    let sock = dir.path().join("bgtest-late.sock");
    let sys = Double::sys(dir.path());
    let late = sock.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let listener = tokio::net::UnixListener::bind(&late).unwrap();
        let cfg = DoubleConfig {
            sys_root: sys,
            ..DoubleConfig::default()
        };
        serve(listener, cfg, async move {
            let _ = rx.await;
        })
        .await
    });
    let t0 = Instant::now();
    let info = wait_for_api(&sock, Duration::from_secs(20)).await.unwrap();
    let waited = t0.elapsed();
    assert_eq!(info.state, InstanceState::NotStarted);
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "returned late: {waited:?}");
    tx.send(()).unwrap();
    assert_eq!(server.await.unwrap().unwrap(), Outcome::Shutdown);
}

#[tokio::test]
async fn wait_for_api_times_out_with_a_labelled_error() {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-fcc-")
        .tempdir()
        .unwrap();
    let sock = dir.path().join("bgtest-never.sock");
    let t0 = Instant::now();
    let err = wait_for_api(&sock, Duration::from_millis(150))
        .await
        .unwrap_err();
    let waited = t0.elapsed();
    match &err {
        FirecrackerError::ApiDeadlineExceeded { socket, polls, .. } => {
            assert_eq!(socket, &sock);
            assert!(*polls >= 2, "polled {polls} times");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("deadline of 150ms exceeded"),
        "{err}"
    );
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // A zero deadline still probes once.
    let err = wait_for_api(&sock, Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(err, FirecrackerError::ApiDeadlineExceeded { polls: 1, .. }),
        "{err:?}"
    );
}

/// The plan the daemon renders from a machine spec is one the double (held
/// to Firecracker's contract) accepts and boots.
#[tokio::test]
async fn a_plan_rendered_from_a_machine_spec_boots() {
    use banger_core::machine::{GuestNet, MachineSpec};
    use bangerd::vmm::plan::{firecracker_plan, FcFiles};
    let d = Double::start();
    let spec = MachineSpec {
        vcpus: 1,
        memory_mib: 256,
        kernel: d.file("bgtest-vmlinux", 16).into(),
        initrd: Some(d.file("bgtest-initrd", 16).into()),
        rootfs: d.file("bgtest-disk.ext4", 4096).into(),
        net: Some(GuestNet {
            tap: TAP.into(),
            mac: "06:00:ac:1e:00:02".into(),
            ip: "172.30.0.2".parse().unwrap(),
            subnet: "172.30.0.0/24".parse().unwrap(),
        }),
        tsc_khz: None,
    };
    let files = FcFiles {
        log: Some(d.file("bgtest-fc.log", 0).into()),
        vsock: Some((d.dir.path().join("bgtest-v.sock"), 3)),
    };
    let plan = firecracker_plan(&spec, &files).unwrap();
    let c = FirecrackerClient::new(&d.sock);
    c.configure_and_start(&plan).await.unwrap();
    assert_eq!(
        c.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    let paths: Vec<String> = d
        .recorder
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths[..7],
        [
            "PUT /logger",
            "PUT /machine-config",
            "PUT /boot-source",
            "PUT /drives/rootfs",
            "PUT /network-interfaces/eth0",
            "PUT /vsock",
            "PUT /actions",
        ]
    );
}
