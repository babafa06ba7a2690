//! Pure renderings of banger's nftables table: the static NAT ruleset, set
//! elements, the DNS redirect chains, and parsers for `nft -j` listings.

use super::TableName;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The set of guest addresses the static NAT rules match.
pub const GUEST_SET: &str = "nat_guests";

/// The comment on each of the three static NAT rules.
pub const NAT_COMMENT: &str = "banger-nat";

/// The comment on every DNS redirect rule.
pub const DNS_COMMENT: &str = "banger-dns";

/// Whether `s` may appear inside an nft double-quoted string (an interface
/// name as the helper's gates admit it): 1–15 bytes of `[A-Za-z0-9_.-]`.
pub fn quotable_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// One member of [`GUEST_SET`]: a guest address, with the VM's tap as the
/// element's comment (for people reading `nft list`; the key is the address).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NatElement {
    pub guest_ip: Ipv4Addr,
    pub tap: Option<String>,
}

impl fmt::Display for NatElement {
    /// `172.30.0.7 comment "banger-0a1b2c3d"` (the text inside `{ }`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.guest_ip)?;
        if let Some(tap) = &self.tap {
            write!(f, " comment \"{tap}\"")?;
        }
        Ok(())
    }
}

impl FromStr for NatElement {
    type Err = ();
    /// Parse what [`NatElement`]'s `Display` writes.
    fn from_str(s: &str) -> Result<Self, ()> {
        let (ip, tap) = match s.split_once(' ') {
            None => (s, None),
            Some((ip, rest)) => {
                let tap = rest
                    .strip_prefix("comment \"")
                    .and_then(|t| t.strip_suffix('"'))
                    .filter(|t| quotable_name(t))
                    .ok_or(())?;
                (ip, Some(tap.to_string()))
            }
        };
        Ok(NatElement {
            guest_ip: ip.parse().map_err(|_| ())?,
            tap,
        })
    }
}

/// Add or delete one element of [`GUEST_SET`]: the argv after `nft`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementOp {
    Add(NatElement),
    Delete(Ipv4Addr),
}

impl ElementOp {
    /// `["add", "element", "inet", "<t>", "nat_guests", "{ 172.30.0.7 comment \"tap\" }"]`
    /// (nft joins its arguments with spaces; no shell is involved).
    pub fn argv(&self, table: &TableName) -> Vec<String> {
        let (verb, body) = match self {
            ElementOp::Add(e) => ("add", e.to_string()),
            ElementOp::Delete(ip) => ("delete", ip.to_string()),
        };
        [verb, "element", "inet", table.as_str(), GUEST_SET]
            .into_iter()
            .map(str::to_string)
            .chain([format!("{{ {body} }}")])
            .collect()
    }
}

/// The static NAT ruleset, made once: the table, [`GUEST_SET`], the two
/// base chains flushed and refilled with three rules matching the set
/// (what each VM used to get as its own three rules), and `carry`: the
/// addresses of VMs found with per-VM rules of an earlier layout, so they
/// keep their NAT across the change. One `nft -f` transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRuleset {
    pub table: TableName,
    pub bridge: String,
    pub carry: Vec<NatElement>,
}

impl fmt::Display for NatRuleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, b, s, c) = (&self.table, &self.bridge, GUEST_SET, NAT_COMMENT);
        writeln!(f, "add table {t}")?;
        writeln!(f, "add set {t} {s} {{ type ipv4_addr; }}")?;
        writeln!(
            f,
            "add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"
        )?;
        writeln!(
            f,
            "add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}"
        )?;
        writeln!(f, "flush chain {t} postrouting")?;
        writeln!(f, "flush chain {t} forward")?;
        writeln!(
            f,
            "add rule {t} postrouting ip saddr @{s} oifname != \"{b}\" masquerade comment \"{c}\""
        )?;
        writeln!(
            f,
            "add rule {t} forward iifname \"{b}\" ip saddr @{s} accept comment \"{c}\""
        )?;
        writeln!(
            f,
            "add rule {t} forward oifname \"{b}\" ip daddr @{s} ct state established,related accept comment \"{c}\""
        )?;
        for e in &self.carry {
            writeln!(f, "add element {t} {s} {{ {e} }}")?;
        }
        Ok(())
    }
}

/// Parse the elements of [`GUEST_SET`] out of `nft -j list set` output.
pub fn parse_elements(json: &str) -> Result<Vec<NatElement>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or("no \"nftables\" array")?;
    let mut out = Vec::new();
    for set in items.iter().filter_map(|i| i.get("set")) {
        let Some(elems) = set.get("elem") else {
            continue;
        };
        for e in elems.as_array().ok_or("\"elem\" is not an array")? {
            // Plain: "172.30.0.8"; with a comment: {"elem": {"val", "comment"}}.
            let (val, comment) = match e.get("elem") {
                Some(inner) => (inner.get("val"), inner.get("comment")),
                None => (Some(e), None),
            };
            let ip = val
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("element {e} is not an IPv4 address"))?;
            out.push(NatElement {
                guest_ip: ip,
                tap: comment.and_then(|c| c.as_str()).map(str::to_string),
            });
        }
    }
    Ok(out)
}

/// The VMs named by per-VM rules of the earlier layout (one rule per VM
/// and kind, commented `"<tap> <ip> <kind> <bridge>"`) in `nft -j list
/// table` output: what [`NatRuleset::carry`] moves into the set.
pub fn parse_legacy_vms(json: &str) -> Result<Vec<NatElement>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or("no \"nftables\" array")?;
    let mut out: Vec<NatElement> = items
        .iter()
        .filter_map(|i| i.get("rule")?.get("comment")?.as_str())
        .filter_map(legacy_comment)
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.guest_ip == b.guest_ip);
    Ok(out)
}

/// `"<tap> <ip> masq|fwd-out|fwd-in <bridge>"` → the VM it names.
fn legacy_comment(c: &str) -> Option<NatElement> {
    let parts: Vec<&str> = c.split(' ').collect();
    let [tap, ip, kind, bridge] = parts[..] else {
        return None;
    };
    let known = matches!(kind, "masq" | "fwd-out" | "fwd-in");
    (known && quotable_name(tap) && quotable_name(bridge)).then_some(NatElement {
        guest_ip: ip.parse().ok()?,
        tap: Some(tap.to_string()),
    })
}

/// DNS for banger's bridge address: the daemon is not root, so it listens
/// on an unprivileged `port` of `addr`, and banger's table DNATs
/// `addr:53` (UDP and TCP) there — from guests (in by `bridge`,
/// prerouting) and from the host itself (output, e.g. systemd-resolved).
/// The two chains hold nothing else: ensuring flushes and refills them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRedirect {
    pub bridge: String,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub table: TableName,
}

impl fmt::Display for DnsRedirect {
    /// One `nft -f` transaction replacing the redirect rules.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, a, p, b) = (&self.table, self.addr, self.port, &self.bridge);
        writeln!(f, "add table {t}")?;
        writeln!(
            f,
            "add chain {t} dns_prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"
        )?;
        writeln!(
            f,
            "add chain {t} dns_output {{ type nat hook output priority -100; policy accept; }}"
        )?;
        writeln!(f, "flush chain {t} dns_prerouting")?;
        writeln!(f, "flush chain {t} dns_output")?;
        for proto in ["udp", "tcp"] {
            writeln!(
                f,
                "add rule {t} dns_prerouting iifname \"{b}\" ip daddr {a} {proto} dport 53 dnat ip to {a}:{p} comment \"{DNS_COMMENT}\""
            )?;
        }
        for proto in ["udp", "tcp"] {
            writeln!(
                f,
                "add rule {t} dns_output ip daddr {a} {proto} dport 53 dnat ip to {a}:{p} comment \"{DNS_COMMENT}\""
            )?;
        }
        Ok(())
    }
}
