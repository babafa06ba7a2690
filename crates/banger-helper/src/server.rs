//! The helper's socket: peer check on every connection, a cap on open
//! connections, idle and slow-request timeouts, back-off when `accept`
//! fails (EMFILE), newline framing with a 1 MiB cap, strict JSON-RPC
//! decoding, per-request timeout and a concurrency cap, and one audit line
//! per request.

use crate::helper::Helper;
use banger_proto::jsonrpc::{self, ErrorObject, Request, Response, MAX_MESSAGE_BYTES};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Limits the server enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests executing at once (across all connections).
    pub max_concurrent: usize,
    /// Wall-clock budget of one request.
    pub request_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is
    /// accepted (and logged), so idle connections cannot use up the fds.
    pub max_connections: usize,
    /// A connection that sends no byte of its next request for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// A request line must be complete this long after its first byte
    /// (slowloris: bytes trickled without a newline).
    pub read_timeout: Duration,
    /// The longest pause between `accept` attempts after `accept` failed
    /// (EMFILE, ENFILE…): the pause starts at 10 ms and doubles up to this.
    pub accept_backoff_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: 16,
            request_timeout: Duration::from_secs(120),
            max_connections: 64,
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(10),
            accept_backoff_max: Duration::from_secs(1),
        }
    }
}

/// The first pause after a failed `accept`.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Serve `listener` until `shutdown` resolves. The listener and the
/// shutdown signal come from the caller so tests can bind temporary sockets.
pub async fn serve(
    listener: UnixListener,
    helper: Arc<Helper>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let sem = Arc::new(Semaphore::new(limits.max_concurrent));
    let conns = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = None::<Duration>;
    tokio::pin!(shutdown);
    loop {
        // After a failed accept, wait before the next attempt: a listener
        // out of fds stays readable, so retrying at once would spin.
        if let Some(pause) = backoff {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => {
                        backoff = None;
                        s
                    }
                    Err(e) => {
                        let pause = backoff
                            .map_or(ACCEPT_BACKOFF_MIN, |p| p * 2)
                            .min(limits.accept_backoff_max);
                        tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "accept failed; backing off");
                        backoff = Some(pause);
                        continue;
                    }
                };
                let Ok(slot) = conns.clone().try_acquire_owned() else {
                    tracing::warn!(
                        target: "audit",
                        max_connections = limits.max_connections,
                        "connection refused: too many open connections"
                    );
                    continue;
                };
                let owner = helper.cfg.owner_uid;
                let uid = match banger_sys::peer::authorize(&stream, owner) {
                    Ok(cred) => cred.uid,
                    Err(e) => {
                        // Closed without an answer.
                        tracing::warn!(target: "audit", error = %e, "connection refused");
                        continue;
                    }
                };
                let helper = helper.clone();
                let sem = sem.clone();
                let limits = limits.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = connection(stream, uid, helper, sem, limits).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
}

/// One framed line, or a note that the line was too long (and was skipped).
enum Line {
    Data(Vec<u8>),
    TooLong,
    Eof,
}

/// Read up to and including `\n`, holding at most `cap` bytes; a longer line
/// is consumed to its end and reported as [`Line::TooLong`].
async fn read_line_capped<R: AsyncBufRead + Unpin>(r: &mut R, cap: usize) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if buf.is_empty() {
                Line::Eof
            } else {
                Line::Data(buf)
            });
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            let payload = if done { take - 1 } else { take };
            if buf.len() + payload > cap {
                too_long = true;
                buf = Vec::new();
            } else {
                buf.extend_from_slice(&chunk[..payload]);
            }
        }
        r.consume(take);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Data(buf)
            });
        }
    }
}

/// Wait until the next request starts (a byte is buffered), at most
/// `idle`; `false` when the connection stayed idle that long.
async fn await_next_request<R: AsyncBufRead + Unpin>(
    r: &mut R,
    idle: Duration,
) -> std::io::Result<bool> {
    match tokio::time::timeout(idle, r.fill_buf()).await {
        Ok(res) => res.map(|_| true),
        Err(_) => Ok(false),
    }
}

async fn connection(
    stream: UnixStream,
    uid: u32,
    helper: Arc<Helper>,
    sem: Arc<Semaphore>,
    limits: Limits,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        if !await_next_request(&mut rd, limits.idle_timeout).await? {
            tracing::warn!(target: "audit", uid, timeout = ?limits.idle_timeout, "connection closed: idle");
            return Ok(());
        }
        let line = tokio::time::timeout(
            limits.read_timeout,
            read_line_capped(&mut rd, MAX_MESSAGE_BYTES),
        )
        .await;
        let Ok(line) = line else {
            tracing::warn!(target: "audit", uid, timeout = ?limits.read_timeout, "connection closed: request line not completed in time");
            return Ok(());
        };
        let resp = match line? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                tracing::warn!(target: "audit", uid, "message over 1 MiB refused");
                Response::err(
                    Value::Null,
                    ErrorObject::new(
                        jsonrpc::INVALID_REQUEST,
                        format!("message exceeds {MAX_MESSAGE_BYTES} bytes"),
                    ),
                )
            }
            Line::Data(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Data(line) => handle(&line, uid, &helper, &sem, &limits).await,
        };
        let mut text = serde_json::to_vec(&resp).expect("responses serialise");
        text.push(b'\n');
        wr.write_all(&text).await?;
    }
}

/// Decode, dispatch under the limits, audit.
pub(crate) async fn handle(
    line: &[u8],
    uid: u32,
    helper: &Arc<Helper>,
    sem: &Arc<Semaphore>,
    limits: &Limits,
) -> Response {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return Response::err(
                Value::Null,
                ErrorObject::new(jsonrpc::PARSE_ERROR, format!("parse error: {e}")),
            )
        }
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let req: Request = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            return Response::err(
                id,
                ErrorObject::new(jsonrpc::INVALID_REQUEST, format!("invalid request: {e}")),
            )
        }
    };
    if req.jsonrpc != "2.0" || req.id.is_none() {
        return Response::err(
            id,
            ErrorObject::new(
                jsonrpc::INVALID_REQUEST,
                "invalid request: jsonrpc must be \"2.0\" and id is required",
            ),
        );
    }
    let audit_args = audit_view(&req.params);
    let method = req.method.clone();
    let result = {
        // The permit moves into the job: a request that times out keeps its
        // slot until its work really ends, so the cap bounds threads too.
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let helper = helper.clone();
        let (method, params) = (req.method, req.params);
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            helper.dispatch(&method, params)
        });
        match tokio::time::timeout(limits.request_timeout, job).await {
            Ok(Ok(r)) => r.map_err(|e| e.to_object()),
            Ok(Err(join)) => Err(ErrorObject::new(
                jsonrpc::INTERNAL_ERROR,
                format!("handler crashed: {join}"),
            )),
            Err(_) => Err(ErrorObject::new(
                jsonrpc::TIMEOUT,
                format!("timed out after {:?}", limits.request_timeout),
            )),
        }
    };
    match &result {
        Ok(_) => tracing::info!(target: "audit", uid, method, args = %audit_args, result = "ok"),
        Err(e) => {
            tracing::info!(target: "audit", uid, method, args = %audit_args, code = e.code, result = %e.message)
        }
    }
    match result {
        Ok(v) => Response::ok(id, v),
        Err(e) => Response::err(id, e),
    }
}

/// The params as logged: file contents replaced by their length.
pub fn audit_view(params: &Value) -> String {
    fn redact(v: &Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| match (k.as_str(), v) {
                        ("content_b64", Value::String(s)) => {
                            (k.clone(), Value::String(format!("<{} b64 chars>", s.len())))
                        }
                        _ => (k.clone(), redact(v)),
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
            other => other.clone(),
        }
    }
    redact(params).to_string()
}

/// Run exactly one request read from `input` (the `sudo -n banger-helper
/// oneshot` path of development mode) and return the response.
pub fn oneshot(helper: Arc<Helper>, input: &[u8]) -> Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime always builds");
    let sem = Arc::new(Semaphore::new(1));
    let line = input.strip_suffix(b"\n").unwrap_or(input);
    rt.block_on(handle(line, 0, &helper, &sem, &Limits::default()))
}
