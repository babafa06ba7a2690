//! Loop devices: attach an already-open backing file by fd (`LOOP_CONFIGURE`,
//! falling back to `LOOP_SET_FD` + `LOOP_SET_STATUS64`), detach, list from sysfs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_NAME_SIZE: usize = 64;
/// How long `detach` waits for other openers to let go of the device.
const DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A failed loop operation.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("open {0}")]
    Open(PathBuf, #[source] io::Error),
    #[error("find a free loop device")]
    GetFree(#[source] io::Error),
    #[error("attach {1} to {0}")]
    Attach(PathBuf, PathBuf, #[source] io::Error),
    #[error("set status of {0}")]
    SetStatus(PathBuf, #[source] io::Error),
    #[error("detach {0}")]
    Detach(PathBuf, #[source] io::Error),
    #[error("read {0}")]
    ReadSys(PathBuf, #[source] io::Error),
}

/// An attached loop device and the file behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopInfo {
    pub device: PathBuf,
    pub backing_file: PathBuf,
}

/// Loop-device operations.
pub trait LoopOps: Send + Sync {
    /// Attach the open `file` (whose path is `backing`, recorded in the
    /// device's status) to a free loop device; autoclear off.
    fn attach(&self, file: &File, backing: &Path, read_only: bool) -> Result<PathBuf, LoopError>;
    /// Detach `device` (`/dev/loopN`).
    fn detach(&self, device: &Path) -> Result<(), LoopError>;
    /// The backing file of `device`, or `None` when it is not attached.
    fn backing_file(&self, device: &Path) -> Result<Option<PathBuf>, LoopError>;
    /// Every attached loop device.
    fn list(&self) -> Result<Vec<LoopInfo>, LoopError>;
}

/// Only the loops whose backing file is under `dir` (banger's StateDir).
pub fn under(loops: Vec<LoopInfo>, dir: &Path) -> Vec<LoopInfo> {
    loops
        .into_iter()
        .filter(|l| l.backing_file.starts_with(dir))
        .collect()
}

/// The kernel's loop driver; `sys_root` is normally `/sys`.
pub struct KernelLoops {
    sys_root: PathBuf,
}

impl KernelLoops {
    pub fn new(sys_root: impl Into<PathBuf>) -> Self {
        KernelLoops {
            sys_root: sys_root.into(),
        }
    }
}

/// `ioctl(fd, req, arg)`.
fn ioctl(fd: RawFd, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: every caller passes a valid open fd and either an integer
    // argument or a pointer to a live `#[repr(C)]` struct of the layout the
    // kernel expects for `req`.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn info_for(backing: &Path, read_only: bool) -> LoopInfo64 {
    let mut name = [0u8; LO_NAME_SIZE];
    let bytes = backing.as_os_str().as_encoded_bytes();
    let n = bytes.len().min(LO_NAME_SIZE - 1);
    name[..n].copy_from_slice(&bytes[..n]);
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: if read_only { LO_FLAGS_READ_ONLY } else { 0 },
        lo_file_name: name,
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

fn open_dev(path: &Path) -> Result<File, LoopError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| LoopError::Open(path.into(), e))
}

impl LoopOps for KernelLoops {
    fn attach(&self, file: &File, backing: &Path, read_only: bool) -> Result<PathBuf, LoopError> {
        let ctl_path = Path::new("/dev/loop-control");
        let ctl = open_dev(ctl_path)?;
        let mut last = None;
        // Another process may take the free device between GET_FREE and
        // CONFIGURE (EBUSY): try again a few times.
        for _ in 0..8 {
            let n = ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE, 0).map_err(LoopError::GetFree)?;
            let dev_path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = open_dev(&dev_path)?;
            let info = info_for(backing, read_only);
            let cfg = LoopConfig {
                fd: file.as_raw_fd() as u32,
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            match ioctl(
                dev.as_raw_fd(),
                LOOP_CONFIGURE,
                &cfg as *const LoopConfig as libc::c_ulong,
            ) {
                Ok(_) => return Ok(dev_path),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTTY)) => {
                    // Kernel before 5.8: the two-step attach.
                    match ioctl(
                        dev.as_raw_fd(),
                        LOOP_SET_FD,
                        file.as_raw_fd() as libc::c_ulong,
                    ) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                            last = Some(e);
                            continue;
                        }
                        Err(e) => return Err(LoopError::Attach(dev_path, backing.into(), e)),
                    }
                    if let Err(e) = ioctl(
                        dev.as_raw_fd(),
                        LOOP_SET_STATUS64,
                        &info as *const LoopInfo64 as libc::c_ulong,
                    ) {
                        let _ = ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0);
                        return Err(LoopError::SetStatus(dev_path, e));
                    }
                    return Ok(dev_path);
                }
                Err(e) => return Err(LoopError::Attach(dev_path, backing.into(), e)),
            }
        }
        Err(LoopError::Attach(
            "/dev/loop?".into(),
            backing.into(),
            last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)),
        ))
    }

    fn detach(&self, device: &Path) -> Result<(), LoopError> {
        let dev = open_dev(device)?;
        ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0).map_err(|e| LoopError::Detach(device.into(), e))?;
        drop(dev);
        // While anyone else holds the device open (udev probing it, or a
        // child forked by another thread between fork and exec), the kernel
        // only marks it autoclear and detaches on the last close. Wait for
        // that, so a caller that gets Ok finds the device free.
        let deadline = std::time::Instant::now() + DETACH_WAIT;
        while self.backing_file(device)?.is_some() {
            if std::time::Instant::now() >= deadline {
                tracing::warn!(
                    device = %device.display(),
                    "loop device still open elsewhere; the kernel detaches it on its last close"
                );
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }

    fn backing_file(&self, device: &Path) -> Result<Option<PathBuf>, LoopError> {
        let Some(name) = device.file_name() else {
            return Ok(None);
        };
        let p = self
            .sys_root
            .join("block")
            .join(name)
            .join("loop/backing_file");
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(Some(PathBuf::from(s.trim_end_matches('\n')))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LoopError::ReadSys(p, e)),
        }
    }

    fn list(&self) -> Result<Vec<LoopInfo>, LoopError> {
        let dir = self.sys_root.join("block");
        let rd = std::fs::read_dir(&dir).map_err(|e| LoopError::ReadSys(dir.clone(), e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| LoopError::ReadSys(dir.clone(), e))?;
            let name = ent.file_name();
            let Some(s) = name.to_str() else { continue };
            if !s.starts_with("loop") || !s[4..].bytes().all(|b| b.is_ascii_digit()) || s.len() == 4
            {
                continue;
            }
            let device = PathBuf::from("/dev").join(s);
            if let Some(backing_file) = self.backing_file(&device)? {
                out.push(LoopInfo {
                    device,
                    backing_file,
                });
            }
        }
        out.sort_by_key(|l| l.device.to_str().and_then(|s| s[9..].parse::<u32>().ok()));
        Ok(out)
    }
}

/// Detaches a loop device when dropped (tests and undo paths).
pub struct DetachGuard<'a>(pub &'a dyn LoopOps, pub PathBuf);

impl Drop for DetachGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.detach(&self.1);
    }
}

/// One request the fake saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopRequest {
    Attach { backing: PathBuf, read_only: bool },
    Detach { device: PathBuf },
}

/// A recording fake: hands out `/dev/loop{100+n}`.
#[derive(Debug, Default)]
pub struct RecordingLoops {
    requests: Mutex<Vec<LoopRequest>>,
    attached: Mutex<Vec<LoopInfo>>,
    next: Mutex<u32>,
    fail_attach_after: Mutex<Option<usize>>,
}

impl RecordingLoops {
    pub fn new() -> Self {
        Self::default()
    }
    /// Fail every attach once `n` attaches have succeeded.
    pub fn fail_attach_after(&self, n: usize) {
        *self.fail_attach_after.lock().unwrap() = Some(n);
    }
    /// Pretend a loop is attached (e.g. a host's own loop).
    pub fn add(&self, device: &str, backing: &str) {
        self.attached.lock().unwrap().push(LoopInfo {
            device: device.into(),
            backing_file: backing.into(),
        });
    }
    pub fn requests(&self) -> Vec<LoopRequest> {
        self.requests.lock().unwrap().clone()
    }
    pub fn attached(&self) -> Vec<LoopInfo> {
        self.attached.lock().unwrap().clone()
    }
}

impl LoopOps for RecordingLoops {
    fn attach(&self, _file: &File, backing: &Path, read_only: bool) -> Result<PathBuf, LoopError> {
        self.requests.lock().unwrap().push(LoopRequest::Attach {
            backing: backing.into(),
            read_only,
        });
        let mut attached = self.attached.lock().unwrap();
        let mut next = self.next.lock().unwrap();
        if self
            .fail_attach_after
            .lock()
            .unwrap()
            .is_some_and(|n| (*next as usize) >= n)
        {
            return Err(LoopError::Attach(
                "/dev/loop?".into(),
                backing.into(),
                io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        let device = PathBuf::from(format!("/dev/loop{}", 100 + *next));
        *next += 1;
        attached.push(LoopInfo {
            device: device.clone(),
            backing_file: backing.into(),
        });
        Ok(device)
    }

    fn detach(&self, device: &Path) -> Result<(), LoopError> {
        self.requests.lock().unwrap().push(LoopRequest::Detach {
            device: device.into(),
        });
        let mut attached = self.attached.lock().unwrap();
        let before = attached.len();
        attached.retain(|l| l.device != device);
        if attached.len() == before {
            return Err(LoopError::Detach(
                device.into(),
                io::Error::from_raw_os_error(libc::ENXIO),
            ));
        }
        Ok(())
    }

    fn backing_file(&self, device: &Path) -> Result<Option<PathBuf>, LoopError> {
        Ok(self
            .attached
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.device == device)
            .map(|l| l.backing_file.clone()))
    }

    fn list(&self) -> Result<Vec<LoopInfo>, LoopError> {
        Ok(self.attached())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn list_reads_a_sysfs_fixture() {
        let tmp = tempfile::Builder::new()
            .prefix("bgtest-")
            .tempdir()
            .unwrap();
        let sys = tmp.path();
        for (name, backing) in [
            ("loop0", Some("/var/lib/banger/vms/a/cow")),
            ("loop12", Some("/snap/core.squashfs")),
            ("loop3", None),
            ("vda", None),
        ] {
            let d = sys.join("block").join(name);
            std::fs::create_dir_all(&d).unwrap();
            if let Some(b) = backing {
                std::fs::create_dir_all(d.join("loop")).unwrap();
                std::fs::write(d.join("loop/backing_file"), format!("{b}\n")).unwrap();
            }
        }
        let k = KernelLoops::new(sys);
        let all = k.list().unwrap();
        assert_eq!(
            all,
            vec![
                LoopInfo {
                    device: "/dev/loop0".into(),
                    backing_file: "/var/lib/banger/vms/a/cow".into()
                },
                LoopInfo {
                    device: "/dev/loop12".into(),
                    backing_file: "/snap/core.squashfs".into()
                },
            ]
        );
        let mine = under(all, Path::new("/var/lib/banger"));
        assert_eq!(mine.len(), 1);
        assert_eq!(k.backing_file(Path::new("/dev/loop3")).unwrap(), None);
    }

    /// A `bgtest-` scratch dir when running as root; else a skip note.
    fn root_tmp() -> Option<tempfile::TempDir> {
        if !banger_testkit::require_root("root_tmp") {
            return None;
        }
        Some(
            tempfile::Builder::new()
                .prefix("bgtest-")
                .tempdir()
                .unwrap(),
        )
    }

    #[test]
    fn root_attach_read_only_and_detach_for_real() {
        let Some(tmp) = root_tmp() else { return };
        let base = tmp.path().join("bgtest-base.img");
        std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
        let loops = KernelLoops::new("/sys");
        let f = File::open(&base).unwrap();
        let dev = loops.attach(&f, &base, true).unwrap();
        let guard = DetachGuard(&loops, dev.clone());
        assert_eq!(loops.backing_file(&dev).unwrap(), Some(base.clone()));
        assert!(loops
            .list()
            .unwrap()
            .iter()
            .any(|l| l.device == dev && l.backing_file == base));
        let name = dev.file_name().unwrap().to_str().unwrap();
        let ro = std::fs::read_to_string(format!("/sys/block/{name}/ro")).unwrap();
        assert_eq!(ro.trim(), "1");
        let autoclear =
            std::fs::read_to_string(format!("/sys/block/{name}/loop/autoclear")).unwrap();
        assert_eq!(autoclear.trim(), "0");
        // Writing through the read-only loop fails; the base is unchanged.
        let w = OpenOptions::new().write(true).open(&dev);
        assert!(w.is_err() || std::io::Write::write_all(&mut w.unwrap(), b"xx").is_err());
        drop(f);
        // Still attached after the helper's fd is closed (autoclear off).
        assert_eq!(loops.backing_file(&dev).unwrap(), Some(base.clone()));
        drop(guard);
        assert_eq!(loops.backing_file(&dev).unwrap(), None);
        assert_eq!(std::fs::read(&base).unwrap(), vec![7u8; 1 << 20]);
    }

    #[test]
    fn root_detach_waits_for_other_openers() {
        let Some(tmp) = root_tmp() else { return };
        let base = tmp.path().join("bgtest-held.img");
        std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        let loops = std::sync::Arc::new(KernelLoops::new("/sys"));
        let dev = loops
            .attach(&File::open(&base).unwrap(), &base, true)
            .unwrap();
        let guard = DetachGuard(&*loops, dev.clone());
        // Another opener, as udev or a forked child would be.
        let held = File::open(&dev).unwrap();
        let (l2, d2) = (loops.clone(), dev.clone());
        let detacher = std::thread::spawn(move || l2.detach(&d2));
        let name = dev.file_name().unwrap().to_str().unwrap().to_string();
        let autoclear = || {
            std::fs::read_to_string(format!("/sys/block/{name}/loop/autoclear"))
                .map(|s| s.trim() == "1")
                .unwrap_or(false)
        };
        let start = std::time::Instant::now();
        while !autoclear() {
            assert!(start.elapsed() < DETACH_WAIT, "LOOP_CLR_FD never ran");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // CLR_FD has run, but the device is still held: detach must not have
        // returned yet. Give a wrong implementation time to return.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !detacher.is_finished(),
            "detach returned while still attached"
        );
        assert_eq!(loops.backing_file(&dev).unwrap(), Some(base.clone()));
        drop(held);
        detacher.join().unwrap().unwrap();
        assert_eq!(loops.backing_file(&dev).unwrap(), None);
        std::mem::forget(guard);
    }

    #[test]
    fn root_attach_read_write_carries_data() {
        let Some(tmp) = root_tmp() else { return };
        let cow = tmp.path().join("bgtest-cow.img");
        File::create(&cow).unwrap().set_len(1 << 20).unwrap();
        let loops = KernelLoops::new("/sys");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cow)
            .unwrap();
        let dev = loops.attach(&f, &cow, false).unwrap();
        let _g = DetachGuard(&loops, dev.clone());
        let mut d = OpenOptions::new().write(true).open(&dev).unwrap();
        std::io::Write::write_all(&mut d, &[9u8; 4096]).unwrap();
        d.sync_all().unwrap();
        drop(d);
        assert_eq!(&std::fs::read(&cow).unwrap()[..4096], &[9u8; 4096][..]);
    }
}
