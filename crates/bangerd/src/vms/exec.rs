//! `vm exec` on the API: one command in a running guest over SSH (banger's
//! own key, the pinned known_hosts, no terminal), its output as it comes.

use super::record::find;
use super::VmError;
use crate::daemon::Daemon;
use banger_core::vm::VmState;
use std::process::Stdio;

/// The `ssh` that runs `argv` in VM `name` (running, with an address):
/// no config file, batch mode, strict checking against banger's
/// known_hosts only, banger's key only.
pub fn ssh_command(
    d: &Daemon,
    name: &str,
    argv: &[String],
) -> Result<tokio::process::Command, VmError> {
    let row = find(d, name)?;
    if row.state != VmState::Running {
        return Err(VmError::NotRunning(row.name, row.state));
    }
    let ip = row.ip.ok_or_else(|| VmError::NoIp(row.name.clone()))?;
    let mut c = tokio::process::Command::new("ssh");
    c.args(["-F", "/dev/null", "-T"])
        .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
        .args(["-o", "ConnectTimeout=10", "-o", "StrictHostKeyChecking=yes"])
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            d.paths.known_hosts().display()
        ))
        .arg("-i")
        .arg(crate::sshkey::private_path(&d.paths.state_dir))
        .arg(format!("root@{ip}"))
        .arg("--")
        .arg(banger_core::shellword::line(argv))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(c)
}
