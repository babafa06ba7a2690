//! The log of requests a double received, shared with the test that runs it.

use std::sync::{Arc, Mutex};

/// One request as the double received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw body (empty when there was none).
    pub body: String,
}

impl RecordedRequest {
    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A shared, clonable log of the requests a double received, in order.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<RecordedRequest>>>);

impl Recorder {
    pub(crate) fn push(&self, method: &str, path: &str, body: &str) {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        log.push(RecordedRequest {
            method: method.to_string(),
            path: path.to_string(),
            body: body.to_string(),
        });
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
