//! Persistent tap devices through `/dev/net/tun`: TUNSETIFF, TUNSETOWNER,
//! TUNSETGROUP, TUNSETPERSIST. Each ioctl wrapped once.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
/// Fail with EBUSY instead of attaching to an existing device.
const IFF_TUN_EXCL: libc::c_short = 0x8000u16 as libc::c_short;

/// `struct ifreq` as TUNSETIFF reads it: the name then the flags (the rest
/// of the 24-byte union is padding here).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Which step of making a tap failed.
#[derive(Debug)]
pub(crate) enum TunStep {
    Open,
    SetIff,
    SetOwner,
    SetGroup,
    SetPersist,
}

/// An open tun fd with a freshly created tap attached.
pub(crate) struct Tap(File);

impl Tap {
    /// Create the tap `name` (refusing an existing one: `IFF_TUN_EXCL`).
    pub(crate) fn create(dev: &Path, name: &str) -> Result<Tap, (TunStep, io::Error)> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(dev)
            .map_err(|e| (TunStep::Open, e))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL,
            _pad: [0; 22],
        };
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err((TunStep::SetIff, io::Error::from_raw_os_error(libc::EINVAL)));
        }
        req.name[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: `f` is an open /dev/net/tun fd and `req` is a live,
        // correctly sized and NUL-terminated ifreq for the whole call.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
        if r < 0 {
            return Err((TunStep::SetIff, io::Error::last_os_error()));
        }
        Ok(Tap(f))
    }

    fn int_ioctl(
        &self,
        op: libc::c_ulong,
        value: libc::c_ulong,
        step: TunStep,
    ) -> Result<(), (TunStep, io::Error)> {
        // SAFETY: these tun ioctls take their argument by value (no pointer
        // is dereferenced); the fd is open for the whole call.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), op, value) };
        if r < 0 {
            Err((step, io::Error::last_os_error()))
        } else {
            Ok(())
        }
    }

    /// Let `uid` (and members of `gid`) attach to the tap without root.
    pub(crate) fn set_owner(&self, uid: u32, gid: u32) -> Result<(), (TunStep, io::Error)> {
        self.int_ioctl(TUNSETOWNER, libc::c_ulong::from(uid), TunStep::SetOwner)?;
        self.int_ioctl(TUNSETGROUP, libc::c_ulong::from(gid), TunStep::SetGroup)
    }

    /// Keep the tap after this fd closes.
    pub(crate) fn set_persist(&self, on: bool) -> Result<(), (TunStep, io::Error)> {
        self.int_ioctl(TUNSETPERSIST, libc::c_ulong::from(on), TunStep::SetPersist)
    }
}
