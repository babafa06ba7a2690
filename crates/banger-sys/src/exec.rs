//! Launching a validated binary through the very fd that was checked
//! (`execveat(fd, "", AT_EMPTY_PATH)`), with a clean environment and only
//! stdio inherited; returns the child and a pidfd for it.

use crate::pidfd::{self, PidfdError};
use crate::runner::SAFE_PATH;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// A failed launch.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("argv entry {0:?} contains a NUL byte")]
    Nul(OsString),
    #[error("argv is empty")]
    EmptyArgv,
    #[error("duplicate the log file descriptor")]
    DupLog(#[source] io::Error),
    #[error("execute {0} through its validated fd")]
    Spawn(String, #[source] io::Error),
    #[error("open a pidfd for the launched process")]
    Pidfd(#[source] PidfdError),
}

/// A launched process.
#[derive(Debug)]
pub struct Launched {
    pub pid: i32,
    /// Taken right after fork, while the child is still unreaped: it names
    /// exactly this process for as long as the helper keeps it.
    pub pidfd: OwnedFd,
    /// For reaping (`wait`).
    pub child: Child,
}

/// Pre-built argument arrays for the child, which must not allocate
/// between fork and exec.
struct ExecArgs {
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    fd: RawFd,
}

// SAFETY: the raw pointers point into the CString heap buffers owned by the
// same struct, which are never mutated; moving the struct does not move them.
unsafe impl Send for ExecArgs {}
// SAFETY: as above; the child only reads them.
unsafe impl Sync for ExecArgs {}

fn cstrings(v: Vec<OsString>) -> Result<Vec<CString>, ExecError> {
    v.into_iter()
        .map(|s| CString::new(s.clone().into_vec()).map_err(|_| ExecError::Nul(s)))
        .collect()
}

fn null_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Every fd from 3 up becomes close-on-exec: only stdio crosses the exec.
/// `close_range(3, ~0U, CLOSE_RANGE_CLOEXEC)`; async-signal-safe.
fn cloexec_from_3() -> io::Result<()> {
    // SAFETY: close_range takes plain integers and only changes fd flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`; returns only on failure.
fn execveat_empty_path(a: &ExecArgs) -> io::Error {
    // SAFETY: `a.fd` is open in this process; "" is a valid C string; both
    // arrays are NULL-terminated and point into live CStrings.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            a.fd,
            c"".as_ptr(),
            a.argv_ptrs.as_ptr(),
            a.envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    io::Error::last_os_error()
}

/// Fork and exec the binary held by `exe` (an `O_PATH` fd that was
/// validated) with `argv` (argv\[0\] included), environment `PATH=<safe>`
/// only, stdin from /dev/null, stdout and stderr appended to `log`, in its
/// own process group, with every fd above 2 closed on exec.
pub fn spawn_via_fd(
    exe: BorrowedFd<'_>,
    argv: Vec<OsString>,
    log: &File,
) -> Result<Launched, ExecError> {
    let program = argv
        .first()
        .ok_or(ExecError::EmptyArgv)?
        .to_string_lossy()
        .into_owned();
    let argv_c = cstrings(argv)?;
    let envp_c = cstrings(vec![OsString::from(format!("PATH={SAFE_PATH}"))])?;
    let args = ExecArgs {
        argv_ptrs: null_terminated(&argv_c),
        envp_ptrs: null_terminated(&envp_c),
        _argv: argv_c,
        _envp: envp_c,
        fd: exe.as_raw_fd(),
    };
    let out = log.try_clone().map_err(ExecError::DupLog)?;
    let err = log.try_clone().map_err(ExecError::DupLog)?;
    let mut cmd = Command::new(&program);
    cmd.env_clear()
        .env("PATH", SAFE_PATH)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // SAFETY: the closure runs between fork and exec; it only makes raw
    // syscalls (close_range, execveat) on pre-built data and reads errno —
    // no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            cloexec_from_3()?;
            Err(execveat_empty_path(&args))
        });
    }
    // ETXTBSY: a binary written moments ago can still be open for writing
    // in a child some other thread forked and has not yet exec'd; that
    // clears on its own, so retry briefly instead of failing the launch.
    let mut busy_retries = 0;
    let child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && busy_retries < 50 => {
                busy_retries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.map_err(|e| ExecError::Spawn(program.clone(), e))?,
        }
    };
    let pid = child.id() as i32;
    // The child is ours and unreaped: its pid cannot be reused yet.
    let pidfd = pidfd::open(pid).map_err(ExecError::Pidfd)?;
    Ok(Launched { pid, pidfd, child })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    fn script_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("bgtest-")
            .tempdir()
            .unwrap()
    }

    #[test]
    fn runs_the_fd_not_the_path_with_a_clean_env_and_only_stdio() {
        let dir = script_dir();
        let bin = dir.path().join("envcopy");
        std::fs::copy("/usr/bin/env", &bin).unwrap();
        let (fd, _) = crate::fsops::open_path_no_symlinks(&bin).unwrap();
        // Replace the path after the check: the fd still runs `env`.
        std::fs::remove_file(&bin).unwrap();
        std::fs::copy("/usr/bin/true", &bin).unwrap();
        std::env::set_var("BANGER_EXEC_LEAK", "secret");
        let log_path = dir.path().join("log");
        let log = File::create(&log_path).unwrap();
        let mut l = spawn_via_fd(fd.as_fd(), vec!["envcopy".into()], &log).unwrap();
        assert!(l.child.wait().unwrap().success());
        let mut text = String::new();
        File::open(&log_path)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text.trim(), format!("PATH={SAFE_PATH}"));
        assert!(!pidfd::is_alive(l.pid, &l.pidfd).unwrap());
    }

    #[test]
    fn only_stdio_is_inherited() {
        let dir = script_dir();
        let (fd, _) =
            crate::fsops::open_path_no_symlinks(std::path::Path::new("/usr/bin/ls")).unwrap();
        // An fd without CLOEXEC in the parent must still not reach the child.
        let leak = File::open("/etc/hostname").unwrap();
        let leak_fd = leak.as_raw_fd();
        // SAFETY: clearing FD_CLOEXEC on an fd we own.
        unsafe { libc::fcntl(leak_fd, libc::F_SETFD, 0) };
        let log_path = dir.path().join("log");
        let log = File::create(&log_path).unwrap();
        let mut l =
            spawn_via_fd(fd.as_fd(), vec!["ls".into(), "/proc/self/fd".into()], &log).unwrap();
        assert!(l.child.wait().unwrap().success());
        let text = std::fs::read_to_string(&log_path).unwrap();
        let fds: Vec<&str> = text.split_whitespace().collect();
        // 0,1,2 plus the fd `ls` itself opens on /proc/self/fd.
        assert!(leak_fd > 3);
        assert_eq!(fds, vec!["0", "1", "2", "3"]);
    }

    #[test]
    fn nul_in_argv_is_an_error() {
        let (fd, _) =
            crate::fsops::open_path_no_symlinks(std::path::Path::new("/usr/bin/true")).unwrap();
        let log = File::create(script_dir().path().join("log")).unwrap();
        let r = spawn_via_fd(fd.as_fd(), vec!["a\0b".into()], &log);
        assert!(matches!(r, Err(ExecError::Nul(_))));
    }
}
