//! The CLI's HTTP/1.1 client for the daemon's Unix socket.

use anyhow::{Context, Result};
use banger_proto::api::{ApiError, Event};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;

/// A failed API call, with the daemon's error body when it sent one.
#[derive(Debug)]
pub struct CallError {
    pub status: u16,
    pub body: ApiError,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.body.message)
    }
}

impl std::error::Error for CallError {}

/// A 2xx answer: as bangerd sent it (what `--json` prints) and decoded.
pub struct Answer<T> {
    pub raw: serde_json::Value,
    pub body: T,
}

/// A request body from its API type.
pub fn body(t: &impl serde::Serialize) -> Option<serde_json::Value> {
    Some(serde_json::to_value(t).expect("API bodies serialise"))
}

/// Talks to one daemon socket.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Client { socket }
    }

    /// Send one request; decode a 2xx JSON body, or fail with [`CallError`].
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.call_stream(method, path, body, &mut |_| {}).await
    }

    /// `GET path`, decoded as the API type `T`.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Answer<T>> {
        let raw = self.call("GET", path, None).await?;
        let body = serde_json::from_value(raw.clone())
            .with_context(|| format!("bangerd's answer to GET {path} does not parse"))?;
        Ok(Answer { raw, body })
    }

    /// [`Client::call_stream`] with its progress events shown on the
    /// terminal, the view closed whether the call succeeded or not.
    pub async fn call_with_progress(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let mut view = crate::output::ProgressView::new();
        let v = self
            .call_stream(method, path, body, &mut |e| view.event(e))
            .await;
        view.finish();
        v
    }

    /// Like [`Client::call`], but a streamed (`application/x-ndjson`)
    /// answer has its progress events handed to `on_event` and ends with
    /// the `done` result or the `error`.
    pub async fn call_stream(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<serde_json::Value> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status().as_u16();
        let streamed = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
        if !streamed {
            let raw = resp.into_body().collect().await?.to_bytes();
            return decode(status, &raw);
        }
        let mut body = resp.into_body();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("reading bangerd's progress stream")?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let event: Event = serde_json::from_slice(&line[..line.len() - 1])
                    .context("bangerd's progress stream does not parse")?;
                match event {
                    Event::Done { result } => return Ok(result),
                    Event::Error { code, message } => {
                        return Err(CallError {
                            status: 500,
                            body: ApiError { code, message },
                        }
                        .into())
                    }
                    other => on_event(&other),
                }
            }
        }
        anyhow::bail!("bangerd ended the stream without a result")
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| {
                format!(
                    "cannot reach bangerd at {} (is it running? `banger system status`, or start `bangerd --dev`)",
                    self.socket.display()
                )
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with bangerd")?;
        tokio::spawn(conn);
        let bytes = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("http://banger{path}"))
            .header("host", "banger")
            .header("content-type", "application/json")
            .body(Full::new(bytes))?;
        sender.send_request(req).await.context("request to bangerd")
    }
}

fn decode(status: u16, raw: &[u8]) -> Result<serde_json::Value> {
    if (200..300).contains(&status) {
        if raw.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        return serde_json::from_slice(raw).context("bangerd's answer does not parse");
    }
    let body = serde_json::from_slice::<ApiError>(raw).unwrap_or_else(|_| ApiError {
        code: "http".into(),
        message: format!("HTTP {status}: {}", String::from_utf8_lossy(raw).trim()),
    });
    Err(CallError { status, body }.into())
}
