//! A Firecracker v1.16.1 API test double, held to the vendored swagger and transcript.
//!
//! The daemon drives Firecracker over HTTP/1.1 on a Unix socket; where
//! Firecracker cannot run (CI, nested hosts), tests and the smoke run this
//! double instead. [`serve`] answers on a caller-given [`UnixListener`] until
//! the caller's shutdown future resolves, or until the simulated guest powers
//! off after `SendCtrlAltDel`. Every request is recorded ([`Recorder`]) so
//! tests assert on the exact calls a client made.
//!
//! # Modelled exactly
//! * Routing, as Firecracker's `ParsedRequest`: a (method, path) not in
//!   `contract/firecracker.yaml` gets 400 `Invalid request method and/or
//!   path: <METHOD> <first path token>.`; a bodiless PUT/PATCH gets `Empty
//!   PUT request.` / `Empty PATCH request.` (PATCH under `/balloon` excepted),
//!   a GET with a body `GET request cannot have a body.`; a missing or
//!   non-`[A-Za-z0-9_]` path id `The ID cannot be empty.` / `API Resource IDs
//!   can only contain alphanumeric characters and underscores.`.
//! * Bodies of every operation (including the ones banger does not drive:
//!   balloon, snapshot, mmds, metrics, entropy, serial, hotplug, pmem,
//!   cpu-config) are checked against the yaml definitions by serde_json
//!   itself, driven by a schema-walking `DeserializeSeed` that asks for what
//!   Firecracker's `deny_unknown_fields` structs ask for, so the texts and
//!   `at line L column C` positions are serde_json's (see [`validate`]): malformed JSON, unknown fields, missing required
//!   fields, duplicate fields, wrong types, unknown enum variants, integer
//!   ranges of the Rust type (`u8` for `vcpu_count`, ...), invalid MACs,
//!   enums as `"Variant"` or serde's `{"Variant": null}`.
//!   `tests/differential.rs` holds this to real serde_json on thousands of
//!   mutated bodies.
//! * The transcript's semantics: `Not started` → `Running` → `Paused` /
//!   `Resumed`; pre-boot PUTs refused after start; drives/NICs added after
//!   start → `PCI is not enabled`; path/body id mismatch; one root drive;
//!   kernel, initrd and drive files must open on the host; the tap name must
//!   fit IFNAMSIZ; vCPU count 1..=32 (even with SMT); memory size; `GET /`,
//!   `GET /version`, `GET /machine-config` bodies; vsock binds its `uds_path`;
//!   logger/metrics targets must exist.
//!
//! # Modelled approximately (texts not seen in the transcript)
//! * Integer widths, Rust struct names and field order come from a hint
//!   table for the definitions banger drives ([`schema`]); other
//!   definitions keep yaml order and `u64`/`i32`/`i64` integers.
//! * Yaml `minimum`/`maximum` are not schema checks (Firecracker accepts
//!   `guest_cid: 1`); only the VMM-level rules above apply.
//! * Paths follow the yaml strictly: Firecracker also ignores extra path
//!   tokens and a trailing `/` (`PUT /machine-config/x`), the double refuses
//!   them; a wrong sub-path under a known resource (`GET /balloon/x`,
//!   `PUT /snapshot/x`) gets the generic message above, not Firecracker's own.
//! * A struct body given as a JSON array is refused (serde would also read a
//!   struct from an array of its fields; the yaml only allows objects).
//! * A tap that fits IFNAMSIZ but is absent from `<sys>/class/net` gets an
//!   `ENODEV` text; name/MAC conflicts, vsock bind failures, initrd and
//!   logger/metrics open failures, and PATCH of an unknown device carry
//!   best-effort texts. (`Start microvm error: Cannot start microvm without
//!   kernel configuration.` and the pre-/post-boot refusals are Firecracker's.)
//! * Balloon, entropy, serial, hotplug, pmem, cpu-config and mmds-config PUTs
//!   are stored (204 before start, refused after); their PATCHes and
//!   `GET /balloon/statistics` are post-boot only and succeed when the device
//!   was configured; their GETs return the stored body or 400. MMDS
//!   PUT/PATCH/GET keep a JSON object (`{}` when empty). `FlushMetrics` after
//!   start is 204. Snapshot create is post-boot only and load pre-boot only,
//!   as in Firecracker; otherwise they answer 400 `fc-double: snapshots are
//!   not modelled`.
//! * No guest runs: `SendCtrlAltDel` on a running instance makes [`serve`]
//!   return [`Outcome::GuestPoweredOff`] after [`DoubleConfig::guest_shutdown`].

mod record;
pub mod schema;
pub mod server;
pub mod state;
mod tap;
pub mod validate;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;

pub use record::{RecordedRequest, Recorder};
use schema::Contract;
use server::Shared;
use state::Vmm;

/// The default instance id, as Firecracker's `--id`.
pub const DEFAULT_ID: &str = "anonymous-instance";

/// How a double behaves.
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    /// Reported by `GET /` (Firecracker's `--id`).
    pub instance_id: String,
    /// Stands for `/sys`: a tap `t` exists when `<sys_root>/class/net/t` does.
    pub sys_root: PathBuf,
    /// Where requests are recorded.
    pub recorder: Recorder,
    /// After `SendCtrlAltDel` the guest powers off this much later and
    /// [`serve`] returns; `None` keeps serving.
    pub guest_shutdown: Option<Duration>,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        DoubleConfig {
            instance_id: DEFAULT_ID.to_string(),
            sys_root: PathBuf::from("/sys"),
            recorder: Recorder::default(),
            guest_shutdown: Some(Duration::from_millis(50)),
        }
    }
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The caller's shutdown future resolved.
    Shutdown,
    /// The guest powered off after `SendCtrlAltDel`.
    GuestPoweredOff,
}

/// The double could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum DoubleError {
    #[error("loading the vendored firecracker.yaml")]
    Contract(#[source] schema::ContractError),
    #[error("serving the Firecracker API")]
    Serve(#[source] std::io::Error),
}

/// Serve the Firecracker API on `listener` until `shutdown` resolves or the
/// guest powers off.
pub async fn serve(
    listener: UnixListener,
    cfg: DoubleConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Outcome, DoubleError> {
    let contract = Contract::vendored().map_err(DoubleError::Contract)?;
    let (poweroff, mut powered) = watch::channel(false);
    let vmm = Vmm::new(&cfg.instance_id, &contract.version, &cfg.sys_root);
    let shared = Arc::new(Shared {
        contract,
        vmm: Mutex::new(vmm),
        recorder: cfg.recorder.clone(),
        poweroff,
    });
    let app = axum::Router::new()
        .fallback(server::handle)
        .with_state(shared);
    let outcome = Arc::new(Mutex::new(Outcome::Shutdown));
    let seen = outcome.clone();
    let delay = cfg.guest_shutdown;
    let signal = async move {
        let guest = async {
            match delay {
                Some(d) => {
                    let _ = powered.wait_for(|v| *v).await;
                    tokio::time::sleep(d).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = guest => *seen.lock().unwrap_or_else(|p| p.into_inner()) = Outcome::GuestPoweredOff,
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await
        .map_err(DoubleError::Serve)?;
    let out = *outcome.lock().unwrap_or_else(|p| p.into_inner());
    Ok(out)
}
