//! The Debian image's boot trim, for real: two VMs from the built image,
//! one as built (trimmed) and one with the trim taken out of its disk
//! (every mask and drop-in removed with `debugfs`), booted one after the
//! other under QEMU/TCG. Prints `systemd-analyze` and `blame` of both;
//! asserts the masked units are inactive and masked in the trimmed guest
//! and running in the untrimmed one, that sshd, journald, the network and
//! the serial getty run with nothing failed, hostname, machine-id and DNS
//! are the daemon's, and both stop gracefully on Ctrl+Alt+Del.

use super::custom::{self, Customisation};
use super::guest_fixture::{build_debian, gate, owner_key, pinned_ssh, tail, Writable};
use super::tests::{add_vm, fixture, identity};
use super::*;
use crate::images::debian::trim_entries;
use crate::images::kernel::tests::host_tsc_khz;
use crate::vmm::qemu::QemuVm;
use crate::vmm::Stopped;
use banger_core::machine::{Backend, GuestNet, MachineSpec, QemuIo};
use banger_sys::netns::NamedNetns;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Run in each guest once its boot is over: the figures, then one answer
/// per line for the assertions.
const REPORT: &str = "systemctl is-system-running --wait; systemd-analyze; \
    systemd-analyze blame --no-pager; systemd-analyze critical-chain --no-pager ssh.service";
/// Kept: must run in both guests.
const KEPT: &[&str] = &[
    "ssh.service",
    "systemd-journald.service",
    "networking.service",
    "serial-getty@ttyS0.service",
];
/// Trimmed: active in an untrimmed guest, masked in the trimmed one.
const TRIMMED: &[&str] = &[
    "systemd-udevd.service",
    "systemd-logind.service",
    "getty@tty1.service",
    "apt-daily.timer",
    "fstrim.timer",
];

/// What one boot showed.
struct Booted {
    to_ssh: Duration,
    report: String,
    /// `is-active` of KEPT then TRIMMED, then `is-enabled` of TRIMMED.
    states: Vec<String>,
    /// hostname, machine-id, the resolver's first nameserver line.
    identity: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
async fn boot(
    ns: &NamedNetns,
    dir: &Path,
    image: &crate::images::catalog::Stored,
    disk: &Path,
    vm: &str,
    tap: &str,
    ip: Ipv4Addr,
    key: &Path,
    known_hosts: &Path,
) -> Booted {
    let console = dir.join(format!("{vm}-console.log"));
    let qmp = dir.join(format!("{vm}-qmp.sock"));
    let spec = MachineSpec {
        vcpus: 1,
        memory_mib: 384,
        kernel: image.kernel(),
        initrd: image.initrd(),
        rootfs: disk.to_path_buf(),
        net: Some(GuestNet {
            tap: tap.into(),
            mac: banger_core::net::mac_for(vm),
            ip,
            subnet: "172.30.0.0/24".parse().unwrap(),
        }),
        tsc_khz: host_tsc_khz(),
    };
    let io = QemuIo {
        serial_log: Some(console.clone()),
        qmp_socket: Some(qmp.clone()),
    };
    let wrapper: Vec<String> = ["ip", "netns", "exec", ns.name()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let in_ns: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut vmm = QemuVm::spawn(
        Path::new("/usr/bin/qemu-system-x86_64"),
        &wrapper,
        &spec,
        Backend::QemuTcg,
        &io,
    )
    .unwrap();
    crate::vmm::qemu::resume(&qmp, Duration::from_secs(10))
        .await
        .unwrap();
    let t = Instant::now();
    loop {
        if let Some(st) = vmm.try_exited().unwrap() {
            panic!("{vm}: QEMU exited ({st}) before SSH:\n{}", tail(&console));
        }
        if pinned_ssh(&in_ns, key, known_hosts, ip, "true")
            .status
            .success()
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "{vm}: no SSH after {:?}\n{}",
            t.elapsed(),
            tail(&console)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let to_ssh = t.elapsed();
    let out = pinned_ssh(&in_ns, key, known_hosts, ip, REPORT);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let units: Vec<&str> = KEPT.iter().chain(TRIMMED).copied().collect();
    let query = format!(
        "systemctl is-active {0}; systemctl is-enabled {1}; \
         hostname; cat /etc/machine-id; grep -m1 ^nameserver /etc/resolv.conf",
        units.join(" "),
        TRIMMED.join(" ")
    );
    let out = pinned_ssh(&in_ns, key, known_hosts, ip, &query);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let n = units.len() + TRIMMED.len();
    assert_eq!(lines.len(), n + 3, "{vm}: {lines:?}");
    // Stopped the way the daemon stops it: Ctrl+Alt+Del, systemd reboots.
    let how = vmm.stop(Duration::from_secs(120)).await.unwrap();
    assert_eq!(how, Stopped::Graceful, "{vm}:\n{}", tail(&console));
    Booted {
        to_ssh,
        report,
        states: lines[..n].to_vec(),
        identity: lines[n..].to_vec(),
    }
}

/// Take the trim out of an image file: `rm` of every path it wrote.
fn untrim(disk: &Path) {
    let cmds: String = trim_entries()
        .iter()
        .map(|(p, _)| format!("rm /{p}\n"))
        .collect();
    let f = disk.with_extension("untrim.cmds");
    std::fs::write(&f, cmds).unwrap();
    let out = Command::new("debugfs")
        .args(["-w", "-f"])
        .arg(&f)
        .arg(disk)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Every rm found its file: debugfs reports misses on stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("not found"), "{err}");
}

#[tokio::test]
async fn trimmed_debian_boots_with_less_and_keeps_what_a_vm_needs() {
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
    build_debian(&d.store, &state);
    let image = crate::images::catalog::find(&d.store, "deb")
        .unwrap()
        .unwrap();
    let key = owner_key(&d.cfg.owner_home);
    let ns = NamedNetns::add(&format!("bgtest-{}-trim", banger_testkit::unique_suffix())).unwrap();
    for args in [
        &["link", "add", "br0", "type", "bridge"][..],
        &["addr", "add", "172.30.0.1/24", "dev", "br0"],
        &["link", "set", "br0", "up"],
        &["tuntap", "add", "dev", "tap0", "mode", "tap"],
        &["link", "set", "tap0", "master", "br0", "up"],
        &["tuntap", "add", "dev", "tap1", "mode", "tap"],
        &["link", "set", "tap1", "master", "br0", "up"],
    ] {
        ns.ip(args).unwrap();
    }

    let mut runs = Vec::new();
    for (vm, ip, tap, trimmed) in [
        ("trimmed", "172.30.0.2", "tap0", true),
        ("untrimmed", "172.30.0.3", "tap1", false),
    ] {
        add_vm(&d, vm, "created");
        let disk = create_with(&d, vm, &image, Driver::Copy).unwrap();
        let c = Customisation {
            identity: identity(vm, ip),
            ssh_public_key: None,
            file_sync: vec![],
        };
        custom::customise(&d, vm, &c).unwrap();
        if !trimmed {
            untrim(&disk.device);
        }
        let b = boot(
            &ns,
            tmp.path(),
            &image,
            &disk.device,
            vm,
            tap,
            ip.parse().unwrap(),
            &key,
            &d.paths.known_hosts(),
        )
        .await;
        println!(
            "=== {vm}: QEMU resumed -> pinned SSH in {:?}\n{}",
            b.to_ssh, b.report
        );
        // The daemon's identity, in both.
        assert_eq!(b.identity[0], vm);
        assert!(
            b.identity[1].len() == 32 && b.identity[1].bytes().all(|c| c.is_ascii_hexdigit()),
            "{:?}",
            b.identity
        );
        assert_eq!(b.identity[2], "nameserver 172.30.0.1");
        // Booted all the way, nothing failed.
        assert_eq!(
            b.report.lines().next(),
            Some("running"),
            "{vm}: {}",
            b.report
        );
        runs.push((vm, trimmed, b));
        destroy(&d, vm).unwrap();
    }

    for (vm, trimmed, b) in &runs {
        let (active, enabled) = b.states.split_at(KEPT.len() + TRIMMED.len());
        let (kept, cut) = active.split_at(KEPT.len());
        for (u, s) in KEPT.iter().zip(kept) {
            assert_eq!(s, "active", "{vm}: {u}");
        }
        for ((u, s), e) in TRIMMED.iter().zip(cut).zip(enabled) {
            if *trimmed {
                assert_eq!(s, "inactive", "{vm}: {u}");
                assert_eq!(e, "masked", "{vm}: {u}");
            } else {
                assert_eq!(s, "active", "{vm}: {u}");
                assert_ne!(e, "masked", "{vm}: {u}");
            }
        }
    }
    let startup = |b: &Booted| {
        b.report
            .lines()
            .find(|l| l.starts_with("Startup finished"))
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "trimmed:   to SSH {:?}; {}\nuntrimmed: to SSH {:?}; {}",
        runs[0].2.to_ssh,
        startup(&runs[0].2),
        runs[1].2.to_ssh,
        startup(&runs[1].2)
    );
    drop(ns);
}
