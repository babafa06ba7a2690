//! A port forward's value types: `HOSTPORT:GUESTPORT`, the low-port rule,
//! and why a forward was refused (no I/O; `ports` serves them).

use std::path::PathBuf;

/// Why a forward was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("{0:?} is not HOSTPORT:GUESTPORT (ports 1-65535)")]
    Spec(String),
    #[error("host port {0} is below 1024: refused (set allow_low_ports in the install)")]
    Low(u16),
    #[error("host port {0} is forwarded to VM {1} already")]
    Taken(u16, String),
    #[error("VM {0} has no forward from host port {1}")]
    NoForward(String, u16),
    #[error("listen on 127.0.0.1:{0}")]
    Bind(u16, #[source] std::io::Error),
    #[error("write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("read {0}")]
    Read(PathBuf, #[source] std::io::Error),
}

pub use banger_proto::api::Forward;

/// `HOSTPORT:GUESTPORT`.
pub fn parse_spec(s: &str) -> Result<Forward, PortError> {
    s.parse()
        .map_err(|e: banger_proto::api::ForwardSpecError| PortError::Spec(e.0))
}

/// Refuse a host port below 1024 unless `allow_low`.
pub fn check_host_port(port: u16, allow_low: bool) -> Result<(), PortError> {
    if port < 1024 && !allow_low {
        return Err(PortError::Low(port));
    }
    Ok(())
}
