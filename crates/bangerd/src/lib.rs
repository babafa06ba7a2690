//! placeholder
pub mod disks;
pub mod images;
