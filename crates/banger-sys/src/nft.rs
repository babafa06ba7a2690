//! banger's own nftables table (`inet banger`): a static NAT ruleset made
//! once, and one set element per VM, driven through `nft`.
//!
//! The table holds the set [`GUEST_SET`] of guest addresses and three rules
//! matching it (masquerade out of any non-bridge interface, forward accept
//! both ways through the bridge), made once per process by one `nft -f`
//! transaction ([`NatRuleset`]). A VM is then one element added (ensure)
//! or deleted (clear): no listing, no chain re-declaration, a cost that
//! does not grow with the number of VMs. The element goes over nfnetlink
//! in-process ([`netlink`], the helper on the host: no process start) or
//! as one `nft add element` / `nft delete element` (through the runner).
//! Nothing outside banger's table is ever named.

pub mod netlink;
mod render;

pub use render::{
    parse_elements, parse_legacy_vms, quotable_name, DnsRedirect, ElementOp, NatElement,
    NatRuleset, DNS_COMMENT, GUEST_SET, NAT_COMMENT,
};

use crate::runner::{Cmd, RunError, Runner};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The production table name (family `inet`).
pub const TABLE: &str = "banger";

/// Why an nftables operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nft table name must be [a-z_][a-z0-9_]* (got {0:?})")]
    TableName(String),
    #[error("interface name {0:?} must be 1-15 chars of [A-Za-z0-9_.-]")]
    IfaceName(String),
    #[error("list table inet {0}")]
    List(String, #[source] RunError),
    #[error("nft -j output for table inet {0} does not parse: {1}")]
    ParseListing(String, String),
    #[error("make the NAT ruleset of table inet {0}")]
    Ruleset(String, #[source] RunError),
    #[error("add {1} to set {GUEST_SET} of table inet {0}")]
    AddElement(String, Ipv4Addr, #[source] RunError),
    #[error("delete {1} from set {GUEST_SET} of table inet {0}")]
    DeleteElement(String, Ipv4Addr, #[source] RunError),
    #[error("add {1} to set {GUEST_SET} of table inet {0} over netlink")]
    AddElementNetlink(String, Ipv4Addr, #[source] std::io::Error),
    #[error("delete {1} from set {GUEST_SET} of table inet {0} over netlink")]
    DeleteElementNetlink(String, Ipv4Addr, #[source] std::io::Error),
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

/// One VM's NAT: its tap (named in the element's comment), its address
/// (the element) and banger's bridge (named by the static rules). Names
/// must already have passed the helper's gates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNat {
    pub tap: String,
    pub guest_ip: Ipv4Addr,
    pub bridge: String,
}

/// What `clear` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleared {
    /// The address was in the set and is gone.
    Removed,
    /// The address (or the set, or the table) was not there.
    Absent,
}

/// banger's table on this host (or netns), driven through `nft` via a [`Runner`].
pub struct Nft {
    runner: Arc<dyn Runner>,
    table: TableName,
    proc_root: PathBuf,
    /// The bridge the static ruleset was made for by this process; `None`
    /// until the first ensure, and again after the table is deleted.
    ruleset: Mutex<Option<String>>,
    /// Elements over nfnetlink in the calling thread's namespace, instead
    /// of `nft` through the runner.
    netlink: bool,
}

/// nft's answer when the table, set or element named does not exist.
fn is_missing(e: &RunError) -> bool {
    matches!(e, RunError::Failed { stderr, .. } if stderr.contains("No such file or directory"))
}

impl Nft {
    pub fn new(runner: Arc<dyn Runner>, table: TableName, proc_root: impl Into<PathBuf>) -> Self {
        Nft {
            runner,
            table,
            proc_root: proc_root.into(),
            ruleset: Mutex::new(None),
            netlink: false,
        }
    }

    /// Add and delete elements over nfnetlink in-process (the ruleset and
    /// listings still go through `nft`): for a runner that runs `nft` in
    /// the caller's own network namespace, as the host's does.
    pub fn with_netlink(mut self) -> Self {
        self.netlink = true;
        self
    }

    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Run `nft <argv>` (with `stdin` if any), requiring success.
    fn nft(&self, argv: &[String], stdin: Option<String>) -> Result<Vec<u8>, RunError> {
        let mut cmd = Cmd::new("nft").args(argv);
        if let Some(s) = stdin {
            cmd = cmd.stdin(s);
        }
        let out = self.runner.output(&cmd)?;
        if out.success() {
            return Ok(out.stdout);
        }
        Err(RunError::Failed {
            program: "nft".into(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    fn script(&self, text: String) -> Result<Vec<u8>, RunError> {
        self.nft(&["-f".into(), "-".into()], Some(text))
    }

    /// `nft -j list <what> inet <table> [name]`; `None` when it does not exist.
    fn listing(&self, what: &str, name: Option<&str>) -> Result<Option<String>, NftError> {
        let mut argv: Vec<String> = ["-j", "list", what, "inet", self.table.as_str()]
            .map(String::from)
            .to_vec();
        argv.extend(name.map(String::from));
        match self.nft(&argv, None) {
            Ok(out) => Ok(Some(String::from_utf8_lossy(&out).into_owned())),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(NftError::List(self.table.as_str().to_string(), e)),
        }
    }

    /// The VMs in the NAT set, by address; empty when the table or set does
    /// not exist.
    pub fn list(&self) -> Result<Vec<NatElement>, NftError> {
        let Some(json) = self.listing("set", Some(GUEST_SET))? else {
            return Ok(Vec::new());
        };
        let mut elements = parse_elements(&json)
            .map_err(|e| NftError::ParseListing(self.table.as_str().into(), e))?;
        elements.sort();
        Ok(elements)
    }

    /// Make the static ruleset for `bridge` unless this process already
    /// did. Idempotent: rules are flushed and rewritten, the set's elements
    /// are kept, and VMs with rules of the earlier per-VM layout are moved
    /// into the set (the only listing, once per process).
    fn ensure_ruleset(&self, bridge: &str) -> Result<(), NftError> {
        let mut made = self.ruleset.lock().unwrap_or_else(|p| p.into_inner());
        if made.as_deref() == Some(bridge) {
            return Ok(());
        }
        let name = self.table.as_str().to_string();
        let carry = match self.listing("table", None)? {
            Some(json) => {
                parse_legacy_vms(&json).map_err(|e| NftError::ParseListing(name.clone(), e))?
            }
            None => Vec::new(),
        };
        let ruleset = NatRuleset {
            table: self.table.clone(),
            bridge: bridge.to_string(),
            carry,
        };
        self.script(ruleset.to_string())
            .map_err(|e| NftError::Ruleset(name, e))?;
        *made = Some(bridge.to_string());
        Ok(())
    }

    fn forget_ruleset(&self) {
        *self.ruleset.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Put the VM's address in the NAT set (one `nft add element`; adding
    /// an address already there is a no-op), after making the static
    /// ruleset if this process has not. Turns IPv4 forwarding on.
    pub fn ensure_vm(&self, vm: &VmNat) -> Result<(), NftError> {
        for n in [&vm.tap, &vm.bridge] {
            if !quotable_name(n) {
                return Err(NftError::IfaceName(n.clone()));
            }
        }
        enable_ipv4_forwarding(&self.proc_root)?;
        self.ensure_ruleset(&vm.bridge)?;
        if self.netlink {
            return self.ensure_vm_netlink(vm);
        }
        let argv = ElementOp::Add(NatElement {
            guest_ip: vm.guest_ip,
            tap: Some(vm.tap.clone()),
        })
        .argv(&self.table);
        let err = |e| NftError::AddElement(self.table.as_str().into(), vm.guest_ip, e);
        match self.nft(&argv, None) {
            Ok(_) => Ok(()),
            // The table went away behind this process's back: make it again, once.
            Err(e) if is_missing(&e) => {
                self.forget_ruleset();
                self.ensure_ruleset(&vm.bridge)?;
                self.nft(&argv, None).map(drop).map_err(err)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Take the VM's address out of the NAT set (one `nft delete element`);
    /// an address, set or table that is not there is [`Cleared::Absent`].
    pub fn clear_vm(&self, vm: &VmNat) -> Result<Cleared, NftError> {
        if self.netlink {
            let op = netlink::Op::Delete { ip: vm.guest_ip };
            return match netlink::apply(self.table.as_str(), GUEST_SET, &op) {
                Ok(()) => Ok(Cleared::Removed),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Cleared::Absent),
                Err(e) => Err(NftError::DeleteElementNetlink(
                    self.table.as_str().into(),
                    vm.guest_ip,
                    e,
                )),
            };
        }
        let argv = ElementOp::Delete(vm.guest_ip).argv(&self.table);
        match self.nft(&argv, None) {
            Ok(_) => Ok(Cleared::Removed),
            Err(e) if is_missing(&e) => Ok(Cleared::Absent),
            Err(e) => Err(NftError::DeleteElement(
                self.table.as_str().into(),
                vm.guest_ip,
                e,
            )),
        }
    }

    /// [`Nft::ensure_vm`]'s element over nfnetlink; a table gone behind
    /// this process's back (`ENOENT`) is made again, once.
    fn ensure_vm_netlink(&self, vm: &VmNat) -> Result<(), NftError> {
        let op = netlink::Op::Add {
            ip: vm.guest_ip,
            comment: vm.tap.clone(),
        };
        let add = || netlink::apply(self.table.as_str(), GUEST_SET, &op);
        let err = |e| NftError::AddElementNetlink(self.table.as_str().into(), vm.guest_ip, e);
        match add() {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.forget_ruleset();
                self.ensure_ruleset(&vm.bridge)?;
                add().map_err(err)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Remove banger's whole table (uninstall). Absent is fine.
    pub fn delete_table(&self) -> Result<(), NftError> {
        let mut made = self.ruleset.lock().unwrap_or_else(|p| p.into_inner());
        *made = None;
        // `add` first so the delete never fails on a missing table
        // (nft 1.0.6 has no `destroy`), in one transaction.
        let script = format!("add table {t}\ndelete table {t}\n", t = self.table);
        self.script(script)
            .map(drop)
            .map_err(|e| NftError::DeleteTable(self.table.as_str().to_string(), e))
    }

    /// Point `addr:53` at the daemon's `port` (see [`DnsRedirect`]),
    /// replacing any earlier redirect, in one transaction. The NAT set and
    /// rules are untouched.
    pub fn ensure_dns_redirect(
        &self,
        bridge: &str,
        addr: Ipv4Addr,
        port: u16,
    ) -> Result<(), NftError> {
        let script = DnsRedirect {
            bridge: bridge.to_string(),
            addr,
            port,
            table: self.table.clone(),
        };
        self.script(script.to_string())
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
