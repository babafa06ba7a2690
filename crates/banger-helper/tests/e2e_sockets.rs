//! Socket exhaustion against the real helper (root): with its fd limit
//! lowered so `accept` fails with EMFILE, the helper backs off instead of
//! spinning (CPU time and accept attempts counted over a window), and
//! serves again — including the connections that waited — once fds free up.

#[path = "e2e/guards.rs"]
#[allow(dead_code)]
mod guards;
#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use banger_proto::helper as m;
use banger_testkit::{require_root, wait_until, SystemUser};
use harness::{call_as, layout, result, HelperProc};
use rustix::process::{prlimit, Pid, Resource, Rlimit};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const VERSION: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"helper.version\"}\n";

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn accept_failures(h: &HelperProc) -> usize {
    h.log_text()
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count()
}

/// Connect as root (admitted like the owner) and send a whole request.
fn connect_and_ask(h: &HelperProc) -> UnixStream {
    let mut s = UnixStream::connect(&h.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(VERSION).unwrap();
    s
}

/// The answer line, or `None` on EOF / timeout.
fn answer(s: &mut UnixStream) -> Option<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while let Ok(1) = s.read(&mut b) {
        if b[0] == b'\n' {
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.push(b[0]);
    }
    None
}

#[test]
fn root_out_of_fds_the_helper_backs_off_and_recovers() {
    if !require_root("root_out_of_fds_the_helper_backs_off_and_recovers") {
        return;
    }
    let owner = SystemUser::create("e2ehfd");
    let l = layout(&owner, "bgtest-fd0");
    let root = l.cfg.owner_home.clone();
    let h = HelperProc::start(&l.cfg_path, &l.cfg, &[], root.join("helper.log"));
    let pid = h.pid();

    // Room for three more fds: the fourth connection cannot be accepted.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let limit = open + 3;
    prlimit(
        Some(Pid::from_raw(pid as i32).unwrap()),
        Resource::Nofile,
        Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .unwrap();

    let mut served = Vec::new();
    for _ in 0..3 {
        let mut s = connect_and_ask(&h);
        assert!(answer(&mut s).is_some(), "served below the limit");
        served.push(s);
    }
    // These wait in the listen backlog: every accept now fails (EMFILE).
    let waiting: Vec<UnixStream> = (0..4).map(|_| connect_and_ask(&h)).collect();
    assert!(
        wait_until(Duration::from_secs(10), || accept_failures(&h) > 0),
        "accept never failed; log:\n{}",
        h.log_text()
    );
    assert!(
        h.log_text().contains("os error 24"),
        "EMFILE:\n{}",
        h.log_text()
    );

    // A 3 s window out of fds: a few attempts (back-off doubling to 1 s),
    // not a hot loop, and next to no CPU.
    std::thread::sleep(Duration::from_millis(1500));
    let (cpu0, tries0, t0) = (cpu_ticks(pid), accept_failures(&h), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (cpu1, tries1, window) = (cpu_ticks(pid), accept_failures(&h), t0.elapsed());
    // SAFETY: sysconf(3) reads a constant; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let cpu = Duration::from_millis((cpu1 - cpu0) * 1000 / hz);
    eprintln!(
        "out of fds for {window:?}: {} accept attempts, {cpu:?} CPU",
        tries1 - tries0
    );
    assert!(
        tries1 - tries0 <= 8,
        "{} accept attempts in {window:?}",
        tries1 - tries0
    );
    assert!(
        cpu < Duration::from_millis(300),
        "{cpu:?} CPU in {window:?}"
    );

    // Free the fds: the waiting connections are accepted and answered.
    // Only three fit at once (the helper keeps an answered connection open
    // for its next request), so each is closed once answered, making room
    // for the fourth.
    drop(served);
    let t0 = Instant::now();
    for mut s in waiting {
        let a = answer(&mut s).expect("a waiting connection is served after fds free up");
        assert!(a.contains(banger_proto::VERSION), "{a}");
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let v = call_as(
        owner.uid,
        owner.gid,
        &h.socket,
        m::VERSION,
        serde_json::json!({}),
    );
    result(m::VERSION, &v);
}
