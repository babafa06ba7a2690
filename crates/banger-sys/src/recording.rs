//! A fake runner that records every command and answers from a script,
//! or forwards to the host.

use crate::child::HostRunner;
use crate::runner::{Cmd, CmdOutput, RunError, Runner};
use std::sync::Mutex;

/// A fake that records every command and answers from a script
/// (default: success with empty output, or, when forwarding, the
/// [`HostRunner`]'s answer: it then counts real runs).
#[derive(Debug, Default)]
pub struct RecordingRunner {
    calls: Mutex<Vec<Cmd>>,
    answers: Mutex<Vec<(String, CmdOutput)>>,
    forward_to_host: bool,
}

impl RecordingRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records every command, then runs the unscripted ones on the host.
    pub fn forwarding_to_host() -> Self {
        RecordingRunner {
            forward_to_host: true,
            ..Self::default()
        }
    }

    /// Answer the next command whose argv joined by spaces contains `needle`.
    pub fn answer(&self, needle: &str, out: CmdOutput) {
        self.answers.lock().unwrap().push((needle.to_string(), out));
    }

    /// Every command run so far, as argv vectors.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().iter().map(Cmd::argv).collect()
    }

    /// Every command run so far.
    pub fn cmds(&self) -> Vec<Cmd> {
        self.calls.lock().unwrap().clone()
    }
}

impl Runner for RecordingRunner {
    fn output(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        self.calls.lock().unwrap().push(cmd.clone());
        let line = cmd.argv().join(" ");
        let mut answers = self.answers.lock().unwrap();
        if let Some(i) = answers.iter().position(|(n, _)| line.contains(n.as_str())) {
            return Ok(answers.remove(i).1);
        }
        drop(answers);
        if self.forward_to_host {
            return HostRunner.output(cmd);
        }
        Ok(CmdOutput::default())
    }
}
