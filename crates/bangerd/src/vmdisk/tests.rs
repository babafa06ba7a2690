//! VM disks against the helper's recording double: the exact requests.

use super::custom::{self, CustomError, Customisation, FileSync};
use super::*;
use crate::privops::PrivOps;
use crate::privops::RecordingPriv;
use banger_core::guest::{GuestIdentity, GuestNet};
use banger_core::paths::{Mode, Paths};
use banger_proto::api::Image;
use banger_proto::install::InstallConfig;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

pub(super) struct Fixture {
    pub tmp: tempfile::TempDir,
    pub d: Daemon,
    pub image: Stored,
}

impl Fixture {
    pub fn state(&self) -> PathBuf {
        self.d.paths.state_dir.clone()
    }
    pub fn home(&self) -> PathBuf {
        self.d.cfg.owner_home.clone()
    }
}

/// A daemon over a temp StateDir and owner home, one image (`base`, a
/// `base_bytes` file) and no VM yet.
pub(super) fn fixture(privops: Arc<dyn PrivOps>, base_bytes: Option<&[u8]>) -> Fixture {
    let tmp = tempfile::Builder::new()
        .prefix("bgtest-vmdisk-")
        .tempdir()
        .unwrap();
    let state = tmp.path().join("state");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let paths = Paths {
        state_dir: state.clone(),
        runtime_dir: tmp.path().join("run"),
    };
    let me = rustix::process::getuid().as_raw();
    let mut cfg = InstallConfig::for_owner(me, me, home);
    cfg.state_dir = state.clone();
    cfg.runtime_dir = paths.runtime_dir.clone();
    let store = crate::store::Store::open(&paths.database()).unwrap();
    let dir = state.join("images/img1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("rootfs.ext4"),
        base_bytes.unwrap_or(&vec![7u8; 1 << 20]),
    )
    .unwrap();
    store
        .write(|tx| {
            tx.execute(
                "INSERT INTO images VALUES ('img1','base',?1,'k',NULL,'s','k',1,'import',0)",
                [dir.join("rootfs.ext4").display().to_string()],
            )
        })
        .unwrap();
    let image = Stored {
        image: Image {
            id: "img1".into(),
            name: "base".into(),
            size_bytes: 1,
            rootfs_sha256: "s".into(),
            kernel_sha256: "k".into(),
            source: "import".into(),
            created_at: 0,
        },
        dir,
        has_initrd: false,
    };
    let d = Daemon {
        cfg,
        paths,
        mode: Mode::Dev,
        store,
        privops,
        host_paths: Default::default(),
        vmms: Default::default(),
    };
    Fixture { tmp, d, image }
}

pub(super) fn add_vm(d: &Daemon, id: &str, state: &str) {
    d.store
        .write(|tx| {
            tx.execute(
                "INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_driver, created_at)
                 VALUES (?1, ?1, 'img1', ?2, 1, 128, '', 0)",
                [id, state],
            )
        })
        .unwrap();
}

pub(super) fn row(d: &Daemon, id: &str) -> (String, String, String) {
    d.store
        .read(|c| {
            c.query_row(
                "SELECT state, disk_driver, disk_handles FROM vms WHERE id=?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
        .unwrap()
}

pub(super) fn dm_handles(id: &str) -> Value {
    json!({"handles": {
        "dm_name": format!("fc-rootfs-{id}"),
        "dm_device": format!("/dev/mapper/fc-rootfs-{id}"),
        "base_loop": "/dev/loop7",
        "cow_loop": "/dev/loop8",
    }})
}

#[test]
fn dm_create_records_handles_and_destroy_cleans_exactly_those() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fixture(rec.clone(), None);
    add_vm(&f.d, "vm1", "created");
    rec.answer(m::CREATE_DM_SNAPSHOT, Ok(dm_handles("vm1")));
    let info = create_with(&f.d, "vm1", &f.image, Driver::DmSnapshot).unwrap();
    let cow = f.state().join("vms/vm1/cow.img");
    assert_eq!(info.device, PathBuf::from("/dev/mapper/fc-rootfs-vm1"));
    let calls = rec.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "priv.create_dm_snapshot");
    assert_eq!(
        calls[0].1,
        json!({
            "name": "fc-rootfs-vm1",
            "base_image": f.image.rootfs().display().to_string(),
            "cow_file": cow.display().to_string(),
            "cow_size_bytes": cow_size_for(1 << 20),
        })
    );
    let dir = f.state().join("vms/vm1");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    let (_, drv, json) = row(&f.d, "vm1");
    assert_eq!(drv, "dm_snapshot");
    let h: DiskHandles = serde_json::from_str(&json).unwrap();
    assert_eq!(
        serde_json::to_value(h.dm.as_ref().unwrap()).unwrap(),
        dm_handles("vm1")["handles"]
    );
    assert_eq!(h.file, cow.display().to_string());
    assert_eq!(h, info.handles);
    // A second create is refused without a helper call.
    assert!(matches!(
        create_with(&f.d, "vm1", &f.image, Driver::DmSnapshot),
        Err(VmDiskError::HasDisk(_))
    ));
    assert_eq!(rec.calls().len(), 1);

    destroy(&f.d, "vm1").unwrap();
    let calls = rec.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].0, "priv.cleanup_dm_snapshot");
    assert_eq!(calls[1].1, dm_handles("vm1"));
    assert!(!dir.exists());
    assert_eq!(row(&f.d, "vm1").2, "{}");
    // Idempotent: nothing recorded, nothing called.
    destroy(&f.d, "vm1").unwrap();
    assert_eq!(rec.calls().len(), 2);
}

#[test]
fn refusals_leave_nothing_behind() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fixture(rec.clone(), None);
    add_vm(&f.d, "vm2", "created");
    rec.answer(
        m::CREATE_DM_SNAPSHOT,
        Err((
            -32602,
            "create_dm_snapshot: path must resolve to a file under StateDir".into(),
        )),
    );
    let e = create_with(&f.d, "vm2", &f.image, Driver::DmSnapshot).unwrap_err();
    assert!(matches!(e, VmDiskError::Priv("priv.create_dm_snapshot", _)));
    assert!(crate::render_chain(&e).contains("under StateDir"));
    assert!(!f.state().join("vms/vm2").exists());
    assert_eq!(row(&f.d, "vm2"), ("created".into(), "".into(), "{}".into()));
    assert_eq!(rec.calls().len(), 1);
    // Bad ids and missing rows never reach the helper.
    for bad in ["", "../x", "A", "-x", "x y", &"a".repeat(33)] {
        assert!(matches!(
            create_with(&f.d, bad, &f.image, Driver::DmSnapshot),
            Err(VmDiskError::BadVmId(_))
        ));
    }
    assert!(matches!(
        create_with(&f.d, "nosuch", &f.image, Driver::DmSnapshot),
        Err(VmDiskError::NoVm(_))
    ));
    assert!(matches!(destroy(&f.d, "nosuch"), Err(VmDiskError::NoVm(_))));
    assert_eq!(rec.calls().len(), 1);
    // A cleanup refusal keeps the row's handles (nothing is forgotten).
    rec.answer(m::CREATE_DM_SNAPSHOT, Ok(dm_handles("vm2")));
    create_with(&f.d, "vm2", &f.image, Driver::DmSnapshot).unwrap();
    rec.answer(m::CLEANUP_DM_SNAPSHOT, Err((-32000, "busy".into())));
    assert!(destroy(&f.d, "vm2").is_err());
    let h: DiskHandles = serde_json::from_str(&row(&f.d, "vm2").2).unwrap();
    assert!(h.dm.is_some());
    assert!(f.state().join("vms/vm2").exists());
}

#[test]
fn stop_start_recreates_the_snapshot_over_the_kept_cow_and_fsck_is_dm_only() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fixture(rec.clone(), None);
    add_vm(&f.d, "vm3", "created");
    rec.answer(m::CREATE_DM_SNAPSHOT, Ok(dm_handles("vm3")));
    let first = create_with(&f.d, "vm3", &f.image, Driver::DmSnapshot).unwrap();
    rec.answer(m::FSCK_SNAPSHOT, Ok(json!({"exit_code": 1})));
    assert_eq!(fsck(&f.d, "vm3").unwrap(), 1);
    deactivate(&f.d, "vm3").unwrap();
    assert!(matches!(fsck(&f.d, "vm3"), Err(VmDiskError::NotActive(_))));
    rec.answer(m::CREATE_DM_SNAPSHOT, Ok(dm_handles("vm3")));
    let again = activate(&f.d, "vm3").unwrap();
    assert_eq!(again, first);
    // Already active: no second create.
    activate(&f.d, "vm3").unwrap();
    let calls = rec.calls();
    let names: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "priv.create_dm_snapshot",
            "priv.fsck_snapshot",
            "priv.cleanup_dm_snapshot",
            "priv.create_dm_snapshot"
        ]
    );
    assert_eq!(calls[1].1, json!({"device": "/dev/mapper/fc-rootfs-vm3"}));
    assert_eq!(calls[2].1, dm_handles("vm3"));
    assert_eq!(calls[3].1, calls[0].1, "same base, same COW file");

    add_vm(&f.d, "cp1", "created");
    create_with(&f.d, "cp1", &f.image, Driver::Copy).unwrap();
    assert!(matches!(
        fsck(&f.d, "cp1"),
        Err(VmDiskError::FsckNeedsDm(_))
    ));
    assert_eq!(row(&f.d, "cp1").1, "copy");
    assert_eq!(
        std::fs::read(f.state().join("vms/cp1/rootfs.ext4")).unwrap(),
        vec![7u8; 1 << 20]
    );
    assert_eq!(rec.calls().len(), 4, "the copy driver needs no helper");
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBr0c4kq0Yq3Yl0p8m7sC1Yt9cBZ4Q7b1f5dN0x8yVwF";

pub(super) fn identity(name: &str, ip: &str) -> GuestIdentity {
    GuestIdentity {
        hostname: name.into(),
        domain: "vm".into(),
        net: GuestNet {
            ip: ip.parse().unwrap(),
            prefix: 24,
            gateway: "172.30.0.1".parse().unwrap(),
            dns: vec!["172.30.0.1".parse().unwrap()],
            mac: banger_core::net::mac_for(name),
            iface: "eth0".into(),
        },
    }
}

fn written(call: &Value) -> Vec<(String, Vec<u8>, u64)> {
    call["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                base64::engine::general_purpose::STANDARD
                    .decode(f["content_b64"].as_str().unwrap())
                    .unwrap(),
                f["mode"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn customise_writes_the_guest_files_and_pins_the_host_key() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fixture(rec.clone(), None);
    let home = f.home();
    std::fs::write(
        home.join(".ssh/id_ed25519.pub"),
        format!("{KEY} me@laptop\n"),
    )
    .unwrap();
    std::fs::write(home.join("gitconfig"), "[user]\n\tname = me\n").unwrap();
    add_vm(&f.d, "dev", "created");
    rec.answer(m::CREATE_DM_SNAPSHOT, Ok(dm_handles("dev")));
    create_with(&f.d, "dev", &f.image, Driver::DmSnapshot).unwrap();
    let c = Customisation {
        identity: identity("dev", "172.30.0.5"),
        ssh_public_key: None,
        file_sync: vec![FileSync {
            source: "gitconfig".into(),
            dest: "/root/.gitconfig".into(),
            mode: None,
        }],
    };
    let out = custom::customise(&f.d, "dev", &c).unwrap();
    let calls = rec.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].0, "priv.write_ext4_files");
    assert_eq!(calls[1].1["image"], "/dev/mapper/fc-rootfs-dev");
    let files = written(&calls[1].1);
    let get = |p: &str| files.iter().find(|f| f.0 == p).unwrap().clone();
    assert_eq!(get("/etc/hostname").1, b"dev\n");
    // The owner's key, then banger's own.
    let banger = crate::sshkey::ensure(&f.state()).unwrap();
    let banger = banger.trim_end_matches(" banger");
    assert_eq!(
        get("/root/.ssh/authorized_keys"),
        (
            "/root/.ssh/authorized_keys".into(),
            format!("{KEY}\n{banger}\n").into_bytes(),
            0o600
        )
    );
    assert_eq!(get("/root/.gitconfig").1, b"[user]\n\tname = me\n");
    assert!(
        String::from_utf8(get("/etc/systemd/network/10-banger.network").1)
            .unwrap()
            .contains("Address=172.30.0.5/24")
    );
    assert!(String::from_utf8(get("/etc/network/interfaces").1)
        .unwrap()
        .contains("address 172.30.0.5/24"));
    assert_eq!(
        get("/etc/resolv.conf").1,
        b"# Written by banger before first boot.\nnameserver 172.30.0.1\nsearch vm\n"
    );
    assert_eq!(get("/etc/machine-id").1.len(), 33);
    let (_, private, mode) = get("/etc/ssh/ssh_host_ed25519_key");
    assert_eq!(mode, 0o600);
    assert!(String::from_utf8(private)
        .unwrap()
        .contains("OPENSSH PRIVATE KEY"));
    let public = String::from_utf8(get("/etc/ssh/ssh_host_ed25519_key.pub").1).unwrap();
    assert!(public.starts_with("ssh-ed25519 "));
    let (kind, b64) = banger_core::guest::parse_public_key(&public).unwrap();
    // known_hosts: exactly `<vm>.<domain>,<ip> <type> <key>`, 0600.
    let kh = std::fs::read_to_string(f.state().join("known_hosts")).unwrap();
    assert_eq!(kh, format!("dev.vm,172.30.0.5 {kind} {b64}\n"));
    assert_eq!(out.known_hosts_line, kh);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(f.state().join("known_hosts"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );
    // Customising again replaces the pin (a new host key), not appends.
    let again = custom::customise(&f.d, "dev", &c).unwrap();
    assert_ne!(again.host_key, out.host_key);
    let kh = std::fs::read_to_string(f.state().join("known_hosts")).unwrap();
    assert_eq!(kh.lines().count(), 1);
    assert!(kh.contains(again.host_key.split(' ').nth(1).unwrap()));
    // Destroy drops the pin.
    destroy(&f.d, "dev").unwrap();
    assert_eq!(
        std::fs::read_to_string(f.state().join("known_hosts")).unwrap(),
        ""
    );
}

#[test]
fn file_sync_and_key_paths_outside_the_home_are_refused() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fixture(rec.clone(), None);
    let home = f.home();
    std::fs::write(home.join(".ssh/id.pub"), format!("{KEY}\n")).unwrap();
    let secret = f.tmp.path().join("secret");
    std::fs::write(&secret, "outside").unwrap();
    std::os::unix::fs::symlink(&secret, home.join("link-out")).unwrap();
    std::fs::create_dir(home.join("sub")).unwrap();
    std::os::unix::fs::symlink(f.tmp.path(), home.join("sub/dir-out")).unwrap();
    std::fs::write(home.join("ok"), "in").unwrap();
    std::os::unix::fs::symlink("../ok", home.join("sub/link-in")).unwrap();
    add_vm(&f.d, "fs", "created");
    create_with(&f.d, "fs", &f.image, Driver::Copy).unwrap();
    let base = |src: &str, dest: &str| Customisation {
        identity: identity("fs", "172.30.0.6"),
        ssh_public_key: None,
        file_sync: vec![FileSync {
            source: src.into(),
            dest: dest.into(),
            mode: None,
        }],
    };
    let outside = [
        "../secret".to_string(),
        "sub/../../secret".into(),
        "link-out".into(),
        "sub/dir-out/secret".into(),
        secret.display().to_string(),
        "/etc/passwd".into(),
        home.join("..").join("secret").display().to_string(),
    ];
    for src in &outside {
        let e = custom::customise(&f.d, "fs", &base(src, "/root/x")).unwrap_err();
        assert!(
            matches!(e, VmDiskError::Custom(CustomError::OutsideHome(_))),
            "{src}: {e:?}"
        );
    }
    // The home itself is not a file to sync.
    assert!(custom::customise(&f.d, "fs", &base(".", "/root/x")).is_err());
    // Bad guest destinations.
    for dest in ["relative", "/root/../etc/shadow", "/root/a b"] {
        assert!(matches!(
            custom::customise(&f.d, "fs", &base("ok", dest)),
            Err(VmDiskError::Custom(CustomError::BadDest(_)))
        ));
    }
    // An explicit key path outside the home.
    let mut c = base("ok", "/root/ok");
    c.ssh_public_key = Some(secret.clone());
    assert!(matches!(
        custom::customise(&f.d, "fs", &c),
        Err(VmDiskError::Custom(CustomError::OutsideHome(_)))
    ));
    assert!(rec.calls().is_empty(), "nothing reached the helper");
    // A symlink that stays inside the home is fine.
    let (bytes, _) = custom::read_in_home(&home, Path::new("sub/link-in"), 10).unwrap();
    assert_eq!(bytes, b"in");
    assert!(matches!(
        custom::read_in_home(&home, Path::new("ok"), 1),
        Err(CustomError::TooLarge(..))
    ));
    custom::customise(&f.d, "fs", &base("sub/link-in", "/root/ok")).unwrap();
    assert_eq!(rec.calls().len(), 1);
    assert_eq!(
        rec.calls()[0].1["image"],
        f.state().join("vms/fs/rootfs.ext4").display().to_string()
    );
}

#[test]
fn no_owner_key_means_banger_key_only_and_a_bad_owner_key_is_refused() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fixture(rec.clone(), None);
    add_vm(&f.d, "nk", "created");
    create_with(&f.d, "nk", &f.image, Driver::Copy).unwrap();
    let c = Customisation {
        identity: identity("nk", "172.30.0.7"),
        ssh_public_key: None,
        file_sync: vec![],
    };
    std::fs::write(f.home().join(".ssh/id.pub"), "not a key\n").unwrap();
    assert!(matches!(
        custom::customise(&f.d, "nk", &c),
        Err(VmDiskError::Custom(CustomError::BadKey(..)))
    ));
    assert!(rec.calls().is_empty());
    // No .ssh at all: banger's own key, alone.
    std::fs::remove_dir_all(f.home().join(".ssh")).unwrap();
    custom::customise(&f.d, "nk", &c).unwrap();
    let calls = rec.calls();
    let files = written(&calls.last().unwrap().1);
    let ak = files
        .iter()
        .find(|f| f.0 == "/root/.ssh/authorized_keys")
        .unwrap();
    let banger = crate::sshkey::ensure(&f.state()).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ak.1),
        format!("{}\n", banger.trim_end_matches(" banger"))
    );
}

#[test]
fn host_key_is_made_in_process_in_the_format_openssh_reads() {
    let (private, public) = custom::generate_host_key("root@dev.vm").unwrap();
    let text = String::from_utf8(private.clone()).unwrap();
    assert!(
        text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"),
        "{text}"
    );
    assert!(
        text.ends_with("-----END OPENSSH PRIVATE KEY-----\n"),
        "{text}"
    );
    let k = ssh_key::PrivateKey::from_openssh(&text).unwrap();
    assert_eq!(k.algorithm(), ssh_key::Algorithm::Ed25519);
    assert!(!k.is_encrypted());
    assert_eq!(k.public_key().to_openssh().unwrap(), public);
    let (kind, _) = banger_core::guest::parse_public_key(&public).unwrap();
    assert_eq!(kind, "ssh-ed25519");
    assert!(public.ends_with(" root@dev.vm"), "{public}");
    // Each call, a new key.
    assert_ne!(
        custom::generate_host_key("c").unwrap().1,
        custom::generate_host_key("c").unwrap().1
    );
    // OpenSSH's own parser (the one sshd uses) reads it and derives the
    // same public line.
    let dir = tempfile::Builder::new()
        .prefix("bgtest-hostkey-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, &private).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end(), public);
}

#[test]
fn large_file_sync_is_split_across_write_calls_and_oversize_refused() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fixture(rec.clone(), None);
    let home = f.home();
    std::fs::write(home.join(".ssh/id.pub"), format!("{KEY}\n")).unwrap();
    std::fs::write(home.join("a"), vec![1u8; 300 << 10]).unwrap();
    std::fs::write(home.join("b"), vec![2u8; 300 << 10]).unwrap();
    std::fs::write(home.join("big"), vec![3u8; (512 << 10) + 1]).unwrap();
    add_vm(&f.d, "lg", "created");
    create_with(&f.d, "lg", &f.image, Driver::Copy).unwrap();
    let sync = |srcs: &[&str]| Customisation {
        identity: identity("lg", "172.30.0.8"),
        ssh_public_key: Some(".ssh/id.pub".into()),
        file_sync: srcs
            .iter()
            .map(|s| FileSync {
                source: s.into(),
                dest: format!("/srv/{s}"),
                mode: Some(0o600),
            })
            .collect(),
    };
    let out = custom::customise(&f.d, "lg", &sync(&["a", "b"])).unwrap();
    assert_eq!(out.files.len(), 11);
    let calls = rec.calls();
    assert_eq!(calls.len(), 2, "two calls: each under the message limit");
    let first = written(&calls[0].1);
    let second = written(&calls[1].1);
    assert_eq!(first.last().unwrap().0, "/srv/a");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0], ("/srv/b".into(), vec![2u8; 300 << 10], 0o600));
    for c in &calls {
        assert!(serde_json::to_vec(&c.1).unwrap().len() < banger_proto::jsonrpc::MAX_MESSAGE_BYTES);
    }
    assert!(matches!(
        custom::customise(&f.d, "lg", &sync(&["big"])),
        Err(VmDiskError::Custom(CustomError::TooLarge(..)))
    ));
    assert_eq!(rec.calls().len(), 2);
}
