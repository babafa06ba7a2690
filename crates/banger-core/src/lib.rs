//! banger's pure logic: decisions that do not touch the host, so they are
//! unit-testable anywhere (paths, allocation, state machine, renderings).

pub mod disk;
pub mod elf;
pub mod guest;
pub mod limits;
pub mod machine;
pub mod names;
pub mod net;
pub mod paths;
pub mod shellword;
pub mod size;
pub mod subids;
pub mod units;
pub mod vm;
