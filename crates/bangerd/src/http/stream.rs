//! Long operations streamed as `application/x-ndjson` [`Event`] lines: the
//! work reports through a [`Progress`]; the answer ends with one `done` or
//! `error` line.

use super::error::ApiFailure;
use crate::progress::Progress;
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use banger_proto::api::Event;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Run the future `work` makes on the runtime and stream its events and
/// outcome (blocking calls inside it are handed off at their leaves).
pub fn stream_async<F, Fut>(work: F) -> Response
where
    F: FnOnce(Arc<Progress>) -> Fut,
    Fut: Future<Output = Result<serde_json::Value, ApiFailure>> + Send + 'static,
{
    let (tx, rx) = unbounded_channel::<Event>();
    let done_tx = tx.clone();
    let job = work(Arc::new(Progress::new(tx)));
    tokio::spawn(async move {
        let _ = done_tx.send(end_event(job.await));
    });
    ndjson(rx)
}

fn end_event(outcome: Result<serde_json::Value, ApiFailure>) -> Event {
    match outcome {
        Ok(result) => Event::Done { result },
        Err(ApiFailure(_, e)) => Event::Error {
            code: e.code,
            message: e.message,
        },
    }
}

/// Run the blocking `work` on a blocking thread and stream its events and
/// outcome.
pub fn stream<F>(work: F) -> Response
where
    F: FnOnce(&Progress) -> Result<serde_json::Value, ApiFailure> + Send + 'static,
{
    let (tx, rx) = unbounded_channel::<Event>();
    let done_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let progress = Progress::new(tx);
        let _ = done_tx.send(end_event(work(&progress)));
    });
    ndjson(rx)
}

/// The events of `rx` as an `application/x-ndjson` answer.
fn ndjson(rx: UnboundedReceiver<Event>) -> Response {
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
