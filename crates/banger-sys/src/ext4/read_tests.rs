use super::*;
use crate::ext4::{Ext4Tools, GuestFile};
use crate::runner::{Cmd, HostRunner, RecordingRunner, Runner};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Img {
    dir: tempfile::TempDir,
    path: PathBuf,
}

/// A tree with a big directory, a symlink and nesting.
fn populate(root: &Path) {
    for d in [
        "etc/ssh",
        "etc/systemd/network",
        "root/.ssh",
        "big",
        "empty",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/hostname"), "x\n").unwrap();
    std::fs::write(root.join("etc/ssh/sshd_config"), "y\n").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
    for i in 0..1500 {
        std::fs::write(root.join(format!("big/file-with-a-long-name-{i:05}")), "").unwrap();
    }
    std::fs::create_dir(root.join("big/zz-last-dir")).unwrap();
}

/// `mkfs_prog -d` of the tree over a file of `mib` MiB, with `opts`;
/// then `e2fsck -fyD` (indexes the big directory where dir_index is on).
fn image(mkfs_prog: &str, opts: &[&str], mib: u64) -> Img {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-ext4read-")
        .tempdir()
        .unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    populate(&tree);
    let path = dir.path().join("bgtest.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    HostRunner
        .run(
            &Cmd::new(mkfs_prog)
                .args(["-q", "-F"])
                .args(opts)
                .arg("-d")
                .arg(&tree)
                .arg(&path),
        )
        .unwrap();
    let out = HostRunner
        .output(&Cmd::new("e2fsck").arg("-fyD").arg(&path))
        .unwrap();
    assert!(out.status <= 1, "{out:?}");
    Img { dir, path }
}

fn paths() -> Vec<String> {
    [
        "/etc",
        "/etc/hostname",
        "/etc/ssh",
        "/etc/ssh/sshd_config",
        "/etc/systemd/network",
        "/etc/systemd/network/10-banger.network",
        "/etc/nope",
        "/nope/deeper/still",
        "/root/.ssh",
        "/root/.ssh/authorized_keys",
        "/big",
        "/big/file-with-a-long-name-00000",
        "/big/file-with-a-long-name-01499",
        "/big/zz-last-dir",
        "/big/file-with-a-long-name-01500",
        "/empty",
        "/empty/x",
        "/link",
        "/etc/hostname/x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The in-process answers equal debugfs' `stat` answers, path for path.
fn agrees_with_debugfs(img: &Img) {
    let paths = paths();
    let here = probe_paths_in(&std::fs::File::open(&img.path).unwrap(), &paths).unwrap();
    let tools = Ext4Tools::new(Arc::new(HostRunner));
    let there = tools.probe_all(&ImageRef::path(&img.path), &paths).unwrap();
    for ((p, a), b) in paths.iter().zip(&here).zip(&there) {
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{p}"),
            (Err(a), Err(b)) => assert!(b.starts_with(a.as_str()), "{p}: {a} vs {b}"),
            _ => panic!("{p}: {a:?} vs debugfs {b:?}"),
        }
    }
    assert_eq!(here[0], Ok(Entry::Dir));
    assert_eq!(here[1], Ok(Entry::Other));
    assert_eq!(here[6], Ok(Entry::Missing));
    assert_eq!(here[13], Ok(Entry::Dir));
    assert_eq!(here[17], Ok(Entry::Other), "a symlink is not followed");
}

#[test]
fn answers_equal_debugfs_on_ext4_ext4_1k_and_ext2() {
    agrees_with_debugfs(&image("mkfs.ext4", &[], 16));
    agrees_with_debugfs(&image("mkfs.ext4", &["-b", "1024"], 16));
    agrees_with_debugfs(&image("mkfs.ext4", &["-O", "^64bit,^metadata_csum"], 16));
    // ext2: block maps, no extents; the big directory needs indirect blocks.
    agrees_with_debugfs(&image("mkfs.ext2", &["-b", "1024"], 16));
}

#[test]
fn beneath_a_symlink_is_never_a_plain_answer() {
    let img = image("mkfs.ext4", &[], 16);
    let got = probe_paths_in(
        &std::fs::File::open(&img.path).unwrap(),
        &["/link/hostname".to_string()],
    )
    .unwrap();
    assert!(got[0].is_err(), "{got:?}");
}

#[test]
fn what_it_does_not_understand_is_unsupported_and_write_asks_debugfs() {
    let img = image("mkfs.ext4", &[], 16);
    // A journal that needs replaying: the on-disk tree may be stale.
    HostRunner
        .run(
            &Cmd::new("debugfs")
                .args(["-w", "-R", "feature needs_recovery"])
                .arg(&img.path),
        )
        .unwrap();
    let f = std::fs::File::open(&img.path).unwrap();
    assert!(probe_paths_in(&f, &paths()).is_err());
    let r = Arc::new(RecordingRunner::forwarding_to_host());
    let t = Ext4Tools::new(r.clone());
    let file = GuestFile {
        path: "/etc/ssh/new/key".into(),
        content: b"k\n".to_vec(),
        mode: 0o600,
        uid: 0,
        gid: 0,
    };
    t.write_files(&img.path, &[file]).unwrap();
    assert_eq!(r.calls().len(), 2, "a debugfs probe run, then the write");
    // Not an ext4 image at all; unreadable short files.
    let junk = img.dir.path().join("junk");
    std::fs::write(&junk, vec![0u8; 4096]).unwrap();
    let junk = std::fs::File::open(&junk).unwrap();
    assert!(probe_paths_in(&junk, &paths()).is_err());
    assert!(probe_paths_in(&b"short"[..], &paths()).is_err());
    // A path the tool would open with other privileges is not opened here.
    let as_other = ImageRef {
        name: img.path.clone(),
        privilege: Privilege::RootNoCaps,
        pass_fd: None,
    };
    assert!(probe_image(&as_other, &paths()).is_err());
}

#[test]
fn inline_data_directories_are_unsupported() {
    let img = image("mkfs.ext4", &["-O", "inline_data"], 16);
    let f = std::fs::File::open(&img.path).unwrap();
    // /empty is stored inline: no answer here, whatever else is.
    assert!(probe_paths_in(&f, &["/empty/x".to_string()]).is_err());
}

fn small_image() -> Vec<u8> {
    let img = image("mkfs.ext4", &["-b", "1024"], 8);
    std::fs::read(&img.path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A guest-written image can be anything: corrupted metadata gives an
    /// answer or Unsupported, never a panic or a hang.
    #[test]
    fn corrupted_metadata_never_panics(
        edits in proptest::collection::vec((0usize..(512 << 10), any::<u8>()), 1..64)
    ) {
        thread_local!(static BASE: Vec<u8> = small_image());
        let mut bytes = BASE.with(|b| b.clone());
        for (at, v) in edits {
            bytes[at] = v;
        }
        let _ = probe_paths_in(&bytes[..], &paths());
    }
}

#[test]
fn the_tools_privileges_decide_what_is_read_here() {
    let img = image("mkfs.ext4", &[], 16);
    let f = std::fs::File::open(&img.path).unwrap();
    let set = |mode: u32| {
        std::fs::set_permissions(
            &img.path,
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
        std::fs::metadata(&img.path).unwrap()
    };
    let me = rustix::process::geteuid().as_raw();
    let other = Privilege::User {
        uid: me.wrapping_add(4242),
        gid: 4243,
    };
    let owner = Privilege::User { uid: me, gid: 4243 };
    assert!(may_read(&set(0o600), owner));
    assert!(!may_read(&set(0o600), other));
    assert!(may_read(&set(0o604), other));
    assert!(!may_read(&set(0o200), owner));
    assert!(may_read(&set(0o000), Privilege::Inherit));
    assert_eq!(may_read(&set(0o600), Privilege::RootNoCaps), me == 0);
    // Through the fd: refused when the tool's uid could not read it,
    // answered when it could.
    set(0o600);
    assert!(probe_image(&ImageRef::fd(&f, other), &paths()).is_err());
    assert!(probe_image(&ImageRef::fd(&f, owner), &paths()).is_ok());
    // An O_PATH fd (as a dm node's is) is reopened to be read.
    let o_path = rustix::fs::open(
        &img.path,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let got = probe_image(&ImageRef::fd(&o_path, owner), &paths()).unwrap();
    assert_eq!(got[0], Ok(Entry::Dir));
}
