//! Serving the API: the daemon socket (0600, owned by the owner, a stale
//! socket replaced, a live one refused), graceful shutdown, socket removal.

use super::listener::AuthorizedListener;
use crate::daemon::Daemon;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the daemon could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("creating runtime directory {0}")]
    RuntimeDir(PathBuf, #[source] std::io::Error),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("another bangerd is already serving {0}")]
    AlreadyRunning(PathBuf),
    #[error("removing stale socket {0}")]
    RemoveStale(PathBuf, #[source] std::io::Error),
    #[error("binding {0}")]
    Bind(PathBuf, #[source] std::io::Error),
    #[error("setting owner and mode 0600 on {0}")]
    SocketAccess(PathBuf, #[source] std::io::Error),
    #[error("serving the API")]
    Serve(#[source] std::io::Error),
}

/// Bind the daemon socket: create the RuntimeDir (0700 when we create it),
/// replace a stale socket (one nobody answers on), refuse a live one or a
/// non-socket, then make it 0600 and owned by the owner.
pub fn bind_socket(
    path: &Path,
    owner_uid: u32,
    owner_gid: u32,
) -> Result<tokio::net::UnixListener, ServeError> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| ServeError::RuntimeDir(dir.into(), e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| ServeError::RuntimeDir(dir.into(), e))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::AlreadyRunning(path.into()));
            }
            std::fs::remove_file(path).map_err(|e| ServeError::RemoveStale(path.into(), e))?;
        }
        Ok(_) => return Err(ServeError::NotASocket(path.into())),
        Err(_) => {}
    }
    let listener =
        tokio::net::UnixListener::bind(path).map_err(|e| ServeError::Bind(path.into(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ServeError::SocketAccess(path.into(), e))?;
    let me = rustix::process::geteuid().as_raw();
    if me == 0 && owner_uid != 0 {
        std::os::unix::fs::chown(path, Some(owner_uid), Some(owner_gid))
            .map_err(|e| ServeError::SocketAccess(path.into(), e))?;
    }
    Ok(listener)
}

/// Serve the API on `listener` until `shutdown` resolves, then remove the
/// socket file. The listener and signal come from the caller.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: tokio::net::UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let socket = daemon.paths.daemon_socket();
    let owner = daemon.cfg.owner_uid;
    let app = super::router(daemon);
    let res = axum::serve(AuthorizedListener::new(listener, owner), app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = std::fs::remove_file(&socket);
    res.map_err(ServeError::Serve)
}
