//! bangerd, banger's owner daemon: the state store, the privileged-ops
//! seam, the HTTP API and (in later modules) images, VMs, network and DNS.

pub mod api;
pub mod builds;
pub mod catalog;
pub mod daemon;
pub mod disks;
pub mod dns;
pub mod doctor;
pub mod images;
pub mod jobs;
pub mod listener;
pub mod privops;
pub mod store;
pub mod vmdisk;

/// Render an error and its `source()` chain on one line, each cause once.
pub fn render_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        msg.push_str(": ");
        msg.push_str(&e.to_string());
        cur = e.source();
    }
    msg
}
