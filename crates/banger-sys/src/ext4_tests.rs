use super::*;
use crate::runner::{HostRunner, Runner};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

struct Img {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn mkfs() -> Img {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("bgtest.ext4");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    HostRunner
        .run(&Cmd::new("mkfs.ext4").args(["-q", "-F"]).arg(&path))
        .unwrap();
    Img { _dir: dir, path }
}

fn tools() -> Ext4Tools {
    Ext4Tools::new(Arc::new(HostRunner))
}

fn stat(img: &Path, p: &str) -> String {
    let out = HostRunner
        .run(
            &Cmd::new("debugfs")
                .arg("-R")
                .arg(format!("stat {p}"))
                .arg(img),
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn file(path: &str, content: &[u8], mode: u32) -> GuestFile {
    GuestFile {
        path: path.into(),
        content: content.to_vec(),
        mode,
        uid: 1000,
        gid: 1001,
    }
}

#[test]
fn guest_path_rule() {
    for ok in [
        "/etc/hostname",
        "/root/.ssh/authorized_keys",
        "/a@b+c-d_e.f",
    ] {
        check_guest_path(ok).unwrap();
    }
    for bad in [
        "",
        "/",
        "etc",
        "/a/../b",
        "/a/./b",
        "/a//b",
        "/a/",
        "/a b",
        "/a\nrm /x",
        "/a\"b",
        "/<2>",
        "/é",
    ] {
        assert!(check_guest_path(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn command_file_never_contains_content() {
    let dir = Path::new("/tmp/banger-debugfs-abc");
    let files = [file(
        "/etc/a",
        b"x\nrm /etc/passwd\nwrite /etc/shadow /y\n",
        0o644,
    )];
    let text = Ext4Tools::command_file(dir, &["/etc".to_string()], &files).unwrap();
    assert_eq!(
        text,
        "mkdir /etc\nrm /etc/a\nwrite /tmp/banger-debugfs-abc/0 /etc/a\nsif /etc/a mode 0100644\nsif /etc/a uid 1000\nsif /etc/a gid 1001\n"
    );
    assert!(!text.contains("passwd"));
    let bad = [file("/etc/a\nrm /etc/passwd", b"", 0o644)];
    assert!(matches!(
        Ext4Tools::command_file(dir, &[], &bad),
        Err(Ext4Error::UnsafeGuestPath(_))
    ));
    let bad = [file("/etc/a", b"", 0o10644)];
    assert!(matches!(
        Ext4Tools::command_file(dir, &[], &bad),
        Err(Ext4Error::BadMode(_))
    ));
    assert!(matches!(
        Ext4Tools::command_file(Path::new("/tmp/a b"), &[], &[file("/x", b"", 0o644)]),
        Err(Ext4Error::UnsafeHostPath(_))
    ));
}

#[test]
fn write_then_read_back_with_owner_and_mode() {
    let img = mkfs();
    let t = tools();
    let hostile =
        b"line1\nrm /etc/keep\nwrite /etc/passwd /etc/keep\n\"quoted\" 'x' $(id)\n\0binary\xff"
            .to_vec();
    t.write_files(&img.path, &[file("/etc/keep", b"keep me\n", 0o644)])
        .unwrap();
    t.write_files(
        &img.path,
        &[
            file("/etc/hostname", b"vm1\n", 0o644),
            file("/root/.ssh/authorized_keys", &hostile, 0o600),
            file("/usr/local/bin/tool", b"#!/bin/sh\n", 0o4755),
        ],
    )
    .unwrap();
    assert_eq!(
        t.read_file(&img.path, "/etc/hostname", 1 << 20).unwrap(),
        b"vm1\n"
    );
    assert_eq!(
        t.read_file(&img.path, "/root/.ssh/authorized_keys", 1 << 20)
            .unwrap(),
        hostile
    );
    // The content's "rm /etc/keep" line was data, not a command.
    assert_eq!(
        t.read_file(&img.path, "/etc/keep", 1 << 20).unwrap(),
        b"keep me\n"
    );
    let s = stat(&img.path, "/root/.ssh/authorized_keys");
    assert!(
        s.contains("Type: regular") && s.contains("Mode:  0600"),
        "{s}"
    );
    assert!(
        s.contains("User:  1000") && s.contains("Group:  1001"),
        "{s}"
    );
    let s = stat(&img.path, "/usr/local/bin/tool");
    assert!(s.contains("Mode:  04755"), "{s}");
    // Overwrite replaces.
    t.write_files(&img.path, &[file("/etc/hostname", b"vm2\n", 0o640)])
        .unwrap();
    assert_eq!(
        t.read_file(&img.path, "/etc/hostname", 1 << 20).unwrap(),
        b"vm2\n"
    );
    // fsck finds the image clean.
    assert_eq!(t.fsck(&img.path).unwrap(), 0);
}

#[test]
fn refused_paths_never_reach_debugfs() {
    let img = mkfs();
    let r = Arc::new(crate::runner::RecordingRunner::new());
    let t = Ext4Tools::new(r.clone());
    for bad in [
        "/etc/x\nrm /etc/keep",
        "/etc/x rm",
        "/../x",
        "etc/x",
        "/etc/\"x\"",
    ] {
        assert!(t.write_files(&img.path, &[file(bad, b"", 0o644)]).is_err());
        assert!(t.read_file(&img.path, bad, 10).is_err());
    }
    assert!(r.calls().is_empty(), "{:?}", r.calls());
}

#[test]
fn failures_are_reported() {
    let img = mkfs();
    let t = tools();
    let e = t.read_file(&img.path, "/nope", 100).unwrap_err();
    assert!(matches!(e, Ext4Error::DebugfsReported(..)), "{e}");
    t.write_files(&img.path, &[file("/d/inner", b"x", 0o644)])
        .unwrap();
    // A directory cannot be replaced by a file.
    let e = t
        .write_files(&img.path, &[file("/d", b"x", 0o644)])
        .unwrap_err();
    assert!(
        matches!(e, Ext4Error::IsADirectory(ref p) if p == "/d"),
        "{e}"
    );
    let e = t
        .write_files(&img.path, &[file("/d/inner/x", b"x", 0o644)])
        .unwrap_err();
    assert!(
        matches!(e, Ext4Error::NotADirectory(ref p) if p == "/d/inner"),
        "{e}"
    );
    assert_eq!(t.fsck(&img.path).unwrap(), 0);
    t.write_files(&img.path, &[file("/big", &[1u8; 5000], 0o644)])
        .unwrap();
    assert!(matches!(
        t.read_file(&img.path, "/big", 4096),
        Err(Ext4Error::TooLarge(..))
    ));
}

#[test]
fn fsck_reports_exit_code_on_a_non_filesystem() {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-")
        .tempdir()
        .unwrap();
    let p = dir.path().join("junk");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let code = tools().fsck(&p).unwrap();
    assert!(code >= 4, "{code}");
}

#[test]
fn root_debugfs_and_e2fsck_work_on_a_root_device_node_as_uid_0_without_caps() {
    if !banger_testkit::require_root(
        "root_debugfs_and_e2fsck_work_on_a_root_device_node_as_uid_0_without_caps",
    ) {
        return;
    }
    use crate::loopdev::{KernelLoops, LoopOps};
    let img = mkfs();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img.path)
        .unwrap();
    let loops = KernelLoops::new("/sys");
    let dev = loops.attach(&f, &img.path, false).unwrap();
    struct Detach<'a>(&'a KernelLoops, PathBuf);
    impl Drop for Detach<'_> {
        fn drop(&mut self) {
            let _ = self.0.detach(&self.1);
        }
    }
    let _d = Detach(&loops, dev.clone());
    // A root-owned block device node, as /dev/mapper/fc-rootfs-* is.
    let image = ImageRef {
        name: dev.clone(),
        privilege: Privilege::RootNoCaps,
        pass_fd: None,
    };
    let t = tools();
    t.write(&image, &[file("/etc/hostname", b"vm\n", 0o644)])
        .unwrap();
    assert_eq!(t.read(&image, "/etc/hostname", 100).unwrap(), b"vm\n");
    assert_eq!(t.fsck_ref(&image).unwrap(), 0);
}

#[test]
fn root_an_owner_debugfs_cannot_open_what_the_owner_could_not() {
    if !banger_testkit::require_root("root_an_owner_debugfs_cannot_open_what_the_owner_could_not") {
        return;
    }
    let img = mkfs();
    // root's image, 0600: the helper could open it, the owner could not.
    std::fs::set_permissions(&img.path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let f = std::fs::File::open(&img.path).unwrap();
    let as_owner = ImageRef::fd(
        &f,
        Privilege::User {
            uid: 4242,
            gid: 4243,
        },
    );
    let e = tools().read(&as_owner, "/etc/hostname", 100).unwrap_err();
    let chain = crate::service::render_chain(&e);
    assert!(chain.contains("Permission denied"), "{chain}");
    // Handed to that uid, the same fd works.
    std::os::unix::fs::chown(&img.path, Some(4242), Some(4243)).unwrap();
    let e = tools().read(&as_owner, "/etc/hostname", 100).unwrap_err();
    assert!(
        matches!(e, Ext4Error::DebugfsReported(..)),
        "opened, then the file is missing: {e}"
    );
}

/// The nine files the daemon's customisation writes (crates/bangerd/src/vmdisk/custom.rs).
pub(crate) fn nine_files() -> Vec<GuestFile> {
    [
        ("/etc/hostname", 0o644),
        ("/etc/hosts", 0o644),
        ("/etc/systemd/network/10-banger.network", 0o644),
        ("/etc/network/interfaces", 0o644),
        ("/etc/resolv.conf", 0o644),
        ("/etc/machine-id", 0o444),
        ("/root/.ssh/authorized_keys", 0o600),
        ("/etc/ssh/ssh_host_ed25519_key", 0o600),
        ("/etc/ssh/ssh_host_ed25519_key.pub", 0o644),
    ]
    .iter()
    .map(|(p, m)| file(p, format!("content of {p}\n").as_bytes(), *m))
    .collect()
}

fn stdin_text(c: &Cmd) -> String {
    String::from_utf8(c.stdin.clone().unwrap_or_default()).unwrap()
}

#[test]
fn a_nine_file_customisation_is_one_debugfs_run() {
    let img = mkfs();
    let r = Arc::new(crate::runner::RecordingRunner::forwarding_to_host());
    let t = Ext4Tools::new(r.clone());
    let files = nine_files();
    t.write_files(&img.path, &files).unwrap();
    let cmds = r.cmds();
    let name = img.path.to_str().unwrap();
    // Parents and targets are looked up in process; the one run makes the
    // 7 missing parents (a fresh mkfs has none), writes and reads back.
    assert_eq!(r.calls(), vec![vec!["debugfs", "-w", "-f", "-", name]]);
    let writes = stdin_text(&cmds[0]);
    let mkdirs: Vec<&str> = writes.lines().filter(|l| l.starts_with("mkdir ")).collect();
    assert_eq!(
        mkdirs,
        [
            "mkdir /etc",
            "mkdir /etc/systemd",
            "mkdir /etc/systemd/network",
            "mkdir /etc/network",
            "mkdir /root",
            "mkdir /root/.ssh",
            "mkdir /etc/ssh",
        ]
    );
    assert_eq!(writes.matches("\ncat ").count(), 9);
    for f in &files {
        assert_eq!(
            tools().read_file(&img.path, &f.path, 1 << 20).unwrap(),
            f.content
        );
    }
    let s = stat(&img.path, "/etc/machine-id");
    assert!(
        s.contains("Mode:  0444") && s.contains("User:  1000"),
        "{s}"
    );
    // Again on the customised image: still one run, nothing to create.
    let r = Arc::new(crate::runner::RecordingRunner::forwarding_to_host());
    let t = Ext4Tools::new(r.clone());
    t.write_files(&img.path, &files).unwrap();
    assert_eq!(r.calls().len(), 1);
    assert!(!stdin_text(&r.cmds()[0]).contains("mkdir"));
    assert_eq!(tools().fsck(&img.path).unwrap(), 0);
}

#[test]
fn probe_answers_cannot_be_forged_by_text_in_the_image() {
    let mark = "# banger-probe-00ff";
    let paths = [
        "/etc".to_string(),
        "/etc/x".to_string(),
        "/nope".to_string(),
    ];
    // An xattr-like value in /etc's stat output imitates the next answers
    // with a marker the image cannot know.
    let stdout = format!(
        "{mark} 0\ndebugfs: stat /etc\nInode: 12   Type: regular    Mode: 0644\n\
         # banger-probe-1234 1\ndebugfs: stat /etc/x\nInode: 13   Type: directory\n\
         {mark} 1\ndebugfs: stat /etc/x\n{mark} 2\ndebugfs: stat /nope\n"
    );
    let stderr = "debugfs 1.47.0 (5-Feb-2023)\n/etc/x: Ext2 inode is not a directory \n\
                  /nope: File not found by ext2_lookup \n";
    let got = parse_probes(stdout.as_bytes(), stderr.as_bytes(), mark, &paths);
    assert_eq!(
        got,
        vec![
            Ok(Entry::Other),
            Err("/etc/x: Ext2 inode is not a directory".to_string()),
            Ok(Entry::Missing),
        ]
    );
    // No section at all (debugfs died early): no answer, never "missing".
    let got = parse_probes(
        b"",
        b"/etc: File not found by ext2_lookup \n",
        mark,
        &paths[..1],
    );
    assert_eq!(got, vec![Err("no answer for stat /etc".to_string())]);
}

#[test]
fn read_back_must_match_byte_for_byte() {
    let files = [file("/a", b"one\n", 0o644), file("/b", b"two", 0o644)];
    let good = b"debugfs: write /tmp/x/0 /a\nAllocated inode: 12\ndebugfs: cat /a\none\ndebugfs: cat /b\ntwo";
    verify_read_back(good, &files).unwrap();
    let bad = b"debugfs: cat /a\none\ndebugfs: cat /b\ntwX";
    assert!(matches!(verify_read_back(bad, &files), Err(Ext4Error::Verify(p)) if p == "/b"));
    let short = b"debugfs: cat /b\ntwo";
    assert!(matches!(verify_read_back(short, &files), Err(Ext4Error::Verify(p)) if p == "/a"));
    let shifted = b"debugfs: cat /a\none\ndebugfs: cat /b\ntwo\n";
    assert!(verify_read_back(shifted, &files).is_err());
}

#[test]
fn a_target_the_same_call_makes_a_directory_is_refused_before_any_write() {
    let img = mkfs();
    let r = Arc::new(crate::runner::RecordingRunner::forwarding_to_host());
    let t = Ext4Tools::new(r.clone());
    let e = t
        .write_files(
            &img.path,
            &[file("/a/b", b"x", 0o644), file("/a", b"y", 0o644)],
        )
        .unwrap_err();
    assert!(
        matches!(e, Ext4Error::IsADirectory(ref p) if p == "/a"),
        "{e}"
    );
    assert!(r.calls().is_empty(), "refused by the in-process lookup");
    assert!(matches!(tools().probe(&img.path, "/a"), Ok(Entry::Missing)));
}
