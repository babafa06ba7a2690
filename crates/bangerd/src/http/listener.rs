//! The daemon's listener: a Unix socket whose every accepted connection
//! passes the authorize path (`SO_PEERCRED`: uid 0 or the owner) before
//! axum sees it. Refused connections are closed without an answer and logged.

use std::time::Duration;
use tokio::net::{unix::SocketAddr, UnixListener, UnixStream};

/// A [`UnixListener`] that only yields authorized peers.
pub struct AuthorizedListener {
    inner: UnixListener,
    owner_uid: u32,
}

impl AuthorizedListener {
    pub fn new(inner: UnixListener, owner_uid: u32) -> Self {
        AuthorizedListener { inner, owner_uid }
    }
}

impl axum::serve::Listener for AuthorizedListener {
    type Io = UnixStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match banger_sys::peer::authorize(&stream, self.owner_uid) {
                    Ok(_) => return (stream, addr),
                    Err(e) => {
                        tracing::warn!(error = %e, "daemon connection refused");
                        drop(stream);
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
