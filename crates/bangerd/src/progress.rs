//! Progress of a long operation: steps and narration as [`Event`]s into a
//! channel (the HTTP layer streams them; tests read them).

use banger_proto::api::Event;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

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

    /// `done` of `total` counted units (layers, steps) of `step`.
    pub fn step(&self, step: &str, done: u64, total: Option<u64>) {
        self.step_in(step, None, done, total);
    }

    /// `done` of `total` bytes of `step`.
    pub fn bytes(&self, step: &str, done: u64, total: Option<u64>) {
        self.step_in(step, Some("bytes"), done, total);
    }

    /// `done` seconds of `step` (a wait with no known end).
    pub fn seconds(&self, step: &str, done: u64) {
        self.step_in(step, Some("s"), done, None);
    }

    fn step_in(&self, step: &str, unit: Option<&str>, done: u64, total: Option<u64>) {
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
            unit: unit.map(str::to_string),
        });
    }

    /// One line of narration.
    pub fn log(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::info!("{message}");
        self.send(Event::Log { message });
    }
}
