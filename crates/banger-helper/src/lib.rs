//! banger's root helper: a narrow JSON-RPC server that performs only the
//! privileged steps, each behind a validation gate that assumes the caller
//! (the owner daemon) may be compromised.
//!
//! Layout: `server` (socket, peer check, framing, limits, audit),
//! `helper` (the `Helper` state the methods take), `dispatch` (method name
//! → handler), `gates` (pure validators, one per kind of argument),
//! `methods` (one module per area, gate then host op), `host` (the host
//! operations the methods call, real or recording).

pub mod cgroup;
pub mod dispatch;
pub mod error;
pub mod gates;
pub mod helper;
pub mod host;
pub mod jail;
pub mod jail_disk;
pub mod launched;
pub mod methods;
pub mod server;
pub mod sweep;
