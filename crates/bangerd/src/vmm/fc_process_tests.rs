//! Firecracker launched through the real helper code (`DirectOps`, as
//! root), with the fc-double binary installed as the Firecracker binary.

use super::*;
use crate::privops::{DirectOps, RecordingPriv};
use crate::vmm::plan::{firecracker_plan, FcFiles};
use banger_core::machine::MachineSpec;
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_proto::firecracker::InstanceState;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// The fc-double binary next to this test binary's `deps/` (built by
/// `cargo test --workspace`).
fn fc_double() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("fc-double");
    p.is_file().then_some(p)
}

struct Setup {
    tmp: tempfile::TempDir,
    ops: Arc<dyn PrivOps>,
    launch: FcLaunch,
    plan: BootPlan,
}

const OWNER: (u32, u32) = (4242, 4243);

fn setup(test: &str) -> Option<Setup> {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: {test} needs root (the helper launches Firecracker)");
        return None;
    }
    let Some(double) = fc_double() else {
        println!("skipped: {test}: no fc-double binary beside the tests (cargo test --workspace builds it)");
        return None;
    };
    let tmp = tempfile::Builder::new()
        .prefix("bgtest-fcvm-")
        .tempdir()
        .unwrap();
    let t = tmp.path();
    for d in ["run", "state/vms/fc1"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    // Installed the way a root-owned Firecracker is: root, 0755, named so.
    let bin = t.join("bgtest-firecracker");
    std::fs::copy(&double, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg =
        banger_proto::install::InstallConfig::for_owner(OWNER.0, OWNER.1, "/nonexistent".into());
    cfg.runtime_dir = t.join("run");
    cfg.state_dir = t.join("state");
    cfg.firecracker_bin = bin;
    let ops: Arc<dyn PrivOps> = Arc::new(DirectOps::new(Helper {
        cfg,
        host: Host::real(),
    }));
    let spec = MachineSpec {
        vcpus: 1,
        memory_mib: 128,
        kernel: t.join("vmlinux"),
        initrd: None,
        rootfs: t.join("state/vms/fc1/rootfs.ext4"),
        net: None,
        tsc_khz: None,
    };
    std::fs::write(&spec.kernel, b"\x7fELF").unwrap();
    std::fs::write(&spec.rootfs, vec![0u8; 4096]).unwrap();
    let plan = firecracker_plan(&spec, &FcFiles::default()).unwrap();
    let launch = FcLaunch {
        vm_id: "fc1".into(),
        api_socket: t.join("run/fc-fc1.sock"),
        log_file: t.join("state/vms/fc1/console.log"),
        jail: None,
    };
    Some(Setup {
        tmp,
        ops,
        launch,
        plan,
    })
}

#[tokio::test]
async fn root_launch_hands_the_socket_over_boots_and_stops_gracefully() {
    let Some(s) = setup("root_launch_hands_the_socket_over_boots_and_stops_gracefully") else {
        return;
    };
    let mut vm = FirecrackerVm::launch(s.ops.clone(), &s.launch, &s.plan, WaitPolicy::default())
        .await
        .unwrap();
    // The API socket was handed to the registered owner before first use.
    let md = std::fs::symlink_metadata(&s.launch.api_socket).unwrap();
    assert_eq!((md.uid(), md.gid()), OWNER);
    assert_eq!(md.mode() & 0o777, 0o600);
    let log = std::fs::metadata(&s.launch.log_file).unwrap();
    assert_eq!((log.uid(), log.mode() & 0o777), (OWNER.0, 0o600));
    let info = vm.client().describe_instance().await.unwrap();
    assert_eq!(info.state, InstanceState::Running);
    assert!(
        std::fs::read_to_string(format!("/proc/{}/cmdline", vm.pid()))
            .unwrap()
            .contains("bgtest-firecracker")
    );
    let how = vm.stop(Duration::from_secs(30)).await.unwrap();
    assert_eq!(how, Stopped::Graceful);
    assert!(!Path::new(&format!("/proc/{}", vm.pid())).exists());
    assert!(!s.launch.api_socket.exists(), "the VMM removed its socket");
    assert_eq!(
        vm.stop(Duration::from_secs(1)).await.unwrap(),
        Stopped::AlreadyExited
    );
    drop(s.tmp);
}

#[tokio::test]
async fn root_a_wedged_firecracker_is_killed_after_the_grace() {
    let Some(s) = setup("root_a_wedged_firecracker_is_killed_after_the_grace") else {
        return;
    };
    let mut vm = FirecrackerVm::launch(s.ops.clone(), &s.launch, &s.plan, WaitPolicy::default())
        .await
        .unwrap();
    // Frozen: its API answers nothing, so Ctrl+Alt+Del cannot work.
    s.ops
        .call_value(
            m::SIGNAL_PROCESS,
            serde_json::json!({"pid": vm.pid(), "signal": "SIGSTOP"}),
        )
        .unwrap();
    let t = std::time::Instant::now();
    let how = vm.stop(Duration::from_millis(500)).await.unwrap();
    assert_eq!(how, Stopped::Killed);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(!Path::new(&format!("/proc/{}", vm.pid())).exists());
}

#[tokio::test]
async fn a_refused_launch_cancels_the_hand_over_and_makes_no_other_call() {
    let rec = Arc::new(RecordingPriv::new());
    rec.answer(
        m::LAUNCH_FIRECRACKER,
        Err((
            -32602,
            "priv.launch_firecracker: executable must be owned by root".into(),
        )),
    );
    let tmp = tempfile::Builder::new()
        .prefix("bgtest-fcvm-")
        .tempdir()
        .unwrap();
    let launch = FcLaunch {
        vm_id: "fc1".into(),
        api_socket: tmp.path().join("fc.sock"),
        log_file: tmp.path().join("console.log"),
        jail: None,
    };
    let plan = quick_plan();
    let policy = WaitPolicy {
        deadline: Duration::from_secs(600),
        tick: Duration::from_millis(10),
    };
    let t = std::time::Instant::now();
    let err = FirecrackerVm::launch(rec.clone(), &launch, &plan, policy)
        .await
        .err()
        .unwrap();
    // A gate refusal (-32602) comes back as the helper's rule, named.
    assert!(
        matches!(&err, FcVmError::Refused(id, rule) if id == "fc1" && rule.contains("owned by root")),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with("the helper refused to launch Firecracker for VM fc1: priv.launch_firecracker: executable must be owned by root"));
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "the wait was cancelled"
    );
    let calls: Vec<String> = rec.calls().into_iter().map(|(m, _)| m).collect();
    assert_eq!(calls, [m::LAUNCH_FIRECRACKER]);
}

/// A launch whose "Firecracker" is `sh -c SCRIPT` (reaped as it exits), a
/// kill that kills it; every other call answers `{}`.
struct ShLaunch(&'static str);

impl PrivOps for ShLaunch {
    fn kind(&self) -> &'static str {
        "sh"
    }

    fn call_value(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, PrivError> {
        if method == m::KILL_PROCESS {
            let pid = params["pid"].as_i64().and_then(|p| i32::try_from(p).ok());
            if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::Kill);
            }
        }
        if method != m::LAUNCH_FIRECRACKER {
            return Ok(serde_json::json!({}));
        }
        let mut child = std::process::Command::new("sh")
            .args(["-c", self.0])
            .spawn()
            .map_err(PrivError::Io)?;
        let pid = child.id();
        std::thread::spawn(move || child.wait());
        Ok(serde_json::json!({ "pid": pid }))
    }
}

fn quick_plan() -> BootPlan {
    firecracker_plan(
        &MachineSpec {
            vcpus: 1,
            memory_mib: 128,
            kernel: "/k".into(),
            initrd: None,
            rootfs: "/r".into(),
            net: None,
            tsc_khz: None,
        },
        &FcFiles::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firecracker_that_exits_before_its_socket_fails_the_launch_at_once() {
    let tmp = tempfile::Builder::new()
        .prefix("bgtest-fcvm-")
        .tempdir()
        .unwrap();
    let launch = FcLaunch {
        vm_id: "fc1".into(),
        api_socket: tmp.path().join("fc.sock"),
        log_file: tmp.path().join("console.log"),
        jail: None,
    };
    // A deadline no test waits out: the exit, not the deadline, ends it.
    let policy = WaitPolicy {
        deadline: Duration::from_secs(600),
        tick: Duration::from_secs(300),
    };
    let t = std::time::Instant::now();
    let err = FirecrackerVm::launch(Arc::new(ShLaunch("exit 3")), &launch, &quick_plan(), policy)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, FcVmError::Exited(id, pid) if id == "fc1" && *pid > 0),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("exited before its VM was configured and started"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firecracker_whose_api_never_answers_fails_at_the_deadline() {
    let tmp = tempfile::Builder::new()
        .prefix("bgtest-fcvm-")
        .tempdir()
        .unwrap();
    let launch = FcLaunch {
        vm_id: "fc1".into(),
        api_socket: tmp.path().join("fc.sock"),
        log_file: tmp.path().join("console.log"),
        jail: None,
    };
    let policy = WaitPolicy {
        deadline: Duration::from_millis(200),
        tick: Duration::from_millis(10),
    };
    // Alive, but no socket ever appears; killed when the launch gives up.
    let err = FirecrackerVm::launch(
        Arc::new(ShLaunch("exec sleep 60")),
        &launch,
        &quick_plan(),
        policy,
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(
            &err,
            FcVmError::SocketAccess(SocketAccessError::DeadlineExceeded { .. })
        ),
        "{err:?}"
    );
}
