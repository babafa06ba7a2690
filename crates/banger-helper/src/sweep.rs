//! `banger-helper sweep`: remove every host object banger made — every
//! interface carrying banger's managed alias (whatever its name), resolver
//! routing, the `inet banger` table, `fc-rootfs-*` snapshots with banger's
//! UUID, and loop devices backed by files under StateDir. Used by
//! `banger system uninstall`; nothing that banger did not create is touched.

use crate::helper::Helper;
use std::path::Path;

/// What a sweep removed, and what it could not.
#[derive(Debug, Default)]
pub struct Swept {
    pub removed: Vec<String>,
    pub errors: Vec<String>,
}

impl Swept {
    fn note<E: std::error::Error + 'static>(&mut self, what: String, r: Result<(), E>) {
        match r {
            Ok(()) => self.removed.push(what),
            Err(e) => self
                .errors
                .push(format!("{what}: {}", crate::error::RpcError::failed(&e))),
        }
    }
}

/// dm devices as (name, uuid) from `<sys_root>/block/dm-*/dm/{name,uuid}`.
fn dm_devices(sys_root: &Path) -> Vec<(String, String)> {
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    std::fs::read_dir(sys_root.join("block"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("dm-"))
                .map(|e| {
                    (
                        read(e.path().join("dm/name")),
                        read(e.path().join("dm/uuid")),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Remove everything of banger's from the host.
pub fn sweep(h: &Helper, sys_root: &Path, run_root: &Path) -> Swept {
    let mut out = Swept::default();
    let host = &h.host;
    let cfg = &h.cfg;

    // Only links carrying banger's managed alias, listed in one dump.
    let managed = match host.net.managed_links() {
        Ok(links) => links,
        Err(e) => {
            out.errors.push(format!(
                "listing links: {}",
                crate::error::RpcError::failed(&e)
            ));
            Vec::new()
        }
    };
    let bridge_is_ours = managed.iter().any(|l| l.name == cfg.bridge);
    if bridge_is_ours && banger_sys::resolved::resolved_running(run_root) {
        out.note(
            format!("resolver routing on {}", cfg.bridge),
            banger_sys::resolved::clear(host.runner.as_ref(), &cfg.bridge),
        );
    }
    // Every banger-marked interface, whatever its name or kind (a bridge
    // made under another configured name, a squatted `docker0`): ports
    // first, bridges last.
    let (bridges, ports): (Vec<_>, Vec<_>) = managed
        .iter()
        .partition(|l| l.kind.as_deref() == Some("bridge"));
    for link in ports.into_iter().chain(bridges) {
        let what = match link.kind.as_deref() {
            Some("tun") => "tap",
            Some("bridge") => "bridge",
            _ => "interface",
        };
        out.note(
            format!("{what} {}", link.name),
            host.net.delete_managed(&link.name),
        );
    }
    let table = format!("nft table {}", host.nft.table());
    // Listing fails when the table does not exist: nothing to remove.
    if host.nft.list().is_ok() {
        out.note(table, host.nft.delete_table());
    }
    for (name, uuid) in dm_devices(sys_root) {
        if name.starts_with("fc-rootfs-") && uuid.starts_with(banger_sys::dm::UUID_PREFIX) {
            out.note(format!("dm snapshot {name}"), host.dm.remove(&name, &uuid));
        }
    }
    match host.loops.list() {
        Ok(loops) => {
            for l in banger_sys::loopdev::under(loops, &cfg.state_dir) {
                out.note(
                    format!("loop {}", l.device.display()),
                    host.loops.detach(&l.device),
                );
            }
        }
        Err(e) => out.errors.push(format!(
            "listing loops: {}",
            crate::error::RpcError::failed(&e)
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;
    use banger_proto::install::InstallConfig;
    use banger_sys::dm::{DmRequest, RecordingDm};
    use banger_sys::loopdev::RecordingLoops;
    use banger_sys::net::{NetOps, NetRequest, RecordingNet};
    use std::sync::Arc;

    #[test]
    fn sweeps_only_what_banger_made() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        for (dev, name, uuid) in [
            ("dm-0", "fc-rootfs-abc", "BANGER-fc-rootfs-abc"),
            ("dm-1", "vg0-root", "LVM-xyz"),
            ("dm-2", "fc-rootfs-evil", "CRYPT-LUKS2-123"),
        ] {
            let d = sys.join("block").join(dev).join("dm");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(d.join("uuid"), format!("{uuid}\n")).unwrap();
        }
        let net = Arc::new(
            RecordingNet::new()
                .with_link("banger0", "bridge", true)
                .with_link("banger-1a2b3c4d", "tun", true)
                .with_link("banger-foreign", "tun", false)
                .with_link("docker0", "bridge", false)
                // Marked by banger under names it no longer configures.
                .with_link("bgtest-oldbr", "bridge", true)
                .with_link("wg0", "tun", true),
        );
        let dm = Arc::new(RecordingDm::new());
        dm.add_device("fc-rootfs-abc", "BANGER-fc-rootfs-abc");
        let loops = Arc::new(RecordingLoops::new());
        loops.add("/dev/loop3", "/var/lib/banger/vms/a/cow.img");
        loops.add("/dev/loop4", "/home/someone/disk.img");
        let mut cfg = InstallConfig::for_owner(1000, 1000, "/home/u".into());
        cfg.state_dir = "/var/lib/banger".into();
        let h = Helper {
            cfg,
            host: Host {
                net: net.clone(),
                dm: dm.clone(),
                loops: loops.clone(),
                ..Host::recording()
            },
        };
        let swept = sweep(&h, &sys, &root.path().join("run"));
        let deleted = |name: &str| NetRequest::DeleteManaged { name: name.into() };
        assert_eq!(
            net.calls(),
            vec![
                deleted("banger-1a2b3c4d"),
                deleted("wg0"),
                deleted("banger0"),
                deleted("bgtest-oldbr"),
            ]
        );
        for left in ["banger-foreign", "docker0"] {
            assert!(net.link(left).unwrap().is_some(), "{left} untouched");
        }
        for line in [
            "tap banger-1a2b3c4d",
            "tap wg0",
            "bridge banger0",
            "bridge bgtest-oldbr",
        ] {
            assert!(swept.removed.iter().any(|r| r == line), "{line}: {swept:?}");
        }
        let removes: Vec<_> = dm
            .requests()
            .into_iter()
            .filter(|r| matches!(r, DmRequest::Remove { .. }))
            .collect();
        assert_eq!(removes.len(), 1, "{removes:?}");
        let left: Vec<_> = loops.attached().into_iter().map(|l| l.device).collect();
        assert_eq!(left, vec![std::path::PathBuf::from("/dev/loop4")]);
        assert!(
            swept.removed.iter().any(|r| r == "loop /dev/loop3"),
            "{swept:?}"
        );
        assert!(!swept
            .removed
            .iter()
            .any(|r| r.contains("foreign") || r.contains("vg0")));
    }
}
