//! Privileged methods: process — signalling Firecracker processes through
//! pidfds and launching the validated Firecracker/jailer binary.

use crate::dispatch::Helper;
use crate::error::{gate, RpcError};
use crate::gates::{files, process, Refused};
use banger_proto::helper as m;
use banger_proto::install::InstallConfig;
use banger_sys::{exec, fsops, pidfd};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

/// Where a jailed Firecracker's API socket lives, inside its chroot
/// (`<jailer_base>/<exec-file name>/<vm_id>/root/run/firecracker.socket` on the host).
pub const JAILED_API_SOCKET: &str = "/run/firecracker.socket";

/// `priv.kill_process`: SIGKILL a Firecracker process.
pub fn kill_process(h: &Helper, p: m::KillProcess) -> Result<m::Empty, RpcError> {
    signal(h, m::KILL_PROCESS, p.pid, Signal::SIGKILL)
}

/// `priv.signal_process`: send an allowlisted signal to a Firecracker process.
pub fn signal_process(h: &Helper, p: m::SignalProcess) -> Result<m::Empty, RpcError> {
    let sig = gate(m::SIGNAL_PROCESS, process::signal_by_name(&p.signal))?;
    signal(h, m::SIGNAL_PROCESS, p.pid, sig)
}

/// The check-then-signal sequence that PID reuse cannot fool:
/// 1. hold a pidfd (the one kept at launch, or `pidfd_open` now);
/// 2. check `/proc/<pid>/cmdline` while holding it;
/// 3. check through the pidfd that the process is still alive — so the pid
///    was not recycled between 1 and 2 and the cmdline read was its own;
/// 4. `pidfd_send_signal` through the same pidfd.
fn signal(h: &Helper, method: &'static str, pid: i32, sig: Signal) -> Result<m::Empty, RpcError> {
    gate(method, process::pid_shape(pid))?;
    let fd = match h.host.launched.get(pid) {
        Some(fd) => fd,
        None => match pidfd::open(pid) {
            Ok(fd) => Arc::new(fd),
            Err(pidfd::PidfdError::Open(_, e)) if e.raw_os_error() == Some(libc::ESRCH) => {
                return gate(method, Err(Refused::new(process::FIRECRACKER_RULE)));
            }
            Err(e) => return Err(RpcError::failed(&e)),
        },
    };
    gate(method, process::firecracker_pid(&h.host.proc_root, pid))?;
    if !pidfd::is_alive(pid, &*fd).map_err(|e| RpcError::failed(&e))? {
        return Err(RpcError::Failed(format!(
            "pid {pid} exited during the check"
        )));
    }
    pidfd::send_signal(pid, &*fd, sig as i32).map_err(|e| RpcError::failed(&e))?;
    Ok(m::Empty {})
}

/// The full argv (argv\[0\] = the binary's configured path) for a launch,
/// built only from install metadata and gated fields.
///
/// Not jailed: `firecracker --id <vm_id> --api-sock <api_socket>`.
/// Jailed: `jailer --id <vm_id> --exec-file <firecracker_bin> --uid <owner_uid>
/// --gid <owner_gid> --chroot-base-dir <jailer_base> --cgroup-version 2 --
/// --api-sock /run/firecracker.socket`.
pub fn firecracker_argv(
    cfg: &InstallConfig,
    vm_id: &str,
    api_socket: &Path,
    jailed: bool,
) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    if jailed {
        v.push(cfg.jailer_bin.clone().into());
        v.extend(["--id".into(), vm_id.into(), "--exec-file".into()]);
        v.push(cfg.firecracker_bin.clone().into());
        v.extend([
            "--uid".into(),
            cfg.owner_uid.to_string().into(),
            "--gid".into(),
            cfg.owner_gid.to_string().into(),
            "--chroot-base-dir".into(),
        ]);
        v.push(cfg.jailer_base.clone().into());
        v.extend([
            "--cgroup-version".into(),
            "2".into(),
            "--".into(),
            "--api-sock".into(),
            JAILED_API_SOCKET.into(),
        ]);
    } else {
        v.push(cfg.firecracker_bin.clone().into());
        v.extend(["--id".into(), vm_id.into(), "--api-sock".into()]);
        v.push(api_socket.as_os_str().to_owned());
    }
    v
}

/// `priv.launch_firecracker`: gate every field, validate the binaries from
/// install metadata, open the log 0600 beneath StateDir, exec through the
/// validated fd, keep the pidfd for later signals, reap in the background.
pub fn launch_firecracker(
    h: &Helper,
    p: m::LaunchFirecracker,
) -> Result<m::LaunchFirecrackerResult, RpcError> {
    const M: &str = m::LAUNCH_FIRECRACKER;
    let vm_id = gate(M, process::vm_id(&p.vm_id))?;
    let api = if p.jailed {
        if !p.api_socket.is_empty() {
            return gate(
                M,
                Err(Refused::new(
                    "api_socket must be empty when jailed (the socket is <chroot>/run/firecracker.socket)",
                )),
            );
        }
        Path::new(JAILED_API_SOCKET).to_path_buf()
    } else {
        gate(M, files::api_socket(&h.cfg.runtime_dir, &p.api_socket))?
    };
    let log_path = gate(M, files::log_file(&h.cfg.state_dir, &p.log_file))?;
    let fc_fd = gate(M, process::validate_root_executable(&h.cfg.firecracker_bin))?;
    let exe = if p.jailed {
        gate(M, process::validate_root_executable(&h.cfg.jailer_bin))?
    } else {
        fc_fd
    };
    let argv = firecracker_argv(&h.cfg, vm_id, &api, p.jailed);
    let log = fsops::open_log_beneath(
        &h.cfg.state_dir,
        &log_path,
        h.cfg.owner_uid,
        h.cfg.owner_gid,
    )
    .map_err(|e| RpcError::failed(&e))?;
    let launched = exec::spawn_via_fd(exe.as_fd(), argv, &log).map_err(|e| RpcError::failed(&e))?;
    let pid = launched.pid;
    let held = h.host.launched.insert(pid, launched.pidfd);
    let registry = h.host.launched.clone();
    let mut child = launched.child;
    std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let _ = child.wait();
            registry.remove_exact(pid, &held);
        })
        .map_err(|e| RpcError::Failed(format!("start the reaper for pid {pid}: {e}")))?;
    Ok(m::LaunchFirecrackerResult { pid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cfg() -> InstallConfig {
        InstallConfig::for_owner(1000, 1001, PathBuf::from("/home/alice"))
    }

    #[test]
    fn argv_not_jailed() {
        let v = firecracker_argv(&cfg(), "vm-1", Path::new("/run/banger/vm-1.sock"), false);
        assert_eq!(
            v,
            [
                "/usr/local/bin/firecracker",
                "--id",
                "vm-1",
                "--api-sock",
                "/run/banger/vm-1.sock"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn argv_jailed_uses_install_metadata_only() {
        let mut c = cfg();
        c.jailer_base = "/srv/j".into();
        let v = firecracker_argv(&c, "vm-1", Path::new(JAILED_API_SOCKET), true);
        assert_eq!(
            v,
            [
                "/usr/local/bin/jailer",
                "--id",
                "vm-1",
                "--exec-file",
                "/usr/local/bin/firecracker",
                "--uid",
                "1000",
                "--gid",
                "1001",
                "--chroot-base-dir",
                "/srv/j",
                "--cgroup-version",
                "2",
                "--",
                "--api-sock",
                "/run/firecracker.socket",
            ]
            .map(OsString::from)
        );
    }
}
