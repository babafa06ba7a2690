//! The whole lifecycle for real, as root: a Debian image built with the
//! daemon's build path, then — inside a `bgtest-` network namespace whose
//! bridge the daemon's network start-up makes — `create` (started under
//! QEMU microvm), SSH with the pinned known_hosts, a graceful `stop`,
//! a new daemon on the same state after the first one died abruptly and
//! then gracefully (the VM re-adopted, still running, SSH working), a
//! graceful `stop` by the new daemon, `start` again, SSH again, `rm`; and
//! nothing of the VM is left.

use super::tests::{fx, progress};
use super::*;
use crate::daemon::Daemon;
use crate::network::{self, NetPlan};
use crate::privops::DirectOps;
use crate::vmdisk::guest_fixture::{build_debian, gate, owner_key, pinned_ssh, tail, Writable};
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_sys::net::RealNet;
use banger_sys::netns::NamedNetns;
use banger_sys::runner::{Cmd, Runner};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn console_tail(d: &Daemon, id: &str) -> String {
    tail(&d.paths.console_log(id))
}

/// `ssh` as the CLI runs it, from the calling thread's namespace.
fn ssh(key: &Path, known_hosts: &Path, ip: Ipv4Addr, remote: &str) -> std::process::Output {
    pinned_ssh(&[], key, known_hosts, ip, remote)
}

#[test]
fn root_vm_lifecycle_create_ssh_stop_start_ssh_rm_leaves_nothing() {
    if let Err(why) = gate() {
        println!("skipped: {why}");
        return;
    }
    let s = banger_testkit::unique_suffix();
    let bridge = format!("bgtest-br{s}");
    let f = fx(Arc::new(crate::privops::RecordingPriv::new()));
    let super::tests::Fx { tmp, mut d } = f;
    let _writable = Writable(tmp.path().to_path_buf());
    d.cfg.bridge = bridge.clone();
    let mut hcfg = banger_proto::install::InstallConfig::for_owner(0, 0, "/root".into());
    hcfg.state_dir = d.paths.state_dir.clone();
    hcfg.bridge = bridge.clone();
    d.privops = Arc::new(DirectOps::new(Helper {
        cfg: hcfg,
        host: Host::real(),
    }));
    d.vmms.backend = None; // as the host says (QEMU here: no Firecracker)
    d.vmms.grace = Duration::from_secs(120);

    // The owner's key (replacing the fixture's placeholder).
    let key = owner_key(&d.cfg.owner_home);

    // The image, through the daemon's build path, in the host namespace.
    println!(
        "image built in {:?}",
        build_debian(&d.store, &d.paths.state_dir)
    );

    let ns = NamedNetns::add(&format!("bgtest-{s}-vm")).unwrap();
    let ns_name = ns.name().to_string();
    let run_root = tmp.path().join("netrun");
    std::fs::create_dir_all(&run_root).unwrap();
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let plan = NetPlan::from_config(&d.cfg).unwrap();
            let routes = network::host_routes(&RealNet::default()).unwrap();
            let up = network::set_up(&plan, d.privops.as_ref(), &routes, &run_root).unwrap();
            assert!(up.status.problems.is_empty(), "{:?}", up.status.problems);
            let known_hosts = d.paths.known_hosts();
            let req = CreateReq {
                name: "bgtest-life".into(),
                image: "deb".into(),
                vcpus: 1,
                memory_mib: 384,
                start: true,
                vmm: None,
                disk_size: None,
            };
            let t = Instant::now();
            let row = create(&d, &req, &progress()).await.unwrap();
            println!("create to running in {:?}", t.elapsed());
            assert_eq!(row.state, VmState::Running);
            println!("backend: {:?}", row.backend);
            assert!(row.backend.is_some());
            let pid = row.pid.expect("a running VM has a pid");
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
            let cmdline = String::from_utf8_lossy(&cmdline);
            assert!(
                cmdline.contains("qemu-system-x86_64") || cmdline.contains("firecracker"),
                "pid {pid} is not a VMM: {cmdline}"
            );
            let ip = row.ip.unwrap();
            let tap = banger_core::net::tap_for(&row.id);
            // Netlink, not /sys: sysfs shows the namespace it was mounted in.
            let has_tap = || {
                Command::new("ip")
                    .args(["link", "show", "dev", &tap])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap()
                    .success()
            };
            assert!(has_tap());

            let out = ssh(&key, &known_hosts, ip, "cat /etc/hostname");
            assert!(
                out.status.success(),
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                console_tail(&d, &row.id)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "bgtest-life");

            // The VMM is not the daemon's to take down: its own process group.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let pgrp: i64 = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .nth(2)
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(pgrp, pid, "QEMU leads its own process group");
            // The daemon dies twice — abruptly (nothing of it runs again:
            // its state leaked, as after `kill -9`) and gracefully (dropped,
            // as after SIGTERM) — and a new daemon on the same state
            // re-adopts the VM: still running, SSH works, stop works after.
            let mut d = d;
            for abrupt in [true, false] {
                let next = Daemon {
                    cfg: d.cfg.clone(),
                    paths: d.paths.clone(),
                    mode: d.mode,
                    store: crate::store::Store::open(&d.paths.database()).unwrap(),
                    privops: d.privops.clone(),
                    host_paths: Default::default(),
                    vmms: Default::default(),
                };
                let mut next = next;
                next.vmms.grace = d.vmms.grace;
                if abrupt {
                    std::mem::forget(d);
                } else {
                    drop(d);
                }
                d = next;
                assert!(
                    Path::new(&format!("/proc/{pid}")).exists(),
                    "the VMM outlived the daemon"
                );
                let fixed = super::reconcile::run(&d, Path::new("/proc")).await;
                assert!(fixed.is_empty(), "abrupt={abrupt}: {fixed:?}");
                let row = find(&d, "bgtest-life").unwrap();
                assert_eq!(
                    (row.state, row.pid),
                    (VmState::Running, Some(pid)),
                    "abrupt={abrupt}"
                );
                assert!(d.vmms.holds(&row.id), "abrupt={abrupt}: re-adopted");
                assert!(has_tap());
                let out = ssh(&key, &known_hosts, ip, "cat /etc/hostname");
                assert!(
                    out.status.success(),
                    "abrupt={abrupt}: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    console_tail(&d, &row.id)
                );
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "bgtest-life");
            }

            let t = Instant::now();
            let row = stop(&d, "bgtest-life", false, &progress()).await.unwrap();
            println!("graceful stop in {:?}", t.elapsed());
            assert_eq!(row.state, VmState::Stopped);
            assert_eq!(row.pid, None);
            assert!(!has_tap());
            // Exited: the re-adopting daemon is not its parent, and this
            // test process (the first daemon, its handle leaked) is: a
            // zombie until reaped here, as init reaps it on a real host.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
            // SAFETY: waitpid(2) on this test process's own child.
            unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
            assert!(!Path::new(&format!("/proc/{pid}")).exists());

            let t = Instant::now();
            let row = start(&d, "bgtest-life", &progress()).await.unwrap();
            println!("start to running in {:?}", t.elapsed());
            assert_eq!(row.state, VmState::Running);
            let out = ssh(&key, &known_hosts, ip, "cat /etc/hostname");
            assert!(
                out.status.success(),
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                console_tail(&d, &row.id)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "bgtest-life");
            let pid = row.pid.unwrap();

            // rm of a running VM needs --force.
            assert!(matches!(
                remove(&d, "bgtest-life", false, &progress()).await,
                Err(VmError::IsRunning(..))
            ));
            remove(&d, "bgtest-life", true, &progress()).await.unwrap();
            assert!(!has_tap());
            assert!(!Path::new(&format!("/proc/{pid}")).exists());
            let rules = banger_sys::runner::HostRunner
                .run(&Cmd::new("nft").args(["list", "ruleset"]))
                .unwrap();
            let rules = String::from_utf8_lossy(&rules.stdout);
            assert!(
                !rules.contains(&tap) && !rules.contains(&ip.to_string()),
                "{rules}"
            );
            assert!(!d.paths.vm_dir(&row.id).exists());
            assert!(matches!(find(&d, "bgtest-life"), Err(VmError::NotFound(_))));
            let n: i64 = d
                .store
                .read(|c| c.query_row("SELECT count(*) FROM ip_allocations", [], |r| r.get(0)))
                .unwrap();
            assert_eq!(n, 0);
            let kh = std::fs::read_to_string(&known_hosts).unwrap_or_default();
            assert!(!kh.contains("bgtest-life"), "{kh}");
        });
    })
    .unwrap();
    drop(ns);
    println!("namespace {ns_name} removed");
}
