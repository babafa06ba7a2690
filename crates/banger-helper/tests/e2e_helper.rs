//! The real helper end to end: the `banger-helper` binary runs as root (in
//! a private network namespace, so bridges, taps and nftables rules never
//! touch the host's) with a temporary install.toml, and every method of
//! `banger_proto::helper::METHODS` is driven over its socket with JSON-RPC
//! from forked children: as the owner (valid params act for real where this
//! machine allows, gate-violating params get `-32602` with the rule text)
//! and as a third uid (closed without a byte, for every request).

#[path = "e2e/guards.rs"]
mod guards;
#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/net.rs"]
mod net;
#[path = "e2e/process.rs"]
mod process;
#[path = "e2e/qemu.rs"]
mod qemu;
#[path = "e2e/storage.rs"]
mod storage;

use banger_proto::helper as m;
use banger_proto::install::InstallConfig;
use banger_testkit::{probe_as, require_root, MountGuard, Probe, SystemUser};
use guards::{in_netns, proc_state, short_tag, strip_ansi, DmNodeGuard, LaunchedGuard, LoopGuard};
use harness::{call_as, layout, request, HelperProc};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// What every section of the owner run shares.
pub struct Ctx<'a> {
    pub helper: &'a HelperProc,
    pub owner: &'a SystemUser,
    pub cfg: &'a InstallConfig,
    /// The test's temporary directory (also the owner's home in the config).
    pub root: PathBuf,
    pub tag: String,
    pub bridge: String,
    pub tap: String,
    /// Every request the owner sent, replayed as a third uid at the end.
    pub sent: RefCell<Vec<(&'static str, Value)>>,
    pub covered: RefCell<BTreeSet<&'static str>>,
    pub mounts: RefCell<MountGuard>,
}

impl Ctx<'_> {
    /// One request as the owner (recorded for the replay).
    pub fn call(&self, method: &'static str, params: Value) -> Value {
        self.sent.borrow_mut().push((method, params.clone()));
        call_as(
            self.owner.uid,
            self.owner.gid,
            &self.helper.socket,
            method,
            params,
        )
    }

    /// `method` was driven both ways (valid and gate-violating).
    pub fn cover(&self, method: &'static str) {
        self.covered.borrow_mut().insert(method);
    }
}

#[test]
fn root_real_helper_serves_every_method_to_the_owner_and_nothing_to_others() {
    if !require_root("root_real_helper_serves_every_method_to_the_owner_and_nothing_to_others") {
        return;
    }
    let owner = SystemUser::create("e2ehown");
    let third = SystemUser::create("e2eh3rd");
    let tag = short_tag();
    let bridge = format!("bgtest-{tag}");
    let l = layout(&owner, &bridge);
    let root = l.cfg.owner_home.clone();
    let _dm_node = DmNodeGuard::new();
    let _loops = LoopGuard(root.clone());
    let _launched = LaunchedGuard(root.clone());
    let records = root.join("launch-records");
    let helper = HelperProc::start(
        &l.cfg_path,
        &l.cfg,
        &["--launch-records", records.to_str().unwrap()],
        root.join("helper.log"),
    );
    let sock = helper.socket.clone();
    let md = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o777),
        (0, owner.gid, 0o660)
    );
    let c = Ctx {
        helper: &helper,
        owner: &owner,
        cfg: &l.cfg,
        root: root.clone(),
        tap: format!("banger-t{tag}"),
        tag,
        bridge: bridge.clone(),
        sent: RefCell::new(Vec::new()),
        covered: RefCell::new(BTreeSet::new()),
        mounts: RefCell::new(MountGuard(Vec::new())),
    };

    net::network(&c);
    storage::storage(&c);
    let done = process::files_and_processes(&c);
    qemu::qemu_cgroup(&c);
    assert_eq!(
        *c.covered.borrow(),
        m::METHODS.iter().copied().collect::<BTreeSet<_>>(),
        "every method is driven as the owner"
    );

    // A third uid, even in the owner's group (so it can connect): every
    // request the owner sent (valid and not, every method) is closed
    // without a byte, and none of them acts.
    let sent = c.sent.take();
    assert!(sent.len() > 2 * m::METHODS.len());
    for (method, params) in &sent {
        let got = probe_as(third.uid, owner.gid, &sock, &request(method, params));
        assert_eq!(
            got,
            Probe::ClosedSilently,
            "{method} {params} as a third uid"
        );
    }
    assert!(
        in_netns(&helper, &["ip", "link", "show", "dev", &c.tap]).is_err(),
        "tap recreated"
    );
    assert!(!done.chroot.exists(), "chroot recreated");
    assert!(
        proc_state(done.pid).is_none(),
        "vm1 relaunched under its old pid"
    );
    assert_eq!(
        std::fs::read_to_string(&done.log1).unwrap(),
        done.log1_text,
        "vm1 relaunched"
    );
    let got = probe_as(
        third.uid,
        third.gid,
        &sock,
        &request(m::VERSION, &json!({})),
    );
    assert_eq!(got, Probe::ConnectFailed(libc::EACCES), "outside the group");
    let links = in_netns(&helper, &["ip", "-o", "link", "show"]).unwrap();
    assert!(
        links.contains(&bridge),
        "the bridge survives the third uid: {links}"
    );

    // The audit trail: one line per owner request, one per refused peer.
    let log = strip_ansi(&helper.log_text());
    let audited = log
        .lines()
        .filter(|l| l.contains(&format!("uid={} method=", owner.uid)))
        .count();
    assert_eq!(audited, sent.len(), "audit lines:\n{log}");
    let refused = log
        .lines()
        .filter(|l| l.contains(&format!("peer uid {} ", third.uid)))
        .count();
    assert_eq!(refused, sent.len(), "refused-peer lines:\n{log}");
}
