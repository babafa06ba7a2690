//! The host operations the helper's methods call. Real ones in production,
//! recording fakes in tests (see `banger_sys`).

use banger_sys::dm::{DmOps, DmSetup};
use banger_sys::ext4::Ext4Tools;
use banger_sys::loopdev::{KernelLoops, LoopOps};
use banger_sys::net::{NetOps, RealNet};
use banger_sys::nft::{Nft, TableName, TABLE};
use banger_sys::runner::{Bounded, HostRunner, Limits, Runner};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Limits of every child tool the helper runs that sets none of its own
/// (dmsetup, nft, resolvectl…): killed with its process group after 110 s
/// (inside the 120 s request budget), or past 16 MiB of stdout / 1 MiB of stderr.
pub const CHILD_LIMITS: Limits = Limits::new(Duration::from_secs(110), 16 << 20);

/// Every host-side capability a method may use.
pub struct Host {
    /// Runs host tools (argv only).
    pub runner: Arc<dyn Runner>,
    /// Root of the proc filesystem (`/proc`; a fixture in tests).
    pub proc_root: PathBuf,
    /// Pidfds of the Firecracker processes this helper launched, by pid.
    pub launched: banger_sys::pidfd::Registry,
    /// Which launches this helper performs (jailed only, or also unjailed).
    pub launch_policy: LaunchPolicy,
    /// Root of sysfs (`/sys`; a fixture in tests): where the cgroup
    /// hierarchy the jailer uses is found.
    pub sys_root: PathBuf,
    /// Root-owned directory of launch records (`/run/banger-helper/launched`):
    /// one file per launched pid, so a restarted helper (and every
    /// one-shot helper) knows what it launched.
    pub launch_records: PathBuf,
    /// Device-mapper (create/info/remove).
    pub dm: Arc<dyn DmOps>,
    /// Loop devices (attach by fd, detach, list).
    pub loops: Arc<dyn LoopOps>,
    /// debugfs / e2fsck on ext4 images.
    pub ext4: Arc<Ext4Tools>,
    /// Where dm device nodes are opened and checked on the fd before a tool
    /// gets them (`/dev`, `/sys`); `None` in the recording host, whose dm
    /// devices have no node: the tool is then named the device path.
    pub dm_nodes: Option<banger_sys::dmnode::DmNodes>,
    /// Bridges and taps (rtnetlink, `/dev/net/tun`).
    pub net: Arc<dyn NetOps>,
    /// banger's nftables table (`inet banger`), driven through `nft`.
    pub nft: Arc<Nft>,
}

/// Which Firecracker launches the helper performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchPolicy {
    /// The system install (`banger-helper serve`): only jailed launches.
    /// An unjailed Firecracker runs as root and its API can open any host
    /// file or block device, so it is never started for the daemon.
    JailedOnly,
    /// Development mode (`banger-helper oneshot` through `sudo -n`, or the
    /// helper in-process in a root `bangerd --dev`): jailed and unjailed.
    /// The weaker mode: see docs/privileges.md.
    Development,
}

/// Default directory of launch records.
pub const LAUNCH_RECORDS: &str = "/run/banger-helper/launched";

impl Host {
    /// The real host for the system install (`serve`): jailed launches only.
    pub fn system() -> Self {
        Host {
            launch_policy: LaunchPolicy::JailedOnly,
            ..Host::real()
        }
    }

    /// The real host in development mode ([`LaunchPolicy::Development`]):
    /// `oneshot` and an in-process helper. The system helper uses
    /// [`Host::system`].
    pub fn real() -> Self {
        let runner: Arc<dyn Runner> = Arc::new(Bounded {
            inner: HostRunner,
            default: CHILD_LIMITS,
        });
        Host {
            proc_root: PathBuf::from("/proc"),
            launched: banger_sys::pidfd::Registry::new(),
            launch_policy: LaunchPolicy::Development,
            sys_root: PathBuf::from("/sys"),
            launch_records: PathBuf::from(LAUNCH_RECORDS),
            dm: Arc::new(DmSetup::new(runner.clone())),
            loops: Arc::new(KernelLoops::new("/sys")),
            ext4: Arc::new(Ext4Tools::new(runner.clone())),
            dm_nodes: Some(banger_sys::dmnode::DmNodes::host()),
            net: Arc::new(RealNet::default()),
            nft: Arc::new(
                Nft::new(
                    runner.clone(),
                    TableName::new(TABLE).expect("the production table name is valid"),
                    "/proc",
                )
                .with_netlink(),
            ),
            runner,
        }
    }
}

impl Host {
    /// A host where every operation is a recording fake (tests replace the
    /// fields they assert on: `Host { dm, ..Host::recording() }`).
    pub fn recording() -> Self {
        let runner: Arc<dyn Runner> = Arc::new(banger_sys::runner::RecordingRunner::new());
        Host {
            proc_root: PathBuf::from("/proc"),
            launched: banger_sys::pidfd::Registry::new(),
            launch_policy: LaunchPolicy::JailedOnly,
            sys_root: PathBuf::from("/sys"),
            launch_records: PathBuf::from(LAUNCH_RECORDS),
            dm: Arc::new(banger_sys::dm::RecordingDm::new()),
            loops: Arc::new(banger_sys::loopdev::RecordingLoops::new()),
            ext4: Arc::new(Ext4Tools::new(runner.clone())),
            dm_nodes: None,
            net: Arc::new(banger_sys::net::RecordingNet::new()),
            nft: Arc::new(Nft::new(
                runner.clone(),
                TableName::new(TABLE).expect("the production table name is valid"),
                "/proc",
            )),
            runner,
        }
    }

    /// `<proc_root>/thread-self/mountinfo`: the mount table of the calling
    /// thread's mount namespace.
    pub fn mountinfo_path(&self) -> PathBuf {
        self.proc_root.join("thread-self/mountinfo")
    }
}
