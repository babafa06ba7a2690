//! Owner requests: a QEMU VM's own cgroup — an impostor refused, the
//! owner's paused QEMU of the VM placed with its limits, the cgroup kept
//! while QEMU is inside and removed once it has gone.

use crate::guards::assert_refused;
use crate::harness::{error, result};
use crate::Ctx;
use banger_proto::helper as m;
use banger_testkit::wait_until;
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const QEMU: &str = "/usr/bin/qemu-system-x86_64";

struct Reap(std::process::Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `banger-<id>` directories under the host's hierarchy (v1 or v2).
fn cgroups(id: &str) -> Vec<std::path::PathBuf> {
    ["memory", "pids", ""]
        .iter()
        .map(|c| {
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join(format!("banger-{id}"))
        })
        .filter(|d| d.exists())
        .collect()
}

pub fn qemu_cgroup(c: &Ctx) {
    let call = |method: &'static str, params: serde_json::Value| c.call(method, params);
    let id = format!("bgtest-q{}", c.tag);
    let vm_dir = c.cfg.runtime_dir.join("vms").join(&id);
    std::fs::create_dir_all(&vm_dir).unwrap();
    std::os::unix::fs::chown(&vm_dir, Some(c.owner.uid), Some(c.owner.gid)).unwrap();
    let qmp = format!("unix:{}/qmp.sock,server=on,wait=off", vm_dir.display());
    let as_owner = |exe: &str, args: &[&str]| {
        Reap(
            Command::new(exe)
                .args(args)
                .uid(c.owner.uid)
                .gid(c.owner.gid)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let place = |pid: u32, id: &str| {
        call(
            m::PLACE_QEMU_CGROUP,
            json!({"vm_id": id, "pid": pid, "memory_mib": 256, "vcpus": 1}),
        )
    };
    // The owner's shell, with the VM's QMP argument: not a QEMU.
    let sh = as_owner("/bin/sh", &["-c", "sleep 600", "-qmp", &qmp]);
    let v = place(sh.0.id(), &id);
    assert_refused(
        m::PLACE_QEMU_CGROUP,
        &v,
        "pid must be the owner's QEMU of this VM",
    );
    let v = place(sh.0.id(), "../memory");
    assert_refused(m::PLACE_QEMU_CGROUP, &v, "vm_id must be");
    assert!(cgroups(&id).is_empty(), "a refused placement made a cgroup");
    drop(sh);
    let v = call(m::REMOVE_QEMU_CGROUP, json!({"vm_id": "../../memory"}));
    assert_refused(m::REMOVE_QEMU_CGROUP, &v, "vm_id must be");
    if !Path::new(QEMU).exists() {
        println!("no {QEMU}: QEMU placement not driven");
        c.cover(m::PLACE_QEMU_CGROUP);
        c.cover(m::REMOVE_QEMU_CGROUP);
        return;
    }
    // The owner's QEMU of the VM, paused: placed.
    let q = as_owner(
        QEMU,
        &[
            "-M",
            "none",
            "-S",
            "-nodefaults",
            "-nographic",
            "-monitor",
            "none",
            "-qmp",
            &qmp,
        ],
    );
    assert!(
        wait_until(Duration::from_secs(20), || vm_dir.join("qmp.sock").exists()),
        "QEMU made no QMP socket"
    );
    let v = place(q.0.id(), &id);
    result(m::PLACE_QEMU_CGROUP, &v);
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", q.0.id())).unwrap();
    assert!(cg.contains(&format!("/banger-{id}\n")), "{cg}");
    assert!(!cgroups(&id).is_empty());
    // Not while QEMU is inside.
    let v = call(m::REMOVE_QEMU_CGROUP, json!({"vm_id": id}));
    assert_eq!(error(m::REMOVE_QEMU_CGROUP, &v).0, -32000, "{v}");
    assert!(!cgroups(&id).is_empty());
    drop(q);
    let v = call(m::REMOVE_QEMU_CGROUP, json!({"vm_id": id}));
    result(m::REMOVE_QEMU_CGROUP, &v);
    assert!(cgroups(&id).is_empty(), "{:?} left", cgroups(&id));
    c.cover(m::PLACE_QEMU_CGROUP);
    c.cover(m::REMOVE_QEMU_CGROUP);
}
