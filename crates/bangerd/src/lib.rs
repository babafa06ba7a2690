//! bangerd, banger's owner daemon: the state store, the privileged-ops
//! seam, the HTTP API and (in later modules) images, VMs, network and DNS.

pub mod api;
pub mod builds;
pub mod catalog;
pub mod daemon;
pub mod debian;
pub mod disks;
pub mod dns;
pub mod doctor;
pub mod images;
pub mod jobs;
pub mod listener;
pub mod network;
pub mod privops;
pub mod store;
pub mod vmdisk;
pub mod vmm;
pub mod vms;

pub use banger_sys::service::render_chain;
