//! banger's own nftables table (`inet banger`): per-VM masquerade and
//! forward rules, rendered as `nft -f` text, read back from `nft -j`.
//!
//! Every rule carries a comment `"<tap> <guest_ip> <kind> <bridge>"` that
//! identifies the VM it belongs to, so `ensure` is idempotent and `clear`
//! removes exactly one VM's rules. Nothing outside banger's table is ever
//! named in a script.

use crate::runner::{Cmd, RunError, Runner};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// The production table name (family `inet`).
pub const TABLE: &str = "banger";

/// Why an nftables operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nft table name must be [a-z_][a-z0-9_]* (got {0:?})")]
    TableName(String),
    #[error("list table inet {0}")]
    List(String, #[source] RunError),
    #[error("nft -j output for table inet {0} does not parse: {1}")]
    ParseListing(String, String),
    #[error("apply rules to table inet {0}")]
    Apply(String, #[source] RunError),
    #[error("delete table inet {0}")]
    DeleteTable(String, #[source] RunError),
    #[error("enable IPv4 forwarding via {0}")]
    EnableForwarding(PathBuf, #[source] std::io::Error),
}

/// A table name nft accepts without quoting: `[a-z_][a-z0-9_]*`, ≤ 32 chars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    pub fn new(name: &str) -> Result<Self, NftError> {
        let ok = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(TableName(name.to_string()))
        } else {
            Err(NftError::TableName(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inet {}", self.0)
    }
}

/// What a per-VM rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RuleKind {
    /// postrouting: the guest's traffic leaving by any non-bridge
    /// interface is masqueraded.
    Masquerade,
    /// forward: from the guest (in by the bridge) is accepted.
    ForwardOut,
    /// forward: replies to the guest (out by the bridge) are accepted.
    ForwardIn,
}

impl RuleKind {
    const ALL: [RuleKind; 3] = [
        RuleKind::Masquerade,
        RuleKind::ForwardOut,
        RuleKind::ForwardIn,
    ];

    fn word(self) -> &'static str {
        match self {
            RuleKind::Masquerade => "masq",
            RuleKind::ForwardOut => "fwd-out",
            RuleKind::ForwardIn => "fwd-in",
        }
    }

    fn chain(self) -> &'static str {
        match self {
            RuleKind::Masquerade => "postrouting",
            RuleKind::ForwardOut | RuleKind::ForwardIn => "forward",
        }
    }
}

/// One VM's NAT: its tap (the VM's identity in the table), its address and
/// banger's bridge. Names must already have passed the helper's gates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNat {
    pub tap: String,
    pub guest_ip: Ipv4Addr,
    pub bridge: String,
}

/// One rule of banger's table, identified by its comment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VmRule {
    pub tap: String,
    pub guest_ip: Ipv4Addr,
    pub kind: RuleKind,
    pub bridge: String,
}

impl VmNat {
    /// The rules this VM needs, in a fixed order.
    pub fn rules(&self) -> Vec<VmRule> {
        RuleKind::ALL
            .iter()
            .map(|k| VmRule {
                tap: self.tap.clone(),
                guest_ip: self.guest_ip,
                kind: *k,
                bridge: self.bridge.clone(),
            })
            .collect()
    }
}

impl VmRule {
    /// The comment naming this rule: `<tap> <ip> <kind> <bridge>`.
    pub fn comment(&self) -> String {
        format!(
            "{} {} {} {}",
            self.tap,
            self.guest_ip,
            self.kind.word(),
            self.bridge
        )
    }

    /// The rule body (what follows `add rule <table> <chain>`).
    pub fn body(&self) -> String {
        let (ip, br, c) = (self.guest_ip, &self.bridge, self.comment());
        match self.kind {
            RuleKind::Masquerade => {
                format!("ip saddr {ip} oifname != \"{br}\" masquerade comment \"{c}\"")
            }
            RuleKind::ForwardOut => {
                format!("iifname \"{br}\" ip saddr {ip} accept comment \"{c}\"")
            }
            RuleKind::ForwardIn => {
                format!("oifname \"{br}\" ip daddr {ip} ct state established,related accept comment \"{c}\"")
            }
        }
    }
}

impl FromStr for VmRule {
    type Err = ();
    /// Parse a comment written by [`VmRule::comment`].
    fn from_str(s: &str) -> Result<Self, ()> {
        let parts: Vec<&str> = s.split(' ').collect();
        let [tap, ip, kind, bridge] = parts[..] else {
            return Err(());
        };
        let kind = RuleKind::ALL
            .into_iter()
            .find(|k| k.word() == kind)
            .ok_or(())?;
        Ok(VmRule {
            tap: tap.to_string(),
            guest_ip: ip.parse().map_err(|_| ())?,
            kind,
            bridge: bridge.to_string(),
        })
    }
}

/// A rule as listed by `nft -j list table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    pub chain: String,
    pub handle: u64,
    /// The banger rule its comment names, if it is one.
    pub vm: Option<VmRule>,
}

/// Parse the rules out of `nft -j list table inet <name>` output.
pub fn parse_listing(json: &str) -> Result<Vec<ListedRule>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or("no \"nftables\" array")?;
    let mut rules = Vec::new();
    for item in items {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let chain = rule
            .get("chain")
            .and_then(|c| c.as_str())
            .ok_or("rule without chain")?;
        let handle = rule
            .get("handle")
            .and_then(|h| h.as_u64())
            .ok_or("rule without handle")?;
        let vm = rule
            .get("comment")
            .and_then(|c| c.as_str())
            .and_then(|c| c.parse().ok());
        rules.push(ListedRule {
            chain: chain.to_string(),
            handle,
            vm,
        });
    }
    Ok(rules)
}

/// An `nft -f` script on banger's table: base table and chains (always
/// added first, `add` being idempotent), rule deletions by handle, rule
/// additions. Applied atomically by nft.
#[derive(Debug, Clone)]
pub struct Script {
    table: TableName,
    deletes: Vec<(String, u64)>,
    adds: Vec<VmRule>,
}

impl Script {
    pub fn new(table: TableName) -> Self {
        Script {
            table,
            deletes: Vec::new(),
            adds: Vec::new(),
        }
    }

    pub fn delete(mut self, chain: &str, handle: u64) -> Self {
        self.deletes.push((chain.to_string(), handle));
        self
    }

    pub fn add_rule(mut self, rule: VmRule) -> Self {
        self.adds.push(rule);
        self
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.table;
        writeln!(f, "add table {t}")?;
        writeln!(
            f,
            "add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"
        )?;
        writeln!(
            f,
            "add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}"
        )?;
        for (chain, handle) in &self.deletes {
            writeln!(f, "delete rule {t} {chain} handle {handle}")?;
        }
        for r in &self.adds {
            writeln!(f, "add rule {t} {} {}", r.kind.chain(), r.body())?;
        }
        Ok(())
    }
}

/// Whether `ensure` changed the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Changed,
}

/// banger's table on this host (or netns), driven through `nft` via a [`Runner`].
pub struct Nft {
    runner: Arc<dyn Runner>,
    table: TableName,
    proc_root: PathBuf,
    /// Serialises list-then-apply so two requests for one VM cannot interleave.
    lock: Mutex<()>,
}

impl Nft {
    pub fn new(runner: Arc<dyn Runner>, table: TableName, proc_root: impl Into<PathBuf>) -> Self {
        Nft {
            runner,
            table,
            proc_root: proc_root.into(),
            lock: Mutex::new(()),
        }
    }

    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// The rules of banger's table; empty when the table does not exist.
    pub fn list(&self) -> Result<Vec<ListedRule>, NftError> {
        let name = self.table.as_str().to_string();
        let cmd = Cmd::new("nft").args(["-j", "list", "table", "inet", self.table.as_str()]);
        let out = self
            .runner
            .output(&cmd)
            .map_err(|e| NftError::List(name.clone(), e))?;
        if !out.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(Vec::new());
            }
            return Err(NftError::List(
                name,
                RunError::Failed {
                    program: "nft".into(),
                    status: out.status,
                    stderr: stderr.trim().to_string(),
                },
            ));
        }
        parse_listing(&String::from_utf8_lossy(&out.stdout))
            .map_err(|e| NftError::ParseListing(name, e))
    }

    fn apply(&self, script: &Script) -> Result<(), NftError> {
        let cmd = Cmd::new("nft").args(["-f", "-"]).stdin(script.to_string());
        self.runner
            .run(&cmd)
            .map(drop)
            .map_err(|e| NftError::Apply(self.table.as_str().to_string(), e))
    }

    /// Make the VM's rules exactly [`VmNat::rules`]: stale rules for its tap
    /// or its address are replaced in one transaction; nothing is applied
    /// when they are already in place. Turns IPv4 forwarding on.
    pub fn ensure_vm(&self, vm: &VmNat) -> Result<Applied, NftError> {
        enable_ipv4_forwarding(&self.proc_root)?;
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let listed = self.list()?;
        let mut want = vm.rules();
        want.sort();
        let mut have: Vec<&ListedRule> = listed
            .iter()
            .filter(|r| {
                r.vm.as_ref()
                    .is_some_and(|v| v.tap == vm.tap || v.guest_ip == vm.guest_ip)
            })
            .collect();
        let mut have_rules: Vec<VmRule> = have.iter().filter_map(|r| r.vm.clone()).collect();
        have_rules.sort();
        if have_rules == want {
            return Ok(Applied::Unchanged);
        }
        have.sort_by_key(|r| r.handle);
        let mut script = Script::new(self.table.clone());
        for r in have {
            script = script.delete(&r.chain, r.handle);
        }
        for r in vm.rules() {
            script = script.add_rule(r);
        }
        self.apply(&script)?;
        Ok(Applied::Changed)
    }

    /// Remove every rule of the VM whose tap is `tap`; returns how many.
    pub fn clear_vm(&self, tap: &str) -> Result<usize, NftError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let listed = self.list()?;
        let mine: Vec<&ListedRule> = listed
            .iter()
            .filter(|r| r.vm.as_ref().is_some_and(|v| v.tap == tap))
            .collect();
        if mine.is_empty() {
            return Ok(0);
        }
        let mut script = Script::new(self.table.clone());
        for r in &mine {
            script = script.delete(&r.chain, r.handle);
        }
        self.apply(&script)?;
        Ok(mine.len())
    }

    /// Remove banger's whole table (uninstall). Absent is fine.
    pub fn delete_table(&self) -> Result<(), NftError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        // `add` first so the delete never fails on a missing table
        // (nft 1.0.6 has no `destroy`), in one transaction.
        let script = format!("add table {t}\ndelete table {t}\n", t = self.table);
        let cmd = Cmd::new("nft").args(["-f", "-"]).stdin(script);
        self.runner
            .run(&cmd)
            .map(drop)
            .map_err(|e| NftError::DeleteTable(self.table.as_str().to_string(), e))
    }
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

/// The comment on every DNS redirect rule.
pub const DNS_COMMENT: &str = "banger-dns";

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

impl Nft {
    /// Point `addr:53` at the daemon's `port` (see [`DnsRedirect`]),
    /// replacing any earlier redirect, in one transaction.
    pub fn ensure_dns_redirect(
        &self,
        bridge: &str,
        addr: Ipv4Addr,
        port: u16,
    ) -> Result<(), NftError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let script = DnsRedirect {
            bridge: bridge.to_string(),
            addr,
            port,
            table: self.table.clone(),
        };
        self.apply_text(script.to_string())
    }

    fn apply_text(&self, script: String) -> Result<(), NftError> {
        let cmd = Cmd::new("nft").args(["-f", "-"]).stdin(script);
        self.runner
            .run(&cmd)
            .map(drop)
            .map_err(|e| NftError::Apply(self.table.as_str().to_string(), e))
    }
}

/// Write `1` to `<proc_root>/sys/net/ipv4/ip_forward` (the netns of the
/// calling thread).
pub fn enable_ipv4_forwarding(proc_root: &Path) -> Result<(), NftError> {
    let path = proc_root.join("sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == "1") {
        return Ok(());
    }
    std::fs::write(&path, "1\n").map_err(|e| NftError::EnableForwarding(path, e))
}

#[cfg(test)]
mod tests;
