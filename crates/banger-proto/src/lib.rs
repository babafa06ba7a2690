//! Wire types for banger's two sockets: the root helper's JSON-RPC 2.0
//! protocol and the owner daemon's HTTP/JSON API, plus install metadata.
//!
//! This crate does no I/O. Every type here is what crosses a process
//! boundary, so every type is `serde` and params reject unknown fields.

pub mod api;
pub mod firecracker;
pub mod helper;
pub mod install;
pub mod jsonrpc;

/// The version of every banger binary built from this tree.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Version of the helper wire protocol. Bumped on any incompatible change
/// to a method's params or result.
pub const HELPER_PROTOCOL: u32 = 1;

/// Version prefix of the daemon's HTTP API.
pub const API_PREFIX: &str = "/v1";

/// File name of the daemon socket inside the RuntimeDir in force.
pub const DAEMON_SOCKET: &str = "bangerd.sock";

/// File name of the helper socket inside the RuntimeDir in force.
pub const HELPER_SOCKET: &str = "helper.sock";
