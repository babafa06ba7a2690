//! At daemon start: which snapshots and loops are orphans (no VM row
//! records them) and which VM rows lost their disk. Pure: the caller lists
//! the host (sysfs, readable without root) and does the cleanup through
//! `priv.cleanup_dm_snapshot`.

use banger_proto::helper::DmHandles;
use banger_sys::dm::UUID_PREFIX;
use banger_sys::loopdev::LoopInfo;
use std::path::{Path, PathBuf};

/// What the host has now.
#[derive(Debug, Clone, Default)]
pub struct HostDisks {
    /// Attached loops (device, backing file).
    pub loops: Vec<LoopInfo>,
    /// dm devices as `(name, uuid)`.
    pub dm: Vec<(String, String)>,
}

/// One VM row's recorded disk.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub vm_id: String,
    pub handles: DmHandles,
    /// The disk file (fallback driver) or COW file (dm driver).
    pub disk_file: PathBuf,
}

/// The verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Handles to pass to `priv.cleanup_dm_snapshot`, one per orphan.
    pub cleanup: Vec<DmHandles>,
    /// VM rows whose disk is gone: mark broken, never delete.
    pub broken: Vec<String>,
}

/// Decide. Only banger's objects are ever proposed: dm devices named
/// `fc-rootfs-*` with the banger UUID, loops backed by files under `state_dir`.
pub fn plan(
    host: &HostDisks,
    recorded: &[Recorded],
    state_dir: &Path,
    running: &dyn Fn(&str) -> bool,
) -> Plan {
    let mut p = Plan::default();
    let used =
        |f: &dyn Fn(&DmHandles) -> &String, v: &str| recorded.iter().any(|r| f(&r.handles) == v);
    for (name, uuid) in &host.dm {
        let ours = name.starts_with("fc-rootfs-") && *uuid == format!("{UUID_PREFIX}{name}");
        if ours && !used(&|h| &h.dm_name, name) {
            p.cleanup.push(DmHandles {
                dm_name: name.clone(),
                ..Default::default()
            });
        }
    }
    for l in &host.loops {
        let dev = l.device.to_string_lossy();
        if l.backing_file.starts_with(state_dir)
            && !used(&|h| &h.base_loop, &dev)
            && !used(&|h| &h.cow_loop, &dev)
        {
            p.cleanup.push(DmHandles {
                cow_loop: dev.into_owned(),
                ..Default::default()
            });
        }
    }
    for r in recorded {
        let dm_gone =
            !r.handles.dm_name.is_empty() && !host.dm.iter().any(|(n, _)| *n == r.handles.dm_name);
        let file_gone = !r.disk_file.exists();
        // A stopped VM's dm snapshot is torn down on purpose; its COW file
        // is what must survive.
        if file_gone || (dm_gone && running(&r.vm_id)) {
            p.broken.push(r.vm_id.clone());
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(dev: &str, backing: &str) -> LoopInfo {
        LoopInfo {
            device: dev.into(),
            backing_file: backing.into(),
        }
    }

    #[test]
    fn orphans_are_banger_objects_without_a_row() {
        let tmp = banger_testkit::tmp();
        let state = tmp.path();
        std::fs::create_dir_all(state.join("vms/a")).unwrap();
        std::fs::write(state.join("vms/a/cow"), b"").unwrap();
        let s = |p: &str| state.join(p).to_str().unwrap().to_string();
        let host = HostDisks {
            loops: vec![
                lp("/dev/loop1", &s("images/base.ext4")),
                lp("/dev/loop2", &s("vms/a/cow")),
                lp("/dev/loop3", &s("images/base.ext4")),
                lp("/dev/loop4", &s("vms/zz/cow")),
                lp("/dev/loop5", "/var/lib/snapd/snaps/core.snap"),
            ],
            dm: vec![
                ("fc-rootfs-a".into(), "BANGER-fc-rootfs-a".into()),
                ("fc-rootfs-zz".into(), "BANGER-fc-rootfs-zz".into()),
                ("fc-rootfs-lvm".into(), "LVM-123".into()),
                ("vg0-root".into(), "LVM-456".into()),
            ],
        };
        let recorded = vec![
            Recorded {
                vm_id: "a".into(),
                handles: DmHandles {
                    dm_name: "fc-rootfs-a".into(),
                    dm_device: "/dev/mapper/fc-rootfs-a".into(),
                    base_loop: "/dev/loop1".into(),
                    cow_loop: "/dev/loop2".into(),
                },
                disk_file: state.join("vms/a/cow"),
            },
            Recorded {
                vm_id: "gone".into(),
                handles: DmHandles::default(),
                disk_file: state.join("vms/gone/disk.ext4"),
            },
        ];
        let p = plan(&host, &recorded, state, &|_| false);
        assert_eq!(
            p.cleanup,
            vec![
                DmHandles {
                    dm_name: "fc-rootfs-zz".into(),
                    ..Default::default()
                },
                DmHandles {
                    cow_loop: "/dev/loop3".into(),
                    ..Default::default()
                },
                DmHandles {
                    cow_loop: "/dev/loop4".into(),
                    ..Default::default()
                },
            ]
        );
        assert_eq!(p.broken, vec!["gone".to_string()]);
    }

    #[test]
    fn a_running_vm_whose_snapshot_vanished_is_broken() {
        let tmp = banger_testkit::tmp();
        std::fs::write(tmp.path().join("cow"), b"").unwrap();
        let r = Recorded {
            vm_id: "b".into(),
            handles: DmHandles {
                dm_name: "fc-rootfs-b".into(),
                ..Default::default()
            },
            disk_file: tmp.path().join("cow"),
        };
        let host = HostDisks::default();
        assert_eq!(
            plan(&host, std::slice::from_ref(&r), tmp.path(), &|_| true).broken,
            vec!["b".to_string()]
        );
        assert!(plan(&host, &[r], tmp.path(), &|_| false).broken.is_empty());
    }
}
