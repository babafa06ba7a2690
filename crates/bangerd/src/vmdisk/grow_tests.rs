//! `vm create --disk-size` on each driver, against the helper's recording
//! double: a grown disk is a copy (a dm snapshot cannot outgrow its image),
//! really grown; a failed grow leaves no disk behind.

use super::tests::{add_vm, fixture, row};
use super::*;
use crate::privops::RecordingPriv;
use banger_sys::runner::{Cmd, CmdOutput, RecordingRunner};
use std::sync::Arc;

/// The bytes of a fresh 8 MiB ext4 image.
fn ext4_bytes() -> Vec<u8> {
    let tmp = banger_testkit::tmp();
    let p = tmp.path().join("bgtest-base.ext4");
    std::fs::File::create(&p).unwrap().set_len(8 << 20).unwrap();
    HostRunner
        .run(&Cmd::new("mkfs.ext4").args(["-q", "-F"]).arg(&p))
        .unwrap();
    std::fs::read(&p).unwrap()
}

#[test]
fn a_grown_disk_on_the_dm_driver_is_a_grown_copy() {
    let rec = Arc::new(RecordingPriv::new());
    let base = ext4_bytes();
    let f = fixture(rec.clone(), Some(&base));
    add_vm(&f.d, "vm1", "created");
    let tools = RecordingRunner::forwarding_to_host();
    let info = create_sized(
        &f.d,
        "vm1",
        &f.image,
        Driver::DmSnapshot,
        Some(24 << 20),
        &tools,
    )
    .unwrap();
    // No snapshot asked of the helper; the copy recorded as the VM's driver.
    assert!(rec.calls().is_empty(), "{:?}", rec.calls());
    assert_eq!(info.driver, Driver::Copy);
    let disk = f.state().join("vms/vm1").join(COPY_FILE);
    assert_eq!(info.device, disk);
    assert_eq!(row(&f.d, "vm1").1, "copy");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 24 << 20);
    let calls = tools.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1], ["resize2fs", &disk.display().to_string()]);
    // The base is untouched.
    assert_eq!(std::fs::read(f.image.rootfs()).unwrap(), base);
    // It boots from the copy after a stop too (no dm re-activation).
    let again = activate(&f.d, "vm1").unwrap();
    assert_eq!(again.device, disk);
    assert!(rec.calls().is_empty());
}

#[test]
fn without_a_size_the_dm_driver_still_makes_a_snapshot() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fixture(rec.clone(), None);
    add_vm(&f.d, "vm1", "created");
    rec.answer(m::CREATE_DM_SNAPSHOT, Ok(super::tests::dm_handles("vm1")));
    let tools = RecordingRunner::new();
    let info = create_sized(&f.d, "vm1", &f.image, Driver::DmSnapshot, None, &tools).unwrap();
    assert_eq!(info.driver, Driver::DmSnapshot);
    assert_eq!(rec.calls()[0].0, m::CREATE_DM_SNAPSHOT);
    assert!(tools.calls().is_empty());
}

#[test]
fn a_failed_grow_leaves_no_disk_and_no_row_handles() {
    let rec = Arc::new(RecordingPriv::new());
    let f = fixture(rec.clone(), None);
    add_vm(&f.d, "vm1", "created");
    let tools = RecordingRunner::new();
    tools.answer(
        "resize2fs",
        CmdOutput {
            status: 1,
            stdout: vec![],
            stderr: b"resize2fs: No space left on device".to_vec(),
        },
    );
    let e = create_sized(&f.d, "vm1", &f.image, Driver::Copy, Some(4 << 20), &tools).unwrap_err();
    let msg = crate::render_chain(&e);
    assert!(msg.contains("grow the VM disk to 4194304 bytes"), "{msg}");
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(!f.state().join("vms/vm1").exists());
    let (_, drv, handles) = row(&f.d, "vm1");
    assert_eq!((drv.as_str(), handles.as_str()), ("", "{}"));
    assert!(rec.calls().is_empty());
}

#[test]
fn a_create_asking_less_than_the_image_is_refused_before_anything_is_made() {
    use crate::vms::{CreateReq, VmError};
    let rec = Arc::new(RecordingPriv::new());
    let f = fixture(rec.clone(), None);
    let mut req = CreateReq::from_api(banger_proto::api::VmCreate {
        name: "web".into(),
        image: Some("base".into()),
        vcpus: None,
        memory_mib: None,
        start: Some(false),
        vmm: None,
        disk_size_bytes: Some(512 << 10),
    });
    let e = req.check(&f.d).unwrap_err();
    assert!(matches!(e, VmError::DiskSize(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "--disk-size 512K is smaller than the image (1M): a disk can only grow"
    );
    let api = crate::http::error::ApiFailure::from(e);
    assert_eq!(api.0.as_u16(), 400);
    // Over the install's cap: refused too; at or above the image: fine.
    req.disk_size = Some(f.d.cfg.max_cow_bytes + 512);
    assert!(req
        .check(&f.d)
        .unwrap_err()
        .to_string()
        .contains("per-VM cap"));
    req.disk_size = Some(1 << 20);
    assert_eq!(req.root_disk(&f.d, &f.image, None).unwrap(), None);
    req.disk_size = Some(2 << 20);
    assert_eq!(req.root_disk(&f.d, &f.image, None).unwrap(), Some(2 << 20));
    assert!(rec.calls().is_empty());
    assert!(!f.state().join("vms").exists());
}
