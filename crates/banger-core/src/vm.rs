//! The VM state machine: which lifecycle step may follow which, and what the
//! daemon does with a recorded VM at start-up (reconcile). Pure: the daemon
//! persists each transition before it acts on the host.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a VM is in its life (the `vms.state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Row, address and disk exist; never started.
    Created,
    /// The VMM is being launched and configured; not yet reachable.
    Starting,
    /// The guest answered on SSH with its pinned host key.
    Running,
    /// Shutdown requested; the VMM process may still run.
    Stopping,
    /// No VMM process; the disk is kept.
    Stopped,
    /// A host step failed or the disk vanished; only `rm` helps.
    Broken,
    /// Removal in progress; the row goes when it finishes.
    Deleting,
}

/// Every state, in lifecycle order.
pub const ALL_STATES: [VmState; 7] = [
    VmState::Created,
    VmState::Starting,
    VmState::Running,
    VmState::Stopping,
    VmState::Stopped,
    VmState::Broken,
    VmState::Deleting,
];

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Broken => "broken",
            VmState::Deleting => "deleting",
        }
    }

    /// A VMM process may exist in this state.
    pub fn may_have_process(self) -> bool {
        matches!(
            self,
            VmState::Starting | VmState::Running | VmState::Stopping | VmState::Deleting
        )
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`ALL_STATES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown VM state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for VmState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATES
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// What happened to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// `banger vm start` (also the tail of `vm create` unless `--no-start`).
    Start,
    /// The guest is ready (SSH banner with the pinned key).
    Ready,
    /// `banger vm stop`.
    Stop,
    /// The VMM process is gone (guest powered off, killed, or crashed).
    Exited,
    /// A host step failed (launch, disk, network), or the disk vanished.
    Failed,
    /// `banger vm rm`.
    Delete,
}

/// A transition the machine does not allow, worded for the CLI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("is already running")]
    AlreadyRunning,
    #[error("is {0}; wait for it to finish")]
    Busy(VmState),
    #[error("is broken; remove it with `banger vm rm` and create it again")]
    Broken,
    #[error("is being deleted")]
    Deleting,
    #[error("cannot go from {from} on {event:?}")]
    Invalid { from: VmState, event: Event },
}

/// The outcome of an allowed event: the new state, and whether anything
/// changed (an unchanged state means there is nothing to do on the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: VmState,
    pub to: VmState,
}

impl Transition {
    pub fn changed(&self) -> bool {
        self.from != self.to
    }
}

/// Apply `event` to a VM in state `from`.
pub fn next(from: VmState, event: Event) -> Result<Transition, Refused> {
    use Event as E;
    use VmState as S;
    let to = match (from, event) {
        (S::Deleting, E::Delete | E::Exited | E::Failed) => S::Deleting,
        (S::Deleting, _) => return Err(Refused::Deleting),
        (_, E::Delete) => S::Deleting,

        (S::Created | S::Stopped, E::Start) => S::Starting,
        (S::Running, E::Start) => return Err(Refused::AlreadyRunning),
        (S::Starting | S::Stopping, E::Start) => return Err(Refused::Busy(from)),
        (S::Broken, E::Start) => return Err(Refused::Broken),

        (S::Starting, E::Ready) => S::Running,

        (S::Starting | S::Running, E::Stop) => S::Stopping,
        // Stopping what is not running is done already.
        (S::Stopping | S::Stopped | S::Created, E::Stop) => from,
        (S::Broken, E::Stop) => S::Broken,

        (S::Starting | S::Running | S::Stopping, E::Exited) => S::Stopped,
        (S::Stopped | S::Created, E::Exited) => from,

        (_, E::Failed) => S::Broken,

        (from, event) => return Err(Refused::Invalid { from, event }),
    };
    Ok(Transition { from, to })
}

/// What the daemon finds for a recorded VM when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The recorded pid is a live VMM process of this VM (pidfd + cmdline).
    pub process_alive: bool,
    /// The VM's disk (snapshot or copy) exists.
    pub disk_present: bool,
}

/// What reconcile does on the host for one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Nothing: the record matches the host.
    Nothing,
    /// Kill the VMM process (a start or stop the daemon did not finish).
    KillProcess,
    /// Finish the removal the daemon began (then drop the row).
    FinishDelete,
}

/// The state a recorded VM is in after a daemon restart, and the repair
/// that gets it there. A half-done start is rolled back rather than
/// resumed: its readiness was never observed.
pub fn reconcile(recorded: VmState, found: Found) -> (VmState, Repair) {
    use VmState as S;
    let kill_if_alive = if found.process_alive {
        Repair::KillProcess
    } else {
        Repair::Nothing
    };
    match recorded {
        S::Deleting => (S::Deleting, Repair::FinishDelete),
        _ if !found.disk_present => (S::Broken, kill_if_alive),
        S::Running if found.process_alive => (S::Running, Repair::Nothing),
        S::Starting | S::Stopping | S::Running => (S::Stopped, kill_if_alive),
        S::Created | S::Stopped | S::Broken => (recorded, kill_if_alive),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use VmState as S;

    const ALL_EVENTS: [Event; 6] = [E::Start, E::Ready, E::Stop, E::Exited, E::Failed, E::Delete];

    #[test]
    fn names_round_trip_and_match_serde() {
        for s in ALL_STATES {
            assert_eq!(s.as_str().parse::<VmState>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(
            "Running".parse::<VmState>(),
            Err(UnknownState("Running".into()))
        );
        assert!("".parse::<VmState>().is_err());
    }

    #[test]
    fn the_happy_path() {
        let mut s = S::Created;
        for (e, want) in [
            (E::Start, S::Starting),
            (E::Ready, S::Running),
            (E::Stop, S::Stopping),
            (E::Exited, S::Stopped),
            (E::Start, S::Starting),
            (E::Ready, S::Running),
            (E::Delete, S::Deleting),
        ] {
            let t = next(s, e).unwrap();
            assert_eq!(t.to, want, "{s} on {e:?}");
            assert!(t.changed());
            s = t.to;
        }
    }

    #[test]
    fn refusals_are_worded_for_the_cli() {
        assert_eq!(next(S::Running, E::Start), Err(Refused::AlreadyRunning));
        assert_eq!(
            next(S::Starting, E::Start).unwrap_err().to_string(),
            "is starting; wait for it to finish"
        );
        assert!(next(S::Broken, E::Start)
            .unwrap_err()
            .to_string()
            .contains("banger vm rm"));
        assert_eq!(next(S::Deleting, E::Start), Err(Refused::Deleting));
        assert_eq!(
            next(S::Created, E::Ready),
            Err(Refused::Invalid {
                from: S::Created,
                event: E::Ready
            })
        );
        assert!(next(S::Running, E::Ready).is_err());
    }

    #[test]
    fn stop_and_delete_are_idempotent() {
        for s in [S::Stopped, S::Created, S::Stopping] {
            assert!(!next(s, E::Stop).unwrap().changed(), "{s}");
        }
        assert!(!next(S::Deleting, E::Delete).unwrap().changed());
    }

    #[test]
    fn every_state_can_be_deleted_and_deleting_only_ends() {
        for s in ALL_STATES {
            assert_eq!(next(s, E::Delete).unwrap().to, S::Deleting);
        }
        // Nothing leads back out of Deleting.
        for e in ALL_EVENTS {
            if let Ok(t) = next(S::Deleting, e) {
                assert_eq!(t.to, S::Deleting, "{e:?}");
            }
        }
    }

    #[test]
    fn only_start_leads_to_a_process_and_only_ready_to_running() {
        for s in ALL_STATES {
            for e in ALL_EVENTS {
                let Ok(t) = next(s, e) else { continue };
                if t.to == S::Running && t.changed() {
                    assert_eq!((s, e), (S::Starting, E::Ready));
                }
                if t.to == S::Starting && t.changed() {
                    assert_eq!(e, E::Start);
                    assert!(matches!(s, S::Created | S::Stopped));
                }
                if t.to == S::Broken && t.changed() {
                    assert_eq!(e, E::Failed);
                }
            }
        }
    }

    #[test]
    fn reconcile_rolls_back_unfinished_work() {
        use Repair::{FinishDelete, KillProcess, Nothing};
        // (recorded, process alive, disk present) -> (state, repair)
        let table = [
            (S::Running, true, true, S::Running, Nothing),
            (S::Running, false, true, S::Stopped, Nothing),
            (S::Starting, true, true, S::Stopped, KillProcess),
            (S::Stopping, true, true, S::Stopped, KillProcess),
            (S::Running, true, false, S::Broken, KillProcess),
            (S::Stopped, false, false, S::Broken, Nothing),
            (S::Deleting, false, false, S::Deleting, FinishDelete),
            // A stray process of a stopped VM is killed; its state stays.
            (S::Stopped, true, true, S::Stopped, KillProcess),
        ];
        for (recorded, alive, disk, state, repair) in table {
            let found = Found {
                process_alive: alive,
                disk_present: disk,
            };
            assert_eq!(
                reconcile(recorded, found),
                (state, repair),
                "{recorded} {found:?}"
            );
        }
    }

    #[test]
    fn after_reconcile_no_process_outlives_a_state_that_cannot_have_one() {
        for s in ALL_STATES {
            for alive in [false, true] {
                for disk in [false, true] {
                    let (to, repair) = reconcile(
                        s,
                        Found {
                            process_alive: alive,
                            disk_present: disk,
                        },
                    );
                    let alive_after = alive && repair == Repair::Nothing;
                    if alive_after {
                        assert!(to.may_have_process(), "{s} -> {to} keeps a process");
                    }
                    if to == S::Running {
                        assert!(alive_after, "running without a process");
                    }
                }
            }
        }
    }
}
