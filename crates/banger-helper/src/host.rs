//! The host operations the helper's methods call. Real ones in production,
//! recording fakes in tests (see `banger_sys`).

use banger_sys::net::{NetOps, RealNet};
use banger_sys::nft::{Nft, TableName, TABLE};
use banger_sys::runner::{HostRunner, Runner};
use std::sync::Arc;

/// Every host-side capability a method may use.
pub struct Host {
    /// Runs host tools (argv only).
    pub runner: Arc<dyn Runner>,
    /// Bridges and taps (rtnetlink, `/dev/net/tun`).
    pub net: Arc<dyn NetOps>,
    /// banger's nftables table (`inet banger`), driven through `nft`.
    pub nft: Arc<Nft>,
}

impl Host {
    /// The real host.
    pub fn real() -> Self {
        Host {
            runner: Arc::new(HostRunner),
            net: Arc::new(RealNet::default()),
            nft: Arc::new(Nft::new(
                Arc::new(HostRunner),
                TableName::new(TABLE).expect("the production table name is valid"),
                "/proc",
            )),
        }
    }
}
