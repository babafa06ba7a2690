//! VM disks for real, as root: the helper's dispatch in-process
//! (`DirectOps`), real ext4 images (`mkfs.ext4 -d`), debugfs.

use super::custom::{self, Customisation, FileSync};
use super::tests::{add_vm, fixture, identity};
use super::*;
use crate::privops::DirectOps;
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_sys::runner::{Cmd, HostRunner, Runner};
use sha2::{Digest, Sha256};
use std::sync::Arc;

fn is_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        true
    } else {
        eprintln!("skipped: {test} needs root");
        false
    }
}

/// A 32 MiB ext4 made by `mkfs.ext4 -d` from a small tree.
fn real_image(dir: &Path) -> Vec<u8> {
    let tree = dir.join("bgtest-tree");
    for d in ["etc/ssh", "etc/network", "root", "usr/bin"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::write(tree.join("etc/hostname"), "image\n").unwrap();
    std::fs::write(tree.join("usr/bin/tool"), vec![0xabu8; 200_000]).unwrap();
    let img = dir.join("bgtest-base.ext4");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    HostRunner
        .run(
            &Cmd::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&tree)
                .arg(&img),
        )
        .unwrap();
    std::fs::read(&img).unwrap()
}

fn debugfs_cat(image: &Path, guest: &str) -> Vec<u8> {
    HostRunner
        .run(
            &Cmd::new("debugfs")
                .arg("-R")
                .arg(format!("cat {guest}"))
                .arg(image),
        )
        .unwrap()
        .stdout
}

pub(super) fn direct(state: &Path) -> Arc<DirectOps> {
    let mut cfg = banger_proto::install::InstallConfig::for_owner(0, 0, "/root".into());
    cfg.state_dir = state.into();
    Arc::new(DirectOps::new(Helper {
        cfg,
        host: Host::real(),
    }))
}

#[test]
fn root_ten_vm_disks_customised_for_real_and_the_base_is_unchanged() {
    if !is_root("root_ten_vm_disks_customised_for_real_and_the_base_is_unchanged") {
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("bgtest-img-")
        .tempdir()
        .unwrap();
    let bytes = real_image(scratch.path());
    // The fixture's StateDir is only known after it is made: build it with
    // a placeholder, then swap in DirectOps over that StateDir.
    let f0 = fixture(Arc::new(crate::privops::RecordingPriv::new()), Some(&bytes));
    let state = f0.state();
    let super::tests::Fixture { tmp, d, image } = f0;
    let d = Daemon {
        privops: direct(&state),
        ..d
    };
    let base = image.rootfs();
    let before = Sha256::digest(std::fs::read(&base).unwrap());
    let home = d.cfg.owner_home.clone();
    std::fs::write(
        home.join(".ssh/id_ed25519.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBr0c4kq0Yq3Yl0p8m7sC1Yt9cBZ4Q7b1f5dN0x8yVwF me\n",
    )
    .unwrap();
    std::fs::write(home.join("notes.txt"), "synced\n").unwrap();
    let mut host_keys = Vec::new();
    let t0 = std::time::Instant::now();
    let mut t_create = std::time::Duration::ZERO;
    for i in 0..10 {
        let id = format!("vm{i}");
        add_vm(&d, &id, "created");
        let t = std::time::Instant::now();
        let info = create_with(&d, &id, &image, Driver::Copy).unwrap();
        t_create += t.elapsed();
        assert_eq!(info.device, state.join(format!("vms/{id}/rootfs.ext4")));
        let c = Customisation {
            identity: identity(&id, &format!("172.30.0.{}", 10 + i)),
            ssh_public_key: None,
            file_sync: vec![FileSync {
                source: "notes.txt".into(),
                dest: format!("/root/notes-{i}.txt"),
                mode: Some(0o640),
            }],
        };
        let out = custom::customise(&d, &id, &c).unwrap();
        host_keys.push(out.host_key);
    }
    eprintln!(
        "10 VM disks (32 MiB ext4, copy driver): create {:?} total, create+customise {:?} total",
        t_create,
        t0.elapsed()
    );
    let kh = std::fs::read_to_string(state.join("known_hosts")).unwrap();
    assert_eq!(kh.lines().count(), 10);
    for (i, host_key) in host_keys.iter().enumerate() {
        let id = format!("vm{i}");
        let disk = state.join(format!("vms/{id}/rootfs.ext4"));
        assert_eq!(
            debugfs_cat(&disk, "/etc/hostname"),
            format!("{id}\n").as_bytes()
        );
        assert!(String::from_utf8(debugfs_cat(&disk, "/etc/hosts"))
            .unwrap()
            .contains(&format!("172.30.0.{}\t{id}.vm {id}", 10 + i)));
        assert!(
            String::from_utf8(debugfs_cat(&disk, "/etc/systemd/network/10-banger.network"))
                .unwrap()
                .contains(&format!("Address=172.30.0.{}/24", 10 + i))
        );
        assert_eq!(
            debugfs_cat(&disk, &format!("/root/notes-{i}.txt")),
            b"synced\n"
        );
        assert!(
            String::from_utf8(debugfs_cat(&disk, "/root/.ssh/authorized_keys"))
                .unwrap()
                .starts_with("ssh-ed25519 AAAAC3")
        );
        let pubkey =
            String::from_utf8(debugfs_cat(&disk, "/etc/ssh/ssh_host_ed25519_key.pub")).unwrap();
        assert_eq!(pubkey.trim_end(), host_key);
        let (kind, b64) = banger_core::guest::parse_public_key(&pubkey).unwrap();
        let line = format!("{id}.vm,172.30.0.{} {kind} {b64}", 10 + i);
        assert!(kh.lines().any(|l| l == line), "{line} not in {kh}");
        // The image's own files are still there.
        assert_eq!(debugfs_cat(&disk, "/usr/bin/tool").len(), 200_000);
        // debugfs sees the modes banger asked for.
        let st = HostRunner
            .run(
                &Cmd::new("debugfs")
                    .arg("-R")
                    .arg("stat /etc/ssh/ssh_host_ed25519_key")
                    .arg(&disk),
            )
            .unwrap();
        assert!(String::from_utf8_lossy(&st.stdout).contains("Mode:  0600"));
    }
    let mids: std::collections::BTreeSet<Vec<u8>> = (0..10)
        .map(|i| {
            debugfs_cat(
                &state.join(format!("vms/vm{i}/rootfs.ext4")),
                "/etc/machine-id",
            )
        })
        .collect();
    assert_eq!(mids.len(), 10, "every machine-id is fresh");
    assert_eq!(
        Sha256::digest(std::fs::read(&base).unwrap()),
        before,
        "base image bytes changed"
    );
    assert_eq!(debugfs_cat(&base, "/etc/hostname"), b"image\n");
    for i in 0..10 {
        destroy(&d, &format!("vm{i}")).unwrap();
        assert!(!state.join(format!("vms/vm{i}")).exists());
    }
    assert_eq!(
        std::fs::read_to_string(state.join("known_hosts")).unwrap(),
        ""
    );
    drop(tmp);
}

#[test]
fn root_reconcile_cleans_an_orphan_cow_dir_and_marks_a_row_broken() {
    if !is_root("root_reconcile_cleans_an_orphan_cow_dir_and_marks_a_row_broken") {
        return;
    }
    let f0 = fixture(Arc::new(crate::privops::RecordingPriv::new()), None);
    let state = f0.state();
    let super::tests::Fixture { tmp, d, image } = f0;
    let d = Daemon {
        privops: direct(&state),
        ..d
    };
    add_vm(&d, "alive", "stopped");
    add_vm(&d, "lost", "stopped");
    create_with(&d, "alive", &image, Driver::Copy).unwrap();
    create_with(&d, "lost", &image, Driver::Copy).unwrap();
    std::fs::remove_file(state.join("vms/lost/rootfs.ext4")).unwrap();
    let orphan = state.join("vms/bgtest-orphan");
    std::fs::create_dir_all(&orphan).unwrap();
    let cow = std::fs::File::create(orphan.join("cow.img")).unwrap();
    cow.set_len(64 << 20).unwrap();
    let r = reconcile::run(&d, Path::new("/sys")).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.removed_dirs, vec![orphan.clone()]);
    assert!(!orphan.exists());
    assert_eq!(r.broken, vec!["lost".to_string()]);
    let state_of = |id: &str| {
        d.store
            .query_one_string("SELECT state FROM vms WHERE id=?1", [id])
            .unwrap()
            .unwrap()
    };
    assert_eq!(state_of("lost"), "broken");
    assert_eq!(state_of("alive"), "stopped");
    assert!(state.join("vms/alive/rootfs.ext4").exists());
    drop(tmp);
}
