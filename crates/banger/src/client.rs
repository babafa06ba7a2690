//! The CLI's HTTP/1.1 client for the daemon's Unix socket.

use anyhow::{Context, Result};
use banger_proto::api::ApiError;
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
        let resp = sender
            .send_request(req)
            .await
            .context("request to bangerd")?;
        let status = resp.status().as_u16();
        let raw = resp.into_body().collect().await?.to_bytes();
        if (200..300).contains(&status) {
            if raw.is_empty() {
                return Ok(serde_json::Value::Null);
            }
            return serde_json::from_slice(&raw).context("bangerd's answer does not parse");
        }
        let body = serde_json::from_slice::<ApiError>(&raw).unwrap_or_else(|_| ApiError {
            code: "http".into(),
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(&raw).trim()),
        });
        Err(CallError { status, body }.into())
    }
}
