use super::*;
use proptest::prelude::*;

#[test]
fn dm_names() {
    for ok in [
        "fc-rootfs-a",
        "fc-rootfs-abc123",
        "fc-rootfs-vm_1-x",
        &format!("fc-rootfs-{}", "a".repeat(111)),
    ] {
        assert_eq!(dm_name(ok), Ok(ok), "{ok}");
    }
    for bad in [
        "",
        "fc-rootfs-",
        "fc-rootfs",
        "rootfs-a",
        "vg0-root",
        "luks-1234",
        "fc-rootfs-a/b",
        "fc-rootfs-..",
        "fc-rootfs-a b",
        "fc-rootfs-a\n",
        "fc-rootfs-a\0",
        "fc-rootfs-é",
        "fc-rootfs-a.b",
        "FC-ROOTFS-a",
        &format!("fc-rootfs-{}", "a".repeat(112)),
    ] {
        let e = dm_name(bad).unwrap_err();
        assert!(e.0.contains("fc-rootfs-<id>"), "{bad:?}: {e}");
    }
}

#[test]
fn dm_devices_and_remove_targets() {
    assert_eq!(dm_device("/dev/mapper/fc-rootfs-a"), Ok("fc-rootfs-a"));
    for bad in [
        "/dev/mapper/vg0-root",
        "/dev/sda1",
        "/dev/mapper/fc-rootfs-",
        "/dev/mapper/../sda",
        "/dev/mapper/fc-rootfs-a/../../sda",
        "/dev/mapper//fc-rootfs-a",
        "dev/mapper/fc-rootfs-a",
        "/dev/dm-0",
        "fc-rootfs-a",
    ] {
        assert_eq!(
            dm_device(bad),
            Err(Refused::new("device must be /dev/mapper/fc-rootfs-*")),
            "{bad}"
        );
    }
    assert_eq!(
        fsck_device("/dev/sda1").unwrap_err().0,
        "device must be /dev/mapper/fc-rootfs-*"
    );
    assert_eq!(remove_target("fc-rootfs-x1"), Ok("fc-rootfs-x1"));
    assert_eq!(
        remove_target("/dev/mapper/fc-rootfs-x1"),
        Ok("fc-rootfs-x1")
    );
    for bad in [
        "vg0-root",
        "/dev/mapper/vg0-root",
        "/dev/loop0",
        "",
        "fc-rootfs-a/../b",
        "cryptroot",
    ] {
        let e = remove_target(bad).unwrap_err();
        assert_eq!(
            e.0, "target must be fc-rootfs-* or /dev/mapper/fc-rootfs-*",
            "{bad}"
        );
    }
}

#[test]
fn loop_devices() {
    for ok in [
        "/dev/loop0",
        "/dev/loop7",
        "/dev/loop12345",
        "/dev/loop4294967295",
    ] {
        assert_eq!(loop_device(ok), Ok(ok));
    }
    for bad in [
        "/dev/loop",
        "/dev/loop01",
        "/dev/loop-1",
        "/dev/loop1p1",
        "/dev/loop4294967296",
        "/dev/loop-control",
        "/dev/sda",
        "loop0",
        "/dev/loop0/",
        "/dev/loop 0",
        "/dev/../dev/loop0",
    ] {
        assert_eq!(
            loop_device(bad).unwrap_err().0,
            "loop device must be /dev/loopN",
            "{bad}"
        );
    }
}

#[test]
fn handles_every_non_empty_field_checked() {
    let full = DmHandles {
        dm_name: "fc-rootfs-a".into(),
        dm_device: "/dev/mapper/fc-rootfs-a".into(),
        base_loop: "/dev/loop3".into(),
        cow_loop: "/dev/loop4".into(),
    };
    assert_eq!(handles(&full), Ok(()));
    assert_eq!(handles(&DmHandles::default()), Ok(()));
    let only_loop = DmHandles {
        cow_loop: "/dev/loop9".into(),
        ..Default::default()
    };
    assert_eq!(handles(&only_loop), Ok(()));
    let bad = [
        DmHandles {
            dm_name: "vg0-root".into(),
            ..full.clone()
        },
        DmHandles {
            dm_device: "/dev/mapper/vg0-root".into(),
            ..full.clone()
        },
        DmHandles {
            dm_device: "/dev/mapper/fc-rootfs-b".into(),
            ..full.clone()
        },
        DmHandles {
            base_loop: "/dev/sda".into(),
            ..full.clone()
        },
        DmHandles {
            cow_loop: "/dev/nvme0n1".into(),
            ..full.clone()
        },
        DmHandles {
            cow_loop: "/dev/loop3".into(),
            ..full.clone()
        },
        DmHandles {
            dm_device: "/dev/dm-0".into(),
            ..Default::default()
        },
    ];
    for h in bad {
        assert!(handles(&h).is_err(), "{h:?}");
    }
}

#[test]
fn guest_paths() {
    for ok in [
        "/etc/hostname",
        "/root/.ssh/authorized_keys",
        "/etc/ssh/ssh_host_ed25519_key.pub",
        "/a/b@c+d-e_f",
        "/.hidden",
    ] {
        assert_eq!(guest_path(ok), Ok(ok));
    }
    let long = format!("/{}", "a".repeat(1024));
    let long_comp = format!("/{}", "a".repeat(256));
    for bad in [
        "",
        "/",
        "etc/hostname",
        "/etc/../root",
        "/..",
        "/./etc",
        "/etc/",
        "//etc",
        "/etc//x",
        "/etc/host name",
        "/etc/a\nrm /x",
        "/etc/\"x",
        "/etc/'x",
        "/etc/<2>",
        "/etc/x;y",
        "/etc/$x",
        "/etc/\\x",
        "/etc/é",
        "/etc/\0",
        "/etc/a\tb",
        "/etc/*",
        &long,
        &long_comp,
    ] {
        assert!(
            guest_path(bad)
                .unwrap_err()
                .0
                .starts_with("guest path must be absolute"),
            "{bad:?}"
        );
    }
}

#[test]
fn file_modes() {
    assert_eq!(file_mode(0o644), Ok(0o644));
    assert_eq!(file_mode(0o7777), Ok(0o7777));
    assert!(file_mode(0o10000).is_err());
    assert!(file_mode(0o100644).is_err());
    assert!(file_mode(u32::MAX).is_err());
}

#[test]
fn ext4_images_under_state_dir_only() {
    let tmp = tempfile::Builder::new()
        .prefix("bgtest-")
        .tempdir()
        .unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(state.join("images")).unwrap();
    std::fs::write(state.join("images/base.ext4"), b"x").unwrap();
    std::fs::write(tmp.path().join("outside.ext4"), b"x").unwrap();
    std::os::unix::fs::symlink(
        tmp.path().join("outside.ext4"),
        state.join("images/evil.ext4"),
    )
    .unwrap();
    std::os::unix::fs::symlink("base.ext4", state.join("images/good-link.ext4")).unwrap();
    std::os::unix::fs::symlink("/dev/sda", state.join("images/dev.ext4")).unwrap();
    let s = |p: &str| state.join(p).to_str().unwrap().to_string();

    assert_eq!(
        ext4_image(&s("images/base.ext4"), &state),
        Ok(Ext4Target::File("images/base.ext4".into()))
    );
    assert_eq!(
        ext4_image(&s("images/../images/base.ext4"), &state),
        Ok(Ext4Target::File("images/base.ext4".into()))
    );
    assert_eq!(
        ext4_image(&s("images/good-link.ext4"), &state),
        Ok(Ext4Target::File("images/base.ext4".into()))
    );
    assert_eq!(
        ext4_image("/dev/mapper/fc-rootfs-a", &state),
        Ok(Ext4Target::Dm("fc-rootfs-a".into()))
    );
    let rule = "image must be under StateDir or /dev/mapper/fc-rootfs-*";
    for bad in [
        s("images/evil.ext4"),
        s("images/dev.ext4"),
        s("../outside.ext4"),
        s("images/missing.ext4"),
        state.to_str().unwrap().to_string(),
        "/dev/sda1".into(),
        "/dev/mapper/vg0-root".into(),
        "/etc/shadow".into(),
        "images/base.ext4".into(),
    ] {
        assert_eq!(ext4_image(&bad, &state).unwrap_err().0, rule, "{bad}");
    }
    // A StateDir that is itself reached through a symlink still works.
    let link = tmp.path().join("state-link");
    std::os::unix::fs::symlink(&state, &link).unwrap();
    assert_eq!(
        ext4_image(&s("images/base.ext4"), &link),
        Ok(Ext4Target::File("images/base.ext4".into()))
    );
}

fn assert_kernel_safe(name: &str) {
    assert!(!name.contains('/'), "{name:?}");
    assert!(!name.contains(".."), "{name:?}");
    assert!(!name.contains('\0'), "{name:?}");
    assert!(!name.chars().any(char::is_whitespace), "{name:?}");
    assert!(name.is_ascii(), "{name:?}");
    assert!(name.len() <= 127, "{name:?}");
    assert!(format!("BANGER-{name}").len() <= 128, "{name:?}");
}

proptest! {
    #[test]
    fn accepted_dm_names_are_kernel_safe(s in "\\PC{0,140}") {
        if let Ok(n) = dm_name(&s) { assert_kernel_safe(n); }
        let dev = format!("/dev/mapper/{s}");
        if let Ok(n) = dm_device(&dev) { assert_kernel_safe(n); }
        if let Ok(n) = remove_target(&s) { assert_kernel_safe(n); }
    }

    #[test]
    fn accepted_dm_names_near_the_shape(id in "[A-Za-z0-9_./ \\-\\x00é\\n]{0,130}") {
        let s = format!("fc-rootfs-{id}");
        if let Ok(n) = dm_name(&s) { assert_kernel_safe(n); }
        if let Ok(n) = remove_target(&format!("/dev/mapper/{s}")) { assert_kernel_safe(n); }
    }

    #[test]
    fn accepted_guest_paths_are_debugfs_safe(s in "/[A-Za-z0-9._/@+\\- \\n\"'<>;\\x00é]{0,80}") {
        if let Ok(p) = guest_path(&s) {
            prop_assert!(!p.split('/').any(|c| c == ".."));
            prop_assert!(!p.contains('\0') && p.is_ascii());
            prop_assert!(!p.chars().any(|c| c.is_whitespace() || c == '"' || c == '\''));
            prop_assert!(p.len() <= GUEST_PATH_MAX);
        }
    }

    #[test]
    fn accepted_loops_are_dev_loop_n(s in "/dev/loop[0-9a-z/.\\-]{0,12}") {
        if let Ok(d) = loop_device(&s) {
            prop_assert!(d["/dev/loop".len()..].parse::<u32>().is_ok());
            prop_assert!(!d["/dev/".len()..].contains('/'));
        }
    }
}

#[test]
fn new_state_files() {
    let tmp = tempfile::Builder::new()
        .prefix("bgtest-")
        .tempdir()
        .unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(state.join("vms/a")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), state.join("vms/out")).unwrap();
    let s = |p: &str| state.join(p).to_str().unwrap().to_string();
    assert_eq!(
        new_state_file(&s("vms/a/cow"), &state),
        Ok(PathBuf::from("vms/a/cow"))
    );
    assert_eq!(
        new_state_file(&s("vms/x/../a/cow"), &state).ok(),
        None,
        "missing dir x"
    );
    for bad in [
        s("vms/out/cow"),
        s("../cow"),
        s("vms/a/"),
        s("vms/a/.."),
        "/etc/cow".into(),
        "vms/a/cow".into(),
    ] {
        assert_eq!(
            new_state_file(&bad, &state).unwrap_err().0,
            "path must be a file under StateDir",
            "{bad}"
        );
    }
}
