//! `banger system status` and `banger system restart`.

use super::layout::{self, CONFIG};
use crate::client::Client;
use anyhow::{Context, Result};
use banger_core::units;
use banger_proto::install::InstallConfig;
use banger_sys::runner::{Cmd, HostRunner, Runner};
use serde_json::{json, Value};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

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

fn check<'a>(doctor: &'a Value, name: &str) -> Option<&'a str> {
    doctor["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)?["detail"]
        .as_str()
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
    let version = client.call("GET", "/v1/version", None).await;
    let doctor = client.call("GET", "/v1/doctor", None).await.ok();
    let v = json!({
        "owner": {"name": owner, "uid": cfg.owner_uid, "gid": cfg.owner_gid},
        "config": CONFIG,
        "state_dir": cfg.state_dir,
        "runtime_dir": cfg.runtime_dir,
        "services": {
            units::HELPER_UNIT: unit_state(units::HELPER_UNIT),
            units::DAEMON_UNIT: unit_state(units::DAEMON_UNIT),
        },
        "sockets": {
            cfg.helper_socket().display().to_string(): socket_state(&cfg.helper_socket()),
            cfg.daemon_socket().display().to_string(): socket_state(&cfg.daemon_socket()),
        },
        "versions": {
            "cli": banger_proto::VERSION,
            "daemon": version.as_ref().ok().map(|v| v["daemon"].clone()),
            "helper": version.as_ref().ok().map(|v| v["helper"].clone()),
        },
        "daemon_error": version.as_ref().err().map(|e| format!("{e:#}")),
        "backend": doctor.as_ref().and_then(|d| check(d, "backend")),
        "disk_driver": doctor.as_ref().and_then(|d| check(d, "disk driver")),
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        o => o.to_string(),
    };
    println!(
        "owner        {} (uid {}, gid {})",
        owner, cfg.owner_uid, cfg.owner_gid
    );
    for unit in [units::HELPER_UNIT, units::DAEMON_UNIT] {
        println!("{unit:<22} {}", s(&v["services"][unit]));
    }
    for p in [cfg.helper_socket(), cfg.daemon_socket()] {
        println!("{:<22} {}", p.display(), socket_state(&p));
    }
    println!(
        "versions     cli {}, daemon {}, helper {}",
        banger_proto::VERSION,
        s(&v["versions"]["daemon"]),
        s(&v["versions"]["helper"])
    );
    if let Some(e) = v["daemon_error"].as_str() {
        println!("daemon       {e}");
    }
    println!("backend      {}", s(&v["backend"]));
    println!("disk driver  {}", s(&v["disk_driver"]));
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
