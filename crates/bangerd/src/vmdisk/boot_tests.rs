//! The image real users start from, for real: `banger image build --debian`
//! (the daemon's build path, as root), a VM disk made and customised by the
//! daemon (hostname, static network, owner key, host key, machine-id), booted
//! under QEMU microvm with the argv the QEMU backend renders, on a tap in a
//! bridge inside a `bgtest-` network namespace; then `ssh` with banger's
//! pinned `known_hosts` and strict host-key checking; then a graceful stop
//! (Ctrl+Alt+Del: systemd reboots, QEMU exits).

use super::custom::{self, Customisation};
use super::tests::{add_vm, fixture, identity};
use super::*;
use crate::builds::{self, HostPaths};
use crate::images::kernel::tests::host_tsc_khz;
use crate::jobs::Progress;
use crate::vmm::qemu::QemuVm;
use crate::vmm::Stopped;
use banger_core::machine::{Backend, GuestNet, MachineSpec, QemuIo};
use banger_proto::api::ImageBuild;
use banger_sys::netns::NamedNetns;
use banger_sys::runner::{Cmd, HostRunner, Runner};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const VM: &str = "boot1";
const GUEST_IP: &str = "172.30.0.2";

fn gate() -> Result<(), &'static str> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (debootstrap, network namespaces, taps)");
    }
    if std::env::var_os("BANGER_SKIP_NETWORK_TESTS").is_some() {
        return Err("BANGER_SKIP_NETWORK_TESTS is set (downloads from the Debian mirror)");
    }
    if !Path::new("/usr/bin/qemu-system-x86_64").exists() {
        return Err("qemu-system-x86_64 not installed");
    }
    if crate::images::kernel::host_kernels(Path::new("/boot"), Path::new("/lib/modules")).is_empty()
    {
        return Err("no Debian kernel in /boot");
    }
    Ok(())
}

/// `ssh` from inside `ns` with banger's pinned known_hosts only.
fn ssh(ns: &NamedNetns, key: &Path, known_hosts: &Path, remote: &str) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "ssh", "-F", "/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(key)
        .arg(format!("root@{GUEST_IP}"))
        .arg(remote)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test]
async fn root_debian_vm_boots_with_its_customisation_and_answers_pinned_ssh() {
    if let Err(why) = gate() {
        println!("skipped: {why}");
        return;
    }
    let f0 = fixture(Arc::new(crate::privops::RecordingPriv::new()), None);
    let state = f0.state();
    let super::tests::Fixture { tmp, d, .. } = f0;
    let d = Daemon {
        privops: super::root_tests::direct(&state),
        ..d
    };
    // Stored images are read-only: let the temp dir go at the end.
    struct Writable(PathBuf);
    impl Drop for Writable {
        fn drop(&mut self) {
            let _ = Command::new("chmod")
                .arg("-R")
                .arg("u+w")
                .arg(&self.0)
                .status();
        }
    }
    let _writable = Writable(tmp.path().to_path_buf());

    // The image, through the daemon's build path.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let req = ImageBuild {
        name: "deb".into(),
        from_oci: None,
        debian: Some("bookworm".into()),
        kernel: None,
        headroom_mib: None,
        mirror: None,
    };
    let t = Instant::now();
    builds::build(
        &d.store,
        &state,
        &HostPaths::default(),
        &req,
        &Progress::new(tx),
    )
    .unwrap();
    let built = t.elapsed();
    let image = crate::catalog::find(&d.store, "deb").unwrap().unwrap();

    // The VM disk and its customisation, with a real owner key.
    let home = d.cfg.owner_home.clone();
    let key = home.join(".ssh/id_ed25519");
    HostRunner
        .run(
            &Cmd::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "bgtest-owner", "-f"])
                .arg(&key),
        )
        .unwrap();
    add_vm(&d, VM, "created");
    let disk = create_with(&d, VM, &image, Driver::Copy).unwrap();
    let c = Customisation {
        identity: identity(VM, GUEST_IP),
        ssh_public_key: None,
        file_sync: vec![],
    };
    custom::customise(&d, VM, &c, &HostRunner).unwrap();
    let known_hosts = custom::known_hosts_path(&d);

    // The guest's network: bridge + tap in a namespace of its own.
    let ns = NamedNetns::add(&format!("bgtest-{}-boot", banger_testkit::unique_suffix())).unwrap();
    for args in [
        &["link", "add", "br0", "type", "bridge"][..],
        &["addr", "add", "172.30.0.1/24", "dev", "br0"],
        &["link", "set", "br0", "up"],
        &["tuntap", "add", "dev", "tap0", "mode", "tap"],
        &["link", "set", "tap0", "master", "br0", "up"],
    ] {
        ns.ip(args).unwrap();
    }
    let console = tmp.path().join("console.log");
    let spec = MachineSpec {
        vcpus: 1,
        memory_mib: 384,
        kernel: image.kernel(),
        initrd: image.initrd(),
        rootfs: disk.device.clone(),
        net: Some(GuestNet {
            tap: "tap0".into(),
            mac: banger_core::net::mac_for(VM),
            ip: GUEST_IP.parse().unwrap(),
            subnet: "172.30.0.0/24".parse().unwrap(),
        }),
        tsc_khz: host_tsc_khz(),
    };
    let io = QemuIo {
        serial_log: Some(console.clone()),
        qmp_socket: Some(tmp.path().join("qmp.sock")),
    };
    let wrapper: Vec<String> = ["ip", "netns", "exec", ns.name()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut vmm = QemuVm::spawn(
        Path::new("/usr/bin/qemu-system-x86_64"),
        &wrapper,
        &spec,
        Backend::QemuTcg,
        &io,
    )
    .unwrap();

    // Ready when ssh with the pinned key gets in.
    let t = Instant::now();
    let probe = "cat /etc/hostname; ip -4 -o addr show eth0; cat /etc/machine-id";
    let out = loop {
        if let Some(st) = vmm.try_exited().unwrap() {
            panic!(
                "QEMU exited ({st}) before SSH was ready:\n{}",
                tail(&console)
            );
        }
        let out = ssh(&ns, &key, &known_hosts, probe);
        if out.status.success() {
            break out;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "no SSH after {:?}: {}\n--- console ---\n{}",
            t.elapsed(),
            String::from_utf8_lossy(&out.stderr),
            tail(&console)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    println!(
        "debian bookworm: image built in {built:?}; boot to pinned SSH under TCG in {:?}",
        t.elapsed()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(VM), "{text}");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.contains(&format!("inet {GUEST_IP}/24"))),
        "{text}"
    );
    let mid = lines.next().unwrap_or_default();
    assert!(
        mid.len() == 32 && mid.bytes().all(|b| b.is_ascii_hexdigit()),
        "{text}"
    );

    // The pin is what lets ssh in: without it, strict checking refuses.
    let empty = tmp.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let refused = ssh(&ns, &key, &empty, "true");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Stopped the way the daemon stops it: systemd takes Ctrl+Alt+Del.
    let t = Instant::now();
    let how = vmm.stop(Duration::from_secs(120)).await.unwrap();
    assert_eq!(how, Stopped::Graceful, "{}", tail(&console));
    println!("graceful stop in {:?}", t.elapsed());
    drop(ns);
    destroy(&d, VM).unwrap();
}
