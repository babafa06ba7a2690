//! The daemon's network: start-up (bridge, DNS on the bridge address,
//! resolver routing), VM names from the state DB, and persisted guest IP
//! allocation.
//!
//! Who binds what: the daemon is not root, so it serves DNS (UDP and TCP)
//! on an unprivileged port of the bridge address (chosen by the kernel at
//! each start), and asks the helper (`priv.ensure_dns_redirect`) to DNAT
//! `<bridge address>:53` to it in banger's nft table. Guests and the host
//! (systemd-resolved) both use `<bridge address>:53`.

pub mod dns;

use crate::privops::{PrivError, PrivOps};
use crate::store::{Store, StoreError};
use banger_core::net::{self as core_net, BadSubnet, HostRoute, RouteCollision, Subnet};
use banger_proto::api::Check;
use banger_proto::helper::{self as m, method, Method};
use banger_proto::install::InstallConfig;
use banger_sys::net::{NetOps, RealNet};
use banger_sys::resolved;
use dns::{DnsConfig, Records};
use rusqlite::OptionalExtension;
use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Set to any value to skip network set-up (tests that run a root daemon
/// on a shared host and must not create `banger0`).
pub const NO_NETWORK_ENV: &str = "BANGER_NO_NETWORK";

/// Why a network step failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("install.toml")]
    BadSubnet(#[from] BadSubnet),
    #[error("install.toml: domain {0:?} is not DNS labels of [a-z0-9-]")]
    BadDomain(String),
    #[error(transparent)]
    Collision(#[from] RouteCollision),
    #[error("reading the host's routes")]
    ReadRoutes(#[source] banger_sys::net::NetError),
    #[error("binding DNS on {0}")]
    BindDns(SocketAddr, #[source] io::Error),
    #[error("no free address left in {0}")]
    SubnetFull(Subnet),
    #[error("state database")]
    Store(#[from] StoreError),
    #[error("registering the DNS sockets with the runtime")]
    DnsSockets(#[source] io::Error),
}

crate::store::sql_errors_into_store!(NetworkError);

/// banger's network as configured: bridge, subnet, domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    pub bridge: String,
    pub subnet: Subnet,
    pub domain: String,
}

impl NetPlan {
    pub fn from_config(cfg: &InstallConfig) -> Result<Self, NetworkError> {
        let domain = cfg.domain.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !domain.split('.').all(label_ok) {
            return Err(NetworkError::BadDomain(cfg.domain.clone()));
        }
        Ok(NetPlan {
            bridge: cfg.bridge.clone(),
            subnet: cfg.subnet.parse()?,
            domain,
        })
    }

    /// The bridge's address: where guests and the host send DNS.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }
}

/// The host's IPv4 routes (rtnetlink dump: needs no privilege).
pub fn host_routes(net: &dyn NetOps) -> Result<Vec<HostRoute>, NetworkError> {
    Ok(net
        .routes()
        .map_err(NetworkError::ReadRoutes)?
        .into_iter()
        .map(|r| HostRoute {
            dst: r.dst,
            prefix: r.prefix,
            dev: r.dev,
        })
        .collect())
}

/// Whether `~<domain>` is routed to banger's DNS on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolver {
    /// systemd-resolved routes the domain to the bridge address.
    Routed,
    /// systemd-resolved is not running.
    Absent,
    /// Routing was asked for and failed.
    Failed(String),
    /// Not tried: DNS is not being served.
    NotTried,
}

/// What start-up achieved, for the log and `banger doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetStatus {
    pub plan: Option<NetPlan>,
    /// The daemon's DNS port on the bridge address, when serving.
    pub dns_port: Option<u16>,
    pub resolver: Resolver,
    /// Steps that failed (one line each); empty when all went well.
    pub problems: Vec<String>,
}

impl NetStatus {
    fn disabled(why: &str) -> Self {
        NetStatus {
            plan: None,
            dns_port: None,
            resolver: Resolver::NotTried,
            problems: vec![why.to_string()],
        }
    }

    /// The `dns routing` check of `banger doctor`.
    pub fn check(&self) -> Check {
        let mut parts = Vec::new();
        let mut ok = self.problems.is_empty();
        if !self.problems.is_empty() {
            parts.push(format!(
                "network set-up incomplete: {}",
                self.problems.join("; ")
            ));
        }
        if let Some(p) = &self.plan {
            let gw = p.gateway();
            match &self.resolver {
                Resolver::Routed => parts.push(format!(
                    "systemd-resolved routes ~{} to banger's DNS at {gw}:53 on {}",
                    p.domain, p.bridge
                )),
                Resolver::Absent => {
                    ok = false;
                    parts.push(resolved::alternative_hint(&gw.to_string(), &p.domain));
                }
                Resolver::Failed(e) => {
                    ok = false;
                    parts.push(format!(
                        "routing ~{} through systemd-resolved failed: {e}",
                        p.domain
                    ));
                }
                Resolver::NotTried => {
                    ok = false;
                    parts.push(format!("*.{} is not served (no DNS on {gw})", p.domain));
                }
            }
        }
        Check {
            name: "dns routing".into(),
            status: if ok { "ok" } else { "warn" }.into(),
            detail: parts.join("; "),
        }
    }
}

static STATUS: OnceLock<NetStatus> = OnceLock::new();

/// The status [`start`] published (none before, or in tests that do not start).
pub fn status() -> Option<&'static NetStatus> {
    STATUS.get()
}

/// The daemon's DNS sockets on the bridge address: UDP and TCP on one port.
#[derive(Debug)]
pub struct DnsSockets {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    pub port: u16,
}

/// Bind UDP and TCP on one kernel-chosen port of `addr`.
pub fn bind_dns(addr: Ipv4Addr) -> Result<DnsSockets, NetworkError> {
    let mut last = None;
    for _ in 0..8 {
        let want = SocketAddr::V4(SocketAddrV4::new(addr, 0));
        let udp = UdpSocket::bind(want).map_err(|e| NetworkError::BindDns(want, e))?;
        let at = udp
            .local_addr()
            .map_err(|e| NetworkError::BindDns(want, e))?;
        match TcpListener::bind(at) {
            Ok(tcp) => {
                return Ok(DnsSockets {
                    udp,
                    tcp,
                    port: at.port(),
                })
            }
            // The UDP port's TCP twin is taken: try another port.
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some((at, e)),
            Err(e) => return Err(NetworkError::BindDns(at, e)),
        }
    }
    let (at, e) = last.expect("the loop ran");
    Err(NetworkError::BindDns(at, e))
}

/// Start-up's result: what happened, and the DNS sockets when bound.
#[derive(Debug)]
pub struct SetUp {
    pub status: NetStatus,
    pub dns: Option<DnsSockets>,
}

fn priv_call<M: Method>(privops: &dyn PrivOps, params: &M::Params) -> Result<(), PrivError> {
    privops.call::<M>(params).map(drop)
}

/// The start-up steps, in the calling thread's network namespace:
/// refuse a subnet colliding with `routes` (the only fatal failure), then
/// `priv.ensure_bridge`, bind DNS on the bridge address,
/// `priv.ensure_dns_redirect`, and `priv.sync_resolver_routing` when
/// systemd-resolved runs (its socket under `run_root`). A failed step is
/// recorded in the status and the rest still tried, so a daemon without
/// privileges still serves its API.
pub fn set_up(
    plan: &NetPlan,
    privops: &dyn PrivOps,
    routes: &[HostRoute],
    run_root: &Path,
) -> Result<SetUp, NetworkError> {
    core_net::check_collision(&plan.subnet, routes, &plan.bridge)?;
    let mut problems = Vec::new();
    let mut note = |e: &(dyn std::error::Error + 'static)| {
        let line = crate::render_chain(e);
        tracing::error!(error = %line, "network set-up");
        problems.push(line);
    };
    let bridge = m::EnsureBridge {
        name: plan.bridge.clone(),
        address: plan.subnet.gateway_cidr(),
    };
    if let Err(e) = priv_call::<method::EnsureBridge>(privops, &bridge) {
        note(&e);
    }
    let dns = match bind_dns(plan.gateway()) {
        Ok(s) => Some(s),
        Err(e) => {
            note(&e);
            None
        }
    };
    let mut resolver = Resolver::NotTried;
    if let Some(s) = &dns {
        let redirect = m::EnsureDnsRedirect {
            bridge: plan.bridge.clone(),
            port: s.port,
        };
        if let Err(e) = priv_call::<method::EnsureDnsRedirect>(privops, &redirect) {
            note(&e);
        }
        resolver = if resolved::resolved_running(run_root) {
            let sync = m::SyncResolverRouting {
                bridge: plan.bridge.clone(),
                resolver: plan.gateway().to_string(),
                domain: plan.domain.clone(),
            };
            match priv_call::<method::SyncResolverRouting>(privops, &sync) {
                Ok(()) => Resolver::Routed,
                Err(e) => Resolver::Failed(crate::render_chain(&e)),
            }
        } else {
            Resolver::Absent
        };
    }
    Ok(SetUp {
        status: NetStatus {
            plan: Some(plan.clone()),
            dns_port: dns.as_ref().map(|s| s.port),
            resolver,
            problems,
        },
        dns,
    })
}

/// VM names from the state DB: `<vm>.<domain>` → the VM's allocated IP.
pub struct StoreRecords {
    store: Store,
}

impl StoreRecords {
    /// Its own connection on the daemon's database (WAL: reads never wait
    /// for the API's writes).
    pub fn open(db: &Path) -> Result<Self, NetworkError> {
        Ok(StoreRecords {
            store: Store::open(db)?,
        })
    }

    pub fn new(store: Store) -> Self {
        StoreRecords { store }
    }
}

/// The address allocated to the VM called `name` (case-insensitive).
pub fn vm_ip(store: &Store, name: &str) -> Result<Option<Ipv4Addr>, NetworkError> {
    Ok(store.read(|c| crate::store::vms::ip_named(c, name))?)
}

impl Records for StoreRecords {
    fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        match vm_ip(&self.store, name) {
            Ok(ip) => ip,
            Err(e) => {
                tracing::warn!(error = %crate::render_chain(&e), name, "dns lookup in the state DB failed");
                None
            }
        }
    }
}

/// Give the VM `vm_id` an address of `subnet`: its existing one, else the
/// lowest free guest address, recorded in one `BEGIN IMMEDIATE`
/// transaction (so concurrent creates, in this process or another, never
/// share an address). The VM row must exist; deleting it frees the
/// address (`ON DELETE CASCADE`).
pub fn allocate_ip(store: &Store, subnet: &Subnet, vm_id: &str) -> Result<Ipv4Addr, NetworkError> {
    store.write(|tx| allocate_ip_in(tx, subnet, vm_id))
}

/// [`allocate_ip`] inside the caller's transaction (a create records its
/// row and its address in one commit).
pub fn allocate_ip_in(
    tx: &rusqlite::Transaction<'_>,
    subnet: &Subnet,
    vm_id: &str,
) -> Result<Ipv4Addr, NetworkError> {
    {
        let mine: Option<String> = tx
            .query_row(
                "SELECT ip FROM ip_allocations WHERE vm_id = ?1",
                [vm_id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(ip) = mine.and_then(|s| s.parse::<Ipv4Addr>().ok()) {
            if subnet.contains(ip) {
                return Ok(ip);
            }
            // Allocated in another subnet (the config changed): re-allocate.
            tx.execute("DELETE FROM ip_allocations WHERE vm_id = ?1", [vm_id])?;
        }
        let mut st = tx.prepare("SELECT ip FROM ip_allocations")?;
        let taken: BTreeSet<Ipv4Addr> = st
            .query_map([], |r| r.get::<_, String>(0))?
            .filter_map(|r| r.ok()?.parse().ok())
            .collect();
        let ip = core_net::allocate(subnet, &taken).ok_or(NetworkError::SubnetFull(*subnet))?;
        tx.execute(
            "INSERT INTO ip_allocations (ip, vm_id) VALUES (?1, ?2)",
            [ip.to_string(), vm_id.to_string()],
        )?;
        Ok(ip)
    }
}

/// Free the VM's address (also done by deleting the VM). Whether it had one.
pub fn release_ip(store: &Store, vm_id: &str) -> Result<bool, NetworkError> {
    store.write(|tx| Ok(tx.execute("DELETE FROM ip_allocations WHERE vm_id = ?1", [vm_id])? > 0))
}

/// A VM's link identity, derived stably from its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmLink {
    /// `banger-` + 8 hex chars.
    pub tap: String,
    /// Locally administered unicast MAC.
    pub mac: String,
}

pub fn vm_link(vm_id: &str) -> VmLink {
    VmLink {
        tap: core_net::tap_for(vm_id),
        mac: core_net::mac_for(vm_id),
    }
}

/// The DNS server's settings: banger's domain, and the host's upstreams
/// from `resolv_conf` minus the server's own addresses.
pub fn dns_config(plan: &NetPlan, port: u16, resolv_conf: &Path) -> DnsConfig {
    let gw = std::net::IpAddr::V4(plan.gateway());
    let own = [SocketAddr::new(gw, port), SocketAddr::new(gw, 53)];
    let upstreams = dns::upstreams_from(resolv_conf, &own).unwrap_or_else(|e| {
        tracing::warn!(path = %resolv_conf.display(), error = %e, "no upstream resolvers: only VM names will resolve");
        Vec::new()
    });
    DnsConfig::new(&plan.domain, upstreams)
}

/// The DNS server, a task on the daemon's runtime; stopped on drop.
pub struct DnsServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl DnsServer {
    /// Serve `sockets` with `records` as a task on `rt` (the daemon's
    /// runtime; no runtime of its own).
    pub fn spawn(
        rt: &tokio::runtime::Handle,
        sockets: DnsSockets,
        cfg: DnsConfig,
        records: Arc<dyn Records>,
    ) -> Result<Self, NetworkError> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (udp, tcp) = {
            let _in_rt = rt.enter();
            let socks = || -> io::Result<_> {
                sockets.udp.set_nonblocking(true)?;
                sockets.tcp.set_nonblocking(true)?;
                Ok((
                    tokio::net::UdpSocket::from_std(sockets.udp)?,
                    tokio::net::TcpListener::from_std(sockets.tcp)?,
                ))
            };
            socks().map_err(NetworkError::DnsSockets)?
        };
        rt.spawn(async move {
            let r = dns::serve(udp, Some(tcp), cfg, records, async {
                let _ = stopped.await;
            })
            .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "dns server stopped");
            }
        });
        Ok(DnsServer { stop: Some(stop) })
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Daemon start-up (main.rs, after the store opens): set the network up
/// in the host's namespace, serve DNS from the state DB at `db`, publish
/// the status for `banger doctor`. Only a bad config or a subnet colliding
/// with a host route is an error; anything else is logged and reported.
pub fn start(
    rt: &tokio::runtime::Handle,
    cfg: &InstallConfig,
    privops: &dyn PrivOps,
    db: &Path,
) -> Result<Option<DnsServer>, NetworkError> {
    if std::env::var_os(NO_NETWORK_ENV).is_some() {
        tracing::warn!("network set-up skipped ({NO_NETWORK_ENV} is set)");
        let _ = STATUS.set(NetStatus::disabled(&format!(
            "network set-up skipped ({NO_NETWORK_ENV} is set)"
        )));
        return Ok(None);
    }
    let plan = NetPlan::from_config(cfg)?;
    let routes = host_routes(&RealNet::default()).unwrap_or_else(|e| {
        // The helper checks collisions again before creating the bridge.
        tracing::warn!(error = %crate::render_chain(&e), "subnet collision check skipped");
        Vec::new()
    });
    let SetUp { mut status, dns } = set_up(&plan, privops, &routes, Path::new("/run"))?;
    let server = match dns {
        Some(sockets) => {
            let port = sockets.port;
            let records = Arc::new(StoreRecords::open(db)?);
            let server = DnsServer::spawn(
                rt,
                sockets,
                dns_config(&plan, port, Path::new("/etc/resolv.conf")),
                records,
            );
            match server {
                Ok(s) => Some(s),
                Err(e) => {
                    status.problems.push(crate::render_chain(&e));
                    status.dns_port = None;
                    None
                }
            }
        }
        None => None,
    };
    tracing::info!(
        bridge = %plan.bridge,
        subnet = %plan.subnet,
        dns = %format!("{}:53 -> :{}", plan.gateway(), status.dns_port.map_or("-".into(), |p| p.to_string())),
        resolver = ?status.resolver,
        problems = status.problems.len(),
        "network"
    );
    let _ = STATUS.set(status);
    Ok(server)
}

#[cfg(test)]
mod tests;
