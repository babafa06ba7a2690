//! Process handles that cannot be confused by PID reuse: `pidfd_open`,
//! a liveness check through the pidfd, `pidfd_send_signal`, and `/proc`
//! cmdline reading with the proc root injected.

use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags, Signal};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A failed process operation, naming the pid.
#[derive(Debug, thiserror::Error)]
pub enum PidfdError {
    #[error("pid {0} is not a valid process id")]
    InvalidPid(i32),
    #[error("open a pidfd for pid {0}")]
    Open(i32, #[source] io::Error),
    #[error("poll the pidfd of pid {0}")]
    Poll(i32, #[source] io::Error),
    #[error("signal {1} is not a valid signal number")]
    InvalidSignal(i32, i32),
    #[error("send signal {1} to pid {0}")]
    Signal(i32, i32, #[source] io::Error),
    #[error("read {0}")]
    ReadCmdline(PathBuf, #[source] io::Error),
}

fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// `pidfd_open(pid, 0)`: a handle to exactly the process that has `pid` now.
pub fn open(pid: i32) -> Result<OwnedFd, PidfdError> {
    let p = Pid::from_raw(pid).ok_or(PidfdError::InvalidPid(pid))?;
    rustix::process::pidfd_open(p, PidfdFlags::empty())
        .map_err(|e| PidfdError::Open(pid, io_err(e)))
}

/// Whether the process behind `pidfd` is still running (a pidfd polls
/// readable once its process has exited, zombie or reaped).
pub fn is_alive(pid: i32, pidfd: impl AsFd) -> Result<bool, PidfdError> {
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    rustix::event::poll(&mut fds, 0).map_err(|e| PidfdError::Poll(pid, io_err(e)))?;
    Ok(!fds[0].revents().contains(PollFlags::IN))
}

/// `pidfd_send_signal(pidfd, signo, NULL, 0)`.
pub fn send_signal(pid: i32, pidfd: impl AsFd, signo: i32) -> Result<(), PidfdError> {
    let sig = Signal::from_raw(signo).ok_or(PidfdError::InvalidSignal(pid, signo))?;
    rustix::process::pidfd_send_signal(pidfd, sig)
        .map_err(|e| PidfdError::Signal(pid, signo, io_err(e)))
}

/// The NUL-separated `<proc_root>/<pid>/cmdline`, split into argv entries.
pub fn read_cmdline(proc_root: &Path, pid: i32) -> Result<Vec<Vec<u8>>, PidfdError> {
    let path = proc_root.join(pid.to_string()).join("cmdline");
    let raw = std::fs::read(&path).map_err(|e| PidfdError::ReadCmdline(path, e))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// Pidfds of the processes the helper launched itself, keyed by pid: a
/// signal to one of them goes through the pidfd kept since its fork.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<i32, Arc<OwnedFd>>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep `pidfd` for `pid`; returns the shared handle (for the reaper).
    pub fn insert(&self, pid: i32, pidfd: OwnedFd) -> Arc<OwnedFd> {
        let fd = Arc::new(pidfd);
        self.lock().insert(pid, fd.clone());
        fd
    }

    /// Forget `pid` only if it still maps to this very handle (a reused pid
    /// launched again keeps its new entry).
    pub fn remove_exact(&self, pid: i32, fd: &Arc<OwnedFd>) {
        let mut map = self.lock();
        if map.get(&pid).is_some_and(|cur| Arc::ptr_eq(cur, fd)) {
            map.remove(&pid);
        }
    }

    pub fn get(&self, pid: i32) -> Option<Arc<OwnedFd>> {
        self.lock().get(&pid).cloned()
    }

    pub fn remove(&self, pid: i32) {
        self.lock().remove(&pid);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<OwnedFd>>> {
        // A poisoned map is still a valid map.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn cmdline_splits_on_nul_from_a_fixture_root() {
        let dir = tempfile::Builder::new()
            .prefix("bgtest-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("42")).unwrap();
        std::fs::write(
            dir.path().join("42/cmdline"),
            b"/usr/bin/firecracker\0--api-sock\0/run/x\0",
        )
        .unwrap();
        let argv = read_cmdline(dir.path(), 42).unwrap();
        assert_eq!(
            argv,
            vec![
                b"/usr/bin/firecracker".to_vec(),
                b"--api-sock".to_vec(),
                b"/run/x".to_vec()
            ]
        );
        assert!(matches!(
            read_cmdline(dir.path(), 43),
            Err(PidfdError::ReadCmdline(..))
        ));
    }

    #[test]
    fn pidfd_sees_exit_and_refuses_to_signal_a_reaped_process() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let fd = open(pid).unwrap();
        assert!(is_alive(pid, &fd).unwrap());
        send_signal(pid, &fd, libc::SIGKILL).unwrap();
        child.wait().unwrap();
        assert!(!is_alive(pid, &fd).unwrap());
        // Reaped: the pid may be reused, the pidfd still names the dead one.
        assert!(matches!(
            send_signal(pid, &fd, libc::SIGKILL),
            Err(PidfdError::Signal(..))
        ));
    }

    #[test]
    fn invalid_pids_are_errors() {
        assert!(matches!(open(0), Err(PidfdError::InvalidPid(0))));
        assert!(matches!(open(-5), Err(PidfdError::InvalidPid(-5))));
        assert!(matches!(open(i32::MAX), Err(PidfdError::Open(..))));
    }
}
