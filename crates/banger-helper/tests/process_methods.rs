//! priv.kill_process / priv.signal_process / priv.launch_firecracker through
//! `Helper::dispatch`, against real processes.

use banger_helper::error::RpcError;
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_proto::helper as m;
use banger_proto::install::InstallConfig;
use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use banger_testkit::tmp;

fn helper(dir: &Path) -> Helper {
    let mut cfg = InstallConfig::for_owner(4242, 4243, dir.join("home"));
    cfg.state_dir = dir.join("state");
    cfg.runtime_dir = dir.join("run");
    cfg.jailer_base = dir.join("jail");
    cfg.firecracker_bin = dir.join("bin/firecracker");
    cfg.jailer_bin = dir.join("bin/jailer");
    for d in [&cfg.state_dir, &cfg.runtime_dir, &cfg.jailer_base] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    Helper {
        cfg,
        host: Host {
            launch_records: dir.join("records"),
            ..Host::real()
        },
    }
}

/// Kills (its whole process group) and reaps a child on drop, whatever the
/// test did.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn gate_text(r: Result<serde_json::Value, RpcError>) -> String {
    match r {
        Err(e @ RpcError::Gate { .. }) => e.to_string(),
        other => panic!("expected a gate refusal, got {other:?}"),
    }
}

/// Spawn and wait until the exec has finished: right after a vfork-style
/// spawn returns, the new image's cmdline can still read empty.
fn spawn(cmd: &mut Command) -> Reap {
    use std::os::unix::process::CommandExt;
    let child = cmd
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let path = format!("/proc/{}/cmdline", child.id());
    let t0 = Instant::now();
    while std::fs::read(&path).map(|b| b.is_empty()).unwrap_or(false)
        && t0.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    Reap(child)
}

use banger_testkit::cp_out_of_process as copy_out_of_process;

/// A copy of `sleep` whose file name is `firecracker`.
fn fake_firecracker(dir: &Path) -> PathBuf {
    let p = dir.join("firecracker");
    copy_out_of_process(Path::new("/usr/bin/sleep"), &p);
    p
}

#[test]
fn decoy_is_never_signalled_whatever_pid_is_sent() {
    let d = tmp();
    let h = helper(d.path());
    let mut decoy = spawn(Command::new("sleep").arg("1000"));
    // argv contains "firecracker", but the program is not Firecracker.
    let mut sneaky = spawn(Command::new("sh").args(["-c", "sleep 1000; :", "firecracker"]));
    let pids = [
        decoy.0.id() as i32,
        sneaky.0.id() as i32,
        0,
        1,
        -1,
        i32::MIN,
        i32::MAX,
        std::process::id() as i32,
        4_194_305,
    ];
    for pid in pids {
        let t = gate_text(h.dispatch(m::KILL_PROCESS, json!({ "pid": pid })));
        assert!(t.starts_with("priv.kill_process: pid must"), "{pid}: {t}");
        let t = gate_text(h.dispatch(
            m::SIGNAL_PROCESS,
            json!({ "pid": pid, "signal": "SIGTERM" }),
        ));
        assert!(t.starts_with("priv.signal_process: pid must"), "{pid}: {t}");
    }
    assert!(decoy.0.try_wait().unwrap().is_none(), "decoy was signalled");
    assert!(
        sneaky.0.try_wait().unwrap().is_none(),
        "sneaky decoy was signalled"
    );
    let t = gate_text(h.dispatch(m::KILL_PROCESS, json!({ "pid": decoy.0.id() as i32 })));
    assert_eq!(
        t,
        format!(
            "priv.kill_process: {}",
            banger_helper::launched::LAUNCHED_RULE
        )
    );
}

/// Hole 8: argv[0] is chosen by whoever starts a process. A root process
/// named `firecracker-x` that the helper did not launch is refused and
/// keeps running; so is one running a binary named `firecracker`.
#[test]
fn a_firecracker_named_process_the_helper_did_not_launch_is_refused() {
    let d = tmp();
    let h = helper(d.path());
    let named = d.path().join("firecracker-x");
    copy_out_of_process(Path::new("/usr/bin/sleep"), &named);
    let fc = fake_firecracker(d.path());
    let mut a = spawn(Command::new(&named).arg("1000"));
    let mut b = spawn(Command::new(&fc).arg("1000"));
    for child in [&a, &b] {
        let pid = child.0.id() as i32;
        let t = gate_text(h.dispatch(m::KILL_PROCESS, json!({ "pid": pid })));
        assert_eq!(
            t,
            format!(
                "priv.kill_process: {}",
                banger_helper::launched::LAUNCHED_RULE
            )
        );
        for sig in ["SIGTERM", "SIGKILL", "SIGSTOP"] {
            let t = gate_text(h.dispatch(m::SIGNAL_PROCESS, json!({ "pid": pid, "signal": sig })));
            assert!(
                t.starts_with(
                    "priv.signal_process: pid must be a Firecracker process this helper launched"
                ),
                "{t}"
            );
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        a.0.try_wait().unwrap().is_none(),
        "firecracker-x was signalled"
    );
    assert!(
        b.0.try_wait().unwrap().is_none(),
        "firecracker was signalled"
    );
    let st = std::fs::read_to_string(format!("/proc/{}/stat", a.0.id())).unwrap();
    assert!(!st.contains(") T "), "stopped: {st}");
    let _ = a.0.kill();
    let _ = b.0.kill();

    let c = spawn(Command::new(&fc).arg("1000"));
    let t = gate_text(h.dispatch(
        m::SIGNAL_PROCESS,
        json!({ "pid": c.0.id(), "signal": "SIGSEGV" }),
    ));
    assert!(
        t.starts_with("priv.signal_process: signal must be one of"),
        "{t}"
    );
    // Strict params: unknown fields and wrong types are refused.
    assert!(matches!(
        h.dispatch(m::KILL_PROCESS, json!({ "pid": 5, "uid": 0 })),
        Err(RpcError::Params(_))
    ));
    assert!(matches!(
        h.dispatch(m::KILL_PROCESS, json!({ "pid": "5" })),
        Err(RpcError::Params(_))
    ));
}

/// Item 1: the system helper's policy refuses every unjailed launch, before
/// anything is looked at or created.
#[test]
fn the_system_policy_refuses_unjailed_launches() {
    let d = tmp();
    let mut h = helper(d.path());
    h.host.launch_policy = banger_helper::host::LaunchPolicy::JailedOnly;
    let sock = h.cfg.runtime_dir.join("vm.sock");
    let log = h.cfg.state_dir.join("vm.log");
    for p in [
        json!({ "vm_id": "vm-1", "api_socket": sock, "log_file": log }),
        json!({ "vm_id": "vm-1", "api_socket": sock, "jailed": false, "log_file": log }),
    ] {
        let t = gate_text(h.dispatch(m::LAUNCH_FIRECRACKER, p));
        assert_eq!(
            t,
            format!(
                "priv.launch_firecracker: {}",
                banger_helper::gates::process::JAILED_ONLY_RULE
            )
        );
    }
    assert!(!log.exists());
    assert_eq!(std::fs::read_dir(&h.cfg.runtime_dir).unwrap().count(), 0);
}

#[test]
fn a_launched_process_is_signalled_through_its_kept_pidfd() {
    let d = tmp();
    let h = helper(d.path());
    let fc = fake_firecracker(d.path());
    let (fd, _) = banger_sys::fsops::open_path_no_symlinks(&fc).unwrap();
    let log = std::fs::File::create(d.path().join("log")).unwrap();
    let l = banger_sys::exec::spawn_via_fd(
        std::os::fd::AsFd::as_fd(&fd),
        vec![fc.clone().into(), "1000".into()],
        &log,
    )
    .unwrap();
    let pid = l.pid;
    h.host.launched.insert(pid, l.pidfd);
    let mut child = Reap(l.child);
    h.dispatch(
        m::SIGNAL_PROCESS,
        json!({ "pid": pid, "signal": "SIGKILL" }),
    )
    .unwrap();
    assert_eq!(child.0.wait().unwrap().signal(), Some(libc::SIGKILL));
    // Reaped: the kept pidfd names a dead process, never a reused pid.
    assert!(h.dispatch(m::KILL_PROCESS, json!({ "pid": pid })).is_err());
}

fn root_only() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    println!("skipped: needs root (root-owned binaries, chown of the log)");
    false
}

/// `echo` copied to `path` (root-owned, 0755): prints the argv it got.
fn install_echo(path: &Path) {
    copy_out_of_process(Path::new("/usr/bin/echo"), path);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn wait_for_text(path: &Path) -> String {
    let t0 = Instant::now();
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.ends_with('\n') || t0.elapsed() > Duration::from_secs(10) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn root_launch_firecracker_builds_argv_and_log() {
    if !root_only() {
        return;
    }
    let d = tmp();
    let h = helper(d.path());
    install_echo(&h.cfg.firecracker_bin);
    install_echo(&h.cfg.jailer_bin);
    let sock = h.cfg.runtime_dir.join("vm-1.sock");
    let log = h.cfg.state_dir.join("vm-1.log");
    let r = h
        .dispatch(
            m::LAUNCH_FIRECRACKER,
            json!({ "vm_id": "vm-1", "api_socket": sock, "log_file": log }),
        )
        .unwrap();
    assert!(r["pid"].as_i64().unwrap() > 1);
    assert_eq!(
        wait_for_text(&log),
        format!("--id vm-1 --api-sock {}\n", sock.display())
    );
    let md = std::fs::metadata(&log).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (4242, 4243, 0o600));

    // Launches are recorded in a root-only directory (echo has exited and
    // been reaped by now, which removed its record: the restart test
    // checks a live one).
    let pid = r["pid"].as_i64().unwrap() as i32;
    wait_for("the record removed with the reaped echo", || {
        !d.path().join(format!("records/{pid}")).exists()
    });
    let md = std::fs::metadata(d.path().join("records")).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o777), (0, 0o700));
}

#[test]
fn root_launch_firecracker_gates() {
    if !root_only() {
        return;
    }
    let d = tmp();
    let mut h = helper(d.path());
    install_echo(&h.cfg.firecracker_bin);
    let sock = h.cfg.runtime_dir.join("vm.sock");
    let log = h.cfg.state_dir.join("vm.log");
    let launch = |h: &Helper, p: serde_json::Value| gate_text(h.dispatch(m::LAUNCH_FIRECRACKER, p));
    let t = launch(
        &h,
        json!({ "vm_id": "VM_1", "api_socket": sock, "log_file": log }),
    );
    assert_eq!(
        t,
        "priv.launch_firecracker: vm_id must be 1-32 characters of [a-z0-9-] starting with [a-z0-9]"
    );
    // A leading `-` would be a flag in Firecracker's or the jailer's argv.
    for id in ["-h", "--help", "-"] {
        let t = launch(
            &h,
            json!({ "vm_id": id, "api_socket": sock, "log_file": log }),
        );
        assert!(t.contains("starting with [a-z0-9]"), "{id}: {t}");
    }
    let t = launch(
        &h,
        json!({ "vm_id": "a", "api_socket": "/tmp/x.sock", "log_file": log }),
    );
    assert!(t.contains("api_socket must be below RuntimeDir"), "{t}");
    let t = launch(
        &h,
        json!({ "vm_id": "a", "api_socket": sock, "log_file": "/etc/passwd" }),
    );
    assert!(t.contains("log_file must be below StateDir"), "{t}");
    let t = launch(
        &h,
        json!({ "vm_id": "a", "api_socket": sock, "jailed": true, "log_file": log }),
    );
    assert!(t.contains("api_socket must be empty when jailed"), "{t}");
    std::os::unix::fs::symlink("/etc/shadow", h.cfg.state_dir.join("evil.log")).unwrap();
    let t = launch(
        &h,
        json!({ "vm_id": "a", "api_socket": sock, "log_file": h.cfg.state_dir.join("evil.log") }),
    );
    assert!(t.contains("log_file must not be a symlink"), "{t}");
    std::fs::set_permissions(
        &h.cfg.firecracker_bin,
        std::fs::Permissions::from_mode(0o775),
    )
    .unwrap();
    let t = launch(
        &h,
        json!({ "vm_id": "a", "api_socket": sock, "log_file": log }),
    );
    assert!(t.contains("must not be group- or world-writable"), "{t}");
    h.cfg.firecracker_bin = d.path().join("bin/missing");
    let t = launch(
        &h,
        json!({ "vm_id": "a", "api_socket": sock, "log_file": log }),
    );
    assert!(t.contains("must exist"), "{t}");
    // The binary path can never come from the caller.
    assert!(matches!(
        h.dispatch(
            m::LAUNCH_FIRECRACKER,
            json!({ "vm_id": "a", "api_socket": sock, "log_file": log, "firecracker_bin": "/bin/sh" })
        ),
        Err(RpcError::Params(_))
    ));
    assert!(!log.exists(), "a refused launch must not create the log");
}

/// A binary built beside the tests (`cargo build -p <pkg>` puts it in the
/// target dir's profile directory, the parent of `deps/`).
fn built_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join(name);
    p.is_file().then_some(p)
}

fn proc_state(pid: i32) -> Option<char> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    st[st.rfind(')')? + 2..].chars().next()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Hole 8, development mode: an unjailed launch (fc-double as Firecracker)
/// is recorded under the root-owned records directory; a new helper (a
/// restart, or the next one-shot helper) still signals it; a process
/// running the very same binary that the helper did not launch, and a
/// forged record, are refused.
#[test]
fn root_a_launched_process_is_still_accepted_after_a_helper_restart() {
    if !root_only() {
        return;
    }
    let Some(double) = built_binary("fc-double") else {
        println!("skipped: no fc-double beside the tests (cargo build -p banger-fc-double)");
        return;
    };
    let d = tmp();
    let h = helper(d.path());
    copy_out_of_process(&double, &h.cfg.firecracker_bin);
    let sock = h.cfg.runtime_dir.join("vm-r.sock");
    let log = h.cfg.state_dir.join("vm-r.log");
    let r = h
        .dispatch(
            m::LAUNCH_FIRECRACKER,
            json!({ "vm_id": "vm-r", "api_socket": sock, "log_file": log }),
        )
        .unwrap();
    let pid = r["pid"].as_i64().unwrap() as i32;
    let _guard = Reaped(pid);
    wait_for("the API socket", || sock.exists());

    // Not launched by the helper: the same binary, started by root.
    let mut decoy = spawn(
        Command::new(&h.cfg.firecracker_bin)
            .arg("--api-sock")
            .arg(d.path().join("run/decoy.sock")),
    );
    let decoy_pid = decoy.0.id() as i32;

    let restarted = helper(d.path());
    assert!(restarted.host.launched.is_empty());
    let t = gate_text(restarted.dispatch(m::KILL_PROCESS, json!({ "pid": decoy_pid })));
    assert!(t.contains("this helper launched"), "{t}");
    // A forged record (wrong start time) does not pass, and is dropped.
    let forged = d.path().join(format!("records/{decoy_pid}"));
    let exe = std::fs::metadata(&h.cfg.firecracker_bin).unwrap();
    std::fs::write(&forged, format!("1 {} {}\n", exe.dev(), exe.ino())).unwrap();
    let t = gate_text(restarted.dispatch(m::KILL_PROCESS, json!({ "pid": decoy_pid })));
    assert!(t.contains("this helper launched"), "{t}");
    assert!(!forged.exists(), "a stale record stays");
    assert!(
        decoy.0.try_wait().unwrap().is_none(),
        "the decoy was signalled"
    );

    restarted
        .dispatch(
            m::SIGNAL_PROCESS,
            json!({ "pid": pid, "signal": "SIGSTOP" }),
        )
        .unwrap();
    wait_for("stopped", || proc_state(pid) == Some('T'));
    // Adoption at start gives the restarted helper a pidfd for it.
    let again = helper(d.path());
    assert_eq!(banger_helper::launched::adopt(&again), 1);
    assert!(again.host.launched.get(pid).is_some());
    assert!(again.host.launched.get(decoy_pid).is_none());
    again
        .dispatch(m::KILL_PROCESS, json!({ "pid": pid }))
        .unwrap();
    wait_for("killed and reaped", || proc_state(pid).is_none());
    wait_for("record removed by the reaper", || {
        !d.path().join(format!("records/{pid}")).exists()
    });
    assert!(
        decoy.0.try_wait().unwrap().is_none(),
        "the decoy was signalled"
    );
}

/// SIGKILLs a pid on drop (a launched process the test may not reap).
struct Reaped(i32);
impl Drop for Reaped {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test launched.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}
