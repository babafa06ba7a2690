//! `banger system status` and `banger system restart`.

use super::layout::{self, CONFIG};
use crate::client::Client;
use anyhow::{Context, Result};
use banger_core::units;
use banger_proto::api::{Doctor, VersionInfo};
use banger_proto::install::InstallConfig;
use banger_sys::runner::{Cmd, HostRunner, Runner};
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Run `systemctl ARGS…` and require success.
pub fn systemctl(args: &[&str]) -> Result<String> {
    let out = HostRunner
        .run(&Cmd::new("systemctl").args(args))
        .with_context(|| format!("systemctl {}", args.join(" ")))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn unit_state(unit: &str) -> String {
    if !layout::unit_path(unit).exists() {
        return "not installed".into();
    }
    if !super::systemd_is_pid1() {
        return "unknown (systemd is not PID 1)".into();
    }
    match HostRunner.output(&Cmd::new("systemctl").args(["is-active", unit])) {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

fn socket_state(path: &Path) -> &'static str {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => "present",
        Ok(_) => "not a socket",
        Err(_) => "absent",
    }
}

/// The detail of the doctor's check `name`.
fn check(doctor: &Doctor, name: &str) -> Option<String> {
    doctor
        .checks
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.detail.clone())
}

/// `banger system status --json`.
#[derive(Debug, Serialize)]
struct Status {
    owner: Owner,
    config: &'static str,
    state_dir: PathBuf,
    runtime_dir: PathBuf,
    /// Unit → its state.
    services: BTreeMap<&'static str, String>,
    /// Socket path → `present`, `absent` or `not a socket`.
    sockets: BTreeMap<String, &'static str>,
    versions: Versions,
    daemon_error: Option<String>,
    backend: Option<String>,
    disk_driver: Option<String>,
}

#[derive(Debug, Serialize)]
struct Owner {
    name: String,
    uid: u32,
    gid: u32,
}

#[derive(Debug, Serialize)]
struct Versions {
    cli: &'static str,
    daemon: Option<String>,
    helper: Option<String>,
}

pub async fn status(json_out: bool) -> Result<()> {
    let text = std::fs::read_to_string(CONFIG).with_context(|| {
        format!("banger is not installed ({CONFIG} is missing; run `sudo banger system install`)")
    })?;
    let cfg = InstallConfig::parse(&text).with_context(|| format!("parsing {CONFIG}"))?;
    let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(cfg.owner_uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {}", cfg.owner_uid));
    let client = Client::new(cfg.daemon_socket());
    let version = client
        .get::<VersionInfo>("/v1/version")
        .await
        .map(|a| a.body);
    let doctor = client
        .get::<Doctor>("/v1/doctor")
        .await
        .ok()
        .map(|a| a.body);
    let units = [units::HELPER_UNIT, units::DAEMON_UNIT];
    let sockets = [cfg.helper_socket(), cfg.daemon_socket()];
    let st = Status {
        owner: Owner {
            name: owner,
            uid: cfg.owner_uid,
            gid: cfg.owner_gid,
        },
        config: CONFIG,
        state_dir: cfg.state_dir.clone(),
        runtime_dir: cfg.runtime_dir.clone(),
        services: units.iter().map(|u| (*u, unit_state(u))).collect(),
        sockets: sockets
            .iter()
            .map(|p| (p.display().to_string(), socket_state(p)))
            .collect(),
        versions: Versions {
            cli: banger_proto::VERSION,
            daemon: version.as_ref().ok().map(|v| v.daemon.clone()),
            helper: version.as_ref().ok().and_then(|v| v.helper.clone()),
        },
        daemon_error: version.as_ref().err().map(|e| format!("{e:#}")),
        backend: doctor.as_ref().and_then(|d| check(d, "backend")),
        disk_driver: doctor.as_ref().and_then(|d| check(d, "disk driver")),
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!(
        "owner        {} (uid {}, gid {})",
        st.owner.name, st.owner.uid, st.owner.gid
    );
    for unit in units {
        println!("{unit:<22} {}", st.services[unit]);
    }
    for p in &sockets {
        println!("{:<22} {}", p.display(), socket_state(p));
    }
    println!(
        "versions     cli {}, daemon {}, helper {}",
        st.versions.cli,
        s(&st.versions.daemon),
        s(&st.versions.helper)
    );
    if let Some(e) = &st.daemon_error {
        println!("daemon       {e}");
    }
    println!("backend      {}", s(&st.backend));
    println!("disk driver  {}", s(&st.disk_driver));
    Ok(())
}

pub fn restart() -> Result<()> {
    super::require_root("restart")?;
    if !super::systemd_is_pid1() {
        anyhow::bail!("systemd is not PID 1 on this host; nothing to restart");
    }
    systemctl(&["restart", units::HELPER_UNIT, units::DAEMON_UNIT])?;
    println!(
        "restarted {} and {}",
        units::HELPER_UNIT,
        units::DAEMON_UNIT
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--json` keeps the shape scripts read (and system_install checks).
    #[test]
    fn status_json_has_the_documented_shape() {
        let st = Status {
            owner: Owner {
                name: "alice".into(),
                uid: 1000,
                gid: 1001,
            },
            config: CONFIG,
            state_dir: "/var/lib/banger".into(),
            runtime_dir: "/run/banger".into(),
            services: [(units::HELPER_UNIT, "active".to_string())].into(),
            sockets: [("/run/banger/helper.sock".to_string(), "present")].into(),
            versions: Versions {
                cli: "1.0",
                daemon: Some("1.0".into()),
                helper: None,
            },
            daemon_error: None,
            backend: Some("kvm".into()),
            disk_driver: None,
        };
        let v = serde_json::to_value(&st).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "owner": {"name": "alice", "uid": 1000, "gid": 1001},
                "config": CONFIG,
                "state_dir": "/var/lib/banger",
                "runtime_dir": "/run/banger",
                "services": {units::HELPER_UNIT: "active"},
                "sockets": {"/run/banger/helper.sock": "present"},
                "versions": {"cli": "1.0", "daemon": "1.0", "helper": null},
                "daemon_error": null,
                "backend": "kvm",
                "disk_driver": null,
            })
        );
    }
}
