//! Whether a tap is there for the VMM: under a fixture `/sys`, or as
//! Firecracker opens it (`TUNSETIFF`) inside a jailer's chroot.

use std::fs::OpenOptions;
use std::path::Path;

/// Whether the tap `tap` is there for this process: `<sys_root>/class/net/<tap>`
/// exists, or — when the real `/sys` is absent, as inside a jailer's chroot —
/// Firecracker's own test succeeds: `TUNSETIFF` on `/dev/net/tun` attaches
/// to it (so a tap owned by another uid fails, as it does for Firecracker).
/// A fixture `sys_root` never falls back.
pub fn exists(sys_root: &Path, tap: &str) -> bool {
    if sys_root == Path::new("/sys") && !sys_root.exists() {
        return attach_tap(tap).is_ok();
    }
    sys_root.join("class/net").join(tap).exists()
}

/// `ioctl(TUNSETIFF)` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, as
/// Firecracker opens its taps; the fd is closed again (a persistent tap
/// stays).
fn attach_tap(tap: &str) -> std::io::Result<()> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_VNET_HDR: libc::c_short = 0x4000;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    if tap.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..tap.len()].copy_from_slice(tap.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq` (40 bytes, the
    // layout of `IfReq`) through the pointer, which outlives the call; the
    // fd is the open tun device.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&tun),
            TUNSETIFF,
            &mut req as *mut IfReq,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixture_sys_root_is_looked_up_and_never_falls_back() {
        let d = std::env::temp_dir().join(format!("bgtest-fcd-tap-{}", std::process::id()));
        std::fs::create_dir_all(d.join("class/net/banger-t1")).unwrap();
        assert!(exists(&d, "banger-t1"));
        assert!(!exists(&d, "banger-t2"));
        // No class/net at all: still a fixture, so absent (no TUNSETIFF).
        assert!(!exists(&d.join("nothing"), "banger-t1"));
        std::fs::remove_dir_all(&d).unwrap();
        assert!(attach_tap(&"x".repeat(libc::IFNAMSIZ)).is_err());
    }
}
