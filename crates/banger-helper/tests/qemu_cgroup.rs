//! priv.place_qemu_cgroup / priv.remove_qemu_cgroup through
//! `Helper::dispatch` against real processes and the host's real cgroup
//! hierarchy (root): only the owner's QEMU of the VM enters `banger-<id>`,
//! with the VM's limits; every impostor is refused and the host's cgroups
//! stay as they were; the cgroup goes only once empty.

use banger_helper::error::RpcError;
use banger_helper::gates::jail::{host_cgroup_version, CgroupVersion};
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_proto::install::InstallConfig;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// The owner: `nobody`, so "the owner's" and "root's" differ.
const OWNER: u32 = 65534;

struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qmp_arg(rt: &Path, id: &str) -> String {
    format!("unix:{}/vms/{id}/qmp.sock,server=on,wait=off", rt.display())
}

/// `exe args` as `uid`, in its own process group.
fn spawn(exe: &Path, args: &[String], uid: u32) -> Reap {
    Reap(
        Command::new(exe)
            .args(args)
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap(),
    )
}

/// A paused, empty QEMU with VM `id`'s QMP socket.
fn qemu(rt: &Path, id: &str, uid: u32) -> Reap {
    let dir = rt.join("vms").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
    let args: Vec<String> = [
        "-M",
        "none",
        "-S",
        "-nodefaults",
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-qmp",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([qmp_arg(rt, id)])
    .collect();
    let r = spawn(Path::new(QEMU), &args, uid);
    let sock = dir.join("qmp.sock");
    assert!(banger_testkit::wait_until(Duration::from_secs(20), || sock.exists()));
    r
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap()
}

fn dirs(v: CgroupVersion, id: &str) -> Vec<PathBuf> {
    banger_helper::gates::qemu::cgroup_dirs(Path::new("/sys"), v, id)
}

fn place(h: &Helper, id: &str, pid: i32, memory_mib: u32) -> Result<Value, RpcError> {
    h.dispatch(
        "priv.place_qemu_cgroup",
        json!({"vm_id": id, "pid": pid, "memory_mib": memory_mib, "vcpus": 2}),
    )
}

fn refused(r: Result<Value, RpcError>, rule: &str) {
    match r {
        Err(e @ RpcError::Gate { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("priv.place_qemu_cgroup: {rule}")),
                "{text}"
            );
            assert_eq!(e.to_object().code, -32602);
        }
        other => panic!("expected a gate refusal ({rule}), got {other:?}"),
    }
}

#[test]
fn only_the_owners_qemu_of_the_vm_enters_its_own_cgroup() {
    if !rustix::process::geteuid().is_root() || !Path::new(QEMU).exists() {
        println!("skipped: needs root and {QEMU}");
        return;
    }
    let Some(v) = host_cgroup_version(Path::new("/sys")) else {
        println!("skipped: no cgroup hierarchy with memory and pids");
        return;
    };
    let t = tempfile::Builder::new()
        .prefix("bgtest-qcg-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = t.path().join("run");
    std::fs::create_dir_all(&rt).unwrap();
    let mut cfg = InstallConfig::for_owner(OWNER, OWNER, t.path().join("home"));
    cfg.runtime_dir = rt.clone();
    cfg.state_dir = t.path().join("state");
    let h = Helper {
        cfg,
        host: Host::real(),
    };
    let id = format!("bgtest-{}", banger_testkit::unique_suffix());
    let ours = dirs(v, &id);
    struct Clean(Vec<PathBuf>);
    impl Drop for Clean {
        fn drop(&mut self) {
            for d in &self.0 {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
    let _clean = Clean(ours.clone());
    let untouched = |what: &str, pid: u32, before: &str| {
        for d in &ours {
            assert!(!d.exists(), "{what}: {} was made", d.display());
        }
        assert_eq!(cgroup_of(pid), before, "{what}: the process was moved");
    };
    let rule = "pid must be the owner's QEMU of this VM";
    let with_qmp = |id: &str| {
        vec![
            "-c".to_string(),
            "sleep 600".into(),
            "-qmp".into(),
            qmp_arg(&rt, id),
        ]
    };

    // A shell of the owner's named and argv'd as the VM's QEMU, through a
    // symlink called qemu-system-x86_64: /proc/<pid>/exe is the shell.
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("/bin/sh", bin.join("qemu-system-x86_64")).unwrap();
    let p = spawn(&bin.join("qemu-system-x86_64"), &with_qmp(&id), OWNER);
    std::thread::sleep(Duration::from_millis(200));
    let before = cgroup_of(p.0.id());
    refused(place(&h, &id, p.0.id() as i32, 512), rule);
    untouched("a symlink to sh", p.0.id(), &before);
    drop(p);

    // A copy the owner owns (so could have changed), in a directory it owns.
    let own = t.path().join("own");
    std::fs::create_dir_all(&own).unwrap();
    std::os::unix::fs::chown(&own, Some(OWNER), Some(OWNER)).unwrap();
    let copy = own.join("qemu-system-x86_64");
    std::fs::copy("/bin/sh", &copy).unwrap();
    std::os::unix::fs::chown(&copy, Some(OWNER), Some(OWNER)).unwrap();
    let p = spawn(&copy, &with_qmp(&id), OWNER);
    std::thread::sleep(Duration::from_millis(200));
    let before = cgroup_of(p.0.id());
    refused(place(&h, &id, p.0.id() as i32, 512), rule);
    untouched("an owner-owned copy", p.0.id(), &before);
    drop(p);

    // The real QEMU, but another VM's; and the VM's, but root's.
    let other = qemu(&rt, "bgtest-other", OWNER);
    let before = cgroup_of(other.0.id());
    refused(place(&h, &id, other.0.id() as i32, 512), rule);
    untouched("another VM's QEMU", other.0.id(), &before);
    let as_root = qemu(&rt, &id, 0);
    let before = cgroup_of(as_root.0.id());
    refused(place(&h, &id, as_root.0.id() as i32, 512), rule);
    untouched("root's QEMU", as_root.0.id(), &before);
    drop(as_root);

    // A pid that is gone; a bad id or size.
    let mut gone = spawn(Path::new("/bin/true"), &[], OWNER);
    let gone_pid = gone.0.id() as i32;
    gone.0.wait().unwrap();
    refused(place(&h, &id, gone_pid, 512), rule);
    refused(place(&h, "../../x", 4242, 512), "vm_id must be");
    refused(place(&h, &id, 4242, 0), "memory_mib must be");
    refused(place(&h, &id, 1, 512), "pid must be greater than 1");
    for d in &ours {
        assert!(!d.exists());
    }

    // The owner's QEMU of this VM: placed, with the limits.
    let _ = std::fs::remove_file(rt.join("vms").join(&id).join("qmp.sock"));
    let q = qemu(&rt, &id, OWNER);
    let pid = q.0.id();
    place(&h, &id, pid as i32, 512).unwrap();
    let cg = cgroup_of(pid);
    let mem = ((512u64 + 256) << 20).to_string();
    match v {
        CgroupVersion::V1 => {
            assert!(cg.contains(&format!(":memory:/banger-{id}\n")), "{cg}");
            assert!(cg.contains(&format!(":pids:/banger-{id}\n")), "{cg}");
            let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
            assert_eq!(read(&ours[0], "memory.limit_in_bytes").trim(), mem);
            assert_eq!(read(&ours[1], "pids.max").trim(), "132");
        }
        CgroupVersion::V2 => {
            assert!(cg.contains(&format!("0::/banger-{id}\n")), "{cg}");
            let read = |f: &str| std::fs::read_to_string(ours[0].join(f)).unwrap();
            assert_eq!(read("memory.max").trim(), mem);
            assert_eq!(read("pids.max").trim(), "132");
        }
    }
    // The other VM's QEMU cannot be pushed into it, nor can it be removed
    // while QEMU is inside.
    refused(place(&h, &id, other.0.id() as i32, 512), rule);
    let e = h
        .dispatch("priv.remove_qemu_cgroup", json!({"vm_id": id}))
        .unwrap_err();
    assert!(matches!(e, RpcError::Failed(_)), "{e:?}");
    assert!(ours.iter().all(|d| d.exists()));
    assert!(cgroup_of(pid).contains(&format!("/banger-{id}")));
    // A second placement for the same VM while it holds QEMU: refused by
    // the host (busy), the first untouched.
    let e = place(&h, &id, pid as i32, 1024).unwrap_err();
    assert!(matches!(e, RpcError::Failed(_)), "{e:?}");
    assert!(cgroup_of(pid).contains(&format!("/banger-{id}")));
    // QEMU gone: the cgroup goes.
    drop(q);
    h.dispatch("priv.remove_qemu_cgroup", json!({"vm_id": id}))
        .unwrap();
    for d in &ours {
        assert!(!d.exists(), "{} left", d.display());
    }
    // Removing again (absent) is fine; a bad id is refused.
    h.dispatch("priv.remove_qemu_cgroup", json!({"vm_id": id}))
        .unwrap();
    let e = h
        .dispatch("priv.remove_qemu_cgroup", json!({"vm_id": "../memory"}))
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("priv.remove_qemu_cgroup: vm_id must be"),
        "{e}"
    );
    drop(other);
}
