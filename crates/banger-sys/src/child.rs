//! Running one child tool with bounds: its own process group, output read
//! with a hard cap, a deadline after which the whole group is SIGKILLed and
//! reaped, and optionally fewer privileges than the caller (no capabilities,
//! another uid), applied between fork and exec.

use crate::runner::{Cmd, CmdOutput, Overflow, Privilege, RunError, Runner, SAFE_PATH};
use rustix::event::{poll, PollFd, PollFlags};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long stragglers holding the child's pipes get after the child
/// exited and its group was killed (a grandchild that left the group).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Read size per wake-up.
const CHUNK: usize = 64 << 10;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn check(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Between fork and exec: drop to `p`. Only raw syscalls (no allocation,
/// async-signal-safe). Order matters: the bounding set and supplementary
/// groups need CAP_SETPCAP / CAP_SETGID, so they go before the uid change;
/// the capability sets are emptied last.
fn drop_privileges(p: Privilege) -> io::Result<()> {
    if p == Privilege::Inherit {
        return Ok(());
    }
    // SAFETY: prctl with integer arguments only; no memory is passed.
    unsafe {
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as _)?;
        // EINVAL: a kernel without ambient capabilities has none to clear.
        let r = libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::last_os_error());
        }
        // Clear the bounding set: without it an exec as uid 0 would get
        // every capability back. PR_CAPBSET_READ fails with EINVAL past the
        // last capability the kernel knows.
        for cap in 0..64 {
            let r = libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0);
            if r < 0 {
                break;
            }
            if r == 1 {
                check(libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) as _)?;
            }
        }
    }
    if let Privilege::User { uid, gid } = p {
        // SAFETY: setgroups with a zero count reads no memory; the
        // set*id calls take integers.
        unsafe {
            check(libc::setgroups(0, std::ptr::null()) as _)?;
            check(libc::setresgid(gid, gid, gid) as _)?;
            check(libc::setresuid(uid, uid, uid) as _)?;
        }
    }
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a v3 header and two data structs, both live
    // `#[repr(C)]` values of the kernel's layout.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) })
}

/// Between fork and exec: let the fds the command passes survive the exec
/// (they stay close-on-exec in the helper itself).
fn keep_fds(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: fcntl(F_SETFD) on an fd number; only changes its flags.
        check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } as _)?;
    }
    Ok(())
}

/// SIGKILL the process group `pgid` (the child leads it).
fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid signals a process group; the
    // leader is not reaped yet, so the group id cannot name anyone else.
    unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
}

/// One output stream being collected.
struct Stream {
    pipe: Option<std::fs::File>,
    buf: Vec<u8>,
    name: &'static str,
    max: usize,
}

/// What ended the collection early.
enum Stop {
    Deadline,
    Overflow(&'static str),
}

fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let fl = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, fl | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// Run `cmd` to completion within its limits (see [`crate::runner::Limits`]).
pub fn run(cmd: &Cmd) -> Result<CmdOutput, RunError> {
    let program = cmd.program.to_string_lossy().into_owned();
    let spawn_err = |source| RunError::Spawn {
        program: program.clone(),
        source,
    };
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("LC_ALL", "C")
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let fds = cmd.pass_fds.clone();
    let privilege = cmd.privilege;
    // SAFETY: the closure only makes raw syscalls (fcntl, prctl, set*id,
    // capset) on values captured before the fork; it allocates nothing.
    unsafe {
        c.pre_exec(move || {
            keep_fds(&fds)?;
            drop_privileges(privilege)
        });
    }
    let mut child = c.spawn().map_err(spawn_err)?;
    let pgid = child.id();
    let writer = cmd.stdin.as_ref().map(|data| {
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let data = data.clone();
        // From a thread, so a child that writes a lot before reading cannot
        // deadlock against us; a killed child ends it with EPIPE.
        std::thread::spawn(move || stdin.write_all(&data))
    });
    let out = collect(cmd, &mut child, pgid);
    // Whatever happened, nothing of the group outlives the call: kill it
    // while the leader is still unreaped, then reap.
    kill_group(pgid);
    let status = child.wait().map_err(spawn_err)?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    let (stdout, stderr) = match out {
        Ok(v) => v,
        Err(Stop::Deadline) => {
            return Err(RunError::TimedOut {
                program,
                after: cmd.limits.timeout.unwrap_or_default(),
            })
        }
        Err(Stop::Overflow(stream)) => {
            let max = if stream == "stdout" {
                cmd.limits.max_stdout
            } else {
                cmd.limits.max_stderr
            };
            return Err(RunError::OutputTooLarge {
                program,
                stream,
                max,
            });
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let status = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(CmdOutput {
        status,
        stdout,
        stderr,
    })
}

/// Read stdout and stderr until both end and the child exited, or the
/// deadline passes, or a stream outgrows the cap (with [`Overflow::Kill`]).
fn collect(cmd: &Cmd, child: &mut Child, pgid: u32) -> Result<(Vec<u8>, Vec<u8>), Stop> {
    let limits = cmd.limits;
    let deadline = limits.timeout.map(|t| Instant::now() + t);
    let pidfd = crate::pidfd::open(pgid as i32).ok();
    let mut streams = [
        Stream {
            pipe: child.stdout.take().map(|p| OwnedFd::from(p).into()),
            buf: Vec::new(),
            name: "stdout",
            max: limits.max_stdout,
        },
        Stream {
            pipe: child.stderr.take().map(|p| OwnedFd::from(p).into()),
            buf: Vec::new(),
            name: "stderr",
            max: limits.max_stderr,
        },
    ];
    for s in &streams {
        if let Some(p) = &s.pipe {
            let _ = set_nonblocking(p);
        }
    }
    let mut exited = pidfd.is_none();
    let mut drain_until: Option<Instant> = None;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let open = streams.iter().any(|s| s.pipe.is_some());
        if exited && !open {
            break;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(Stop::Deadline);
        }
        if drain_until.is_some_and(|d| now >= d) {
            // Something outside the group still holds a pipe: stop reading.
            break;
        }
        let until = match (deadline, drain_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout_ms = until.map_or(-1, |u| {
            let ms = u.saturating_duration_since(now).as_millis();
            ms.clamp(1, i32::MAX as u128) as i32
        });
        let mut pfds: Vec<PollFd> = Vec::with_capacity(3);
        let mut which: Vec<usize> = Vec::with_capacity(3);
        for (i, s) in streams.iter().enumerate() {
            if let Some(p) = &s.pipe {
                pfds.push(PollFd::new(p, PollFlags::IN));
                which.push(i);
            }
        }
        if !exited {
            if let Some(fd) = &pidfd {
                pfds.push(PollFd::new(fd, PollFlags::IN));
                which.push(usize::MAX);
            }
        }
        match poll(&mut pfds, timeout_ms) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return Err(Stop::Deadline),
        }
        let ready: Vec<(usize, bool)> = pfds
            .iter()
            .zip(&which)
            .map(|(p, w)| (*w, !p.revents().is_empty()))
            .collect();
        drop(pfds);
        for (w, is_ready) in ready {
            if !is_ready {
                continue;
            }
            if w == usize::MAX {
                exited = true;
                // The child is gone: anything it left in its group goes too,
                // and the pipes get a short grace to drain.
                kill_group(pgid);
                drain_until = Some(Instant::now() + DRAIN_GRACE);
                continue;
            }
            let s = &mut streams[w];
            let Some(p) = s.pipe.as_mut() else { continue };
            loop {
                match p.read(&mut chunk) {
                    Ok(0) => {
                        s.pipe = None;
                        break;
                    }
                    Ok(n) => {
                        let room = s.max.saturating_sub(s.buf.len());
                        if n > room {
                            s.buf.extend_from_slice(&chunk[..room]);
                            if limits.on_overflow == Overflow::Kill {
                                return Err(Stop::Overflow(s.name));
                            }
                        } else {
                            s.buf.extend_from_slice(&chunk[..n]);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        s.pipe = None;
                        break;
                    }
                }
            }
        }
        if pidfd.is_none() && !streams.iter().any(|s| s.pipe.is_some()) {
            break;
        }
    }
    let [out, err] = streams;
    Ok((out.buf, err.buf))
}

/// The raw fd of a passed file, as the child will see it: `/proc/self/fd/N`.
pub fn proc_self_fd(fd: &impl AsRawFd) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Runs commands on the host with a cleared environment, each in its own
/// process group, within the command's [`Limits`] and [`Privilege`]
/// (see [`run`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct HostRunner;

impl Runner for HostRunner {
    fn output(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        run(cmd)
    }
}

#[cfg(test)]
#[path = "child_tests.rs"]
mod tests;
