//! Which disk driver is in force and why (for `banger doctor`): the
//! dm-snapshot driver where the kernel has device-mapper, else the copy
//! fallback (reflink where the StateDir filesystem supports it).

use std::path::Path;

pub use banger_core::disk::Driver;

/// The choice and its reason, one line each for `banger doctor`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Choice {
    pub driver: Driver,
    pub reason: String,
    /// For [`Driver::Copy`]: whether StateDir's filesystem shares extents.
    pub reflink: Option<bool>,
}

/// Decide from `proc_root` (normally `/proc`: `misc` lists the
/// device-mapper driver) and a probe of `state_dir`.
pub fn select(proc_root: &Path, state_dir: &Path) -> Choice {
    let misc = proc_root.join("misc");
    if banger_sys::dm::kernel_has_dm(proc_root) {
        return Choice {
            driver: Driver::DmSnapshot,
            reason: format!(
                "{} lists device-mapper: the kernel has device-mapper",
                misc.display()
            ),
            reflink: None,
        };
    }
    let reflink = reflink_supported(state_dir);
    let fs = match reflink {
        Some(true) => "the StateDir filesystem shares extents",
        Some(false) => "the StateDir filesystem has no reflink",
        None => "the StateDir filesystem could not be probed",
    };
    Choice {
        driver: Driver::Copy,
        reason: format!("no device-mapper in {}; {fs}", misc.display()),
        reflink,
    }
}

/// Probe `FICLONE` with two small temp files in `dir`.
pub fn reflink_supported(dir: &Path) -> Option<bool> {
    let tmp = tempfile::Builder::new()
        .prefix(".banger-reflink-probe-")
        .tempdir_in(dir)
        .ok()?;
    let a = tmp.path().join("a");
    std::fs::write(&a, [0u8; 4096]).ok()?;
    let src = std::fs::File::open(&a).ok()?;
    let dst = std::fs::File::create(tmp.path().join("b")).ok()?;
    Some(rustix::fs::ioctl_ficlone(&dst, &src).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dm_when_the_kernel_lists_it_else_copy_with_a_reason() {
        let tmp = banger_testkit::tmp();
        let proc = tmp.path().join("proc");
        std::fs::create_dir_all(&proc).unwrap();
        std::fs::write(proc.join("misc"), "200 tun\n 62 ptp0\n").unwrap();
        let c = select(&proc, tmp.path());
        assert_eq!(c.driver, Driver::Copy);
        assert!(c.reason.contains("no device-mapper"), "{}", c.reason);
        // This machine's /tmp is ext4: no reflink.
        assert!(c.reflink.is_some());
        std::fs::write(proc.join("misc"), "200 tun\n236 device-mapper\n").unwrap();
        let c = select(&proc, tmp.path());
        assert_eq!(c.driver, Driver::DmSnapshot);
        assert!(c.reason.contains("has device-mapper"));
        // The real host, whatever it has, gives an answer with a reason.
        assert!(!select(Path::new("/proc"), tmp.path()).reason.is_empty());
    }
}
