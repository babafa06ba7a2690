//! Owner requests: ext4 files through debugfs on a real image under
//! StateDir, and device-mapper snapshots (real when the kernel has dm,
//! otherwise a clear `-32000` naming dm, with nothing left behind).

use crate::guards::{assert_refused, has_device_mapper, loops_backed_under};
use crate::harness::{error, result};
use crate::Ctx;
use banger_proto::helper as m;
use base64::Engine;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

pub fn storage(c: &Ctx) {
    let call = |method: &'static str, params: Value| c.call(method, params);
    let (state, root, tag) = (&c.cfg.state_dir, &c.root, c.tag.as_str());
    // ext4 through debugfs on a real image under StateDir.
    let image = state.join("bgtest-base.ext4");
    std::fs::write(&image, vec![0u8; 8 << 20]).unwrap();
    let mk = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        mk.status.success(),
        "{}",
        String::from_utf8_lossy(&mk.stderr)
    );
    // The owner's image, as the daemon makes them (debugfs runs as the owner).
    std::os::unix::fs::chown(&image, Some(c.owner.uid), Some(c.owner.gid)).unwrap();
    let content = b"hello from the e2e test\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(content);
    let v = call(
        m::WRITE_EXT4_FILES,
        json!({"image": image, "files": [{"path": "/bgtest-hello.txt", "content_b64": b64,
            "mode": 0o640, "uid": 1234, "gid": 5678}]}),
    );
    result(m::WRITE_EXT4_FILES, &v);
    let stat = Command::new("debugfs")
        .arg("-R")
        .arg("stat /bgtest-hello.txt")
        .arg(&image)
        .output()
        .unwrap();
    let stat = String::from_utf8_lossy(&stat.stdout).into_owned();
    let words: Vec<&str> = stat.split_whitespace().collect();
    let after = |k: &str| words.iter().position(|w| *w == k).map(|i| words[i + 1]);
    assert_eq!(after("User:"), Some("1234"), "{stat}");
    assert_eq!(after("Group:"), Some("5678"), "{stat}");
    assert_eq!(after("Mode:"), Some("0640"), "{stat}");
    let v = call(
        m::WRITE_EXT4_FILES,
        json!({"image": image, "files": [{"path": "/../etc/shadow", "content_b64": b64,
            "mode": 0o600, "uid": 0, "gid": 0}]}),
    );
    assert_refused(m::WRITE_EXT4_FILES, &v, "guest path must be absolute");
    c.cover(m::WRITE_EXT4_FILES);

    let v = call(
        m::READ_EXT4_FILE,
        json!({"image": image, "path": "/bgtest-hello.txt"}),
    );
    let got = result(m::READ_EXT4_FILE, &v)["content_b64"]
        .as_str()
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(got)
            .unwrap(),
        content
    );
    let escape = state.join("bgtest-escape.ext4");
    std::os::unix::fs::symlink("/etc/passwd", &escape).unwrap();
    for img in [Path::new("/etc/passwd"), escape.as_path()] {
        let v = call(
            m::READ_EXT4_FILE,
            json!({"image": img, "path": "/etc/hostname"}),
        );
        assert_refused(
            m::READ_EXT4_FILE,
            &v,
            "image must be under StateDir or /dev/mapper/fc-rootfs-*",
        );
    }
    c.cover(m::READ_EXT4_FILE);

    // Device-mapper: real when the kernel has it; otherwise a clear failure.
    let dm_name = format!("fc-rootfs-bgtest{tag}");
    let cow = state.join("bgtest.cow");
    let v = call(
        m::CREATE_DM_SNAPSHOT,
        json!({"name": dm_name, "base_image": image, "cow_file": cow, "cow_size_bytes": 8u64 << 20}),
    );
    let handles = if has_device_mapper() {
        result(m::CREATE_DM_SNAPSHOT, &v)["handles"].clone()
    } else {
        let (code, msg) = error(m::CREATE_DM_SNAPSHOT, &v);
        assert_eq!(code, -32000, "{msg}");
        assert!(
            msg.contains("dm device") && msg.contains("dmsetup"),
            "{msg}"
        );
        assert!(!cow.exists(), "the COW file the helper made was not undone");
        assert_eq!(loops_backed_under(root), Vec::<String>::new(), "loops left");
        json!({"dm_name": dm_name})
    };
    let v = call(
        m::CREATE_DM_SNAPSHOT,
        json!({"name": "vg0-root", "base_image": image, "cow_file": cow, "cow_size_bytes": 1}),
    );
    assert_refused(m::CREATE_DM_SNAPSHOT, &v, "dm name must be fc-rootfs-<id>");
    c.cover(m::CREATE_DM_SNAPSHOT);

    let dev = format!("/dev/mapper/{dm_name}");
    let v = call(m::FSCK_SNAPSHOT, json!({"device": dev}));
    if has_device_mapper() {
        assert_eq!(result(m::FSCK_SNAPSHOT, &v)["exit_code"], 0);
    } else {
        let (code, msg) = error(m::FSCK_SNAPSHOT, &v);
        assert_eq!(code, -32000, "{msg}");
        assert!(msg.contains(&format!("dm device {dm_name}")), "{msg}");
    }
    let v = call(m::FSCK_SNAPSHOT, json!({"device": "/dev/sda1"}));
    assert_refused(
        m::FSCK_SNAPSHOT,
        &v,
        "device must be /dev/mapper/fc-rootfs-*",
    );
    c.cover(m::FSCK_SNAPSHOT);

    // Cleanup and remove: what is gone (or was never made) is fine.
    let v = call(m::CLEANUP_DM_SNAPSHOT, json!({"handles": handles}));
    result(m::CLEANUP_DM_SNAPSHOT, &v);
    assert_eq!(loops_backed_under(root), Vec::<String>::new(), "loops left");
    let v = call(
        m::CLEANUP_DM_SNAPSHOT,
        json!({"handles": {"dm_name": "vg0-root"}}),
    );
    assert_refused(m::CLEANUP_DM_SNAPSHOT, &v, "dm name must be fc-rootfs-<id>");
    let v = call(
        m::CLEANUP_DM_SNAPSHOT,
        json!({"handles": {"base_loop": "/dev/sda"}}),
    );
    assert_refused(m::CLEANUP_DM_SNAPSHOT, &v, "loop device must be /dev/loopN");
    c.cover(m::CLEANUP_DM_SNAPSHOT);

    let v = call(m::REMOVE_DM_SNAPSHOT, json!({"target": dev}));
    result(m::REMOVE_DM_SNAPSHOT, &v);
    let v = call(
        m::REMOVE_DM_SNAPSHOT,
        json!({"target": "/dev/mapper/vg0-root"}),
    );
    assert_refused(
        m::REMOVE_DM_SNAPSHOT,
        &v,
        "target must be fc-rootfs-* or /dev/mapper/fc-rootfs-*",
    );
    c.cover(m::REMOVE_DM_SNAPSHOT);
}
