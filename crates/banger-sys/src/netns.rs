//! Network namespaces for tests and tools: run a closure on a thread that
//! lives in a fresh or a named namespace (the rest of the process stays
//! where it was), and named namespaces removed on drop.

use crate::runner::{Cmd, HostRunner, RunError, Runner};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::io;
use std::path::PathBuf;

/// Why a namespace step failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("create a network namespace")]
    Unshare(#[source] io::Error),
    #[error("enter network namespace {0}")]
    Enter(PathBuf, #[source] io::Error),
    #[error("bring loopback up")]
    Loopback(#[source] io::Error),
    #[error("add network namespace {0}")]
    Add(String, #[source] RunError),
    #[error("network namespace name must start with bgtest- (got {0:?})")]
    Name(String),
    #[error("set up link {0}")]
    Link(String, #[source] RunError),
    #[error("listen on {0}")]
    Listen(std::net::SocketAddr, #[source] io::Error),
}

fn lo_up() -> Result<(), NetnsError> {
    use netlink_packet_route::link::{LinkFlags, LinkMessage};
    let mut nl = crate::net::rtnl_open().map_err(NetnsError::Loopback)?;
    let mut msg = LinkMessage::default();
    msg.header.index = 1;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    nl.request(netlink_packet_route::RouteNetlinkMessage::SetLink(msg), 0)
        .map_err(NetnsError::Loopback)
}

/// Run `f` on a new thread inside a brand-new network namespace (with
/// loopback up). The namespace, and everything in it, disappears when the
/// thread ends and nothing else holds it.
pub fn in_new_netns<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Unshare(e.into()))?;
        lo_up()?;
        Ok(f())
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// A named namespace (`/run/netns/<name>`), made with `ip netns add` and
/// removed with `ip netns del` on drop. Test names start with `bgtest-`.
pub struct NamedNetns {
    name: String,
}

impl NamedNetns {
    pub fn add(name: &str) -> Result<Self, NetnsError> {
        if !name.starts_with("bgtest-") {
            return Err(NetnsError::Name(name.to_string()));
        }
        HostRunner
            .run(&Cmd::new("ip").args(["netns", "add", name]))
            .map_err(|e| NetnsError::Add(name.to_string(), e))?;
        let ns = NamedNetns {
            name: name.to_string(),
        };
        ns.run(lo_up)??;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Run `f` on a new thread inside this namespace.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetnsError> {
        let path = self.path();
        std::thread::spawn(move || {
            let file = File::open(&path).map_err(|e| NetnsError::Enter(path.clone(), e))?;
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetnsError::Enter(path.clone(), e.into()))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// `ip -n <name> ARGS...` (test scaffolding only).
    pub fn ip(&self, args: &[&str]) -> Result<(), RunError> {
        HostRunner
            .run(
                &Cmd::new("ip")
                    .args(["-n", &self.name])
                    .args(args.iter().copied()),
            )
            .map(drop)
    }
}

impl NamedNetns {
    /// Test scaffolding, "the outside" of a NAT test: a veth from this
    /// namespace (`uplink`, 198.51.100.1/24) to `outside`'s `eth0`
    /// (198.51.100.2/24), which has no route back to any guest subnet (so
    /// replies arrive only through masquerade), and an HTTP server there
    /// answering `hello <peer address>`. Returns the server's address.
    pub fn serve_outside(
        &self,
        outside: &NamedNetns,
        uplink: &str,
    ) -> Result<std::net::SocketAddr, NetnsError> {
        use std::io::{Read, Write};
        let link = |r: Result<(), RunError>| r.map_err(|e| NetnsError::Link(uplink.into(), e));
        link(self.ip(&[
            "link",
            "add",
            uplink,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            outside.name(),
        ]))?;
        link(self.ip(&["addr", "add", "198.51.100.1/24", "dev", uplink]))?;
        link(self.ip(&["link", "set", uplink, "up"]))?;
        link(outside.ip(&["addr", "add", "198.51.100.2/24", "dev", "eth0"]))?;
        link(outside.ip(&["link", "set", "eth0", "up"]))?;
        let addr = std::net::SocketAddr::from(([198, 51, 100, 2], 8080));
        let web = outside
            .run(move || std::net::TcpListener::bind(addr))?
            .map_err(|e| NetnsError::Listen(addr, e))?;
        std::thread::spawn(move || {
            for c in web.incoming() {
                let Ok(mut c) = c else { continue };
                let Ok(peer) = c.peer_addr() else { continue };
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = write!(c, "HTTP/1.0 200 OK\r\n\r\nhello {}", peer.ip());
            }
        });
        Ok(addr)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = HostRunner.run(&Cmd::new("ip").args(["netns", "del", &self.name]));
    }
}
