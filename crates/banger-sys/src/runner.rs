//! Running host tools: argv only, never a shell, behind a trait with a recording fake.

use std::ffi::OsString;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// A command to run: a program and separate argv entries. There is no way
/// to express a shell string here, by design.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub stdin: Option<Vec<u8>>,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(it.into_iter().map(Into::into));
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Program and args as one lossy string vector, for logs and test asserts.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(&self.program)
            .chain(self.args.iter())
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }
}

/// What a finished command left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// Why a command could not be run or failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} exited with status {status}: {stderr}")]
    Failed {
        program: String,
        status: i32,
        stderr: String,
    },
}

/// Runs commands. The real one forks and execs; the fake records.
pub trait Runner: Send + Sync {
    /// Run to completion and return the output, whatever the exit status.
    fn output(&self, cmd: &Cmd) -> Result<CmdOutput, RunError>;

    /// Run and require exit status 0.
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let out = self.output(cmd)?;
        if out.success() {
            Ok(out)
        } else {
            // Some tools (debootstrap) report on stdout: fall back to its tail.
            let text = if out.stderr.iter().all(u8::is_ascii_whitespace) {
                let all = String::from_utf8_lossy(&out.stdout);
                let lines: Vec<&str> = all.trim().lines().collect();
                lines[lines.len().saturating_sub(3)..].join(" / ")
            } else {
                String::from_utf8_lossy(&out.stderr).trim().to_string()
            };
            Err(RunError::Failed {
                program: cmd.program.to_string_lossy().into_owned(),
                status: out.status,
                stderr: text,
            })
        }
    }
}

/// PATH given to every child: the environment is otherwise cleared.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs commands on the host with a cleared environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostRunner;

impl Runner for HostRunner {
    fn output(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let program = cmd.program.to_string_lossy().into_owned();
        let spawn_err = |source| RunError::Spawn {
            program: program.clone(),
            source,
        };
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args)
            .env_clear()
            .env("PATH", SAFE_PATH)
            .env("LC_ALL", "C")
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(spawn_err)?;
        if let Some(data) = &cmd.stdin {
            let mut stdin = child.stdin.take().expect("stdin was piped");
            let data = data.clone();
            // Feed stdin from a thread so a child that writes a lot before
            // reading cannot deadlock against us.
            let writer = std::thread::spawn(move || stdin.write_all(&data));
            let out = child.wait_with_output().map_err(spawn_err)?;
            let _ = writer.join();
            return Ok(to_output(out));
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        Ok(to_output(out))
    }
}

fn to_output(out: std::process::Output) -> CmdOutput {
    use std::os::unix::process::ExitStatusExt;
    let status = out
        .status
        .code()
        .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
    CmdOutput {
        status,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// A fake that records every command and answers from a script
/// (default: success with empty output).
#[derive(Debug, Default)]
pub struct RecordingRunner {
    calls: Mutex<Vec<Cmd>>,
    answers: Mutex<Vec<(String, CmdOutput)>>,
}

impl RecordingRunner {
    pub fn new() -> Self {
        Self::default()
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
        Ok(CmdOutput::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_entries_are_never_interpreted_by_a_shell() {
        let out = HostRunner
            .run(&Cmd::new("printf").args(["%s|", "a b", "$(id)", ";rm -rf /"]))
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "a b|$(id)|;rm -rf /|"
        );
    }

    #[test]
    fn environment_is_cleared() {
        std::env::set_var("BANGER_LEAK_TEST", "secret");
        let out = HostRunner.run(&Cmd::new("env")).unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains("BANGER_LEAK_TEST"), "{text}");
        assert!(text.contains("PATH="));
    }

    #[test]
    fn failure_carries_status_and_stderr() {
        let err = HostRunner
            .run(&Cmd::new("sh").args(["-c", "echo boom >&2; exit 3"]))
            .unwrap_err();
        match err {
            RunError::Failed { status, stderr, .. } => {
                assert_eq!(status, 3);
                assert_eq!(stderr, "boom");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stdin_is_fed() {
        let out = HostRunner.run(&Cmd::new("cat").stdin("hello")).unwrap();
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    fn recording_runner_records_and_answers() {
        let r = RecordingRunner::new();
        r.answer(
            "umount",
            CmdOutput {
                status: 32,
                ..Default::default()
            },
        );
        assert!(r.run(&Cmd::new("sudo").args(["-n", "umount"])).is_err());
        assert!(r.run(&Cmd::new("true")).is_ok());
        assert_eq!(r.calls(), vec![vec!["sudo", "-n", "umount"], vec!["true"]]);
    }
}
