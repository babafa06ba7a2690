//! Reconcile at daemon start against a sysfs fixture and the recording
//! helper: orphans cleaned, vanished disks marked broken.

use super::tests::{add_vm, dm_handles, fixture, row};
use super::*;
use crate::privops::RecordingPriv;
use serde_json::json;
use std::sync::Arc;

fn sysfs_dm(sys: &Path, n: u32, name: &str, uuid: &str) {
    let p = sys.join(format!("block/dm-{n}/dm"));
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("name"), format!("{name}\n")).unwrap();
    std::fs::write(p.join("uuid"), format!("{uuid}\n")).unwrap();
}

#[test]
fn reconcile_cleans_orphans_and_marks_vanished_disks_broken() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fixture(rec.clone(), None);
    let sys = f.tmp.path().join("sys");
    std::fs::create_dir_all(sys.join("block")).unwrap();
    // keep: a copy VM with its disk; gone: its disk vanished;
    // run: running dm VM whose snapshot vanished; stop: stopped dm VM, same.
    for (id, st) in [
        ("keep", "stopped"),
        ("gone", "stopped"),
        ("run", "running"),
        ("stop", "stopped"),
    ] {
        add_vm(&f.d, id, st);
    }
    create_with(&f.d, "keep", &f.image, Driver::Copy).unwrap();
    create_with(&f.d, "gone", &f.image, Driver::Copy).unwrap();
    std::fs::remove_dir_all(f.state().join("vms/gone")).unwrap();
    for id in ["run", "stop"] {
        rec.answer(m::CREATE_DM_SNAPSHOT, Ok(dm_handles(id)));
        create_with(&f.d, id, &f.image, Driver::DmSnapshot).unwrap();
        std::fs::write(f.state().join(format!("vms/{id}/cow.img")), b"").unwrap();
    }
    // Orphans: a VM dir with a COW file and no row, a banger dm device with
    // no row; not ours: an LVM device.
    std::fs::create_dir_all(f.state().join("vms/bgtest-orphan")).unwrap();
    std::fs::write(f.state().join("vms/bgtest-orphan/cow.img"), b"x").unwrap();
    sysfs_dm(&sys, 0, "fc-rootfs-zz", "BANGER-fc-rootfs-zz");
    sysfs_dm(&sys, 1, "vg0-root", "LVM-1");
    // zz sits on a loop of this StateDir; yy (another daemon's) does not.
    sysfs_dm(&sys, 2, "fc-rootfs-yy", "BANGER-fc-rootfs-yy");
    for (dm, lp, file) in [
        (0, 7, f.state().join("images/gone-image/rootfs.ext4")),
        (2, 8, "/elsewhere/state/vms/yy/cow.img".into()),
    ] {
        let slaves = sys.join(format!("block/dm-{dm}/slaves/loop{lp}"));
        std::fs::create_dir_all(&slaves).unwrap();
        let l = sys.join(format!("block/loop{lp}/loop"));
        std::fs::create_dir_all(&l).unwrap();
        std::fs::write(l.join("backing_file"), format!("{}\n", file.display())).unwrap();
    }
    let before = rec.calls().len();
    let r = reconcile::run(&f.d, &sys).unwrap();
    assert_eq!(r.cleaned, vec!["fc-rootfs-zz".to_string()]);
    assert_eq!(r.removed_dirs, vec![f.state().join("vms/bgtest-orphan")]);
    assert_eq!(r.broken, vec!["gone".to_string(), "run".to_string()]);
    assert_eq!(r.deactivated, vec!["run".to_string(), "stop".to_string()]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let calls = &rec.calls()[before..];
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0],
        (
            "priv.cleanup_dm_snapshot".to_string(),
            json!({"handles": {"dm_name": "fc-rootfs-zz", "dm_device": "", "base_loop": "", "cow_loop": ""}})
        )
    );
    // Nothing of yy's (its loops are another StateDir's).
    assert_eq!(row(&f.d, "gone").0, "broken");
    assert_eq!(row(&f.d, "run").0, "broken");
    assert_eq!(row(&f.d, "keep").0, "stopped");
    assert!(f.state().join("vms/keep/rootfs.ext4").exists());
    let h: DiskHandles = serde_json::from_str(&row(&f.d, "stop").2).unwrap();
    assert!(h.dm.is_none() && !h.file.is_empty());
    // Rows are never deleted; a second pass has nothing new to do.
    let r = reconcile::run(&f.d, &sys).unwrap();
    assert!(r.broken.is_empty() && r.removed_dirs.is_empty() && r.deactivated.is_empty());
    let n: i64 =
        f.d.store
            .read(|c| c.query_row("SELECT count(*) FROM vms", [], |r| r.get(0)))
            .unwrap();
    assert_eq!(n, 4);
}
