//! Host operations for banger: typed wrappers over syscalls and tools.
//!
//! Each operation that touches the host sits behind a trait with a real
//! implementation and a recording fake, so the logic that decides *what*
//! to do is testable without root. Kernel text formats are pure
//! `FromStr`/`Display` types. Every raw syscall is wrapped once, with a
//! `// SAFETY:` comment where `unsafe` is needed.

pub mod beneath;
pub mod child;
pub mod dm;
pub mod dmnode;
pub mod exec;
pub mod ext4;
pub mod fsops;
pub mod jail;
pub mod loopdev;
pub mod mountinfo;
pub mod mounts;
pub mod net;
pub mod netns;
pub mod nft;
pub mod peer;
pub mod pidfd;
pub mod procinfo;
pub mod recording;
pub mod resolved;
pub mod runner;
pub mod service;
