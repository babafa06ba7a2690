use super::*;
use crate::runner::{Limits, Overflow, Privilege, RunError, Runner};
use std::path::Path;

use banger_testkit::tmp;

use banger_testkit::is_root;

/// Gone or a zombie waiting for its new parent.
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

fn wait_dead(pid: i32) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        if dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn read_pid(p: &Path) -> i32 {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            if let Ok(n) = s.trim().parse() {
                return n;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no pid file");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_child_past_its_deadline_is_killed_with_its_whole_group() {
    let d = tmp();
    let pidfile = d.path().join("grandchild");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let cmd = Cmd::new("sh")
        .args(["-c", &script])
        .limits(Limits::new(Duration::from_millis(400), 1 << 20));
    let t0 = Instant::now();
    let err = crate::runner::HostRunner.output(&cmd).unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(err, RunError::TimedOut { .. }), "{err:?}");
    assert!(err.to_string().contains("killed with its process group"));
    assert!(took < Duration::from_secs(3), "{took:?}");
    let gc = read_pid(&pidfile);
    assert!(wait_dead(gc), "grandchild {gc} survived the deadline");
}

#[test]
fn what_a_child_leaves_in_its_group_dies_when_it_exits() {
    let d = tmp();
    let pidfile = d.path().join("straggler");
    // The straggler keeps stdout open: without the group kill the read
    // would last 30 s.
    let script = format!("sleep 30 & echo $! > {}; echo hi", pidfile.display());
    let t0 = Instant::now();
    let out = crate::runner::HostRunner
        .run(&Cmd::new("sh").args(["-c", &script]))
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(out.stdout, b"hi\n");
    assert!(wait_dead(read_pid(&pidfile)));
}

#[test]
fn output_past_the_cap_kills_the_child_and_never_buffers_more() {
    let cmd = Cmd::new("head")
        .args(["-c", "1000000000", "/dev/zero"])
        .limits(Limits::new(Duration::from_secs(20), 64 << 10));
    let err = crate::runner::HostRunner.output(&cmd).unwrap_err();
    match err {
        RunError::OutputTooLarge { stream, max, .. } => {
            assert_eq!((stream, max), ("stdout", 64 << 10));
        }
        other => panic!("{other:?}"),
    }
    // Truncate: exactly the cap is kept, the child runs to its end.
    let mut l = Limits::new(Duration::from_secs(20), 1000);
    l.on_overflow = Overflow::Truncate;
    let out = crate::runner::HostRunner
        .run(
            &Cmd::new("head")
                .args(["-c", "3000000", "/dev/zero"])
                .limits(l),
        )
        .unwrap();
    assert_eq!(out.stdout.len(), 1000);
    assert_eq!(out.status, 0);
}

/// `Key:\tvalue` lines of a /proc status file.
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("{key} missing in {status}"))
        .trim()
}

fn status_as(p: Privilege) -> String {
    let out = crate::runner::HostRunner
        .run(
            &Cmd::new("cat")
                .arg("/proc/self/status")
                .privilege(p)
                .limits(Limits::new(Duration::from_secs(10), 1 << 20)),
        )
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn root_no_caps_child_has_uid_0_and_no_capability() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let s = status_as(Privilege::RootNoCaps);
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&s, k), "0000000000000000", "{k}\n{s}");
    }
    assert_eq!(status_field(&s, "NoNewPrivs"), "1");
    assert_eq!(
        status_field(&s, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0"; 4]
    );
    // The caller keeps its own.
    let me = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_ne!(status_field(&me, "CapEff"), "0000000000000000");
}

#[test]
fn user_child_has_that_uid_no_groups_and_no_capability() {
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let s = status_as(Privilege::User {
        uid: 4242,
        gid: 4243,
    });
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&s, k), "0000000000000000", "{k}\n{s}");
    }
    let ids = |k| {
        status_field(&s, k)
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid"), ["4242"; 4]);
    assert_eq!(ids("Gid"), ["4243"; 4]);
    assert_eq!(status_field(&s, "Groups"), "");
    assert_eq!(status_field(&s, "NoNewPrivs"), "1");
}

#[test]
fn a_passed_fd_is_readable_as_proc_self_fd_and_others_are_not() {
    let d = tmp();
    let p = d.path().join("f");
    std::fs::write(&p, b"passed").unwrap();
    let f = std::fs::File::open(&p).unwrap();
    let other = std::fs::File::open(&p).unwrap();
    let name = proc_self_fd(&f);
    let out = crate::runner::HostRunner
        .run(&Cmd::new("cat").arg(&name).pass_fd(f.as_raw_fd()))
        .unwrap();
    assert_eq!(out.stdout, b"passed");
    let r = crate::runner::HostRunner.run(&Cmd::new("cat").arg(proc_self_fd(&other)));
    assert!(r.is_err(), "an fd that was not passed leaked: {r:?}");
}
