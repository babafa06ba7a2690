//! The helper's socket: peer check on every connection, newline framing
//! with a 1 MiB cap, strict JSON-RPC decoding, per-request timeout and a
//! concurrency cap, and one audit line per request.

use crate::dispatch::Helper;
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: 16,
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Serve `listener` until `shutdown` resolves. The listener and the
/// shutdown signal come from the caller so tests can bind temporary sockets.
pub async fn serve(
    listener: UnixListener,
    helper: Arc<Helper>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let sem = Arc::new(Semaphore::new(limits.max_concurrent));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
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
        let resp = match read_line_capped(&mut rd, MAX_MESSAGE_BYTES).await? {
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
