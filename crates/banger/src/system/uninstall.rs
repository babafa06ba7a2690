//! `banger system uninstall [--purge]`: units, host objects, metadata,
//! binaries; StateDir only with `--purge`.

use super::layout::{self, BINARIES, BIN_DIR, CONFIG, MAN_DIR, TMPFILES};
use anyhow::{Context, Result};
use banger_core::units;
use banger_proto::install::InstallConfig;
use banger_sys::runner::{Cmd, HostRunner, Runner};
use serde_json::json;
use std::path::Path;

pub fn uninstall(purge: bool, man_pages: &[String], json_out: bool) -> Result<()> {
    super::require_root("uninstall")?;
    let cfg = match std::fs::read_to_string(CONFIG) {
        Ok(text) => Some(InstallConfig::parse(&text).with_context(|| format!("parsing {CONFIG}"))?),
        Err(_) => None,
    };
    let mut removed: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();

    if super::systemd_is_pid1() {
        for unit in [units::DAEMON_UNIT, units::HELPER_UNIT] {
            if layout::unit_path(unit).exists() {
                if let Err(e) = super::status::systemctl(&["disable", "--now", unit]) {
                    warnings.push(format!("{e:#}"));
                }
            }
        }
    }
    // Host objects (every interface carrying banger's mark — whatever its
    // name, not only the configured bridge — nft table, snapshots, loops,
    // resolver routing) are removed by the helper binary, which owns that
    // code (`banger_helper::sweep`).
    if let Some(cfg) = &cfg {
        let helper = Path::new(BIN_DIR).join("banger-helper");
        if helper.exists() {
            let out =
                HostRunner.output(&Cmd::new(&helper).arg("--config").arg(CONFIG).arg("sweep"))?;
            if out.success() {
                removed.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .map(|l| l.to_string()),
                );
            } else {
                warnings.push(format!(
                    "host cleanup: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        if std::fs::remove_dir_all(&cfg.runtime_dir).is_ok() {
            removed.push(cfg.runtime_dir.display().to_string());
        }
        if purge && std::fs::remove_dir_all(&cfg.state_dir).is_ok() {
            removed.push(cfg.state_dir.display().to_string());
        }
        if let Some(range) = &cfg.owner_subids {
            let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(cfg.owner_uid))
                .ok()
                .flatten();
            if let Some(owner) = owner {
                let out = HostRunner.output(
                    &Cmd::new("usermod")
                        .args(["--del-subuids", range, "--del-subgids", range, "--"])
                        .arg(&owner.name),
                )?;
                if out.success() {
                    removed.push(format!("subordinate ids {range} of {}", owner.name));
                } else {
                    warnings.push(format!(
                        "usermod --del-subuids {range}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
        if let (Some(base), Some(count)) = (cfg.jail_uid_base, cfg.jail_uid_count) {
            use banger_core::subids::{without_line, JAIL_RESERVATION};
            for file in ["/etc/subuid", "/etc/subgid"] {
                let text = std::fs::read_to_string(file).unwrap_or_default();
                let new = without_line(&text, JAIL_RESERVATION, base, count);
                if new != text {
                    layout::write_file(Path::new(file), new.as_bytes(), 0o644)?;
                    removed.push(format!("{file}: jail uids {base}+{count}"));
                }
            }
        }
        if std::fs::remove_dir(&cfg.jailer_base).is_ok() {
            removed.push(cfg.jailer_base.display().to_string());
        }
    }
    for unit in [units::DAEMON_UNIT, units::HELPER_UNIT] {
        let p = layout::unit_path(unit);
        if layout::remove_file(&p)? {
            removed.push(p.display().to_string());
        }
    }
    if super::systemd_is_pid1() {
        let _ = super::status::systemctl(&["daemon-reload"]);
    }
    for p in [TMPFILES, CONFIG] {
        if layout::remove_file(Path::new(p))? {
            removed.push(p.to_string());
        }
    }
    let _ = std::fs::remove_dir("/etc/banger");
    for name in man_pages {
        let p = Path::new(MAN_DIR).join(name);
        if layout::remove_file(&p)? {
            removed.push(p.display().to_string());
        }
    }
    for name in BINARIES {
        let p = Path::new(BIN_DIR).join(name);
        if layout::remove_file(&p)? {
            removed.push(p.display().to_string());
        }
    }
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"removed": removed, "warnings": warnings, "purged": purge})
            )?
        );
    } else {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        for r in &removed {
            println!("removed {r}");
        }
        if !purge {
            if let Some(cfg) = &cfg {
                println!(
                    "kept {} (images, VM disks, state); --purge removes it",
                    cfg.state_dir.display()
                );
            }
        }
    }
    Ok(())
}
