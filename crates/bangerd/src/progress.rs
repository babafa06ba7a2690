//! Progress of a long operation: steps and narration as [`Event`]s into a
//! channel (the HTTP layer streams them; tests read them), and the timed
//! phases of a VM create/start.

use banger_proto::api::Event;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Reports progress of one operation; rate-limited to ~10 events a second
/// per step (the last event of a step always goes out). Phases (see
/// [`Phase`]) always go out, and are kept for [`Progress::phases`].
pub struct Progress {
    tx: UnboundedSender<Event>,
    last: Mutex<(String, Instant)>,
    phases: Mutex<Vec<(&'static str, Duration)>>,
}

/// One phase of a VM create/start under way: a `tracing` span (`phase`,
/// with the VM's id, its `us` recorded at the end) and a clock. Reported
/// by [`Phase::done`]; dropped unfinished (the step failed), it reports
/// nothing.
#[must_use = "a phase reports its duration only through `done`"]
pub struct Phase<'a> {
    p: &'a Progress,
    name: &'static str,
    vm: String,
    span: tracing::Span,
    start: Instant,
}

impl Phase<'_> {
    /// The phase finished: its duration recorded on the span, sent as a
    /// phase event and kept.
    pub fn done(self) -> Duration {
        let took = self.start.elapsed();
        self.report(took);
        took
    }

    /// The phase finished, its last `tail_took` being phase `tail` (measured
    /// inside a step that does both, like a Firecracker launch: spawn, then
    /// the API calls): both reported, this one without the tail.
    pub fn done_split(self, tail: &'static str, tail_took: Duration) {
        let took = self.start.elapsed().saturating_sub(tail_took);
        let vm = self.vm.clone();
        let p = self.p;
        self.report(took);
        let t = p.phase(tail, &vm);
        t.report(tail_took);
    }

    fn report(self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.span.record("us", us);
        tracing::debug!(parent: &self.span, phase = self.name, us, "phase done");
        self.p
            .phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.name, took));
        self.p.send(Event::phase(self.name, took));
    }

    /// The span, to enter around synchronous work or instrument a future.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }
}

impl Progress {
    /// Progress reported into `tx` (the job stream, or a test's receiver).
    pub fn new(tx: UnboundedSender<Event>) -> Self {
        Progress {
            tx,
            last: Mutex::new((String::new(), Instant::now())),
            phases: Mutex::new(Vec::new()),
        }
    }

    /// Start phase `name` (one of `banger_proto::api::PHASES`) of VM `vm`.
    pub fn phase(&self, name: &'static str, vm: &str) -> Phase<'_> {
        debug_assert!(banger_proto::api::PHASES.contains(&name), "{name}");
        Phase {
            p: self,
            name,
            vm: vm.to_string(),
            span: tracing::info_span!("phase", phase = name, vm, us = tracing::field::Empty),
            start: Instant::now(),
        }
    }

    /// Every phase finished so far, in order.
    pub fn phases(&self) -> Vec<(&'static str, Duration)> {
        self.phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
