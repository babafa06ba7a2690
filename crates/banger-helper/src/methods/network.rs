//! Privileged methods: network — bridge, taps, NAT and resolver routing.
//! Each handler runs its gates, then one host operation.

use crate::error::{gate, RpcError};
use crate::gates::net::{self as g, Subnet};
use crate::gates::Refused;
use crate::helper::Helper;
use banger_proto::helper as m;
use banger_sys::net::{NetError, Owner};
use banger_sys::nft::VmNat;
use banger_sys::resolved;
use std::sync::Mutex;

/// Serialises `priv.create_tap` so the tap count read for the cap is still
/// true when the tap is made.
static TAP_CREATION: Mutex<()> = Mutex::new(());

/// banger's subnet from install metadata (trusted, but still parsed).
fn subnet(h: &Helper) -> Result<Subnet, RpcError> {
    Subnet::parse(&h.cfg.subnet).map_err(|r| RpcError::Failed(format!("install.toml: {r}")))
}

/// A host error as the method's answer: an interface that exists and is not
/// banger's (or not of the kind asked for) is a refusal that needed host
/// state to decide, so it is a gate refusal (`-32602`) like any other.
fn net_err(method: &'static str, e: NetError) -> RpcError {
    let refused = match &e {
        NetError::NotManaged(name) => Refused::new(format!(
            "{name} must be absent or an interface banger created"
        )),
        NetError::WrongKind(name, kind) => {
            Refused::new(format!("{name} must be a {kind} banger created"))
        }
        _ => return RpcError::failed(&e),
    };
    RpcError::Gate { method, refused }
}

/// Resolver routing acts only on a link banger created: pointing a host
/// link's DNS elsewhere (or reverting it) is not the daemon's to ask.
fn managed_link(h: &Helper, method: &'static str, name: &str) -> Result<(), RpcError> {
    match h.host.net.link(name) {
        Ok(Some(l)) if l.managed() => Ok(()),
        Ok(_) => Err(RpcError::Gate {
            method,
            refused: Refused::new("bridge must be an existing interface created by banger"),
        }),
        Err(e) => Err(RpcError::failed(&e)),
    }
}

pub fn ensure_bridge(h: &Helper, p: m::EnsureBridge) -> Result<m::Empty, RpcError> {
    const M: &str = m::ENSURE_BRIDGE;
    let net = subnet(h)?;
    let name = gate(M, g::configured_bridge("name", &p.name, &h.cfg.bridge))?;
    let (addr, prefix) = gate(M, g::bridge_cidr(&p.address, &net))?;
    // Never shadow a host route: the subnet must not overlap any route
    // other than the default route and the bridge's own.
    let routes = h.host.net.routes().map_err(|e| RpcError::failed(&e))?;
    if let Some(r) = routes
        .iter()
        .find(|r| r.prefix > 0 && r.dev != name && net.overlaps(r.dst, r.prefix))
    {
        return Err(RpcError::Gate {
            method: M,
            refused: Refused::new(format!(
                "address must not overlap a host route ({}/{} on {})",
                r.dst, r.prefix, r.dev
            )),
        });
    }
    h.host
        .net
        .ensure_bridge(name, addr, prefix)
        .map_err(|e| net_err(M, e))?;
    Ok(m::Empty {})
}

pub fn create_tap(h: &Helper, p: m::CreateTap) -> Result<m::Empty, RpcError> {
    const M: &str = m::CREATE_TAP;
    let name = gate(M, g::tap_name(&p.name))?;
    let bridge = gate(M, g::configured_bridge("bridge", &p.bridge, &h.cfg.bridge))?;
    let owner = match p.jail_uid {
        None => Owner {
            uid: h.cfg.owner_uid,
            gid: h.cfg.owner_gid,
        },
        Some(uid) => {
            let range = h.cfg.jail_range().ok().flatten();
            if !range.is_some_and(|r| r.contains(uid)) {
                return Err(RpcError::Gate {
                    method: M,
                    refused: Refused::new("jail_uid must lie inside install.toml's jail uid range"),
                });
            }
            Owner { uid, gid: uid }
        }
    };
    let _one_at_a_time = TAP_CREATION.lock().unwrap_or_else(|p| p.into_inner());
    // The cap counts every banger-marked tap on the host; re-ensuring a
    // banger interface that already exists adds none (one that is not a tap
    // is refused by the creation).
    let exists = h
        .host
        .net
        .link(name)
        .map_err(|e| RpcError::failed(&e))?
        .is_some_and(|l| l.managed());
    if !exists {
        let taps = h
            .host
            .net
            .managed_tap_count()
            .map_err(|e| RpcError::failed(&e))?;
        gate(M, g::tap_count(taps, h.cfg.max_taps))?;
    }
    h.host
        .net
        .create_tap(name, bridge, owner)
        .map_err(|e| net_err(M, e))?;
    Ok(m::Empty {})
}

pub fn delete_tap(h: &Helper, p: m::DeleteTap) -> Result<m::Empty, RpcError> {
    const M: &str = m::DELETE_TAP;
    let name = gate(M, g::tap_name(&p.name))?;
    h.host.net.delete_tap(name).map_err(|e| net_err(M, e))?;
    Ok(m::Empty {})
}

fn nat_args(h: &Helper, method: &'static str, p: &m::Nat) -> Result<VmNat, RpcError> {
    let net = subnet(h)?;
    let guest_ip = gate(method, g::guest_ipv4(&p.guest_ip, &net))?;
    let tap = gate(method, g::tap_name(&p.tap))?;
    Ok(VmNat {
        tap: tap.to_string(),
        guest_ip,
        bridge: h.cfg.bridge.clone(),
    })
}

/// The VM's address into banger's NAT set (the static ruleset is made on
/// the first call): one set element, over nfnetlink on the host.
pub fn ensure_nat(h: &Helper, p: m::Nat) -> Result<m::Empty, RpcError> {
    let vm = nat_args(h, m::ENSURE_NAT, &p)?;
    h.host
        .nft
        .ensure_vm(&vm)
        .map_err(|e| RpcError::failed(&e))?;
    Ok(m::Empty {})
}

/// The VM's address out of banger's NAT set: one `nft delete element`;
/// an address already gone is not an error.
pub fn clear_nat(h: &Helper, p: m::Nat) -> Result<m::Empty, RpcError> {
    let vm = nat_args(h, m::CLEAR_NAT, &p)?;
    h.host.nft.clear_vm(&vm).map_err(|e| RpcError::failed(&e))?;
    Ok(m::Empty {})
}

/// Route the configured domain (and nothing else) to the daemon's DNS on
/// the configured bridge (and no other link).
pub fn sync_resolver_routing(h: &Helper, p: m::SyncResolverRouting) -> Result<m::Empty, RpcError> {
    const M: &str = m::SYNC_RESOLVER_ROUTING;
    let net = subnet(h)?;
    let bridge = gate(M, g::configured_bridge("bridge", &p.bridge, &h.cfg.bridge))?;
    let resolver = gate(M, g::resolver_addr(&p.resolver, &net))?;
    let domain = gate(M, g::configured_domain(&p.domain, &h.cfg.domain))?;
    managed_link(h, M, bridge)?;
    let resolver = if resolver.port() == 53 && !p.resolver.contains(':') {
        resolver.ip().to_string()
    } else {
        resolver.to_string()
    };
    resolved::sync(h.host.runner.as_ref(), bridge, &resolver, domain)
        .map_err(|e| RpcError::failed(&e))?;
    Ok(m::Empty {})
}

pub fn clear_resolver_routing(
    h: &Helper,
    p: m::ClearResolverRouting,
) -> Result<m::Empty, RpcError> {
    const M: &str = m::CLEAR_RESOLVER_ROUTING;
    let bridge = gate(M, g::configured_bridge("bridge", &p.bridge, &h.cfg.bridge))?;
    managed_link(h, M, bridge)?;
    resolved::clear(h.host.runner.as_ref(), bridge).map_err(|e| RpcError::failed(&e))?;
    Ok(m::Empty {})
}

/// Send DNS for the bridge address (port 53) to the daemon's unprivileged
/// port on that address; only in banger's table, only for the configured
/// bridge and its gateway address.
pub fn ensure_dns_redirect(h: &Helper, p: m::EnsureDnsRedirect) -> Result<m::Empty, RpcError> {
    const M: &str = m::ENSURE_DNS_REDIRECT;
    let net = subnet(h)?;
    let bridge = gate(M, g::configured_bridge("bridge", &p.bridge, &h.cfg.bridge))?;
    let port = gate(M, g::dns_port(p.port))?;
    managed_link(h, M, bridge)?;
    h.host
        .nft
        .ensure_dns_redirect(bridge, net.gateway(), port)
        .map_err(|e| RpcError::failed(&e))?;
    Ok(m::Empty {})
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
