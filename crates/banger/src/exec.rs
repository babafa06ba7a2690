//! `banger vm exec NAME [--] CMD...`: one command in the guest over SSH, no
//! terminal; stdin passed through, stdout and stderr kept apart, the
//! guest command's exit status as banger's.

use crate::client::Client;
use crate::guest;
use anyhow::{Context, Result};
use std::process::Stdio;
use std::time::Duration;

/// banger's status when `--timeout` ran out (as timeout(1) reports).
pub const TIMED_OUT: i32 = 124;

/// Run `command` in VM `name`; the status banger should exit with.
/// `json`: capture both streams and print `{exit_code, stdout, stderr}`.
pub async fn exec(
    client: &Client,
    name: &str,
    command: &[String],
    json: bool,
    timeout: Option<u64>,
) -> Result<i32> {
    anyhow::ensure!(!command.is_empty(), "no command to run");
    let (ip, state_dir) = guest::target(client, name).await?;
    let mut cmd = guest::ssh(&state_dir, ip);
    cmd.args(["-T", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
        .arg("--")
        .arg(banger_core::shellword::line(command))
        .stdin(Stdio::inherit());
    if json {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .context("running ssh")?;
    let out = child.stdout.take();
    let err = child.stderr.take();
    let read = |r: Option<tokio::process::ChildStdout>| async move {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut v).await?;
        }
        Ok::<_, std::io::Error>(v)
    };
    let read_err = |r: Option<tokio::process::ChildStderr>| async move {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut v).await?;
        }
        Ok::<_, std::io::Error>(v)
    };
    let all = async {
        let (o, e, s) = tokio::join!(read(out), read_err(err), child.wait());
        Ok::<_, std::io::Error>((o?, e?, s?))
    };
    let (o, e, status) = match timeout {
        Some(t) => match tokio::time::timeout(Duration::from_secs(t), all).await {
            Ok(r) => r.context("running ssh")?,
            Err(_) => {
                eprintln!("banger: vm exec on {name}: timed out after {t}s");
                return Ok(TIMED_OUT);
            }
        },
        None => all.await.context("running ssh")?,
    };
    // ssh reports the remote status; a signal-killed ssh has none.
    let code = status.code().unwrap_or(255);
    if json {
        let v = serde_json::json!({
            "exit_code": code,
            "stdout": String::from_utf8_lossy(&o),
            "stderr": String::from_utf8_lossy(&e),
        });
        crate::out(&serde_json::to_string_pretty(&v).expect("JSON prints"));
    }
    Ok(code)
}
