//! Long operations streamed as `application/x-ndjson` [`Event`] lines:
//! the work runs on a blocking thread and reports progress through
//! [`Progress`]; the answer ends with one `done` or `error` line.

use crate::api::ApiFailure;
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use banger_proto::api::Event;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// Reports progress of one operation; rate-limited to ~10 events a second
/// per step (the last event of a step always goes out).
pub struct Progress {
    tx: UnboundedSender<Event>,
    last: Mutex<(String, Instant)>,
}

impl Progress {
    /// Progress reported into `tx` (the job stream, or a test's receiver).
    pub fn new(tx: UnboundedSender<Event>) -> Self {
        Progress {
            tx,
            last: Mutex::new((String::new(), Instant::now())),
        }
    }

    /// A client that went away just stops receiving; the work goes on.
    fn send(&self, e: Event) {
        let _ = self.tx.send(e);
    }

    /// `done` of `total` units of `step`.
    pub fn step(&self, step: &str, done: u64, total: Option<u64>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let finished = total.is_some_and(|t| done >= t);
        let new_step = last.0 != step;
        if !new_step && !finished && last.1.elapsed() < Duration::from_millis(100) {
            return;
        }
        *last = (step.to_string(), Instant::now());
        drop(last);
        self.send(Event::Progress {
            step: step.to_string(),
            done,
            total,
        });
    }

    /// One line of narration.
    pub fn log(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::info!("{message}");
        self.send(Event::Log { message });
    }
}

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
