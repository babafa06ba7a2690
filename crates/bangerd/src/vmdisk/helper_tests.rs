//! The dm path through the helper's real dispatch and gates (`DirectOps`)
//! with recorded host operations: the daemon's requests pass the gates,
//! the COW file is made sparse under the VM's directory, the base loop is
//! read-only, and cleanup detaches exactly what was attached.

use super::tests::{add_vm, fixture};
use super::*;
use crate::privops::DirectOps;
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_sys::dm::{DmRequest, RecordingDm};
use banger_sys::loopdev::{LoopRequest, RecordingLoops};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

#[test]
fn dm_snapshot_through_the_real_gates_with_recorded_dm_and_loops() {
    let f0 = fixture(Arc::new(crate::privops::RecordingPriv::new()), None);
    let state = f0.state();
    let super::tests::Fixture { tmp, d, image } = f0;
    let dm = Arc::new(RecordingDm::new());
    let loops = Arc::new(RecordingLoops::new());
    let mut cfg = d.cfg.clone();
    cfg.state_dir = state.clone();
    let d = Daemon {
        privops: Arc::new(DirectOps::new(Helper {
            cfg,
            host: Host {
                dm: dm.clone(),
                loops: loops.clone(),
                ..Host::recording()
            },
        })),
        ..d
    };
    add_vm(&d, "gated", "created");
    let info = create_with(&d, "gated", &image, Driver::DmSnapshot).unwrap();
    assert_eq!(info.device, PathBuf::from("/dev/mapper/fc-rootfs-gated"));
    let real = state.canonicalize().unwrap();
    let cow = real.join("vms/gated/cow.img");
    let meta = std::fs::metadata(&cow).unwrap();
    assert_eq!(meta.len(), cow_size_for(1 << 20));
    assert!(meta.blocks() * 512 < 64 << 10, "COW file is sparse");
    assert_eq!(
        loops.requests(),
        vec![
            LoopRequest::Attach {
                backing: real.join("images/img1/rootfs.ext4"),
                read_only: true
            },
            LoopRequest::Attach {
                backing: cow.clone(),
                read_only: false
            },
        ]
    );
    let h = info.handles.dm.clone().unwrap();
    assert_eq!(
        (h.base_loop.as_str(), h.cow_loop.as_str()),
        ("/dev/loop100", "/dev/loop101")
    );
    assert!(matches!(
        &dm.requests()[0],
        DmRequest::Create { name, uuid, table }
            if name == "fc-rootfs-gated" && uuid == "BANGER-fc-rootfs-gated"
                && table == "0 2048 snapshot /dev/loop100 /dev/loop101 P 8"
    ));
    deactivate(&d, "gated").unwrap();
    assert!(loops.attached().is_empty(), "both loops detached");
    assert!(dm.devices().is_empty());
    assert!(cow.exists(), "the COW survives a stop");
    activate(&d, "gated").unwrap();
    assert_eq!(loops.attached().len(), 2);
    destroy(&d, "gated").unwrap();
    assert!(loops.attached().is_empty());
    assert!(dm.devices().is_empty());
    assert!(!state.join("vms/gated").exists());
    drop(tmp);
}
