//! `GET|PUT /v1/vms/{name}/archive?path=…`: files and directories in and out
//! of a running guest as a tar stream (modes kept), piped through the
//! guest's `tar` over SSH with bounded buffers (never a whole file in
//! memory). What `banger vm cp` does, for API clients.

use super::error::ApiFailure;
use super::handler::AppState;
use crate::vms::{exec::ssh_command, VmError};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `?path=` (absolute, in the guest).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestPath {
    path: String,
}

type PathQuery = Result<Query<GuestPath>, axum::extract::rejection::QueryRejection>;

/// The query, or 400 `invalid` as JSON (not axum's plain-text rejection).
fn guest_path(q: PathQuery) -> Result<String, ApiFailure> {
    q.map(|Query(q)| q.path)
        .map_err(|e| invalid(format!("query: {e} (want ?path=/absolute/guest/path)")))
}

fn invalid(msg: String) -> ApiFailure {
    ApiFailure::new(StatusCode::BAD_REQUEST, "invalid", msg)
}

fn vm_failure(e: VmError) -> ApiFailure {
    match e {
        VmError::NotRunning(..) | VmError::NoIp(_) => {
            ApiFailure::new(StatusCode::CONFLICT, "conflict", crate::render_chain(&e))
        }
        e => e.into(),
    }
}

/// An absolute guest path's parent and last component.
fn split(path: &str) -> Result<(String, String), ApiFailure> {
    let p = std::path::Path::new(path);
    let base = p.file_name().and_then(|b| b.to_str());
    match (p.is_absolute(), p.parent(), base) {
        (true, Some(dir), Some(base)) if base != ".." => {
            Ok((dir.display().to_string(), base.to_string()))
        }
        _ => Err(invalid(format!(
            "path {path:?}: an absolute guest path naming a file or directory"
        ))),
    }
}

/// `GET`: a tar of `path` (its last component at the top).
pub async fn get_archive(
    State(d): State<AppState>,
    Path(name): Path<String>,
    q: PathQuery,
) -> Result<Response, ApiFailure> {
    let (dir, base) = split(&guest_path(q)?)?;
    let argv: Vec<String> = ["tar", "-c", "-f", "-", "-C", &dir, "--", &base]
        .map(String::from)
        .to_vec();
    let mut child = ssh_command(&d, &name, &argv)
        .map_err(vm_failure)?
        .spawn()
        .map_err(ApiFailure::internal)?;
    drop(child.stdin.take());
    let mut out = child.stdout.take().expect("piped");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match out.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    let chunk = axum::body::Bytes::copy_from_slice(&buf[..n]);
                    if tx.send(Ok(chunk)).await.is_err() {
                        return; // the client went away; `child` is killed
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        // A failed tar (no such path) ends the body with an error, so the
        // client never takes a truncated archive for a whole one.
        match child.wait().await {
            Ok(s) if s.success() => {}
            Ok(s) => {
                let msg = format!("tar in the guest failed ({s})");
                let _ = tx.send(Err(std::io::Error::other(msg))).await;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .expect("a static response builds"))
}

/// `PUT`: extract the tar in the body into the directory `path`.
pub async fn put_archive(
    State(d): State<AppState>,
    Path(name): Path<String>,
    q: PathQuery,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let path = guest_path(q)?;
    if !path.starts_with('/') {
        return Err(invalid(format!("path {path:?} is not absolute")));
    }
    let argv: Vec<String> = ["tar", "-x", "-p", "-f", "-", "-C", &path]
        .map(String::from)
        .to_vec();
    let mut child = ssh_command(&d, &name, &argv)
        .map_err(vm_failure)?
        .spawn()
        .map_err(ApiFailure::internal)?;
    let mut input = child.stdin.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s).await;
        s
    });
    let mut stream = body.into_data_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| invalid(format!("reading the request body: {e}")))?;
        bytes += chunk.len() as u64;
        if input.write_all(&chunk).await.is_err() {
            break; // tar stopped reading: its status says why
        }
    }
    drop(input);
    let status = child.wait().await.map_err(ApiFailure::internal)?;
    let why = stderr.await.unwrap_or_default();
    if !status.success() {
        return Err(ApiFailure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "extract_failed",
            format!("tar in VM {name} failed ({status}): {}", why.trim()),
        ));
    }
    Ok(Json(serde_json::json!({ "bytes": bytes })))
}
