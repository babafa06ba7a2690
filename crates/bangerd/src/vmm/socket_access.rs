//! Handing a root-launched Firecracker's API and vsock sockets to the owner
//! the moment they appear, so the daemon's first API probe never meets a
//! root-owned socket (`EACCES`): [`ensure_socket_access_for_async`] is
//! spawned right before the launch and awaited right after it. A socket is
//! seen appearing through inotify on its directory (the poll tick is the
//! fallback, e.g. while the directory does not exist yet).

use crate::privops::{PrivError, PrivOps};
use banger_proto::helper::{self as m, method};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

/// How long to wait for a socket, and how often to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    pub deadline: Duration,
    pub tick: Duration,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy {
            deadline: Duration::from_secs(10),
            tick: Duration::from_millis(10),
        }
    }
}

/// Why a socket was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum SocketAccessError {
    #[error("waiting for the {label} at {path}: deadline of {deadline:?} exceeded")]
    DeadlineExceeded {
        label: String,
        path: PathBuf,
        deadline: Duration,
    },
    #[error("waiting for the {label} at {path}: cancelled")]
    Cancelled { label: String, path: PathBuf },
    #[error("handing the {label} at {path} to the owner")]
    Access {
        label: String,
        path: PathBuf,
        #[source]
        source: PrivError,
    },
    #[error("the socket-access task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}

/// Wakes when an entry is created in, or moved into, one directory:
/// inotify (`IN_CREATE | IN_MOVED_TO`) read through the runtime's reactor.
/// Closing an inotify descriptor waits for an SRCU grace period (~15 ms
/// on a busy host), so the close is handed to a blocking thread.
struct DirWatch(Option<AsyncFd<OwnedFd>>);

impl DirWatch {
    /// `None` when the directory does not exist (yet), inotify is not
    /// available (no instance left) or there is no reactor: the caller polls.
    fn new(dir: &Path) -> Option<DirWatch> {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
        let what = WatchFlags::CREATE | WatchFlags::MOVED_TO | WatchFlags::ONLYDIR;
        inotify::add_watch(&fd, dir, what).ok()?;
        // SAFETY: `fd` is an open inotify descriptor the AsyncFd owns from
        // here on; nothing else closes or replaces it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()?;
        Some(DirWatch(Some(fd)))
    }

    /// Until something was created in the directory (the queued events are
    /// read and dropped: the caller looks at the path itself). Never
    /// resolves if the reactor fails.
    async fn changed(&self) {
        let Some(fd) = &self.0 else {
            return std::future::pending().await;
        };
        let Ok(mut ready) = fd.readable().await else {
            return std::future::pending().await;
        };
        let mut buf = [0u8; 1024];
        while matches!(rustix::io::read(fd.get_ref(), &mut buf), Ok(n) if n > 0) {}
        ready.clear_ready();
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        let Some(fd) = self.0.take() else { return };
        // Out of the reactor here; closed (the slow part) off this thread.
        let fd = fd.into_inner();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            drop(h.spawn_blocking(move || drop(fd)));
        }
    }
}

/// Return as soon as `path` exists: woken by inotify on its directory,
/// looked at every `policy.tick` in any case. Gives up with a labelled
/// [`SocketAccessError::DeadlineExceeded`] after `policy.deadline` — having
/// waited at least one tick — or with `Cancelled` as soon as `cancel`
/// resolves, whatever the tick.
pub async fn wait_for_path(
    path: &Path,
    label: &str,
    policy: WaitPolicy,
    cancel: impl Future<Output = ()>,
) -> Result<(), SocketAccessError> {
    let start = Instant::now();
    tokio::pin!(cancel);
    let mut watch = None;
    loop {
        // Watched before the look, so a socket made in between still wakes
        // the wait; a directory that does not exist yet is tried again.
        if watch.is_none() {
            watch = path.parent().and_then(DirWatch::new);
        }
        if path.symlink_metadata().is_ok() {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= policy.deadline && waited >= policy.tick {
            return Err(SocketAccessError::DeadlineExceeded {
                label: label.into(),
                path: path.into(),
                deadline: policy.deadline,
            });
        }
        let changed = async {
            match &watch {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut cancel => {
                return Err(SocketAccessError::Cancelled {
                    label: label.into(),
                    path: path.into(),
                })
            }
            _ = changed => {}
            _ = tokio::time::sleep(policy.tick) => {}
        }
    }
}

/// Wait for `path`, then `priv.ensure_socket_access` on it. No privileged
/// call is made for a socket that never appears; the helper's error comes
/// back untouched as the source.
pub async fn ensure_socket_access(
    privops: Arc<dyn PrivOps>,
    path: PathBuf,
    label: String,
    policy: WaitPolicy,
    cancel: impl Future<Output = ()>,
) -> Result<(), SocketAccessError> {
    wait_for_path(&path, &label, policy, cancel).await?;
    let p = path.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        privops.call::<method::EnsureSocketAccess>(&m::EnsureSocketAccess {
            path: p.display().to_string(),
        })
    })
    .await
    .map_err(SocketAccessError::Task)?;
    outcome
        .map(drop)
        .map_err(|source| SocketAccessError::Access {
            label,
            path,
            source,
        })
}

/// Start handing each `(label, socket)` to the owner, in order, as each
/// appears. Spawn it right before launching Firecracker and await the handle
/// right after; dropping `cancel`'s sender (or sending) stops the wait.
pub fn ensure_socket_access_for_async(
    privops: Arc<dyn PrivOps>,
    sockets: Vec<(String, PathBuf)>,
    policy: WaitPolicy,
    cancel: tokio::sync::watch::Receiver<()>,
) -> tokio::task::JoinHandle<Result<(), SocketAccessError>> {
    tokio::spawn(async move {
        for (label, path) in sockets {
            let mut c = cancel.clone();
            let cancelled = async move {
                // Resolves on a send or when the sender is dropped.
                let _ = c.changed().await;
            };
            ensure_socket_access(privops.clone(), path, label, policy, cancelled).await?;
        }
        Ok(())
    })
}

#[cfg(test)]
#[path = "socket_access_tests.rs"]
mod tests;
