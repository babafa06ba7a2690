//! Privileged methods: process — signalling the Firecracker processes this
//! helper launched, through pidfds, and launching the validated
//! Firecracker (development mode) or jailer binary.

use crate::error::{gate, RpcError};
use crate::gates::jail::{self as jail_gate, CgroupVersion};
use crate::gates::{files, process, Refused};
use crate::helper::Helper;
use crate::jail::{self, Built, JailError};
use crate::launched::{self, LAUNCHED_RULE};
use banger_proto::helper as m;
use banger_proto::install::InstallConfig;
use banger_sys::procinfo::FileId;
use banger_sys::{exec, fsops, pidfd};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `priv.kill_process`: SIGKILL a Firecracker process this helper launched.
pub fn kill_process(h: &Helper, p: m::KillProcess) -> Result<m::Empty, RpcError> {
    signal(h, m::KILL_PROCESS, p.pid, Signal::SIGKILL)
}

/// `priv.signal_process`: send an allowlisted signal to a Firecracker
/// process this helper launched.
pub fn signal_process(h: &Helper, p: m::SignalProcess) -> Result<m::Empty, RpcError> {
    let sig = gate(m::SIGNAL_PROCESS, process::signal_by_name(&p.signal))?;
    signal(h, m::SIGNAL_PROCESS, p.pid, sig)
}

/// The check-then-signal sequence that PID reuse cannot fool:
/// 1. the pidfd kept since the launch names exactly that process; without
///    one (a restarted or one-shot helper), `pidfd_open` now and, while
///    holding it, re-derive that the helper launched the pid
///    ([`launched::is_launched`]: launch record or jailed identity);
/// 2. check through the pidfd that the process is still alive — so the pid
///    was not recycled between opening the pidfd and the check;
/// 3. `pidfd_send_signal` through the same pidfd.
fn signal(h: &Helper, method: &'static str, pid: i32, sig: Signal) -> Result<m::Empty, RpcError> {
    gate(method, process::pid_shape(pid))?;
    let fd = match h.host.launched.get(pid) {
        Some(fd) => fd,
        None => {
            let fd = match pidfd::open(pid) {
                Ok(fd) => Arc::new(fd),
                Err(pidfd::PidfdError::Open(_, e)) if e.raw_os_error() == Some(libc::ESRCH) => {
                    return gate(method, Err(Refused::new(LAUNCHED_RULE)));
                }
                Err(e) => return Err(RpcError::failed(&e)),
            };
            if !launched::is_launched(h, pid) {
                return gate(method, Err(Refused::new(LAUNCHED_RULE)));
            }
            fd
        }
    };
    if !pidfd::is_alive(pid, &*fd).map_err(|e| RpcError::failed(&e))? {
        h.host.launched.remove_exact(pid, &fd);
        return Err(RpcError::Failed(format!("pid {pid} has exited")));
    }
    pidfd::send_signal(pid, &*fd, sig as i32).map_err(|e| RpcError::failed(&e))?;
    Ok(m::Empty {})
}

/// What a jailed launch adds to the argv.
pub struct JailArgs<'a> {
    pub uid: u32,
    pub cgroup_version: CgroupVersion,
    pub cgroups: &'a [String],
}

/// The full argv (argv\[0\] = the binary's configured path) for a launch,
/// built only from install metadata and gated fields.
///
/// Not jailed: `firecracker --id <vm_id> --api-sock <api_socket>`.
/// Jailed: `jailer --id <vm_id> --exec-file <firecracker_bin> --uid <jail
/// uid> --gid <jail uid> --chroot-base-dir <jailer_base> --cgroup-version
/// <1|2> [--cgroup <file>=<value>]… -- --api-sock /api/firecracker.socket`.
pub fn firecracker_argv(
    cfg: &InstallConfig,
    vm_id: &str,
    api_socket: &Path,
    jail: Option<&JailArgs<'_>>,
) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    if let Some(j) = jail {
        v.push(cfg.jailer_bin.clone().into());
        v.extend(["--id".into(), vm_id.into(), "--exec-file".into()]);
        v.push(cfg.firecracker_bin.clone().into());
        v.extend([
            "--uid".into(),
            j.uid.to_string().into(),
            "--gid".into(),
            j.uid.to_string().into(),
            "--chroot-base-dir".into(),
        ]);
        v.push(cfg.jailer_base.clone().into());
        v.extend(["--cgroup-version".into(), j.cgroup_version.arg().into()]);
        for c in j.cgroups {
            v.extend(["--cgroup".into(), c.into()]);
        }
        v.extend([
            "--".into(),
            "--api-sock".into(),
            m::JAILED_API_SOCKET.into(),
        ]);
    } else {
        v.push(cfg.firecracker_bin.clone().into());
        v.extend(["--id".into(), vm_id.into(), "--api-sock".into()]);
        v.push(api_socket.as_os_str().to_owned());
    }
    v
}

/// Refusals that depend on host state (an existing jail, a directory
/// someone else owns) are gate refusals too; the rest are failures.
fn jail_err(e: JailError) -> RpcError {
    let refused = match e {
        JailError::Refused(r) => r,
        JailError::Fs(e @ banger_sys::jail::JailFsError::Untrusted(..)) => {
            Refused::new(e.to_string())
        }
        other => return RpcError::failed(&other),
    };
    RpcError::Gate {
        method: m::LAUNCH_FIRECRACKER,
        refused,
    }
}

/// A jailed launch's plan, gated.
struct JailPlan {
    range: banger_proto::install::JailRange,
    spec: jail_gate::Spec,
    version: CgroupVersion,
    cgroups: Vec<String>,
}

fn plan_jail(h: &Helper, p: &m::LaunchFirecrackerParams) -> Result<JailPlan, RpcError> {
    const M: &str = m::LAUNCH_FIRECRACKER;
    if !p.api_socket.is_empty() {
        return gate(
            M,
            Err(Refused::new(
                "api_socket must be empty when jailed (the socket is <RuntimeDir>/jails/<vm_id>/firecracker.socket)",
            )),
        );
    }
    let Some(js) = &p.jail else {
        return gate(M, Err(Refused::new("jail is required when jailed")));
    };
    let spec = gate(M, jail_gate::spec(&h.cfg.state_dir, js))?;
    let range = match h.cfg.jail_range() {
        Ok(Some(r)) => r,
        _ => {
            return gate(
                M,
                Err(Refused::new(
                    "install.toml must reserve a jail uid range (jail_uid_base, jail_uid_count) for jailed launches",
                )),
            )
        }
    };
    let version = jail_gate::host_cgroup_version(&h.host.sys_root).ok_or_else(|| {
        RpcError::Failed(format!(
            "no cgroup hierarchy with the memory and pids controllers under {}/fs/cgroup",
            h.host.sys_root.display()
        ))
    })?;
    let cgroups = jail_gate::cgroup_args(version, &spec);
    Ok(JailPlan {
        range,
        spec,
        version,
        cgroups,
    })
}

/// `priv.launch_firecracker`: gate every field and the launch mode,
/// validate the binaries from install metadata, open the log 0600 beneath
/// StateDir; jailed, build the VM's jail; exec through the validated fd;
/// record the launch (pid start time + executable) under the root-owned
/// records directory and keep the pidfd; reap in the background.
pub fn launch_firecracker(
    h: &Helper,
    p: m::LaunchFirecrackerParams,
) -> Result<m::LaunchFirecrackerResult, RpcError> {
    const M: &str = m::LAUNCH_FIRECRACKER;
    let vm_id = gate(M, process::vm_id(&p.vm_id))?;
    gate(M, process::launch_mode(h.host.launch_policy, p.jailed))?;
    let plan = if p.jailed {
        Some(plan_jail(h, &p)?)
    } else {
        if p.jail.is_some() {
            return gate(M, Err(Refused::new("jail is only for jailed launches")));
        }
        None
    };
    let api = match plan {
        Some(_) => PathBuf::from(m::JAILED_API_SOCKET),
        None => gate(M, files::api_socket(&h.cfg.runtime_dir, &p.api_socket))?,
    };
    let log_path = gate(M, files::log_file(&h.cfg.state_dir, &p.log_file))?;
    let fc_fd = gate(M, process::validate_root_executable(&h.cfg.firecracker_bin))?;
    let exe = if p.jailed {
        gate(M, process::validate_root_executable(&h.cfg.jailer_bin))?
    } else {
        fc_fd
    };
    if plan.is_none() && launched::live_records(h) >= h.cfg.max_launches as usize {
        return gate(
            M,
            Err(Refused::new(format!(
                "at most {} launched Firecracker processes at once (max_launches)",
                h.cfg.max_launches
            ))),
        );
    }
    let exe_id = rustix::fs::fstat(&exe)
        .map(|st| FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
        .map_err(|e| RpcError::Failed(format!("stat the validated binary: {e}")))?;
    let built: Option<Built> = match &plan {
        Some(pl) => Some(jail::build(h, pl.range, vm_id, &pl.spec).map_err(jail_err)?),
        None => None,
    };
    let log = match fsops::open_log_beneath(
        &h.cfg.state_dir,
        &log_path,
        h.cfg.owner_uid,
        h.cfg.owner_gid,
    ) {
        Ok(f) => f,
        Err(e) => {
            if let Some(b) = &built {
                jail::unbuild(h, b);
            }
            return Err(RpcError::failed(&e));
        }
    };
    let cgroup_dirs = match (&plan, &built) {
        (Some(pl), Some(b)) => jail_gate::cgroup_dirs(
            &h.host.sys_root,
            pl.version,
            &pl.cgroups,
            &b.exec_name,
            vm_id,
        ),
        _ => Vec::new(),
    };
    // A cgroup left by an earlier VM of this id would be reused with its
    // old tasks' accounting; an empty one is removed (a busy one stays and
    // the jailer fails on it).
    for d in &cgroup_dirs {
        let _ = std::fs::remove_dir(d);
    }
    let jail_args = match (&plan, &built) {
        (Some(pl), Some(b)) => Some(JailArgs {
            uid: b.uid,
            cgroup_version: pl.version,
            cgroups: &pl.cgroups,
        }),
        _ => None,
    };
    let argv = firecracker_argv(&h.cfg, vm_id, &api, jail_args.as_ref());
    let launched = match exec::spawn_via_fd(exe.as_fd(), argv, &log) {
        Ok(l) => l,
        Err(e) => {
            if let Some(b) = &built {
                jail::unbuild(h, b);
            }
            return Err(RpcError::failed(&e));
        }
    };
    let pid = launched.pid;
    let held = h.host.launched.insert(pid, launched.pidfd);
    let mut child = launched.child;
    if let Err(e) = launched::record(h, pid, exe_id) {
        let _ = pidfd::send_signal(pid, &*held, libc::SIGKILL);
        let _ = child.wait();
        h.host.launched.remove_exact(pid, &held);
        if let Some(b) = &built {
            jail::unbuild(h, b);
        }
        return Err(RpcError::failed(&e));
    }
    let registry = h.host.launched.clone();
    let record = h.host.launch_records.join(pid.to_string());
    std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let _ = child.wait();
            registry.remove_exact(pid, &held);
            let _ = std::fs::remove_file(&record);
            for d in &cgroup_dirs {
                let _ = std::fs::remove_dir(d);
            }
        })
        .map_err(|e| RpcError::Failed(format!("start the reaper for pid {pid}: {e}")))?;
    Ok(m::LaunchFirecrackerResult {
        pid,
        api_socket: built.as_ref().map(|b| b.api_socket().display().to_string()),
        chroot: built.as_ref().map(|b| b.chroot.display().to_string()),
        jail_uid: built.as_ref().map(|b| b.uid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> InstallConfig {
        InstallConfig::for_owner(1000, 1001, PathBuf::from("/home/alice"))
    }

    #[test]
    fn argv_not_jailed() {
        let v = firecracker_argv(&cfg(), "vm-1", Path::new("/run/banger/vm-1.sock"), None);
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
    fn argv_jailed_uses_install_metadata_and_the_jail_uid() {
        let mut c = cfg();
        c.jailer_base = "/srv/j".into();
        let cg = ["memory.limit_in_bytes=1".to_string(), "pids.max=34".into()];
        let j = JailArgs {
            uid: 900003,
            cgroup_version: CgroupVersion::V1,
            cgroups: &cg,
        };
        let v = firecracker_argv(&c, "vm-1", Path::new(m::JAILED_API_SOCKET), Some(&j));
        assert_eq!(
            v,
            [
                "/usr/local/bin/jailer",
                "--id",
                "vm-1",
                "--exec-file",
                "/usr/local/bin/firecracker",
                "--uid",
                "900003",
                "--gid",
                "900003",
                "--chroot-base-dir",
                "/srv/j",
                "--cgroup-version",
                "1",
                "--cgroup",
                "memory.limit_in_bytes=1",
                "--cgroup",
                "pids.max=34",
                "--",
                "--api-sock",
                "/api/firecracker.socket",
            ]
            .map(OsString::from)
        );
    }
}
