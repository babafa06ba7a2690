//! Owner requests: socket hand-over, Firecracker launch (plain and jailed),
//! signals and kills (never a decoy), and jail chroot teardown over real
//! nested mounts.

use crate::guards::{assert_refused, cmdline, proc_state, DmNode, KillPid};
use crate::harness::result;
use crate::Ctx;
use banger_proto::helper as m;
use banger_testkit::wait_until;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// What the third-uid replay checks was not redone.
pub struct Done {
    pub pid: i64,
    pub log1: PathBuf,
    pub log1_text: String,
    pub chroot: PathBuf,
}

pub fn files_and_processes(c: &Ctx) -> Done {
    let call = |method: &'static str, params: Value| c.call(method, params);
    let (helper, owner, root) = (c.helper, c.owner, &c.root);
    let (run, state, jail) = (&c.cfg.runtime_dir, &c.cfg.state_dir, &c.cfg.jailer_base);
    // Socket hand-over: a real socket made by root under RuntimeDir.
    let fc_sock = run.join("bgtest-fc.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&fc_sock).unwrap();
    std::fs::set_permissions(&fc_sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let v = call(m::ENSURE_SOCKET_ACCESS, json!({"path": fc_sock}));
    result(m::ENSURE_SOCKET_ACCESS, &v);
    let md = std::fs::symlink_metadata(&fc_sock).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (owner.uid, owner.gid, 0o600)
    );
    let canary = root.join("canary");
    std::fs::write(&canary, b"canary").unwrap();
    let link = run.join("bgtest-link.sock");
    std::os::unix::fs::symlink(&canary, &link).unwrap();
    let v = call(m::ENSURE_SOCKET_ACCESS, json!({"path": link}));
    assert_refused(
        m::ENSURE_SOCKET_ACCESS,
        &v,
        "socket path must not be a symlink",
    );
    let v = call(m::ENSURE_SOCKET_ACCESS, json!({"path": "/etc/passwd"}));
    assert_refused(
        m::ENSURE_SOCKET_ACCESS,
        &v,
        "socket path must be below RuntimeDir",
    );
    let md = std::fs::metadata(&canary).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0), "the canary was chowned");
    c.cover(m::ENSURE_SOCKET_ACCESS);

    // Launch: the system helper refuses every unjailed launch; a jailed one
    // runs the jailer (the double) with a per-VM jail uid.
    let api = run.join("bgtest-vm1.sock");
    let log0 = state.join("bgtest-vm0.log");
    let v = call(
        m::LAUNCH_FIRECRACKER,
        json!({"vm_id": "bgtest-vm0", "api_socket": api, "log_file": log0}),
    );
    assert_refused(
        m::LAUNCH_FIRECRACKER,
        &v,
        "jailed must be true: the system helper launches Firecracker only under the jailer",
    );
    assert!(!log0.exists(), "a refused launch created its log");
    let vm = format!("bgtest-{}-v1", c.tag);
    let dm = DmNode::new(&vm);
    let kernel = state.join("bgtest-vmlinux");
    std::fs::write(&kernel, b"kernel").unwrap();
    std::os::unix::fs::chown(&kernel, Some(owner.uid), Some(owner.gid)).unwrap();
    let log1 = state.join("bgtest-vm1.log");
    let jail_params = json!({"vm_id": vm, "api_socket": "", "jailed": true, "log_file": log1,
        "jail": {"kernel": kernel, "root_disk": dm.0, "memory_mib": 64, "vcpus": 1}});
    let v = call(m::LAUNCH_FIRECRACKER, jail_params.clone());
    let r = result(m::LAUNCH_FIRECRACKER, &v);
    let pid = r["pid"].as_i64().unwrap();
    let _kill = KillPid(pid);
    let uid = r["jail_uid"].as_u64().unwrap() as u32;
    assert!(c.cfg.jail_range().unwrap().unwrap().contains(uid));
    let chroot = jail.join("firecracker").join(&vm).join("root");
    assert_eq!(r["chroot"], json!(chroot));
    // The jailer double execs the (static) fake VMM inside the chroot.
    let want = ["/firecracker", "--id", vm.as_str()];
    assert!(
        wait_until(Duration::from_secs(10), || cmdline(pid).len() > 3
            && cmdline(pid)[..3] == want),
        "cmdline {:?}; log {:?}",
        cmdline(pid),
        std::fs::read_to_string(&log1)
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains(&format!("\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")),
        "{status}"
    );
    assert!(status.contains("\nCapEff:\t0000000000000000\n"), "{status}");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log1)
            .unwrap_or_default()
            .ends_with("/api/firecracker.socket\n")
    }));
    let md = std::fs::metadata(&log1).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (owner.uid, owner.gid, 0o600)
    );
    for (params, rule) in [
        (
            json!({"vm_id": "-vm", "api_socket": "", "jailed": true, "log_file": log1}),
            "vm_id must be 1-32 characters of [a-z0-9-] starting with [a-z0-9]",
        ),
        (
            json!({"vm_id": "vm3", "api_socket": api, "jailed": true, "log_file": log1}),
            "api_socket must be empty when jailed",
        ),
        (
            json!({"vm_id": "vm3", "api_socket": "", "jailed": true, "log_file": log1}),
            "jail is required when jailed",
        ),
        (jail_params.clone(), "already exists"),
        (
            json!({"vm_id": "vm3", "api_socket": api, "log_file": log1, "firecracker_bin": "/bin/sh"}),
            "unknown field `firecracker_bin`",
        ),
    ] {
        let v = call(m::LAUNCH_FIRECRACKER, params);
        assert_refused(m::LAUNCH_FIRECRACKER, &v, rule);
    }
    c.cover(m::LAUNCH_FIRECRACKER);

    let v = call(m::SIGNAL_PROCESS, json!({"pid": pid, "signal": "SIGSTOP"}));
    result(m::SIGNAL_PROCESS, &v);
    assert!(wait_until(Duration::from_secs(10), || proc_state(pid) == Some('T')));
    let v = call(m::SIGNAL_PROCESS, json!({"pid": pid, "signal": "SIGCONT"}));
    result(m::SIGNAL_PROCESS, &v);
    assert!(wait_until(Duration::from_secs(10), || proc_state(pid) == Some('S')));
    let v = call(m::SIGNAL_PROCESS, json!({"pid": pid, "signal": "SIGSEGV"}));
    assert_refused(m::SIGNAL_PROCESS, &v, "signal must be one of SIGTERM");
    c.cover(m::SIGNAL_PROCESS);

    // Decoys: a root process whose argv[0] is "firecracker-x", and root
    // running the chroot's own copy of the binary; neither was launched by
    // the helper, neither is signalled.
    let decoy_bin = root.join("bin/firecracker-x");
    std::fs::copy(&c.cfg.firecracker_bin, &decoy_bin).unwrap();
    let mut decoy = Command::new(&decoy_bin)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut copy = Command::new(chroot.join("firecracker"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for target in [decoy.id() as i64, copy.id() as i64] {
        let v = call(m::KILL_PROCESS, json!({"pid": target}));
        assert_refused(
            m::KILL_PROCESS,
            &v,
            "pid must be a Firecracker process this helper launched",
        );
        let v = call(
            m::SIGNAL_PROCESS,
            json!({"pid": target, "signal": "SIGSTOP"}),
        );
        assert_refused(m::SIGNAL_PROCESS, &v, "this helper launched");
    }
    let v = call(m::KILL_PROCESS, json!({"pid": 1}));
    assert_refused(m::KILL_PROCESS, &v, "pid must be greater than 1");
    let v = call(m::KILL_PROCESS, json!({"pid": helper.pid()}));
    assert_refused(m::KILL_PROCESS, &v, "pid must not be the helper itself");
    assert_eq!(decoy.try_wait().unwrap(), None, "the decoy was signalled");
    assert_eq!(
        copy.try_wait().unwrap(),
        None,
        "the root copy was signalled"
    );
    assert_eq!(
        proc_state(decoy.id() as i64),
        Some('S'),
        "the decoy was stopped"
    );
    for mut p in [decoy, copy] {
        let _ = p.kill();
        let _ = p.wait();
    }
    let v = call(m::KILL_PROCESS, json!({"pid": pid}));
    result(m::KILL_PROCESS, &v);
    assert!(
        wait_until(Duration::from_secs(10), || proc_state(pid).is_none()),
        "pid {pid} still there after kill_process (state {:?})",
        proc_state(pid)
    );
    c.cover(m::KILL_PROCESS);
    let cg = Path::new("/sys/fs/cgroup/memory/firecracker").join(&vm);
    assert!(
        wait_until(Duration::from_secs(10), || !cg.exists()),
        "{} remains",
        cg.display()
    );
    let v = call(
        m::CLEANUP_JAILER_CHROOT,
        json!({"path": chroot.parent().unwrap()}),
    );
    result(m::CLEANUP_JAILER_CHROOT, &v);
    assert!(!chroot.exists(), "the jail remains");
    drop(dm);

    // Jailer chroot: real nested tmpfs mounts, unmounted and removed.
    let chroot = jail.join("firecracker/bgtest-vm9/root");
    let (dev, net) = (chroot.join("dev"), chroot.join("dev/net"));
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(chroot.join("rootfs.ext4"), b"x").unwrap();
    let mount = |target: &Path| {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "bgtest-tmpfs"])
            .arg(target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    mount(&dev);
    c.mounts.borrow_mut().0.push(dev.clone());
    std::fs::create_dir(&net).unwrap();
    mount(&net);
    c.mounts.borrow_mut().0.push(net.clone());
    let v = call(m::CLEANUP_JAILER_CHROOT, json!({"path": "/tmp"}));
    assert_refused(
        m::CLEANUP_JAILER_CHROOT,
        &v,
        "chroot path must be below the jailer base",
    );
    let v = call(
        m::CLEANUP_JAILER_CHROOT,
        json!({"path": chroot.join("../root")}),
    );
    assert_refused(
        m::CLEANUP_JAILER_CHROOT,
        &v,
        "chroot path must be lexically clean",
    );
    let v = call(m::CLEANUP_JAILER_CHROOT, json!({"path": chroot}));
    result(m::CLEANUP_JAILER_CHROOT, &v);
    assert!(!chroot.exists(), "chroot still there");
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(chroot.to_str().unwrap()),
        "still mounted:\n{mi}"
    );
    let v = call(m::CLEANUP_JAILER_CHROOT, json!({"path": chroot}));
    result(m::CLEANUP_JAILER_CHROOT, &v);
    c.cover(m::CLEANUP_JAILER_CHROOT);

    Done {
        pid,
        log1_text: std::fs::read_to_string(&log1).unwrap(),
        log1,
        chroot,
    }
}
