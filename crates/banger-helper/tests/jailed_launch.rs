//! The jailed launch end to end, as root, through `Helper::dispatch` with
//! the system policy: the jailer double (or the real jailer named by
//! `BANGER_JAILER`) builds the jail the helper prepared and execs a static
//! fake VMM (or the VMM named by `BANGER_FIRECRACKER`: the real, static
//! Firecracker, or fc-double built static with
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build -p banger-fc-double
//! --target x86_64-unknown-linux-gnu` — the chroot has no loader). With an
//! API-serving VMM the handed-over socket must answer `HTTP/1.1 200`.

#[path = "jailed/fixture.rs"]
mod fixture;

use banger_helper::error::RpcError;
use banger_helper::helper::Helper;
use banger_helper::host::{Host, LaunchPolicy};
use banger_proto::helper as m;
use banger_testkit::{probe_as, Probe};
use fixture::*;
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[test]
fn root_jailed_vmm_runs_as_its_jail_uid_in_its_cgroup_with_only_its_files() {
    if !root_only("root_jailed_vmm_runs_as_its_jail_uid_in_its_cgroup_with_only_its_files") {
        return;
    }
    let f = Fixture::new();
    let h = &f.h;
    let range = h.cfg.jail_range().unwrap().unwrap();
    let (a, b) = (vm_id(), vm_id());
    let (dma, dmb) = (DmNode::new(&a), DmNode::new(&b));
    let ra = h
        .dispatch(m::LAUNCH_FIRECRACKER, f.params(&a, &dma))
        .unwrap();
    let pid = ra["pid"].as_i64().unwrap() as i32;
    let _ka = Kill(pid);
    let log = h.cfg.state_dir.join(format!("{a}.log"));
    let uid = ra["jail_uid"].as_u64().unwrap() as u32;
    assert!(range.contains(uid) && uid != OWNER.0 && uid != OWNER.1 && uid != 0);
    let exec_dir = h.cfg.jailer_base.join("firecracker");
    let chroot = exec_dir.join(&a).join("root");
    let api = h
        .cfg
        .runtime_dir
        .join("jails")
        .join(&a)
        .join("firecracker.socket");
    assert_eq!(ra["chroot"], json!(chroot));
    assert_eq!(ra["api_socket"], json!(api));
    wait("the API socket", || api.exists(), &log);

    // The VMM: the jail uid and gid, no capability, `/firecracker` argv[0].
    let ids = format!("{uid}\t{uid}\t{uid}\t{uid}");
    assert_eq!(status_field(pid, "Uid:"), ids);
    assert_eq!(status_field(pid, "Gid:"), ids);
    assert_eq!(status_field(pid, "CapEff:"), "0000000000000000");
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
    assert_eq!(argv[0], b"/firecracker");
    assert!(argv
        .windows(2)
        .any(|w| w[0] == b"--id" && w[1] == a.as_bytes()));

    // Its own cgroups, with the limits (v1 on this machine kind).
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    match banger_helper::gates::jail::host_cgroup_version(Path::new("/sys")) {
        Some(banger_helper::gates::jail::CgroupVersion::V1) => {
            for c in ["memory", "pids"] {
                assert!(cg.contains(&format!(":{c}:/firecracker/{a}\n")), "{cg}");
            }
            let mem =
                std::fs::read_to_string(v1_cgroup("memory", &a).join("memory.limit_in_bytes"));
            assert_eq!(mem.unwrap().trim(), ((64 + 128) << 20).to_string());
            let pids = std::fs::read_to_string(v1_cgroup("pids", &a).join("pids.max"));
            assert_eq!(pids.unwrap().trim(), "34");
        }
        Some(banger_helper::gates::jail::CgroupVersion::V2) => {
            assert!(cg.contains(&format!("0::/firecracker/{a}\n")), "{cg}");
        }
        None => panic!("no usable cgroup hierarchy, yet the launch passed"),
    }

    // The chroot: root-only parents; inside, only this VM's files.
    for d in [&exec_dir, &exec_dir.join(&a)] {
        let md = std::fs::metadata(d).unwrap();
        assert_eq!(
            (md.uid(), md.mode() & 0o7777),
            (0, 0o700),
            "{}",
            d.display()
        );
    }
    let md = std::fs::metadata(&chroot).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (uid, uid, 0o700));
    let got: Vec<(String, char, u32)> = listing(&chroot)
        .into_iter()
        .map(|(p, t, u, _)| (p, t, u))
        .collect();
    let want: Vec<(String, char, u32)> = [
        ("api", 'd', uid),
        ("api/firecracker.socket", 's', uid),
        ("dev", 'd', uid),
        ("dev/kvm", 'c', uid),
        ("dev/net", 'd', uid),
        ("dev/net/tun", 'c', uid),
        ("dev/urandom", 'c', uid),
        ("dev/userfaultfd", 'c', uid),
        ("firecracker", 'f', uid),
        ("firecracker.pid", 'f', 0),
        ("initrd", 'f', uid),
        ("rootfs", 'b', uid),
        ("run", 'd', uid),
        ("vmlinux", 'f', uid),
    ]
    .map(|(p, t, u)| (p.to_string(), t, u))
    .to_vec();
    assert_eq!(got, want);
    for (p, mode) in [("vmlinux", 0o400), ("initrd", 0o400), ("rootfs", 0o600)] {
        let md = std::fs::symlink_metadata(chroot.join(p)).unwrap();
        assert_eq!(md.mode() & 0o7777, mode, "{p}");
    }
    assert_eq!(
        std::fs::read(chroot.join("vmlinux")).unwrap(),
        b"kernel bytes"
    );
    let rd = std::fs::symlink_metadata(chroot.join("rootfs")).unwrap();
    assert_eq!(rd.rdev(), rustix::fs::makedev(7, 250));

    // The same VM again: refused.
    // A second VM, with a CPU cap: another jail uid, its own limits.
    let mut pb = f.params(&b, &dmb);
    pb["jail"]["cpu_percent"] = json!(50);
    let rb = h.dispatch(m::LAUNCH_FIRECRACKER, pb).unwrap();
    let pid_b = rb["pid"].as_i64().unwrap() as i32;
    let _kb = Kill(pid_b);
    let log_b = h.cfg.state_dir.join(format!("{b}.log"));
    wait(
        "b's API socket",
        || {
            h.cfg
                .runtime_dir
                .join("jails")
                .join(&b)
                .join("firecracker.socket")
                .exists()
        },
        &log_b,
    );
    if Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() {
        let q = std::fs::read_to_string(v1_cgroup("cpu", &b).join("cpu.cfs_quota_us")).unwrap();
        assert_eq!(q.trim(), "50000");
        let cg = std::fs::read_to_string(format!("/proc/{pid_b}/cgroup")).unwrap();
        assert!(cg.contains(&format!(":cpu:/firecracker/{b}\n")), "{cg}");
    }
    assert_ne!(rb["jail_uid"].as_u64().unwrap() as u32, uid);
    let t = gate_text(h.dispatch(m::LAUNCH_FIRECRACKER, f.params(&a, &dma)));
    assert!(
        t.contains(&format!("the jail of {a} already exists")),
        "{t}"
    );

    // The API socket: the owner cannot connect until it is handed over,
    // below RuntimeDir, through the unchanged gate.
    let req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(
        probe_as(OWNER.0, OWNER.1, &api, req),
        Probe::ConnectFailed(libc::EACCES)
    );
    h.dispatch(m::ENSURE_SOCKET_ACCESS, json!({ "path": api }))
        .unwrap();
    let got = probe_as(OWNER.0, OWNER.1, &api, req);
    if f.api_vmm {
        // Firecracker (or fc-double) answers its API to the owner.
        let Probe::Answered(bytes) = &got else {
            panic!("{got:?}")
        };
        assert!(
            bytes.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    } else {
        assert!(
            matches!(got, Probe::ClosedSilently | Probe::Answered(_)),
            "{got:?}"
        );
    }

    // A restarted helper still signals it; not a root process running the
    // chroot's very copy of the binary (same inode, not a jail uid).
    let h2 = Helper {
        cfg: h.cfg.clone(),
        host: Host {
            launch_policy: LaunchPolicy::JailedOnly,
            launch_records: h.host.launch_records.clone(),
            ..Host::real()
        },
    };
    let mut copy = Command::new(chroot.join("firecracker"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t = gate_text(h2.dispatch(m::KILL_PROCESS, json!({ "pid": copy.id() })));
    assert!(t.contains("this helper launched"), "{t}");
    assert!(
        copy.try_wait().unwrap().is_none(),
        "the root copy was killed"
    );
    let _ = copy.kill();
    let _ = copy.wait();
    h2.dispatch(
        m::SIGNAL_PROCESS,
        json!({ "pid": pid, "signal": "SIGSTOP" }),
    )
    .unwrap();
    wait(
        "stopped",
        || status_field(pid, "State:").starts_with('T'),
        &log,
    );
    h2.dispatch(
        m::SIGNAL_PROCESS,
        json!({ "pid": pid, "signal": "SIGCONT" }),
    )
    .unwrap();
    h2.dispatch(m::KILL_PROCESS, json!({ "pid": pid })).unwrap();
    wait("killed", || !alive(pid), &log);
    h.dispatch(m::KILL_PROCESS, json!({ "pid": pid_b }))
        .unwrap();
    wait("b killed", || !alive(pid_b), &log);

    // Cleanup: the reaper drops the cgroups and the records; the chroot
    // method unmounts /run and removes the jail.
    wait(
        "cgroups removed",
        || {
            ["memory", "pids", "cpu"]
                .iter()
                .all(|c| !v1_cgroup(c, &a).exists() && !v1_cgroup(c, &b).exists())
        },
        &log,
    );
    for vm in [&a, &b] {
        h.dispatch(
            m::CLEANUP_JAILER_CHROOT,
            json!({ "path": exec_dir.join(vm) }),
        )
        .unwrap();
        assert!(!exec_dir.join(vm).exists(), "{vm}'s jail remains");
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(exec_dir.to_str().unwrap()), "{mi}");
    assert_eq!(
        std::fs::read_dir(&h.host.launch_records).unwrap().count(),
        0
    );
    drop((dma, dmb));
}

#[test]
fn root_a_dynamically_linked_exec_file_fails_inside_the_chroot() {
    if !root_only("root_a_dynamically_linked_exec_file_fails_inside_the_chroot") {
        return;
    }
    let f = Fixture::new();
    let Some(double) = built_binary("fc-double") else {
        println!("skipped: no fc-double beside the tests (cargo build -p banger-fc-double)");
        return;
    };
    cp(&double, &f.h.cfg.firecracker_bin);
    let vm = vm_id();
    let dm = DmNode::new(&vm);
    let r =
        f.h.dispatch(m::LAUNCH_FIRECRACKER, f.params(&vm, &dm))
            .unwrap();
    let pid = r["pid"].as_i64().unwrap() as i32;
    let _k = Kill(pid);
    let log = f.h.cfg.state_dir.join(format!("{vm}.log"));
    wait("the jailer exits", || !alive(pid), &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("Failed to exec into Firecracker: No such file or directory"),
        "{text}"
    );
    let exec_dir = f.h.cfg.jailer_base.join("firecracker");
    f.h.dispatch(
        m::CLEANUP_JAILER_CHROOT,
        json!({ "path": exec_dir.join(&vm) }),
    )
    .unwrap();
    assert!(!exec_dir.join(&vm).exists());
}

#[test]
fn root_jailed_launch_refusals_leave_nothing_behind() {
    if !root_only("root_jailed_launch_refusals_leave_nothing_behind") {
        return;
    }
    let mut f = Fixture::new();
    let vm = vm_id();
    let dm = DmNode::new(&vm);
    let exec_dir = f.h.cfg.jailer_base.join("firecracker");
    let nothing_left = |f: &Fixture| {
        assert!(!exec_dir.join(&vm).exists(), "a jail was built");
        assert!(!f.h.cfg.runtime_dir.join("jails").join(&vm).exists());
        assert!(!v1_cgroup("memory", &vm).exists());
    };
    let refuse = |f: &Fixture, p: Value, want: &str| {
        let t = gate_text(f.h.dispatch(m::LAUNCH_FIRECRACKER, p));
        assert!(t.starts_with("priv.launch_firecracker: "), "{t}");
        assert!(t.contains(want), "{t} lacks {want}");
        nothing_left(f);
    };
    let mut p = f.params(&vm, &dm);
    p.as_object_mut().unwrap().remove("jail");
    refuse(&f, p, "jail is required when jailed");
    let mut p = f.params(&vm, &dm);
    p["api_socket"] = json!(f.h.cfg.runtime_dir.join("x.sock"));
    refuse(&f, p, "api_socket must be empty when jailed");
    let mut p = f.params(&vm, &dm);
    p["jail"]["kernel"] = json!("/etc/shadow");
    refuse(&f, p, "jail.kernel must be below StateDir");
    let mut p = f.params(&vm, &dm);
    p["jail"]["root_disk"] = json!("/dev/sda");
    refuse(&f, p, "jail.root_disk must be /dev/mapper/fc-rootfs-*");
    // A hard link to a root file planted in StateDir is not a kernel.
    let p = f.params(&vm, &dm);
    let link = f.h.cfg.state_dir.join("linked");
    let target = f.dir.path().join("root-secret");
    std::fs::write(&target, b"secret").unwrap();
    std::fs::hard_link(&target, &link).unwrap();
    let mut q = p.clone();
    q["jail"]["kernel"] = json!(link);
    refuse(&f, q, "jail.kernel must have exactly one hard link");
    let foreign = f.state_file("foreign", b"x");
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let mut q = p.clone();
    q["jail"]["kernel"] = json!(foreign);
    refuse(&f, q, "jail.kernel must be owned by the owner or root");
    let sym = f.h.cfg.state_dir.join("sym");
    std::os::unix::fs::symlink("/etc/shadow", &sym).unwrap();
    let mut q = p.clone();
    q["jail"]["kernel"] = json!(sym);
    assert!(matches!(
        f.h.dispatch(m::LAUNCH_FIRECRACKER, q),
        Err(RpcError::Failed(_))
    ));
    nothing_left(&f);
    // A regular file where the dm device should be.
    let fake = PathBuf::from(format!("/dev/mapper/fc-rootfs-{vm}-f"));
    std::fs::write(&fake, b"").unwrap();
    let mut q = p.clone();
    q["jail"]["root_disk"] = json!(fake);
    let r = f.h.dispatch(m::LAUNCH_FIRECRACKER, q);
    let _ = std::fs::remove_file(&fake);
    assert!(gate_text(r).contains("jail.root_disk must be a block device"));
    nothing_left(&f);
    // A leading '-' is never an id.
    let mut q = p.clone();
    q["vm_id"] = json!("-h");
    refuse(&f, q, "starting with [a-z0-9]");
    // RuntimeDir/jails made by someone else (RuntimeDir is the owner's
    // group's, sticky): refused, never used.
    let squat = f.h.cfg.runtime_dir.join("jails");
    std::fs::create_dir(&squat).unwrap();
    std::os::unix::fs::chown(&squat, Some(OWNER.0), Some(OWNER.1)).unwrap();
    let t = gate_text(f.h.dispatch(m::LAUNCH_FIRECRACKER, p.clone()));
    assert!(t.contains("must be a directory owned by uid 0"), "{t}");
    assert!(!exec_dir.join(&vm).exists(), "the jail was not undone");
    std::fs::remove_dir(&squat).unwrap();
    nothing_left(&f);
    // The launch cap.
    f.h.cfg.max_launches = 0;
    refuse(
        &f,
        p.clone(),
        "at most 0 jailed VMs may exist at once (max_launches)",
    );
    f.h.cfg.max_launches = 256;
    // No reserved range: no jailed launch at all.
    f.h.cfg.jail_uid_base = None;
    f.h.cfg.jail_uid_count = None;
    refuse(&f, p, "install.toml must reserve a jail uid range");
}
