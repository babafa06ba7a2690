//! Running host tools: argv only, never a shell, behind a trait with a recording fake.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::time::Duration;

/// What happens when a child writes more than its cap to stdout or stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Kill the child's process group; the run fails with
    /// [`RunError::OutputTooLarge`].
    #[default]
    Kill,
    /// Keep the first bytes up to the cap, discard the rest, let it finish.
    Truncate,
}

/// Bounds on one run of a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget: past it the child's whole process group is
    /// SIGKILLed and reaped and the run fails with [`RunError::TimedOut`].
    pub timeout: Option<Duration>,
    /// Most bytes kept from stdout (never more is held in memory).
    pub max_stdout: usize,
    /// Most bytes kept from stderr.
    pub max_stderr: usize,
    pub on_overflow: Overflow,
}

impl Limits {
    /// No deadline, no cap (the default for tools the daemon runs, e.g.
    /// an image build).
    pub const NONE: Limits = Limits {
        timeout: None,
        max_stdout: usize::MAX,
        max_stderr: usize::MAX,
        on_overflow: Overflow::Kill,
    };

    /// Cap on stderr set by [`Limits::new`].
    pub const STDERR_MAX: usize = 1 << 20;

    /// `timeout`, a `max_stdout` cap and a [`Limits::STDERR_MAX`] cap on
    /// stderr, both killing.
    pub const fn new(timeout: Duration, max_stdout: usize) -> Limits {
        Limits {
            timeout: Some(timeout),
            max_stdout,
            max_stderr: Limits::STDERR_MAX,
            on_overflow: Overflow::Kill,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::NONE
    }
}

/// With whose privileges a child runs. Anything but `Inherit` also sets
/// `PR_SET_NO_NEW_PRIVS`, clears the ambient and bounding capability sets
/// and empties the effective/permitted/inheritable sets before the exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Privilege {
    /// The caller's own.
    #[default]
    Inherit,
    /// uid 0 with no capability at all: it can open what root owns by
    /// file mode (e.g. a root-owned device node) and nothing more.
    RootNoCaps,
    /// This uid/gid, no supplementary groups, no capability.
    User { uid: u32, gid: u32 },
}

/// A command to run: a program and separate argv entries. There is no way
/// to express a shell string here, by design.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub stdin: Option<Vec<u8>>,
    /// Deadline and output cap.
    pub limits: Limits,
    /// Privileges the child drops to.
    pub privilege: Privilege,
    /// Open fds of the caller the child inherits under the same number
    /// (named to the tool as `/proc/self/fd/N`); every other fd above 2 is
    /// close-on-exec.
    pub pass_fds: Vec<RawFd>,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
            limits: Limits::NONE,
            privilege: Privilege::Inherit,
            pass_fds: Vec::new(),
        }
    }

    pub fn limits(mut self, l: Limits) -> Self {
        self.limits = l;
        self
    }

    pub fn privilege(mut self, p: Privilege) -> Self {
        self.privilege = p;
        self
    }

    /// Let the child inherit `fd` (the caller keeps it open until the run ends).
    pub fn pass_fd(mut self, fd: RawFd) -> Self {
        self.pass_fds.push(fd);
        self
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
    #[error("{program} ran longer than {after:?}: killed with its process group")]
    TimedOut { program: String, after: Duration },
    #[error("{program} wrote more than {max} bytes to {stream}: killed with its process group")]
    OutputTooLarge {
        program: String,
        stream: &'static str,
        max: usize,
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

pub use crate::child::HostRunner;
pub use crate::recording::RecordingRunner;

/// PATH given to every child: the environment is otherwise cleared.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A runner that gives every command without limits of its own the
/// `default` ones (e.g. the helper: no child it runs goes unbounded).
#[derive(Debug, Clone, Copy)]
pub struct Bounded<R> {
    pub inner: R,
    pub default: Limits,
}

impl<R: Runner> Runner for Bounded<R> {
    fn output(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        if cmd.limits == Limits::NONE {
            self.inner.output(&cmd.clone().limits(self.default))
        } else {
            self.inner.output(cmd)
        }
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
    fn bounded_fills_in_limits_only_where_none_are_set() {
        let inner = RecordingRunner::new();
        let b = Bounded {
            inner,
            default: Limits::new(Duration::from_secs(5), 10),
        };
        b.run(&Cmd::new("a")).unwrap();
        let own = Limits::new(Duration::from_secs(1), 1);
        b.run(&Cmd::new("b").limits(own)).unwrap();
        let cmds = b.inner.cmds();
        assert_eq!(cmds[0].limits, b.default);
        assert_eq!(cmds[1].limits, own);
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
