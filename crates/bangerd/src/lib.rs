//! bangerd, banger's owner daemon.
//!
//! # Layout
//!
//! - [`daemon`]: the context every operation gets (config, paths, store,
//!   privileged ops, image host paths, the VMM registry); imports none of
//!   the modules that use it.
//! - [`http`]: the API under `/v1`: router, error→status mapping, the
//!   authorized socket and serve loop, ndjson job streams, handlers per
//!   resource (system, images, vms).
//! - [`vms`]: the VM lifecycle: lookup and transitions, create,
//!   start/stop/restart, remove, reconcile and the orphan sweep at start,
//!   exec, port forwards (`forward` values, `ports` listeners), file_sync
//!   entries, the default image.
//! - [`vmm`]: the monitors: the registry of running VMMs, adopted VMMs of a
//!   previous daemon, Firecracker (API client, launch through the helper,
//!   socket access), QEMU microvm, the boot plan.
//! - [`vmdisk`]: each VM's root disk: driver choice, create (dm snapshot or
//!   copy), activate/deactivate/destroy, customisation, orphan reconcile.
//! - [`images`]: the image catalog and builds: import, OCI layouts and
//!   layers (`oci-spec` types), image references (Docker Hub's host), the
//!   registry client and pulls (blobs concurrent, verified while streaming),
//!   Debian rootfs, host kernel and initramfs.
//! - [`network`]: the bridge, taps, NAT and addresses through privops, host
//!   route and resolver checks, and the DNS server for the VM domain.
//! - [`progress`]: progress of a long operation as events (no HTTP).
//! - [`blocking`]: blocking calls from async code, handed off at the leaf.
//! - [`store`]: the SQLite state database and its migrations; `store::vms`
//!   holds the `vms` table's row type and every statement on it.
//! - [`privops`]: the privileged-ops seam (helper, `sudo -n`, direct).
//! - [`doctor`]: the host checks `banger doctor` shows.
//! - [`sshkey`]: banger's own SSH key pair, made on first need.
//! - [`userconfig`]: the owner's settings file (default image, file_sync).

pub mod blocking;
pub mod daemon;
pub mod doctor;
pub mod http;
pub mod images;
pub mod network;
pub mod privops;
pub mod progress;
pub mod sshkey;
pub mod store;
pub mod userconfig;
pub mod vmdisk;
pub mod vmm;
pub mod vms;

pub use banger_sys::service::render_chain;
