//! The image real users start from, for real: `banger image build --debian`
//! (the daemon's build path, as root), a VM disk made and customised by the
//! daemon (hostname, static network, owner key, host key, machine-id), booted
//! under QEMU microvm with the argv the QEMU backend renders, on a tap in a
//! bridge inside a `bgtest-` network namespace; then `ssh` with banger's
//! pinned `known_hosts` and strict host-key checking; then a graceful stop
//! (Ctrl+Alt+Del: systemd reboots, QEMU exits).

use super::custom::{self, Customisation};
use super::guest_fixture::{build_debian, gate, owner_key, pinned_ssh, tail, Writable};
use super::tests::{add_vm, fixture, identity};
use super::*;
use crate::images::kernel::tests::host_tsc_khz;
use crate::vmm::qemu::QemuVm;
use crate::vmm::Stopped;
use banger_core::machine::{Backend, GuestNet, MachineSpec, QemuIo};
use banger_sys::netns::NamedNetns;
use std::sync::Arc;
use std::time::{Duration, Instant};

const VM: &str = "boot1";
const GUEST_IP: &str = "172.30.0.2";

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
    let _writable = Writable(tmp.path().to_path_buf());

    // The image, through the daemon's build path.
    let built = build_debian(&d.store, &state);
    let image = crate::images::catalog::find(&d.store, "deb")
        .unwrap()
        .unwrap();

    // The VM disk and its customisation, with a real owner key.
    let key = owner_key(&d.cfg.owner_home);
    add_vm(&d, VM, "created");
    let disk = create_with(&d, VM, &image, Driver::Copy).unwrap();
    let c = Customisation {
        identity: identity(VM, GUEST_IP),
        ssh_public_key: None,
        file_sync: vec![],
    };
    custom::customise(&d, VM, &c).unwrap();
    let known_hosts = d.paths.known_hosts();

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
    let in_ns: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let guest_ip: std::net::Ipv4Addr = GUEST_IP.parse().unwrap();
    let mut vmm = QemuVm::spawn(
        Path::new("/usr/bin/qemu-system-x86_64"),
        &wrapper,
        &spec,
        Backend::QemuTcg,
        &io,
    )
    .unwrap();
    // Started paused (-S), as the daemon does before placing it in its cgroup.
    crate::vmm::qemu::resume(&tmp.path().join("qmp.sock"), Duration::from_secs(10))
        .await
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
        let out = pinned_ssh(&in_ns, &key, &known_hosts, guest_ip, probe);
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
    let refused = pinned_ssh(&in_ns, &key, &empty, guest_ip, "true");
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
