//! Image flows end to end: the `banger` CLI against a real `bangerd --dev`
//! — import (ELF and compressed kernels), progress lines, ls/inspect,
//! refusals, read-only storage with digests, OCI build, rm (and refusal
//! while a VM uses the image).

use banger_testkit::wait_until;
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

use common::dev_daemon::{cli, start as start_daemon, DevDaemon, DAEMON};

fn start() -> DevDaemon {
    start_daemon("bgtest-img-")
}

fn sha256(p: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn import_ls_inspect_refusals_and_rm() {
    let env = start();
    let work = env.dir.path().join("work");
    std::fs::create_dir_all(work.join("root/etc")).unwrap();
    std::fs::write(work.join("root/etc/hostname"), "base\n").unwrap();
    let rootfs = work.join("rootfs.ext4");
    common::mkfs(&work.join("root"), &rootfs);
    let kernel = work.join("vmlinux");
    std::fs::write(&kernel, b"\x7fELF\x02\x01\x01 a tiny stand-in ELF").unwrap();
    let (r, k) = (rootfs.to_str().unwrap(), kernel.to_str().unwrap());

    let out = env.banger(&[
        "image", "import", "base", "--rootfs", r, "--kernel", k, "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains("copy rootfs: 100%"),
        "plain progress lines off a TTY: {progress}"
    );
    assert_eq!(img["name"], "base");
    assert_eq!(img["rootfs_sha256"], sha256(&rootfs));
    assert_eq!(img["kernel_sha256"], sha256(&kernel));

    // Stored read-only, bytes identical.
    let id = img["id"].as_str().unwrap();
    let stored = env.dir.path().join("state/images").join(id);
    assert_eq!(std::fs::metadata(&stored).unwrap().mode() & 0o777, 0o555);
    let stored_rootfs = stored.join("rootfs.ext4");
    assert_eq!(
        std::fs::metadata(&stored_rootfs).unwrap().mode() & 0o777,
        0o444
    );
    assert_eq!(sha256(&stored_rootfs), sha256(&rootfs));

    let ls = env.ok_json(&["image", "ls", "--json"]);
    assert_eq!(ls.as_array().unwrap().len(), 1);
    let inspect = env.ok_json(&["image", "inspect", "base", "--json"]);
    assert_eq!(inspect["id"], id);

    // Refusals: taken name, bad name, not ext4, missing kernel.
    for (args, needle) in [
        (
            vec!["image", "import", "base", "--rootfs", r, "--kernel", k],
            "already exists",
        ),
        (
            vec!["image", "import", "../evil", "--rootfs", r, "--kernel", k],
            "invalid image name",
        ),
        (
            vec!["image", "import", "x", "--rootfs", k, "--kernel", k],
            "not an ext4",
        ),
        (
            vec![
                "image",
                "import",
                "y",
                "--rootfs",
                r,
                "--kernel",
                "/nonexistent",
            ],
            "not a regular file",
        ),
    ] {
        let out = env.banger(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle) && err.trim().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    assert!(
        std::fs::read_dir(env.dir.path().join("state/images"))
            .unwrap()
            .count()
            == 1,
        "refused imports leave nothing behind"
    );

    // rm is refused while a VM uses the image.
    let db = bangerd::store::Store::open(&env.dir.path().join("state/state.db")).unwrap();
    db.write(|tx| {
        tx.execute(
            "INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_driver, created_at)
             VALUES ('v1', 'dev', ?1, 'stopped', 1, 256, 'copy', 0)",
            [id],
        )
    })
    .unwrap();
    let out = env.banger(&["image", "rm", "base"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("used by VM(s): dev"));
    db.write(|tx| tx.execute("DELETE FROM vms", [])).unwrap();

    env.ok_json(&["image", "rm", "base", "--json"]);
    assert!(!stored.exists(), "image files removed");
    assert_eq!(
        env.ok_json(&["image", "ls", "--json"]),
        serde_json::json!([])
    );
    let out = env.banger(&["image", "inspect", "base"]);
    assert_eq!(out.status.code(), Some(1));
}

fn host_vmlinuz() -> Option<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .collect();
    v.sort();
    v.pop()
}

#[test]
fn compressed_kernel_is_extracted_and_oci_build_makes_an_image() {
    let Some(vmlinuz) = host_vmlinuz() else {
        eprintln!("skipped: no /boot/vmlinuz-* (apt install linux-image-cloud-amd64)");
        return;
    };
    let env = start();
    let work = env.dir.path().join("work");
    std::fs::create_dir_all(work.join("root")).unwrap();
    let rootfs = work.join("rootfs.ext4");
    common::mkfs(&work.join("root"), &rootfs);
    let img = env.ok_json(&[
        "image",
        "import",
        "deb",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--kernel",
        vmlinuz.to_str().unwrap(),
        "--json",
    ]);
    let stored_kernel = env
        .dir
        .path()
        .join("state/images")
        .join(img["id"].as_str().unwrap())
        .join("vmlinux");
    assert_eq!(&std::fs::read(&stored_kernel).unwrap()[..4], b"\x7fELF");

    // A one-layer OCI layout (uncompressed tar layer).
    let layout = work.join("layout");
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    let data = b"hello from a layer\n";
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    layer.append_data(&mut h, "etc/motd", &data[..]).unwrap();
    let layer = layer.into_inner().unwrap();
    let blob = |bytes: &[u8]| {
        let hex = format!("{:x}", Sha256::digest(bytes));
        std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (ld, ls) = blob(&layer);
    let (cd, cs) =
        blob(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}]
    })).unwrap();
    let (md, ms) = blob(&manifest);
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms}]
    })).unwrap()).unwrap();

    let built = env.ok_json(&[
        "image",
        "build",
        "fromoci",
        "--from",
        layout.to_str().unwrap(),
        "--kernel",
        stored_kernel.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(built["source"], "oci");
    let dir = env
        .dir
        .path()
        .join("state/images")
        .join(built["id"].as_str().unwrap());
    let out = Command::new("debugfs")
        .args(["-R", "cat /etc/motd"])
        .arg(dir.join("rootfs.ext4"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from a layer\n");
    assert_eq!(
        sha256(&dir.join("rootfs.ext4")),
        built["rootfs_sha256"].as_str().unwrap()
    );
}

#[test]
fn root_debian_build_has_sshd_systemd_and_no_per_vm_identity() {
    if !banger_testkit::require_root("root_debian_build_has_sshd_systemd_and_no_per_vm_identity") {
        return;
    }
    if std::env::var_os("BANGER_SKIP_NETWORK_TESTS").is_some() {
        eprintln!("skipped: BANGER_SKIP_NETWORK_TESTS is set (this test downloads from the Debian mirror)");
        return;
    }
    let Some(vmlinuz) = host_vmlinuz() else {
        eprintln!("skipped: no /boot/vmlinuz-*");
        return;
    };
    let env = start();
    let img = env.ok_json(&[
        "image",
        "build",
        "deb",
        "--debian",
        "bookworm",
        "--kernel",
        vmlinuz.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(img["source"], "debian");
    let rootfs = env
        .dir
        .path()
        .join("state/images")
        .join(img["id"].as_str().unwrap())
        .join("rootfs.ext4");
    let debugfs = |req: &str| {
        let out = Command::new("debugfs")
            .args(["-R", req])
            .arg(&rootfs)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        debugfs("stat /usr/sbin/sshd").contains("Type: regular"),
        "sshd installed"
    );
    assert!(
        debugfs("stat /sbin/init").contains("Type: symlink"),
        "systemd as init"
    );
    assert!(
        debugfs("stat /sbin/ifup").contains("Type: regular"),
        "ifupdown installed"
    );
    assert_eq!(debugfs("cat /etc/machine-id"), "", "no shared machine-id");
    assert!(
        !debugfs("ls /etc/ssh").contains("ssh_host_"),
        "no shared host keys"
    );
    assert!(
        debugfs("stat /etc/shadow").contains("User:     0"),
        "root-owned shadow"
    );
}

#[test]
fn root_debian_build_as_the_owner_uses_a_user_namespace() {
    use std::os::unix::process::CommandExt;
    if !banger_testkit::require_root("root_debian_build_as_the_owner_uses_a_user_namespace") {
        return;
    }
    if std::env::var_os("BANGER_SKIP_NETWORK_TESTS").is_some() {
        eprintln!("skipped: BANGER_SKIP_NETWORK_TESTS is set (this test downloads from the Debian mirror)");
        return;
    }
    let Some(vmlinuz) = host_vmlinuz() else {
        eprintln!("skipped: no /boot/vmlinuz-*");
        return;
    };
    let owner = banger_testkit::SystemUser::create("mmdeb");
    // The owner path needs subordinate ids, as `banger system install` sets up.
    let st = Command::new("usermod")
        .args([
            "--add-subuids",
            "300000-365535",
            "--add-subgids",
            "300000-365535",
        ])
        .arg(&owner.name)
        .status()
        .unwrap();
    assert!(st.success());
    let dir = tempfile::Builder::new()
        .prefix("bgtest-mm-")
        .tempdir()
        .unwrap();
    banger_testkit::open_up(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let kernel = home.join("vmlinuz");
    std::fs::copy(&vmlinuz, &kernel).unwrap();
    for p in [&home, &kernel] {
        std::os::unix::fs::chown(p, Some(owner.uid), Some(owner.gid)).unwrap();
    }
    let socket = home.join("run/bangerd.sock");
    let mut daemon = banger_testkit::KillOnDrop(
        Command::new(DAEMON)
            .arg("--dev")
            .env_clear()
            .env("HOME", &home)
            .env("BANGER_STATE_DIR", home.join("state"))
            .env("BANGER_RUNTIME_DIR", home.join("run"))
            .env("BANGER_NO_NETWORK", "1")
            .env("BANGER_LOG", "warn")
            .uid(owner.uid)
            .gid(owner.gid)
            .spawn()
            .unwrap(),
    );
    let s = socket.clone();
    assert!(wait_until(Duration::from_secs(20), || s.exists()));
    let out = Command::new(cli())
        .arg("--socket")
        .arg(&socket)
        .args(["image", "build", "deb", "--debian", "bookworm", "--kernel"])
        .arg(&kernel)
        .arg("--json")
        .uid(owner.uid)
        .gid(owner.gid)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rootfs = home
        .join("state/images")
        .join(img["id"].as_str().unwrap())
        .join("rootfs.ext4");
    let debugfs = |req: &str| {
        let out = Command::new("debugfs")
            .args(["-R", req])
            .arg(&rootfs)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(debugfs("stat /usr/sbin/sshd").contains("Type: regular"));
    // Built without root, yet ownership inside the image is root's and
    // setuid bits survive.
    assert!(debugfs("stat /etc/shadow").contains("User:     0"));
    let su = debugfs("stat /usr/bin/su");
    assert!(
        su.contains("Mode:  04755") || su.contains("Mode:  4755"),
        "{su}"
    );
    // No identity shared between VMs: host keys whited out, machine-id empty.
    assert!(
        !debugfs("ls /etc/ssh").contains("ssh_host_"),
        "host keys left"
    );
    assert_eq!(debugfs("cat /etc/machine-id"), "");
    let _ = daemon.0.kill();
    let _ = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(dir.path())
        .status();
}
