//! `POST /v1/vms/{name}/exec`: one command in the guest, its stdout and
//! stderr streamed as [`ExecFrame`] lines as they come, then its status.

use super::error::ApiFailure;
use super::handler::{parse, AppState};
use crate::vms::{exec::ssh_command, VmError};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use banger_proto::api::{ExecFrame, VmExec};
use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Forward what `r` yields as frames made by `frame`.
async fn pump<R: AsyncRead + Unpin>(
    mut r: R,
    tx: UnboundedSender<ExecFrame>,
    frame: fn(String) -> ExecFrame,
) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 || tx.send(frame(b64(&buf[..n]))).is_err() {
            break;
        }
    }
}

pub async fn exec_vm(
    State(d): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiFailure> {
    let req = parse::<VmExec>(&body)?;
    if req.argv.is_empty() {
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "argv is empty",
        ));
    }
    let stdin = match &req.stdin_b64 {
        Some(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| {
                ApiFailure::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("stdin_b64: {e}"),
                )
            })?,
        None => vec![],
    };
    let mut cmd = ssh_command(&d, &name, &req.argv).map_err(|e| match e {
        VmError::NotRunning(..) | VmError::NoIp(_) => {
            ApiFailure::new(StatusCode::CONFLICT, "conflict", crate::render_chain(&e))
        }
        e => e.into(),
    })?;
    let mut child = cmd.spawn().map_err(ApiFailure::internal)?;
    let (tx, rx) = unbounded_channel::<ExecFrame>();
    let mut input = child.stdin.take().expect("piped");
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let timeout = req.timeout_secs;
    tokio::spawn(async move {
        let feed = async move {
            let _ = input.write_all(&stdin).await;
            drop(input);
        };
        let work = async {
            let ((), (), (), status) = tokio::join!(
                feed,
                pump(out, tx.clone(), |data_b64| ExecFrame::Stdout { data_b64 }),
                pump(err, tx.clone(), |data_b64| ExecFrame::Stderr { data_b64 }),
                child.wait()
            );
            status
        };
        let end = match timeout {
            Some(t) => tokio::time::timeout(std::time::Duration::from_secs(t), work)
                .await
                .map_err(|_| t),
            None => Ok(work.await),
        };
        let last = match end {
            Ok(Ok(s)) => ExecFrame::Exit {
                exit_code: s.code().unwrap_or(255),
            },
            Ok(Err(e)) => ExecFrame::Error {
                code: "internal".into(),
                message: format!("waiting for ssh: {e}"),
            },
            Err(t) => ExecFrame::Error {
                code: "timeout".into(),
                message: format!("timed out after {t}s"),
            },
        };
        // A timed-out ssh is killed as `child` drops.
        let _ = tx.send(last);
    });
    let lines = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        |f| {
            let mut line = serde_json::to_vec(&f).expect("frames serialise");
            line.push(b'\n');
            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(line))
        },
    );
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .expect("a static response builds"))
}
