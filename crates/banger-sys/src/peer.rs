//! Who is on the other end of an accepted socket, and may they talk to us.

use std::os::fd::AsFd;

/// The credentials the kernel recorded for a Unix-socket peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("connection is not a Unix-domain socket")]
    NotUnix,
    #[error("reading the socket domain failed")]
    Domain(#[source] std::io::Error),
    #[error("reading SO_PEERCRED failed")]
    PeerCred(#[source] std::io::Error),
    #[error("peer uid {uid} (pid {pid:?}) is neither root nor the owner")]
    Forbidden { uid: u32, pid: Option<u32> },
}

/// Read the peer's credentials; refuse anything that is not `AF_UNIX`.
pub fn peer_cred(sock: impl AsFd) -> Result<PeerCred, AuthError> {
    use rustix::net::sockopt;
    let fd = sock.as_fd();
    let domain = sockopt::get_socket_domain(fd).map_err(|e| AuthError::Domain(e.into()))?;
    if domain != rustix::net::AddressFamily::UNIX {
        return Err(AuthError::NotUnix);
    }
    let cred = sockopt::get_socket_peercred(fd).map_err(|e| AuthError::PeerCred(e.into()))?;
    let pid = cred.pid.as_raw_nonzero().get();
    Ok(PeerCred {
        pid: u32::try_from(pid).ok(),
        uid: cred.uid.as_raw(),
        gid: cred.gid.as_raw(),
    })
}

/// The authorize path both servers run on every accepted connection:
/// admit only uid 0 and the registered owner, over `AF_UNIX`.
pub fn authorize(sock: impl AsFd, owner_uid: u32) -> Result<PeerCred, AuthError> {
    let cred = peer_cred(sock)?;
    if cred.uid == 0 || cred.uid == owner_uid {
        Ok(cred)
    } else {
        Err(AuthError::Forbidden {
            uid: cred.uid,
            pid: cred.pid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn unix_peer_is_admitted_as_ourselves() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = rustix::process::getuid().as_raw();
        let cred = authorize(&a, me).unwrap();
        assert_eq!(cred.uid, me);
        assert_eq!(cred.pid, Some(std::process::id()));
    }

    #[test]
    fn unix_peer_with_other_uid_is_forbidden_unless_root() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = rustix::process::getuid().as_raw();
        let res = authorize(&a, me.wrapping_add(12345));
        if me == 0 {
            assert!(res.is_ok(), "root is always admitted");
        } else {
            assert!(matches!(res, Err(AuthError::Forbidden { .. })));
        }
    }

    #[test]
    fn tcp_connection_is_rejected() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(matches!(authorize(&s, 0), Err(AuthError::NotUnix)));
        assert!(matches!(authorize(&c, 0), Err(AuthError::NotUnix)));
    }
}
