//! Test-only helpers shared by banger's test suites: throwaway system users
//! (marked `bgtest-`), talking to a Unix socket as another uid from a forked
//! child, and the "skipped: why" convention for root-only tests.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

/// True when running as root; otherwise prints why the test is skipped.
pub fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        true
    } else {
        eprintln!("skipped: {test} needs root");
        false
    }
}

/// A system user created for one test and deleted when dropped.
pub struct SystemUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl SystemUser {
    /// `useradd --system` a user named `bgtest-<tag>-<pid>`.
    pub fn create(tag: &str) -> SystemUser {
        let name = format!("bgtest-{tag}-{}", std::process::id());
        let name: String = name.chars().take(31).collect();
        delete_user(&name);
        let made = retry_on_lock(|| {
            Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--user-group",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name)
                .output()
                .expect("useradd runs")
        });
        assert!(
            made.status.success(),
            "useradd {name} failed: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        );
        let out = Command::new("id").args(["-u", &name]).output().unwrap();
        let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let out = Command::new("id").args(["-g", &name]).output().unwrap();
        let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        SystemUser { name, uid, gid }
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        delete_user(&self.name);
    }
}

/// Run a shadow-utils command again while another test holds the
/// passwd/group lock (tests in other processes add and delete users at the
/// same time; `useradd`/`userdel` give up at once on a held lock).
fn retry_on_lock(mut run: impl FnMut() -> std::process::Output) -> std::process::Output {
    let mut out = run();
    for _ in 0..100 {
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !(err.contains("lock") || err.contains("try again")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        out = run();
    }
    out
}

/// `userdel NAME` (retried while the passwd file is locked); a user that
/// does not exist is fine.
fn delete_user(name: &str) {
    retry_on_lock(|| {
        Command::new("userdel")
            .arg(name)
            .output()
            .expect("userdel runs")
    });
}

/// What a peer saw after connecting and sending one payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Connected; the server closed the connection without a byte.
    ClosedSilently,
    /// Connected; the server answered (first bytes, up to 4 KiB).
    Answered(Vec<u8>),
    /// connect(2) failed with this errno.
    ConnectFailed(i32),
    /// The child failed in some other way (status code).
    ChildFailed(i32),
}

/// Fork, drop to `uid`/`gid` in the child, connect to `socket`, send
/// `payload`, and report what came back. The child uses raw syscalls only
/// (async-signal-safe after fork in a threaded test process).
pub fn probe_as(uid: u32, gid: u32, socket: &Path, payload: &[u8]) -> Probe {
    let path = CString::new(socket.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: sockaddr_un is plain old data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes_with_nul();
    assert!(bytes.len() <= addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let mut pipe = [0i32; 2];
    // SAFETY: pipe writes two fds into the array we own.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let mut buf = vec![0u8; 4096];
    // SAFETY: after fork the child only calls async-signal-safe syscalls
    // on memory prepared before the fork, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: child side; raw syscalls only, ends in _exit.
        unsafe {
            libc::close(pipe[0]);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(90);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                libc::_exit(91);
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) != 0 {
                let e = *libc::__errno_location();
                libc::write(pipe[1], &e as *const i32 as *const libc::c_void, 4);
                libc::_exit(92);
            }
            libc::write(fd, payload.as_ptr() as *const libc::c_void, payload.len());
            let mut total = 0usize;
            loop {
                let n = libc::read(
                    fd,
                    buf.as_mut_ptr().add(total) as *mut libc::c_void,
                    buf.len() - total,
                );
                if n <= 0 {
                    break;
                }
                total += n as usize;
                if total == buf.len() || buf[..total].contains(&b'\n') {
                    break;
                }
            }
            libc::write(pipe[1], buf.as_ptr() as *const libc::c_void, total);
            libc::_exit(if total == 0 { 0 } else { 1 });
        }
    }
    // SAFETY: parent closes its copy of the write end.
    unsafe { libc::close(pipe[1]) };
    let mut got = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        // SAFETY: reading into a stack buffer we own.
        let n = unsafe { libc::read(pipe[0], chunk.as_mut_ptr() as *mut libc::c_void, 4096) };
        if n <= 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n as usize]);
    }
    // SAFETY: closing the fd we own; waiting on our own child.
    let mut status = 0;
    unsafe {
        libc::close(pipe[0]);
        libc::waitpid(pid, &mut status, 0);
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    match code {
        0 => Probe::ClosedSilently,
        1 => Probe::Answered(got),
        92 if got.len() == 4 => {
            Probe::ConnectFailed(i32::from_ne_bytes(got[..4].try_into().unwrap()))
        }
        other => Probe::ChildFailed(other),
    }
}

/// Make `dir` and every ancestor traversable by everyone (tests that let
/// another uid reach a socket in a temp dir).
pub fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d == Path::new("/") {
            break;
        }
        let meta = std::fs::metadata(d).unwrap();
        let mode = meta.permissions().mode() | 0o711;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
        cur = d.parent();
    }
}

/// One HTTP/1.1 request over a Unix socket (`Connection: close`); returns
/// the status code and body. Enough for tests; the CLI uses hyper.
pub fn http_unix(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: banger\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {text:?}")))?;
    let body = match text.split_once("\r\n\r\n") {
        Some((head, rest))
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            dechunk(rest)
        }
        Some((_, rest)) => rest.to_string(),
        None => String::new(),
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Poll until `check` is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A child process killed and reaped when dropped (services under test).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A short hex suffix that differs between runs and processes, for names of
/// test objects that share a kernel-wide namespace (links, netns, tables).
pub fn unique_suffix() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{:06x}",
        (n ^ std::process::id().rotate_left(12)) & 0xff_ffff
    )
}

/// A private temporary directory named `bgtest-…` (the sweep's marker),
/// removed on drop: the one copy of the `fn tmp()` fixture.
pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bgtest-")
        .tempdir()
        .expect("creating a bgtest- temp dir")
}

/// True when the test runs as root (no note printed; see [`require_root`]).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Run `ip ARGS…` (argv, no shell) and require success.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes a network link by name when dropped (a failing test leaves none).
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// Lazily unmounts the mount points it holds when dropped, last pushed first.
pub struct MountGuard(pub Vec<std::path::PathBuf>);

impl Drop for MountGuard {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg("--")
                .arg(p)
                .output();
        }
    }
}

/// Copy with `cp`, so no writable fd to the new file (often a binary to
/// exec) ever exists in this process: a sibling test's fork would inherit
/// it and the exec would fail with ETXTBSY.
pub fn cp_out_of_process(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(st.success(), "cp {} {}", from.display(), to.display());
}

/// A loopback TCP listener that greets every connection with an SSH banner
/// (guest readiness without a guest); served by a thread for the test's life.
pub fn ssh_banner_listener() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let addr = l.local_addr().expect("the listener's address");
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            use std::io::Write;
            let _ = c.write_all(b"SSH-2.0-bgtest\r\n");
        }
    });
    addr
}

/// Figures the benchmarks print: milliseconds, percentiles, a summary.
pub mod bench {
    use std::time::Duration;

    /// `d` in milliseconds, to the microsecond.
    pub fn ms(d: Duration) -> f64 {
        (d.as_secs_f64() * 1e6).round() / 1e3
    }

    /// The `p`th percentile (nearest rank) of `sorted` (not empty).
    pub fn pct(sorted: &[Duration], p: usize) -> Duration {
        sorted[((sorted.len() * p).div_ceil(100))
            .saturating_sub(1)
            .min(sorted.len() - 1)]
    }

    /// `{p50, p95, min, max}` of `d` (not empty) in milliseconds.
    pub fn stats(d: &[Duration]) -> serde_json::Value {
        let mut s = d.to_vec();
        s.sort();
        serde_json::json!({
            "p50": ms(pct(&s, 50)),
            "p95": ms(pct(&s, 95)),
            "min": ms(s[0]),
            "max": ms(s[s.len() - 1]),
        })
    }
}

/// `GET /` over plain TCP from the calling thread's network namespace, with
/// short deadlines (2 s to connect, 5 s to read); the answer's body.
pub fn http_get(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use std::io::{Read, Write};
    use std::time::Duration;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: outside\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

#[cfg(test)]
mod user_tests {
    use super::retry_on_lock;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{ExitStatus, Output};

    fn out(code: i32, err: &str) -> Output {
        Output {
            status: ExitStatus::from_raw(code << 8),
            stdout: Vec::new(),
            stderr: err.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_held_passwd_lock_is_waited_out_and_other_failures_are_not_retried() {
        let mut calls = 0;
        let r = retry_on_lock(|| {
            calls += 1;
            if calls < 3 {
                out(10, "userdel: cannot lock /etc/passwd; try again later.")
            } else {
                out(0, "")
            }
        });
        assert!(r.status.success());
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r = retry_on_lock(|| {
            calls += 1;
            out(6, "userdel: user 'x' does not exist")
        });
        assert_eq!((r.status.code(), calls), (Some(6), 1));
    }
}
