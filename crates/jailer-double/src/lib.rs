//! The jailer double: argv parsing and the jail's plan (pure), and the host
//! steps that build the jail and exec the VMM (`run`), held to what the
//! real jailer v1.16.1 was observed to do (docs in
//! `shared/firecracker-api/jailer-v1.16.1.md`):
//! - `<base>/<exec name>/<id>/root` (the base must exist) created with the caller's umask, the
//!   exec file copied in and handed to `--uid:--gid`, `firecracker.pid`;
//! - `--cgroup <file>=<value>` written under the per-VM cgroup
//!   `<controller mount>/<parent cgroup, default exec name>/<id>` found from
//!   `/proc/mounts` (v1: one mount per controller; v2: the unified one),
//!   the process moved in; no `--cgroup`: it stays in the caller's cgroups;
//! - a new mount namespace, `pivot_root` into the chroot; `/`, `/dev`,
//!   `/dev/net` and `/run` made 0700 and handed to the jail ids; `/dev/kvm`,
//!   `/dev/net/tun`, `/dev/userfaultfd`, `/dev/urandom` by `mknod` (0600,
//!   jail-owned) — as the real jailer's source does;
//! - setgid/setuid to the jail ids (no capability left), exec of
//!   `/<exec name> --id <id> --start-time-us <t> --start-time-cpu-us <t>
//!   --parent-cpu-time-us <t> <args after -->` with an empty environment; a
//!   dynamically linked exec file fails here with "No such file or
//!   directory" (no loader inside);
//! - every error: its message, then `Error: <Debug form>`, on stderr; exit 1.

pub mod args;
pub mod run;

pub use args::{parse, Args, ArgsError};
