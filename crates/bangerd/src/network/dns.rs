//! The daemon's DNS server: answers `<vm>.<domain>` A records from banger's
//! state and forwards every other question to the host's upstream resolvers.
//!
//! The caller hands over the bound sockets and a shutdown future, so tests
//! (and the daemon, on the bridge address) choose where it listens.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// Where VM names come from (the daemon's state).
pub trait Records: Send + Sync {
    /// The address of the VM called `name` (the first label of
    /// `<name>.<domain>`, lowercased), if there is one.
    fn lookup(&self, name: &str) -> Option<Ipv4Addr>;
}

/// TTL of banger's own answers: short, VMs come and go.
pub const LOCAL_TTL: u32 = 5;
/// Largest UDP answer relayed (EDNS-sized).
const UDP_MAX: usize = 4096;
/// Queries handled at once; more are dropped (clients retry).
const MAX_IN_FLIGHT: usize = 256;

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// banger's domain, e.g. `vm` (lowercase, no trailing dot).
    pub domain: String,
    /// Where other questions go, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// Per-upstream wait.
    pub upstream_timeout: Duration,
    /// Idle limit of a TCP client.
    pub tcp_idle: Duration,
}

impl DnsConfig {
    pub fn new(domain: &str, upstreams: Vec<SocketAddr>) -> Self {
        DnsConfig {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            upstreams,
            upstream_timeout: Duration::from_secs(2),
            tcp_idle: Duration::from_secs(10),
        }
    }
}

/// The `nameserver` lines of a resolv.conf text, port 53, minus any of
/// `exclude` (the server's own addresses, so it never forwards to itself).
pub fn parse_resolv_conf(text: &str, exclude: &[SocketAddr]) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|a| !is_self(a, exclude))
        .collect()
}

/// Whether `upstream` is one of the server's own sockets (an unspecified
/// bind address matches every IP of its family on that port).
fn is_self(upstream: &SocketAddr, own: &[SocketAddr]) -> bool {
    own.iter().any(|o| {
        o.port() == upstream.port()
            && (o.ip() == upstream.ip()
                || (o.ip().is_unspecified() && o.is_ipv4() == upstream.is_ipv4()))
    })
}

/// Upstreams from a resolv.conf file (e.g. `/etc/resolv.conf`).
pub fn upstreams_from(path: &Path, exclude: &[SocketAddr]) -> io::Result<Vec<SocketAddr>> {
    Ok(parse_resolv_conf(&std::fs::read_to_string(path)?, exclude))
}

/// What to do with one query.
#[derive(Debug)]
pub enum Decision {
    /// Answer with this message (banger's domain, or an error).
    Answer(Message),
    /// Ask the upstreams.
    Forward,
}

fn reply(req: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = code;
    m.queries = req.queries.clone();
    m
}

/// Decide about a parsed query: banger's domain is answered here,
/// anything else is forwarded.
pub fn decide(req: &Message, domain: &str, records: &dyn Records) -> Decision {
    if req.metadata.message_type != MessageType::Query || req.metadata.op_code != OpCode::Query {
        return Decision::Answer(reply(req, ResponseCode::NotImp));
    }
    let [q] = &req.queries[..] else {
        return Decision::Answer(reply(req, ResponseCode::FormErr));
    };
    let name = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let suffix = format!(".{domain}");
    let local = if name == domain {
        Some(None)
    } else {
        name.strip_suffix(&suffix).map(Some)
    };
    let Some(label) = local else {
        return Decision::Forward;
    };
    let mut m = reply(req, ResponseCode::NoError);
    m.metadata.authoritative = true;
    match label {
        // The domain itself exists but holds no records.
        None => {}
        Some(vm) => match (!vm.contains('.')).then(|| records.lookup(vm)).flatten() {
            None => m.metadata.response_code = ResponseCode::NXDomain,
            Some(ip) => {
                if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
                    m.answers.push(Record::from_rdata(
                        q.name().clone(),
                        LOCAL_TTL,
                        RData::A(A(ip)),
                    ));
                }
            }
        },
    }
    Decision::Answer(m)
}

/// Handle raw query bytes; `None` means drop (not even a header to answer).
async fn handle(
    bytes: &[u8],
    cfg: &DnsConfig,
    records: &dyn Records,
    tcp: bool,
) -> Option<Vec<u8>> {
    let req = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) if bytes.len() >= 12 => {
            let id = u16::from_be_bytes([bytes[0], bytes[1]]);
            let m = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            return m.to_vec().ok();
        }
        Err(_) => return None,
    };
    match decide(&req, &cfg.domain, records) {
        Decision::Answer(m) => m.to_vec().ok(),
        Decision::Forward => {
            for up in &cfg.upstreams {
                let r = if tcp {
                    forward_tcp(bytes, *up, cfg.upstream_timeout).await
                } else {
                    forward_udp(bytes, *up, cfg.upstream_timeout).await
                };
                match r {
                    Ok(resp) if resp.len() >= 2 && resp[..2] == bytes[..2] => return Some(resp),
                    Ok(_) => tracing::debug!(%up, "upstream answered with a mismatched id"),
                    Err(e) => tracing::debug!(%up, error = %e, "upstream failed"),
                }
            }
            reply(&req, ResponseCode::ServFail).to_vec().ok()
        }
    }
}

async fn forward_udp(q: &[u8], up: SocketAddr, wait: Duration) -> io::Result<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("literal");
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(q).await?;
    let mut buf = vec![0u8; UDP_MAX];
    let n = tokio::time::timeout(wait, sock.recv(&mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream timed out"))??;
    buf.truncate(n);
    Ok(buf)
}

async fn read_framed(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = s.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_framed(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message too long"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await
}

async fn forward_tcp(q: &[u8], up: SocketAddr, wait: Duration) -> io::Result<Vec<u8>> {
    tokio::time::timeout(wait, async {
        let mut s = TcpStream::connect(up).await?;
        write_framed(&mut s, q).await?;
        read_framed(&mut s).await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream timed out"))?
}

async fn tcp_client(mut s: TcpStream, cfg: Arc<DnsConfig>, records: Arc<dyn Records>) {
    loop {
        let q = match tokio::time::timeout(cfg.tcp_idle, read_framed(&mut s)).await {
            Ok(Ok(q)) => q,
            _ => return,
        };
        let Some(resp) = handle(&q, &cfg, records.as_ref(), true).await else {
            return;
        };
        if write_framed(&mut s, &resp).await.is_err() {
            return;
        }
    }
}

/// Serve DNS on `udp` (and `tcp` when given) until `shutdown` resolves.
pub async fn serve(
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    cfg: DnsConfig,
    records: Arc<dyn Records>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let udp = Arc::new(udp);
    let cfg = Arc::new(cfg);
    let sem = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    let mut buf = vec![0u8; UDP_MAX];
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = udp.recv_from(&mut buf) => {
                let (n, peer) = match r {
                    Ok(x) => x,
                    Err(e) => { tracing::debug!(error = %e, "dns recv failed"); continue; }
                };
                let Ok(permit) = sem.clone().try_acquire_owned() else { continue };
                let q = buf[..n].to_vec();
                let (udp, cfg, records) = (udp.clone(), cfg.clone(), records.clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    if let Some(resp) = handle(&q, &cfg, records.as_ref(), false).await {
                        let resp = if resp.len() > udp_limit(&q) { truncate(&resp).unwrap_or(resp) } else { resp };
                        let _ = udp.send_to(&resp, peer).await;
                    }
                });
            }
            r = async { match &tcp { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                let Ok((s, _)) = r else { continue };
                let Ok(permit) = sem.clone().try_acquire_owned() else { continue };
                let (cfg, records) = (cfg.clone(), records.clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    tcp_client(s, cfg, records).await;
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.abort_all();
    Ok(())
}

/// The largest UDP answer the client accepts: its EDNS payload size, or 512.
fn udp_limit(query: &[u8]) -> usize {
    Message::from_vec(query)
        .ok()
        .and_then(|m| m.edns.map(|e| usize::from(e.max_payload())))
        .map_or(512, |n| n.clamp(512, UDP_MAX))
}

/// An answer too big for the client over UDP: header and question with
/// TC set, so it retries over TCP.
fn truncate(resp: &[u8]) -> Option<Vec<u8>> {
    Message::from_vec(resp).ok()?.truncate().to_vec().ok()
}

#[cfg(test)]
mod tests;
