//! The daemon's shared state and its serve loop: socket set-up (0600, owned
//! by the owner, stale socket replaced), graceful shutdown, socket removal.

use crate::api;
use crate::listener::AuthorizedListener;
use crate::privops::PrivOps;
use crate::store::{Store, StoreError};
use banger_core::paths::{Mode, Paths};
use banger_proto::api::Vm;
use banger_proto::install::InstallConfig;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything a request handler may use.
pub struct Daemon {
    /// Effective install metadata (system) or its development equivalent.
    pub cfg: InstallConfig,
    pub paths: Paths,
    pub mode: Mode,
    pub store: Store,
    pub privops: Arc<dyn PrivOps>,
    /// Where host kernels and busybox are found for image builds.
    pub host_paths: crate::builds::HostPaths,
    /// Running VMMs and VM operations under way.
    pub vms: crate::vms::Registry,
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Daemon {
    /// Every VM in the store.
    pub fn vms(&self) -> Result<Vec<Vm>, StoreError> {
        self.store.read(|c| {
            let mut st = c.prepare(
                "SELECT v.id, v.name, i.name, v.state, a.ip, v.created_at,
                        v.vcpus, v.memory_mib, v.pid, v.backend
                 FROM vms v JOIN images i ON i.id = v.image_id
                 LEFT JOIN ip_allocations a ON a.vm_id = v.id ORDER BY v.name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Vm {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    image: r.get(2)?,
                    state: r.get(3)?,
                    ip: r.get(4)?,
                    created_at: r.get(5)?,
                    vcpus: r.get(6)?,
                    memory_mib: r.get(7)?,
                    pid: r.get(8)?,
                    backend: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

/// Bind the daemon socket: create the RuntimeDir (0700 when we create it),
/// replace a stale socket (one nobody answers on), refuse a live one or a
/// non-socket, then make it 0600 and owned by the owner.
pub fn bind_socket(
    path: &Path,
    owner_uid: u32,
    owner_gid: u32,
) -> Result<tokio::net::UnixListener, DaemonError> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| DaemonError::RuntimeDir(dir.into(), e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| DaemonError::RuntimeDir(dir.into(), e))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(DaemonError::AlreadyRunning(path.into()));
            }
            std::fs::remove_file(path).map_err(|e| DaemonError::RemoveStale(path.into(), e))?;
        }
        Ok(_) => return Err(DaemonError::NotASocket(path.into())),
        Err(_) => {}
    }
    let listener =
        tokio::net::UnixListener::bind(path).map_err(|e| DaemonError::Bind(path.into(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| DaemonError::SocketAccess(path.into(), e))?;
    let me = rustix::process::geteuid().as_raw();
    if me == 0 && owner_uid != 0 {
        std::os::unix::fs::chown(path, Some(owner_uid), Some(owner_gid))
            .map_err(|e| DaemonError::SocketAccess(path.into(), e))?;
    }
    Ok(listener)
}

/// Serve the API on `listener` until `shutdown` resolves, then remove the
/// socket file. The listener and signal come from the caller.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: tokio::net::UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let socket = daemon.paths.daemon_socket();
    let owner = daemon.cfg.owner_uid;
    let app = api::router(daemon);
    let res = axum::serve(AuthorizedListener::new(listener, owner), app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = std::fs::remove_file(&socket);
    res.map_err(DaemonError::Serve)
}
