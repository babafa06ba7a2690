use super::*;
use std::os::unix::fs::PermissionsExt;

const RT: &str = "/run/banger";

/// A fixture `<proc>/<pid>` for a process running `exe` as `uid`/`euid`
/// with `argv`.
fn proc_pid(proc_root: &Path, pid: i32, uid: u32, euid: u32, exe: &Path, argv: &[&str]) {
    let d = proc_root.join(pid.to_string());
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("status"),
        format!("Name:\tqemu\nUid:\t{uid}\t{euid}\t{euid}\t{euid}\nGid:\t0\t0\t0\t0\nCapEff:\t0000000000000000\n"),
    )
    .unwrap();
    let _ = std::fs::remove_file(d.join("exe"));
    std::os::unix::fs::symlink(exe, d.join("exe")).unwrap();
    let mut raw = argv.join("\0").into_bytes();
    raw.push(0);
    std::fs::write(d.join("cmdline"), raw).unwrap();
}

fn binary(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, "#!/bin/false\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn qmp(id: &str) -> String {
    format!("unix:{RT}/vms/{id}/qmp.sock,server=on,wait=off")
}

#[test]
fn limits_and_their_gates() {
    let l = limits(512, 2).unwrap();
    assert_eq!(l.memory_bytes, (512 + QEMU_OVERHEAD_MIB) << 20);
    assert_eq!(l.pids, QEMU_PIDS_BASE + 4);
    assert!(limits(0, 1)
        .unwrap_err()
        .0
        .starts_with("memory_mib must be"));
    assert!(limits(MAX_MEMORY_MIB + 1, 1)
        .unwrap_err()
        .0
        .starts_with("memory_mib must be"));
    assert!(limits(1, 0).unwrap_err().0.starts_with("vcpus must be"));
    assert!(limits(1, 33).unwrap_err().0.starts_with("vcpus must be"));
    assert_eq!(
        limit_files(CgroupVersion::V1, l),
        [
            (
                Some("memory"),
                "memory.limit_in_bytes",
                l.memory_bytes.to_string()
            ),
            (Some("pids"), "pids.max", "132".to_string())
        ]
    );
    assert_eq!(limit_files(CgroupVersion::V2, l)[0].1, "memory.max");
}

#[test]
fn cgroup_dirs_per_version() {
    let s = Path::new("/sys");
    assert_eq!(
        cgroup_dirs(s, CgroupVersion::V1, "ab12"),
        [
            "/sys/fs/cgroup/memory/banger-ab12",
            "/sys/fs/cgroup/pids/banger-ab12"
        ]
        .map(PathBuf::from)
    );
    assert_eq!(
        cgroup_dirs(s, CgroupVersion::V2, "ab12"),
        [PathBuf::from("/sys/fs/cgroup/banger-ab12")]
    );
}

#[test]
fn only_the_owners_qemu_of_this_vm_passes() {
    let t = tempfile::Builder::new()
        .prefix("bgtest-qemugate-")
        .tempdir()
        .unwrap();
    let proc_root = t.path().join("proc");
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let qemu = binary(&bin, "qemu-system-x86_64", 0o755);
    let rt = Path::new(RT);
    let root = rustix::process::geteuid().is_root();
    let owner = 1000;
    let check = |pid| qemu_process(&proc_root, pid, owner, rt, "vm1");

    // The daemon's own QEMU (only when the fixture binary is root's).
    proc_pid(
        &proc_root,
        10,
        owner,
        owner,
        &qemu,
        &["qemu", "-qmp", &qmp("vm1")],
    );
    assert_eq!(check(10).is_ok(), root, "{:?}", check(10));

    let refused: Vec<(i32, &str)> = vec![
        (11, "root's QEMU"),
        (12, "setuid: effective uid differs"),
        (13, "another VM's QEMU"),
        (14, "the VM's socket outside -qmp"),
        (15, "not a QEMU binary"),
        (16, "a QEMU binary others may write"),
        (17, "a prefix of the VM id"),
        (18, "gone"),
    ];
    proc_pid(&proc_root, 11, 0, 0, &qemu, &["qemu", "-qmp", &qmp("vm1")]);
    proc_pid(
        &proc_root,
        12,
        owner,
        0,
        &qemu,
        &["qemu", "-qmp", &qmp("vm1")],
    );
    proc_pid(
        &proc_root,
        13,
        owner,
        owner,
        &qemu,
        &["qemu", "-qmp", &qmp("vm2")],
    );
    proc_pid(
        &proc_root,
        14,
        owner,
        owner,
        &qemu,
        &["qemu", "-append", &qmp("vm1")],
    );
    let sleep = binary(&bin, "sleep", 0o755);
    proc_pid(
        &proc_root,
        15,
        owner,
        owner,
        &sleep,
        &["qemu-system-x86_64", "-qmp", &qmp("vm1")],
    );
    let writable = binary(&bin, "qemu-system-aarch64", 0o775);
    proc_pid(
        &proc_root,
        16,
        owner,
        owner,
        &writable,
        &["qemu", "-qmp", &qmp("vm1")],
    );
    proc_pid(
        &proc_root,
        17,
        owner,
        owner,
        &qemu,
        &["qemu", "-qmp", &qmp("vm10")],
    );
    for (pid, why) in refused {
        assert_eq!(check(pid), Err(Refused::new(QEMU_RULE)), "{why}");
    }
    if root {
        // A QEMU binary the owner owns (a copy they could have changed).
        let theirs = binary(&bin, "qemu-system-riscv64", 0o755);
        std::os::unix::fs::chown(&theirs, Some(owner), None).unwrap();
        proc_pid(
            &proc_root,
            19,
            owner,
            owner,
            &theirs,
            &["qemu", "-qmp", &qmp("vm1")],
        );
        assert!(check(19).is_err(), "an owner-owned binary");
        // Root's binary under a second name (a hard link).
        std::fs::hard_link(&qemu, bin.join("qemu-system-arm")).unwrap();
        proc_pid(
            &proc_root,
            20,
            owner,
            owner,
            &bin.join("qemu-system-arm"),
            &["qemu", "-qmp", &qmp("vm1")],
        );
        assert!(check(20).is_err(), "a hard link");
        std::fs::remove_file(bin.join("qemu-system-arm")).unwrap();
        // Root's binary in a directory others may write (a name they chose).
        let open_dir = t.path().join("open");
        std::fs::create_dir_all(&open_dir).unwrap();
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let q2 = binary(&open_dir, "qemu-system-x86_64", 0o755);
        proc_pid(
            &proc_root,
            21,
            owner,
            owner,
            &q2,
            &["qemu", "-qmp", &qmp("vm1")],
        );
        assert!(check(21).is_err(), "a directory others may write");
        assert!(check(10).is_ok(), "{:?}", check(10));
    }
}
