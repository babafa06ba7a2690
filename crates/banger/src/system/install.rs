//! `banger system install`: metadata, layout, binaries, the two units.

use super::layout::{self, BINARIES, BIN_DIR, CONFIG, MAN_DIR, TMPFILES};
use anyhow::{bail, Context, Result};
use banger_core::units::{self, Binaries};
use banger_proto::install::InstallConfig;
use banger_sys::runner::{Cmd, HostRunner, Runner};
use serde_json::json;
use std::path::{Path, PathBuf};

/// What `install` was asked to do.
pub struct Opts {
    pub owner: Option<String>,
    pub no_start: bool,
    pub firecracker: Option<PathBuf>,
    pub jailer: Option<PathBuf>,
    /// Man pages to install into [`MAN_DIR`] (`banger.1`, `banger-vm.1`, …):
    /// the units' `Documentation=man:banger(1)` must resolve.
    pub man_pages: Vec<(String, Vec<u8>)>,
}

fn resolve_owner(name: Option<String>) -> Result<nix::unistd::User> {
    let name = match name.or_else(|| std::env::var("SUDO_USER").ok()) {
        Some(n) => n,
        None => bail!("no owner given: pass --owner USER (or run through sudo as that user)"),
    };
    let user = nix::unistd::User::from_name(&name)
        .with_context(|| format!("looking up user {name:?}"))?
        .with_context(|| format!("no such user {name:?}"))?;
    if user.uid.is_root() {
        bail!("the owner must be a normal user, not root: bangerd never runs as root in the system install");
    }
    Ok(user)
}

/// Copy the three binaries next to this one into /usr/local/bin (root, 0755).
fn install_binaries(changed: &mut Vec<String>) -> Result<()> {
    let here = std::env::current_exe().context("locating banger")?;
    let src_dir = here.parent().context("banger has a parent dir")?;
    for name in BINARIES {
        let src = src_dir.join(name);
        let dst = Path::new(BIN_DIR).join(name);
        if src == dst {
            continue;
        }
        let bytes = std::fs::read(&src).with_context(|| {
            format!("reading {} (build all three binaries first)", src.display())
        })?;
        if layout::write_file(&dst, &bytes, 0o755)? {
            changed.push(dst.display().to_string());
        }
    }
    Ok(())
}

/// Give the owner a subordinate uid/gid range (rootless image builds run in
/// a user namespace) unless it has one; returns the range it added.
fn ensure_subids(owner: &nix::unistd::User) -> Result<Option<String>> {
    use banger_core::subids;
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
    let uid = owner.uid.as_raw();
    if subids::has_range(&subuid, &owner.name, uid) && subids::has_range(&subgid, &owner.name, uid)
    {
        return Ok(None);
    }
    let (start, end) = subids::free_range(&[&subuid, &subgid])
        .context("no free subordinate id range left for the owner")?;
    let range = format!("{start}-{end}");
    HostRunner
        .run(
            &Cmd::new("usermod")
                .args(["--add-subuids", &range, "--add-subgids", &range, "--"])
                .arg(&owner.name),
        )
        .context("giving the owner subordinate ids (usermod)")?;
    Ok(Some(range))
}

/// Reserve the uid/gid range jailed Firecracker processes run as (one id
/// per VM): kept from an earlier install, else the first free aligned
/// block in `/etc/subuid`+`/etc/subgid` whose ids no user or group has;
/// recorded there as `banger-jail:<base>:<count>` so later subordinate
/// ranges skip it. Returns a description when a file changed.
fn ensure_jail_range(cfg: &mut InstallConfig) -> Result<Option<String>> {
    use banger_core::subids::{self, JAIL_RANGE, JAIL_RESERVATION};
    let range = cfg.jail_range().context("install.toml's jail uid range")?;
    let (base, count) = match range {
        Some(r) => (r.base, r.count),
        None => {
            let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
            let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
            let mut texts = vec![subuid, subgid];
            loop {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let (start, _) =
                    subids::free_range(&refs).context("no free id range left for the jail uids")?;
                let taken = (start..start + JAIL_RANGE).any(|id| {
                    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id))
                        .ok()
                        .flatten()
                        .is_some()
                        || nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(id))
                            .ok()
                            .flatten()
                            .is_some()
                });
                if !taken {
                    break (start, JAIL_RANGE);
                }
                // Skip this block: pretend it is reserved and look again.
                texts.push(format!("taken:{start}:{}\n", subids::RANGE));
            }
        }
    };
    cfg.jail_uid_base = Some(base);
    cfg.jail_uid_count = Some(count);
    cfg.jail_range()
        .context("the chosen jail uid range overlaps the owner")?;
    let mut changed = false;
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let new = subids::with_line(&text, JAIL_RESERVATION, base, count);
        if new != text {
            layout::write_file(Path::new(file), new.as_bytes(), 0o644)?;
            changed = true;
        }
    }
    Ok(changed.then(|| {
        format!(
            "/etc/subuid, /etc/subgid: jail uids {base}-{} reserved as {JAIL_RESERVATION}",
            base + count - 1
        )
    }))
}

pub fn install(opts: Opts, json_out: bool) -> Result<()> {
    super::require_root("install")?;
    if !opts.no_start && !super::systemd_is_pid1() {
        bail!("systemd is not PID 1 on this host, so the services cannot be started; re-run with --no-start to only lay down the files");
    }
    let owner = resolve_owner(opts.owner)?;
    // Keep settings of an earlier install (idempotent), switch the owner.
    let mut cfg = match std::fs::read_to_string(CONFIG) {
        Ok(text) => InstallConfig::parse(&text).with_context(|| format!("parsing {CONFIG}"))?,
        Err(_) => InstallConfig::for_owner(0, 0, PathBuf::new()),
    };
    cfg.owner_uid = owner.uid.as_raw();
    cfg.owner_gid = owner.gid.as_raw();
    cfg.owner_home = owner.dir.clone();
    if let Some(p) = opts.firecracker {
        cfg.firecracker_bin = p;
    }
    if let Some(p) = opts.jailer {
        cfg.jailer_bin = p;
    }
    let mut warnings = Vec::new();
    for (what, bin) in [
        ("firecracker", &cfg.firecracker_bin),
        ("jailer", &cfg.jailer_bin),
    ] {
        if !bin.exists() {
            warnings.push(format!(
                "{what} not found at {} (install it from Firecracker's releases; until then `banger doctor` picks the QEMU backend)",
                bin.display()
            ));
            continue;
        }
        if let Err(refused) = banger_helper::gates::process::validate_root_executable(bin) {
            bail!("refusing {what} binary {}: {refused}", bin.display());
        }
    }

    let mut changed = Vec::new();
    if let Some(range) = ensure_subids(&owner)? {
        changed.push(format!(
            "/etc/subuid, /etc/subgid: {range} for {}",
            owner.name
        ));
        cfg.owner_subids = Some(range);
    }
    if let Some(c) = ensure_jail_range(&mut cfg)? {
        changed.push(c);
    }
    install_binaries(&mut changed)?;
    for (name, text) in &opts.man_pages {
        let p = Path::new(MAN_DIR).join(name);
        if layout::write_file(&p, text, 0o644)? {
            changed.push(p.display().to_string());
        }
    }
    if layout::write_file(Path::new(CONFIG), cfg.render().as_bytes(), 0o644)? {
        changed.push(CONFIG.into());
    }
    let (uid, gid) = (cfg.owner_uid, cfg.owner_gid);
    layout::ensure_dir(&cfg.state_dir, uid, gid, 0o700)?;
    layout::ensure_dir(&cfg.runtime_dir, 0, gid, 0o1770)?;
    layout::ensure_dir(&cfg.jailer_base, 0, 0, 0o755)?;
    if layout::write_file(Path::new(TMPFILES), units::tmpfiles(&cfg).as_bytes(), 0o644)? {
        changed.push(TMPFILES.into());
    }
    let helper = Path::new(BIN_DIR).join("banger-helper");
    let daemon = Path::new(BIN_DIR).join("bangerd");
    let bins = Binaries {
        helper: &helper,
        daemon: &daemon,
    };
    let config = Path::new(CONFIG);
    for (unit, text) in [
        (units::HELPER_UNIT, units::helper_unit(&cfg, &bins, config)),
        (units::DAEMON_UNIT, units::daemon_unit(&cfg, &bins, config)),
    ] {
        let path = layout::unit_path(unit);
        if layout::write_file(&path, text.as_bytes(), 0o644)? {
            changed.push(path.display().to_string());
        }
    }

    let started = !opts.no_start;
    if started {
        super::status::systemctl(&["daemon-reload"])?;
        super::status::systemctl(&["enable", "--now", units::HELPER_UNIT, units::DAEMON_UNIT])?;
    }
    if json_out {
        let v = json!({
            "owner": {"name": owner.name, "uid": uid, "gid": gid, "home": cfg.owner_home},
            "config": CONFIG,
            "changed": changed,
            "started": started,
            "warnings": warnings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        if changed.is_empty() {
            println!(
                "banger is already installed for {} (uid {uid}); nothing changed",
                owner.name
            );
        } else {
            for c in &changed {
                println!("wrote {c}");
            }
            println!("installed banger for {} (uid {uid})", owner.name);
        }
        if started {
            println!("started {} and {}", units::HELPER_UNIT, units::DAEMON_UNIT);
        } else {
            println!(
                "not started (--no-start): `systemctl enable --now {} {}` when ready",
                units::HELPER_UNIT,
                units::DAEMON_UNIT
            );
        }
    }
    Ok(())
}
