//! Shared pieces of the bangerd integration tests (each test binary uses
//! some of them).
#![allow(dead_code)]

pub mod dev_daemon;
pub mod dns;
#[path = "../../src/vmdisk/guest_cache.rs"]
pub mod guest_cache;
pub mod guest_net;
pub mod procs;
