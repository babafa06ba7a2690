//! The privileged-operations seam: one trait the daemon calls for every
//! root-only step, with three implementations — the helper client (system
//! install), `sudo -n` with argv (development mode as a normal user), and
//! direct in-process calls (development mode when already root).

use banger_helper::error::{gate, RpcError};
use banger_helper::gates::files::{self as file_gates, Chroot};
use banger_helper::helper::Helper;
use banger_proto::helper::Method;
use banger_proto::helper::{self as m, method};
use banger_proto::install::InstallConfig;
use banger_proto::jsonrpc::{Request, Response};
use banger_sys::runner::{Cmd, Runner};
use banger_sys::{fsops, mounts};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Why a privileged step failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("connecting to the helper at {0}")]
    Connect(PathBuf, #[source] std::io::Error),
    #[error("talking to the helper")]
    Io(#[source] std::io::Error),
    #[error(
        "the helper closed the connection without answering (is this uid its registered owner?)"
    )]
    NoAnswer,
    #[error("the helper's answer does not parse")]
    BadAnswer(#[source] serde_json::Error),
    #[error("the helper closed the connection during the call; it may have run, so it is not sent again")]
    Lost,
    #[error("the helper answered another request (id {0})")]
    WrongId(String),
    #[error("{method} refused ({code}): {message}")]
    Refused {
        method: String,
        code: i64,
        message: String,
    },
    #[error("running sudo")]
    Sudo(#[source] banger_sys::runner::RunError),
    #[error("reading the development install metadata {0}")]
    ReadConfig(PathBuf, #[source] std::io::Error),
    #[error("parsing the development install metadata {0}")]
    ParseConfig(PathBuf, #[source] banger_proto::install::InstallConfigError),
    #[error("reading the mount table")]
    MountInfo(#[source] banger_sys::mounts::MountsError),
}

impl PrivError {
    /// The refusal the helper itself would answer for `err`.
    fn from_rpc(method: &str, err: &RpcError) -> Self {
        let o = err.to_object();
        PrivError::Refused {
            method: method.to_string(),
            code: o.code,
            message: o.message,
        }
    }
}

#[path = "privops_client.rs"]
mod client;
pub use client::{HelperClient, IDEMPOTENT};

/// Every root-only step goes through here.
pub trait PrivOps: Send + Sync {
    /// Which implementation this is: `helper`, `sudo` or `direct`.
    fn kind(&self) -> &'static str;
    /// Call one helper method with JSON params; return its JSON result.
    fn call_value(&self, method: &str, params: Value) -> Result<Value, PrivError>;
}

impl dyn PrivOps + '_ {
    /// The one typed call: `M`'s params in, `M`'s result out.
    pub fn call<M: Method>(&self, params: &M::Params) -> Result<M::Result, PrivError> {
        let params = serde_json::to_value(params).expect("params always serialise");
        let v = self.call_value(M::NAME, params)?;
        serde_json::from_value(v).map_err(PrivError::BadAnswer)
    }
}

fn decode(method: &str, resp: Response) -> Result<Value, PrivError> {
    match (resp.result, resp.error) {
        (_, Some(e)) => Err(PrivError::Refused {
            method: method.to_string(),
            code: e.code,
            message: e.message,
        }),
        (Some(v), None) => Ok(v),
        (None, None) => Ok(Value::Null),
    }
}

/// Development mode as a normal user: each step is `sudo -n banger-helper
/// oneshot` (argv, request on stdin). Bypasses the helper's hardening: the
/// config it trusts is the user's own. Not for shared hosts.
///
/// Two steps differ (docs/privileges.md, "Running outside the system
/// install"), their gates run here, in the daemon, first:
/// - `priv.ensure_socket_access`: `sudo -n chown -h UID:GID -- PATH` (never
///   follows a symlink at the leaf), then `chmod 600 -- PATH` without sudo,
///   as the owner who now owns it; a failed chown stops before the chmod;
/// - `priv.cleanup_jailer_chroot`: `sudo -n umount --lazy -- MOUNT` for every
///   mount at or below the chroot, deepest first; then the removal through
///   the helper's oneshot, which re-reads the mount table, refuses if
///   anything is still mounted, and removes the tree without following a
///   symlink or crossing a mount.
pub struct SudoOps {
    runner: Arc<dyn Runner>,
    helper_bin: PathBuf,
    config: PathBuf,
    proc_root: PathBuf,
}

impl SudoOps {
    pub fn new(runner: Arc<dyn Runner>, helper_bin: PathBuf, config: PathBuf) -> Self {
        SudoOps {
            runner,
            helper_bin,
            config,
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// Read the mount table from `<proc_root>/thread-self/mountinfo`
    /// (`/proc` by default; a fixture in tests).
    pub fn with_proc_root(mut self, proc_root: PathBuf) -> Self {
        self.proc_root = proc_root;
        self
    }

    /// The exact argv one call runs.
    pub fn command(&self, method: &str, params: Value) -> Cmd {
        let mut line =
            serde_json::to_vec(&Request::new(1, method, params)).expect("requests serialise");
        line.push(b'\n');
        Cmd::new("sudo")
            .arg("-n")
            .arg("--")
            .arg(&self.helper_bin)
            .arg("--config")
            .arg(&self.config)
            .arg("oneshot")
            .stdin(line)
    }

    fn oneshot(&self, method: &str, params: Value) -> Result<Value, PrivError> {
        let out = self
            .runner
            .run(&self.command(method, params))
            .map_err(PrivError::Sudo)?;
        let resp: Response = serde_json::from_slice(&out.stdout).map_err(PrivError::BadAnswer)?;
        decode(method, resp)
    }

    /// The install metadata the oneshot helper reads (the daemon wrote it).
    fn install(&self) -> Result<InstallConfig, PrivError> {
        let text = std::fs::read_to_string(&self.config)
            .map_err(|e| PrivError::ReadConfig(self.config.clone(), e))?;
        InstallConfig::parse(&text).map_err(|e| PrivError::ParseConfig(self.config.clone(), e))
    }

    fn params<M: Method>(params: Value) -> Result<M::Params, PrivError> {
        let params = if params.is_null() {
            Value::Object(Default::default())
        } else {
            params
        };
        serde_json::from_value(params)
            .map_err(|e| PrivError::from_rpc(M::NAME, &RpcError::Params(e.to_string())))
    }

    fn ensure_socket_access(&self, params: Value) -> Result<Value, PrivError> {
        const M: &str = m::ENSURE_SOCKET_ACCESS;
        let p = Self::params::<method::EnsureSocketAccess>(params)?;
        let cfg = self.install()?;
        let path = gate(M, file_gates::socket_path(&cfg.runtime_dir, &p.path))
            .map_err(|e| PrivError::from_rpc(M, &e))?;
        for cmd in
            fsops::sudo_socket_access_cmds(&path, cfg.owner_uid, cfg.owner_gid, fsops::SOCKET_MODE)
        {
            self.runner.run(&cmd).map_err(PrivError::Sudo)?;
        }
        Ok(Value::Object(Default::default()))
    }

    fn cleanup_jailer_chroot(&self, params: Value) -> Result<Value, PrivError> {
        const M: &str = m::CLEANUP_JAILER_CHROOT;
        let p = Self::params::<method::CleanupJailerChroot>(params)?;
        let cfg = self.install()?;
        let chroot = gate(M, file_gates::jailer_chroot(&cfg.jailer_base, &p.path))
            .map_err(|e| PrivError::from_rpc(M, &e))?;
        let Chroot::Present(path) = chroot else {
            return Ok(Value::Object(Default::default()));
        };
        let table = mounts::read_mountinfo(&self.proc_root.join("thread-self/mountinfo"))
            .map_err(PrivError::MountInfo)?;
        for cmd in mounts::sudo_umount_lazy_cmds(&table, &path) {
            self.runner.run(&cmd).map_err(PrivError::Sudo)?;
        }
        self.oneshot(
            M,
            serde_json::to_value(&p).expect("params always serialise"),
        )
    }
}

impl PrivOps for SudoOps {
    fn kind(&self) -> &'static str {
        "sudo"
    }

    fn call_value(&self, method: &str, params: Value) -> Result<Value, PrivError> {
        match method {
            m::ENSURE_SOCKET_ACCESS => self.ensure_socket_access(params),
            m::CLEANUP_JAILER_CHROOT => self.cleanup_jailer_chroot(params),
            _ => self.oneshot(method, params),
        }
    }
}

/// Development mode when already root: the helper's gates and host
/// operations, called in-process.
pub struct DirectOps {
    helper: Helper,
}

impl DirectOps {
    pub fn new(helper: Helper) -> Self {
        DirectOps { helper }
    }
}

impl PrivOps for DirectOps {
    fn kind(&self) -> &'static str {
        "direct"
    }

    fn call_value(&self, method: &str, params: Value) -> Result<Value, PrivError> {
        self.helper.dispatch(method, params).map_err(|e| {
            let o = e.to_object();
            PrivError::Refused {
                method: method.to_string(),
                code: o.code,
                message: o.message,
            }
        })
    }
}

/// A scripted answer: a result, or a JSON-RPC error code and message.
pub type ScriptedAnswer = Result<Value, (i64, String)>;

/// A fake that records every call and answers from a script
/// (default: `{}`), for daemon tests.
#[derive(Default)]
pub struct RecordingPriv {
    calls: Mutex<Vec<(String, Value)>>,
    answers: Mutex<Vec<(String, ScriptedAnswer)>>,
}

impl RecordingPriv {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer the next call of `method` with `answer`.
    pub fn answer(&self, method: &str, answer: ScriptedAnswer) {
        self.answers
            .lock()
            .unwrap()
            .push((method.to_string(), answer));
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

impl PrivOps for RecordingPriv {
    fn kind(&self) -> &'static str {
        "recording"
    }

    fn call_value(&self, method: &str, params: Value) -> Result<Value, PrivError> {
        self.calls
            .lock()
            .unwrap()
            .push((method.to_string(), params));
        let mut answers = self.answers.lock().unwrap();
        match answers.iter().position(|(m, _)| m == method) {
            Some(i) => answers
                .remove(i)
                .1
                .map_err(|(code, message)| PrivError::Refused {
                    method: method.to_string(),
                    code,
                    message,
                }),
            None => Ok(Value::Object(Default::default())),
        }
    }
}

#[cfg(test)]
#[path = "privops_sudo_tests.rs"]
mod sudo_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use banger_sys::runner::{CmdOutput, RecordingRunner};

    #[test]
    fn sudo_mode_runs_the_helper_oneshot_with_argv_and_stdin() {
        let runner = Arc::new(RecordingRunner::new());
        runner.answer(
            "oneshot",
            CmdOutput {
                status: 0,
                stdout: br#"{"jsonrpc":"2.0","result":{"version":"9","protocol":1},"id":1}"#
                    .to_vec(),
                stderr: vec![],
            },
        );
        let ops = SudoOps::new(
            runner.clone(),
            "/usr/local/bin/banger-helper".into(),
            "/home/u/.local/state/banger/dev-install.toml".into(),
        );
        let v = ops
            .call_value("helper.version", serde_json::json!({}))
            .unwrap();
        assert_eq!(v["version"], "9");
        let cmds = runner.cmds();
        assert_eq!(
            cmds[0].argv(),
            vec![
                "sudo",
                "-n",
                "--",
                "/usr/local/bin/banger-helper",
                "--config",
                "/home/u/.local/state/banger/dev-install.toml",
                "oneshot"
            ]
        );
        let stdin: Value = serde_json::from_slice(cmds[0].stdin.as_ref().unwrap()).unwrap();
        assert_eq!(stdin["method"], "helper.version");
    }

    #[test]
    fn sudo_failure_and_refusal_surface() {
        let runner = Arc::new(RecordingRunner::new());
        runner.answer(
            "oneshot",
            CmdOutput {
                status: 1,
                stdout: vec![],
                stderr: b"sudo: a password is required".to_vec(),
            },
        );
        let ops = SudoOps::new(runner.clone(), "h".into(), "c".into());
        let err = ops.call_value("helper.version", Value::Null).unwrap_err();
        assert!(matches!(err, PrivError::Sudo(_)), "{err:?}");
        runner.answer(
            "oneshot",
            CmdOutput {
                status: 0,
                stdout: br#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"fsck_snapshot: device must be /dev/mapper/fc-rootfs-*"},"id":1}"#.to_vec(),
                stderr: vec![],
            },
        );
        match ops
            .call_value("priv.fsck_snapshot", Value::Null)
            .unwrap_err()
        {
            PrivError::Refused { code, message, .. } => {
                assert_eq!(code, -32602);
                assert!(message.contains("fc-rootfs"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn direct_mode_runs_the_helper_dispatch_in_process() {
        let cfg = banger_proto::install::InstallConfig::for_owner(1, 1, "/h".into());
        let ops = DirectOps::new(Helper {
            cfg,
            host: banger_helper::host::Host::real(),
        });
        let v = ops.call_value("helper.version", Value::Null).unwrap();
        assert_eq!(v["version"], banger_proto::VERSION);
        let err = ops.call_value("priv.nope", Value::Null).unwrap_err();
        assert!(matches!(err, PrivError::Refused { code: -32601, .. }));
    }
}
