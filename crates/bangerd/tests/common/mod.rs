//! Shared pieces of the bangerd integration tests (each test binary uses
//! some of them).
#![allow(dead_code)]

pub mod dev_daemon;
pub mod dns;
#[path = "../../src/vmdisk/guest_cache.rs"]
pub mod guest_cache;
pub mod guest_net;
pub mod procs;

use std::path::Path;

/// A 16 MiB ext4 image at `out` holding the tree `dir` (`mkfs.ext4 -d`).
pub fn mkfs(dir: &Path, out: &Path) {
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(dir)
        .arg(out)
        .arg("16M")
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4 -d {}", dir.display());
}
