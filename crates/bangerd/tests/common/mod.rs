//! Shared pieces of the bangerd integration tests (each test binary uses
//! some of them).
#![allow(dead_code)]

pub mod dev_daemon;
pub mod dns;
pub mod guest_net;
