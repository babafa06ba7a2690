//! The sweep of objects no row records: pure planners, then a whole sweep
//! over fixture `/sys` and `/proc` roots against the recording helper, with
//! a real process standing in for an orphaned VMM.

use super::*;
use crate::privops::RecordingPriv;
use crate::vms::tests::fx;
use crate::vms::{create, CreateReq};
use std::sync::Arc;

fn ids(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn only_banger_named_taps_on_the_bridge_and_of_no_vm_are_orphans() {
    assert!(is_banger_tap("banger-0a1b2c3d"));
    for no in [
        "banger-t1234567",
        "banger-0a1b2c3",
        "banger-0A1B2C3D",
        "eth0",
        "banger0",
    ] {
        assert!(!is_banger_tap(no), "{no}");
    }
    let mine = tap_for("vm1");
    let links = vec![
        (mine.clone(), Some("banger0".to_string())),
        ("banger-deadbeef".into(), Some("banger0".into())),
        ("banger-0000beef".into(), None),
        ("banger-cafe0001".into(), Some("otherbr".into())),
        ("banger-tabc".into(), Some("banger0".into())),
        ("eth0".into(), None),
    ];
    assert_eq!(
        orphan_taps(&links, "banger0", &ids(&["vm1"])),
        ["banger-deadbeef", "banger-0000beef"]
    );
}

#[test]
fn unleased_addresses_skip_network_broadcast_gateway_and_leases() {
    let s: Subnet = "10.9.0.0/29".parse().unwrap();
    let leased = ["10.9.0.3".parse().unwrap()].into_iter().collect();
    let got: Vec<String> = unleased(&s, "10.9.0.1".parse().unwrap(), &leased)
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(got, ["10.9.0.2", "10.9.0.4", "10.9.0.5", "10.9.0.6"]);
}

#[test]
fn pins_of_no_vm_are_stale() {
    let text = "# banger\nweb.vm,172.30.0.2 ssh-ed25519 AAA\nold.vm,172.30.0.9 ssh-ed25519 BBB\n\n";
    let known = ids(&["web.vm", "172.30.0.2"]);
    assert_eq!(stale_pins(text, &known), ["172.30.0.9", "old.vm"]);
    assert!(stale_pins("web.vm ssh-ed25519 AAA\n", &known).is_empty());
}

fn mkdirs(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
}

#[tokio::test]
async fn a_sweep_removes_what_no_row_records_and_keeps_the_rest() {
    let rec = Arc::new(RecordingPriv::new());
    let mut f = fx(rec.clone());
    f.d.cfg.jailer_base = f.tmp.path().join("jail");
    let req = CreateReq {
        name: "web".into(),
        image: "base".into(),
        vcpus: 1,
        memory_mib: 256,
        start: false,
        vmm: None,
        disk_size: None,
    };
    let web = create(
        &f.d,
        &req,
        &crate::progress::Progress::new(tokio::sync::mpsc::unbounded_channel().0),
    )
    .await
    .unwrap();
    let before = rec.calls().len();
    let root = f.tmp.path();

    // /sys: web's tap, an orphan on the bridge, a test tap, a foreign bridge's.
    let net = root.join("sys/class/net");
    for (name, master) in [
        (tap_for(&web.id), Some("banger0")),
        ("banger-deadbeef".into(), Some("banger0")),
        ("banger-tabc".into(), Some("banger0")),
        ("banger-cafe0001".into(), Some("otherbr")),
        ("eth0".into(), None),
    ] {
        mkdirs(&net.join(&name));
        if let Some(m) = master {
            std::os::unix::fs::symlink(
                format!("../../devices/virtual/net/{m}"),
                net.join(&name).join("master"),
            )
            .unwrap();
        }
    }
    // /proc: a live process posing as the QEMU of a VM with no row.
    let mut ghost = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pdir = root.join("proc").join(ghost.id().to_string());
    mkdirs(&pdir);
    let disk = f.d.paths.vms_dir().join("ghost1/disk.ext4");
    std::fs::write(
        pdir.join("cmdline"),
        format!(
            "qemu-system-x86_64\0-drive\0file={},if=virtio\0",
            disk.display()
        ),
    )
    .unwrap();
    // web's own VMM-looking process is kept.
    let mut kept = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let kdir = root.join("proc").join(kept.id().to_string());
    mkdirs(&kdir);
    let wdisk = f.d.paths.vms_dir().join(&web.id).join("disk.ext4");
    std::fs::write(
        kdir.join("cmdline"),
        format!("qemu-system-x86_64\0-drive\0file={}\0", wdisk.display()),
    )
    .unwrap();
    // Runtime dirs, chroots and a stale pin.
    let rt = f.d.paths.runtime_dir.join("vms");
    mkdirs(&rt.join("ghost1"));
    mkdirs(&rt.join(&web.id));
    let jail = f.d.cfg.jailer_base.join("firecracker");
    mkdirs(&jail.join("ghost1/root"));
    mkdirs(&jail.join(&web.id).join("root"));
    // QEMU cgroups (v1 memory and pids, and a v2-style one): ghost1's are
    // orphans; web's and a foreign name are kept.
    let cg = root.join("sys/fs/cgroup");
    for d in [
        "memory/banger-ghost1",
        "pids/banger-ghost1",
        "banger-ghost2",
    ] {
        mkdirs(&cg.join(d));
    }
    mkdirs(&cg.join("memory").join(format!("banger-{}", web.id)));
    mkdirs(&cg.join("memory/banger-Other.x"));
    mkdirs(&cg.join("memory/system.slice"));
    let kh = f.d.paths.known_hosts();
    let mut text = std::fs::read_to_string(&kh).unwrap();
    text.push_str("ghost.vm,172.30.0.9 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3\n");
    std::fs::write(&kh, text).unwrap();

    let roots = Roots {
        sys: root.join("sys"),
        proc: root.join("proc"),
    };
    // Not owning the host objects: only this daemon's own are swept.
    let s = run(&f.d, &roots, false);
    assert_eq!(
        rec.calls().len(),
        before,
        "no helper call: {:?}",
        rec.calls()
    );
    assert!(s.taps.is_empty() && s.nat.is_empty() && s.chroots.is_empty());
    assert!(s.cgroups.is_empty());
    assert_eq!(s.vmms, [i64::from(ghost.id())]);
    let st = ghost.wait().unwrap();
    assert!(!st.success(), "the orphan VMM was killed: {st:?}");
    // Reaped: gone from /proc as it would be on the host.
    std::fs::remove_dir_all(&pdir).unwrap();
    assert!(kept.try_wait().unwrap().is_none(), "web's VMM lives");
    assert_eq!(s.runtime_dirs, [rt.join("ghost1")]);
    assert!(rt.join(&web.id).is_dir());
    assert_eq!(s.pins, ["172.30.0.9", "ghost.vm"]);
    let now = std::fs::read_to_string(&kh).unwrap();
    assert!(!now.contains("ghost.vm") && now.contains("web.vm"), "{now}");
    assert!(s.errors.is_empty(), "{:?}", s.errors);

    // A development daemon owning the network: the orphan tap and every
    // unleased NAT address, but no chroot (the jailer base is shared).
    let s = run(&f.d, &roots, true);
    assert_eq!(s.taps, ["banger-deadbeef"]);
    assert!(s.chroots.is_empty() && s.cgroups.is_empty());
    assert!(jail.join("ghost1").is_dir());
    let before = rec.calls().len();
    // A system daemon: the chroot too.
    f.d.mode = banger_core::paths::Mode::System;
    let s = run(&f.d, &roots, true);
    let calls = rec.calls()[before..].to_vec();
    assert_eq!(s.taps, ["banger-deadbeef"]);
    assert_eq!(
        calls[0],
        (
            "priv.delete_tap".to_string(),
            serde_json::json!({"name": "banger-deadbeef"})
        )
    );
    let nat: Vec<&serde_json::Value> = calls
        .iter()
        .filter(|c| c.0 == "priv.clear_nat")
        .map(|c| &c.1["guest_ip"])
        .collect();
    // 172.30.0.0/24: 254 hosts less the gateway and web's lease.
    assert_eq!(nat.len(), 252);
    assert!(!nat.contains(&&serde_json::json!(web.ip.unwrap().to_string())));
    assert!(!nat.contains(&&serde_json::json!("172.30.0.1")));
    assert_eq!(s.chroots, [jail.join("ghost1")]);
    let chroot = calls
        .iter()
        .find(|c| c.0 == "priv.cleanup_jailer_chroot")
        .unwrap();
    assert_eq!(chroot.1["path"], jail.join("ghost1").display().to_string());
    // The cgroups of no VM, once per id, after every VMM was killed.
    assert_eq!(s.cgroups, ["ghost1", "ghost2"]);
    let cgroups: Vec<&(String, serde_json::Value)> = calls
        .iter()
        .filter(|c| c.0 == "priv.remove_qemu_cgroup")
        .collect();
    assert_eq!(
        cgroups
            .iter()
            .map(|c| c.1["vm_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["ghost1", "ghost2"]
    );
    assert_eq!(calls.last().unwrap().0, "priv.remove_qemu_cgroup");
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let _ = kept.kill();
    let _ = kept.wait();
}
