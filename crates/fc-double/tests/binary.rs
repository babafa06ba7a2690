//! The `fc-double` binary, exec'd with Firecracker's argv as the daemon would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use banger_proto::firecracker::{
    BootSource, Drive, InstanceState, MachineConfiguration, NetworkInterface,
};
use bangerd::vmm::firecracker::{wait_for_api, BootPlan, FirecrackerClient};

const BIN: &str = env!("CARGO_BIN_EXE_fc-double");

/// The child, killed by pid if a test fails before it exits.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Proc {
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                t0.elapsed() < limit,
                "fc-double still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn spawn(dir: &Path, sock: &Path) -> Proc {
    let sys = dir.join("sys");
    std::fs::create_dir_all(sys.join("class/net/fctrtap0")).unwrap();
    let child = Command::new(BIN)
        .args(["--api-sock", sock.to_str().unwrap(), "--id", "bgtest-vm"])
        .args(["--level", "Debug", "--no-seccomp", "--boot-timer"])
        .env("FC_DOUBLE_SYS_ROOT", &sys)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

fn plan(dir: &Path) -> BootPlan {
    let file = |name: &str| -> String {
        let p: PathBuf = dir.join(name);
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        p.to_str().unwrap().to_string()
    };
    BootPlan {
        logger: None,
        machine: MachineConfiguration {
            vcpu_count: 1,
            mem_size_mib: 256,
            smt: None,
            cpu_template: None,
            track_dirty_pages: None,
            huge_pages: None,
        },
        boot_source: BootSource {
            kernel_image_path: file("bgtest-vmlinux"),
            boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
            initrd_path: None,
        },
        drives: vec![Drive {
            drive_id: "rootfs".into(),
            partuuid: None,
            is_root_device: true,
            cache_type: None,
            is_read_only: Some(false),
            path_on_host: Some(file("bgtest-rootfs.ext4")),
            rate_limiter: None,
            io_engine: None,
            socket: None,
        }],
        network_interfaces: vec![NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "fctrtap0".into(),
            guest_mac: Some("06:00:ac:10:00:02".into()),
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }],
        vsock: None,
    }
}

#[tokio::test]
async fn guest_poweroff_after_ctrl_alt_del_exits_zero_and_removes_the_socket() {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-fcbin-")
        .tempdir()
        .unwrap();
    let sock = dir.path().join("bgtest-fc.sock");
    let mut proc = spawn(dir.path(), &sock);
    let info = wait_for_api(&sock, Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        (info.id.as_str(), info.state),
        ("bgtest-vm", InstanceState::NotStarted)
    );
    let c = FirecrackerClient::new(&sock);
    c.configure_and_start(&plan(dir.path())).await.unwrap();
    assert_eq!(
        c.describe_instance().await.unwrap().state,
        InstanceState::Running
    );
    c.send_ctrl_alt_del().await.unwrap();
    let status = proc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the API socket is left behind");
}

#[tokio::test]
async fn sigterm_and_sigint_exit_zero_and_remove_the_socket() {
    use rustix::process::Signal;
    for sig in [Signal::Term, Signal::Int] {
        let dir = tempfile::Builder::new()
            .prefix("bgtest-fcbin-")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("bgtest-fc.sock");
        let mut proc = spawn(dir.path(), &sock);
        wait_for_api(&sock, Duration::from_secs(20)).await.unwrap();
        let pid = rustix::process::Pid::from_raw(proc.0.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
        let status = proc.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{sig:?}: {status:?}");
        assert!(!sock.exists(), "{sig:?}: the API socket is left behind");
    }
}

#[test]
fn config_file_is_refused_with_a_clear_error() {
    let out = Command::new(BIN)
        .args([
            "--api-sock",
            "/nonexistent/bgtest.sock",
            "--config-file",
            "vm.json",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--config-file is not supported by fc-double"),
        "{err}"
    );
}
