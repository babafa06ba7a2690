//! At daemon start, after the per-row reconcile: banger-owned objects no VM row records at all (taps, NAT elements, chroots, QEMU cgroups, runtime dirs, VMMs, known_hosts pins), each removed and logged.
//!
//! Disk objects with no row (dm snapshots `fc-rootfs-*`, loops backed by
//! StateDir files, `<state>/vms/<id>` directories) are swept by
//! [`crate::vmdisk::reconcile`], which runs right after this. Host-wide
//! objects (taps on the bridge, the NAT set) belong to one install: they
//! are swept by a system daemon, or a development daemon that set the
//! network up itself (not under `BANGER_NO_NETWORK`, where the bridge and
//! table belong to someone else). Jailer chroots and QEMU cgroups only by a
//! system daemon: every development daemon shares the default jailer base
//! and the host's cgroup hierarchy.

use crate::daemon::Daemon;
use crate::network::{NetPlan, NO_NETWORK_ENV};
use crate::vmm::adopted;
use banger_core::net::{tap_for, Subnet, TAP_PREFIX};
use banger_core::paths::Mode;
use banger_helper::gates::qemu::CGROUP_PREFIX;
use banger_proto::helper::{self as m, method};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where the host is read (`/sys`, `/proc` on the real host; fixtures in tests).
#[derive(Debug, Clone)]
pub struct Roots {
    pub sys: PathBuf,
    pub proc: PathBuf,
}

impl Roots {
    pub fn real() -> Self {
        Roots {
            sys: "/sys".into(),
            proc: "/proc".into(),
        }
    }
}

/// What the sweep removed (and what failed; the sweep goes on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    pub taps: Vec<String>,
    /// Addresses whose NAT element was cleared (absent ones included: the
    /// helper does not say which existed).
    pub nat: Vec<Ipv4Addr>,
    pub chroots: Vec<PathBuf>,
    /// VM ids whose QEMU cgroup (`banger-<id>`) was removed.
    pub cgroups: Vec<String>,
    pub runtime_dirs: Vec<PathBuf>,
    pub vmms: Vec<i64>,
    pub pins: Vec<String>,
    pub errors: Vec<String>,
}

/// What the rows record: ids, the names their pins use, leased addresses.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub ids: BTreeSet<String>,
    /// `NAME.DOMAIN` and leased addresses, as known_hosts lines name them.
    pub pin_names: BTreeSet<String>,
    pub leased: BTreeSet<Ipv4Addr>,
}

/// A tap name banger makes (`banger-` + 8 lowercase hex digits): never a
/// test's `banger-t…` tap nor anything else on the host.
pub fn is_banger_tap(name: &str) -> bool {
    name.strip_prefix(TAP_PREFIX).is_some_and(|h| {
        h.len() == 8
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Taps to delete: banger-named, on `bridge` (or on no bridge), and not
/// the tap of any recorded VM. `links` is `(name, master)`.
pub fn orphan_taps(
    links: &[(String, Option<String>)],
    bridge: &str,
    ids: &BTreeSet<String>,
) -> Vec<String> {
    let ours: BTreeSet<String> = ids.iter().map(|id| tap_for(id)).collect();
    links
        .iter()
        .filter(|(name, master)| {
            is_banger_tap(name)
                && master.as_deref().is_none_or(|m| m == bridge)
                && !ours.contains(name)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Every host address of `subnet` but the gateway and the leased ones.
pub fn unleased(subnet: &Subnet, gateway: Ipv4Addr, leased: &BTreeSet<Ipv4Addr>) -> Vec<Ipv4Addr> {
    let base = u32::from(subnet.network());
    let size = 1u32 << (32 - u32::from(subnet.prefix()));
    (1..size.saturating_sub(1))
        .map(|i| Ipv4Addr::from(base + i))
        .filter(|ip| *ip != gateway && !leased.contains(ip))
        .collect()
}

/// known_hosts host names none of whose line's names a VM row owns.
pub fn stale_pins(known_hosts: &str, known: &BTreeSet<String>) -> Vec<String> {
    let mut out = BTreeSet::new();
    for line in known_hosts.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let hosts = line.split_ascii_whitespace().next().unwrap_or("");
        if !hosts.split(',').any(|h| known.contains(h)) {
            out.extend(hosts.split(',').map(str::to_string));
        }
    }
    out.into_iter().collect()
}

/// Directories `<dir>/<id>` whose name is no recorded VM id.
fn orphan_dirs(dir: &Path, ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !ids.contains(&e.file_name().to_string_lossy().into_owned()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Network links under `<sys>/class/net` with their bridge (master).
pub fn read_links(sys: &Path) -> Vec<(String, Option<String>)> {
    let dir = sys.join("class/net");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let master = std::fs::read_link(dir.join(&name).join("master"))
                .ok()
                .and_then(|t| t.file_name().map(|f| f.to_string_lossy().into_owned()));
            (name, master)
        })
        .collect();
    out.sort();
    out
}

/// Unjailed VMM processes (QEMU, Firecracker) whose command line names a
/// VM directory of this daemon (`<base>/<id>`) with no row.
pub fn orphan_vmms(
    proc_root: &Path,
    bases: &[PathBuf],
    ids: &BTreeSet<String>,
) -> Vec<(i64, String)> {
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let id = args.iter().find_map(|a| {
            bases.iter().find_map(|b| {
                let prefix = format!("{}/", b.display());
                let at = a.find(&prefix)?;
                let rest = &a[at + prefix.len()..];
                Some(rest.split(['/', ',', ' ']).next().unwrap_or("").to_string())
            })
        });
        if let Some(id) = id.filter(|i| !i.is_empty() && !ids.contains(i)) {
            if adopted::alive(proc_root, pid, &id) {
                out.push((pid, id));
            }
        }
    }
    out.sort();
    out
}

/// VM ids of the QEMU cgroups (`banger-<id>` under `<sys>/fs/cgroup/memory`,
/// `…/pids` on v1 or `<sys>/fs/cgroup` on v2) of no recorded VM, sorted, once each.
pub fn orphan_cgroups(sys_root: &Path, ids: &BTreeSet<String>) -> Vec<String> {
    let cg = sys_root.join("fs/cgroup");
    let mut out = BTreeSet::new();
    for dir in [cg.join("memory"), cg.join("pids"), cg] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix(CGROUP_PREFIX) else {
                continue;
            };
            let banger_id = !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if banger_id && e.path().is_dir() && !ids.contains(id) {
                out.insert(id.to_string());
            }
        }
    }
    out.into_iter().collect()
}

/// What the rows record; `None` if the store cannot be read (then nothing
/// may be swept: every object would look orphaned).
fn known(d: &Daemon) -> Option<Known> {
    let rows = d.store.read(crate::store::vms::list).ok()?;
    let mut k = Known::default();
    for row in rows {
        k.pin_names.insert(format!("{}.{}", row.name, d.cfg.domain));
        if let Some(ip) = row.ip {
            k.leased.insert(ip);
            k.pin_names.insert(ip.to_string());
        }
        k.ids.insert(row.id);
    }
    Some(k)
}

/// Whether this daemon owns the host-wide objects (see the module doc).
pub fn owns_host_objects(d: &Daemon) -> bool {
    d.mode == Mode::System || std::env::var_os(NO_NETWORK_ENV).is_none()
}

/// Sweep, reading the host under `roots`; `host_wide` as [`owns_host_objects`].
pub fn run(d: &Daemon, roots: &Roots, host_wide: bool) -> Swept {
    let mut s = Swept::default();
    let Some(k) = known(d) else {
        s.errors
            .push("the VM rows cannot be read: nothing swept".to_string());
        return s;
    };
    let mut fail = |what: String, e: &(dyn std::error::Error + 'static)| {
        s.errors.push(format!("{what}: {}", crate::render_chain(e)));
    };
    // VMMs first: a live process holds its tap and disk.
    let bases = [d.paths.vms_dir(), d.paths.runtime_dir.join("vms")];
    let mut vmms = Vec::new();
    for (pid, id) in orphan_vmms(&roots.proc, &bases, &k.ids) {
        match adopted::kill(d.privops.as_ref(), false, pid) {
            Ok(()) => vmms.push(pid),
            Err(e) => fail(format!("VMM {pid} of VM {id}"), &e),
        }
    }
    let mut runtime_dirs = Vec::new();
    for dir in orphan_dirs(&d.paths.runtime_dir.join("vms"), &k.ids) {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => runtime_dirs.push(dir),
            Err(e) => fail(format!("runtime directory {}", dir.display()), &e),
        }
    }
    let mut pins = Vec::new();
    if let Ok(text) = std::fs::read_to_string(d.paths.known_hosts()) {
        let stale = stale_pins(&text, &k.pin_names);
        if !stale.is_empty() {
            match crate::vmdisk::known_hosts::unpin_host(d, &stale) {
                Ok(()) => pins = stale,
                Err(e) => fail("known_hosts pins".into(), &e),
            }
        }
    }
    let (mut taps, mut nat, mut chroots) = (Vec::new(), Vec::new(), Vec::new());
    if host_wide {
        for tap in orphan_taps(&read_links(&roots.sys), &d.cfg.bridge, &k.ids) {
            let r = d
                .privops
                .call::<method::DeleteTap>(&m::DeleteTap { name: tap.clone() });
            match r {
                Ok(_) => taps.push(tap),
                Err(e) => fail(format!("tap {tap}"), &e),
            }
        }
        match NetPlan::from_config(&d.cfg) {
            Ok(plan) => {
                for ip in unleased(&plan.subnet, plan.gateway(), &k.leased) {
                    let p = m::Nat {
                        guest_ip: ip.to_string(),
                        tap: format!("{TAP_PREFIX}00000000"),
                    };
                    match d.privops.call::<method::ClearNat>(&p) {
                        Ok(_) => nat.push(ip),
                        Err(e) => {
                            fail(format!("NAT element {ip}"), &e);
                            break;
                        }
                    }
                }
            }
            Err(e) => fail("the network plan".into(), &e),
        }
    }
    if host_wide && d.mode == Mode::System {
        // Jailer layout: <jailer_base>/<exec>/<id>/root.
        let execs = std::fs::read_dir(&d.cfg.jailer_base)
            .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        for exec in execs {
            for dir in orphan_dirs(&exec, &k.ids) {
                let p = m::CleanupJailerChroot {
                    path: dir.display().to_string(),
                };
                match d.privops.call::<method::CleanupJailerChroot>(&p) {
                    Ok(_) => chroots.push(dir),
                    Err(e) => fail(format!("jailer chroot {}", dir.display()), &e),
                }
            }
        }
    }
    s.vmms = vmms;
    s.runtime_dirs = runtime_dirs;
    s.pins = pins;
    s.taps = taps;
    s.nat = nat;
    if host_wide && d.mode == Mode::System {
        // After the VMMs above were killed: their cgroups are empty now.
        for id in orphan_cgroups(&roots.sys, &k.ids) {
            let p = m::RemoveQemuCgroup { vm_id: id.clone() };
            match d.privops.call::<method::RemoveQemuCgroup>(&p) {
                Ok(_) => s.cgroups.push(id),
                Err(e) => s
                    .errors
                    .push(format!("cgroup of VM {id}: {}", crate::render_chain(&e))),
            }
        }
    }
    s.chroots = chroots;
    s
}

/// Sweep the real host and log every object removed.
pub fn at_start(d: &Daemon) -> Swept {
    let s = run(d, &Roots::real(), owns_host_objects(d));
    for p in &s.vmms {
        tracing::info!(pid = p, "sweep: killed a VMM of no VM");
    }
    for t in &s.taps {
        tracing::info!(tap = %t, "sweep: deleted a tap of no VM");
    }
    if !s.nat.is_empty() {
        tracing::info!(
            count = s.nat.len(),
            "sweep: cleared NAT elements of unleased addresses"
        );
    }
    for c in &s.chroots {
        tracing::info!(chroot = %c.display(), "sweep: removed a jailer chroot of no VM");
    }
    for id in &s.cgroups {
        tracing::info!(vm = %id, "sweep: removed the QEMU cgroup of no VM");
    }
    for r in &s.runtime_dirs {
        tracing::info!(dir = %r.display(), "sweep: removed a runtime directory of no VM");
    }
    for p in &s.pins {
        tracing::info!(host = %p, "sweep: dropped a known_hosts pin of no VM");
    }
    for e in &s.errors {
        tracing::warn!(error = %e, "sweep: step failed");
    }
    s
}

#[cfg(test)]
#[path = "sweep_tests.rs"]
mod tests;
