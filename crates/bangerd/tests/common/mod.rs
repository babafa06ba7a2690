//! Shared pieces of the bangerd integration tests.

pub mod dns;
