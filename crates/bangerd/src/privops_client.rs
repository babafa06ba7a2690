//! The helper client: JSON-RPC over the helper's socket on connections kept
//! open and reused (one per caller at a time, idle ones pooled), replaced
//! transparently when the helper restarted.
//!
//! Replay rule: a request that was never delivered (the pooled connection
//! was found closed before use, or the write failed) is sent on a new
//! connection. A request that was delivered and then lost its connection
//! before the answer is **not** sent again, since the helper may have run it
//! (a second `priv.launch_firecracker` would start a second VMM, a second
//! `priv.kill_process` could hit a reused pid), unless its method is in
//! [`IDEMPOTENT`]: running those twice leaves the host as running them once.

use super::{decode, PrivError, PrivOps};
use banger_proto::helper as m;
use banger_proto::jsonrpc::{Request, Response, MAX_MESSAGE_BYTES};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Methods safe to send again after their connection died mid-call: each
/// converges on one host state (an element in a set, a bridge that exists,
/// an owner and mode, a read).
pub const IDEMPOTENT: &[&str] = &[
    m::VERSION,
    m::ENSURE_BRIDGE,
    m::ENSURE_NAT,
    m::CLEAR_NAT,
    m::ENSURE_DNS_REDIRECT,
    m::SYNC_RESOLVER_ROUTING,
    m::CLEAR_RESOLVER_ROUTING,
    m::ENSURE_SOCKET_ACCESS,
    m::READ_EXT4_FILE,
];

/// Idle connections kept for reuse (the helper allows 64 at once and
/// closes one idle for 60 s; a closed one is noticed before use).
const MAX_IDLE: usize = 8;

/// One open connection to the helper.
struct Conn {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

/// How one exchange failed.
enum Failed {
    /// The request did not leave: safe to send on a new connection.
    NotSent(PrivError),
    /// It left, and no answer came back.
    Lost(PrivError),
}

impl Conn {
    fn open(socket: &PathBuf, timeout: Duration) -> Result<Conn, PrivError> {
        let stream =
            UnixStream::connect(socket).map_err(|e| PrivError::Connect(socket.clone(), e))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(PrivError::Io)?;
        let reader = BufReader::new(stream.try_clone().map_err(PrivError::Io)?);
        Ok(Conn { stream, reader })
    }

    /// Whether the helper's end is gone (or sent something unasked): a
    /// peek that does not wait.
    fn stale(&self) -> bool {
        use rustix::net::RecvFlags;
        let mut b = [0u8; 1];
        !matches!(
            rustix::net::recv(&self.stream, &mut b, RecvFlags::PEEK | RecvFlags::DONTWAIT),
            Err(rustix::io::Errno::AGAIN)
        )
    }

    fn exchange(&mut self, id: u64, line: &[u8], fresh: bool) -> Result<Response, Failed> {
        if let Err(e) = self.stream.write_all(line) {
            return Err(Failed::NotSent(PrivError::Io(e)));
        }
        let mut answer = Vec::new();
        let read = Read::take(&mut self.reader, MAX_MESSAGE_BYTES as u64 + 1)
            .read_until(b'\n', &mut answer);
        match read {
            Err(e) => return Err(Failed::Lost(PrivError::Io(e))),
            // A new connection closed unanswered: the helper refused this uid.
            Ok(0) if fresh => return Err(Failed::Lost(PrivError::NoAnswer)),
            Ok(0) => return Err(Failed::Lost(PrivError::Lost)),
            Ok(_) => {}
        }
        if answer.last() != Some(&b'\n') {
            return Err(Failed::Lost(PrivError::Lost));
        }
        let resp: Response =
            serde_json::from_slice(&answer).map_err(|e| Failed::Lost(PrivError::BadAnswer(e)))?;
        if resp.id != id {
            return Err(Failed::Lost(PrivError::WrongId(resp.id.to_string())));
        }
        Ok(resp)
    }
}

/// System install: JSON-RPC to the root helper's socket.
pub struct HelperClient {
    socket: PathBuf,
    timeout: Duration,
    next_id: AtomicU64,
    idle: Mutex<Vec<Conn>>,
    opened: AtomicU64,
}

impl HelperClient {
    pub fn new(socket: PathBuf) -> Self {
        HelperClient {
            socket,
            timeout: Duration::from_secs(180),
            next_id: AtomicU64::new(1),
            idle: Mutex::new(Vec::new()),
            opened: AtomicU64::new(0),
        }
    }

    /// How many connections this client has opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    fn open(&self) -> Result<Conn, PrivError> {
        let c = Conn::open(&self.socket, self.timeout)?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(c)
    }

    /// An idle connection still open, if any (closed ones are dropped).
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if !c.stale() {
                return Some(c);
            }
        }
        None
    }

    fn put_back(&self, c: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(c);
        }
    }
}

impl PrivOps for HelperClient {
    fn kind(&self) -> &'static str {
        "helper"
    }

    fn call_value(&self, method: &str, params: Value) -> Result<Value, PrivError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut line =
            serde_json::to_vec(&Request::new(id, method, params)).expect("requests serialise");
        line.push(b'\n');
        let (mut conn, mut fresh) = match self.take_idle() {
            Some(c) => (c, false),
            None => (self.open()?, true),
        };
        let mut retried = false;
        loop {
            match conn.exchange(id, &line, fresh) {
                Ok(resp) => {
                    self.put_back(conn);
                    return decode(method, resp);
                }
                // Never delivered on a reused connection: once more, anew.
                Err(Failed::NotSent(_)) if !fresh && !retried => {}
                Err(Failed::Lost(PrivError::Lost)) if IDEMPOTENT.contains(&method) && !retried => {
                    tracing::warn!(
                        method,
                        "the helper went away mid-call; sending again (idempotent)"
                    );
                }
                Err(Failed::NotSent(e) | Failed::Lost(e)) => return Err(e),
            }
            retried = true;
            conn = self.open()?;
            fresh = true;
        }
    }
}

#[cfg(test)]
#[path = "privops_client_tests.rs"]
mod tests;
