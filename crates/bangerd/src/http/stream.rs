//! Long operations streamed as `application/x-ndjson` [`Event`] lines: the
//! work reports through a [`Progress`]; the answer ends with one `done` or
//! `error` line.

use super::error::ApiFailure;
use crate::progress::Progress;
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use banger_proto::api::Event;
use tokio::sync::mpsc::unbounded_channel;

/// Run `work` on a blocking thread and stream its events and outcome.
pub fn stream<F>(work: F) -> Response
where
    F: FnOnce(&Progress) -> Result<serde_json::Value, ApiFailure> + Send + 'static,
{
    let (tx, rx) = unbounded_channel::<Event>();
    let done_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let progress = Progress::new(tx);
        let end = match work(&progress) {
            Ok(result) => Event::Done { result },
            Err(ApiFailure(_, e)) => Event::Error {
                code: e.code,
                message: e.message,
            },
        };
        let _ = done_tx.send(end);
    });
    let lines = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        |e| {
            let mut line = serde_json::to_vec(&e).expect("events serialise");
            line.push(b'\n');
            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(line))
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .expect("a static response builds")
}
