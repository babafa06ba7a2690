//! The device node of a banger dm device, opened and checked on the fd
//! (a root-owned block device that sysfs says is that dm device) before a
//! tool is handed it as `/proc/self/fd/N`.

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// A dm node that could not be opened or is not the device it claims.
#[derive(Debug, thiserror::Error)]
pub enum DmNodeError {
    #[error("open {0}")]
    Open(PathBuf, #[source] io::Error),
    #[error("stat {0}")]
    Stat(PathBuf, #[source] io::Error),
    #[error("{0} is not a block device")]
    NotBlock(PathBuf),
    #[error("{0} is owned by uid {1}, not root")]
    NotRoot(PathBuf, u32),
    #[error("{path} is device {major}:{minor}, which sysfs does not name {name}")]
    Mismatch {
        path: PathBuf,
        name: String,
        major: u32,
        minor: u32,
    },
}

/// Where the nodes and their sysfs entries live (`/dev`, `/sys`; fixtures in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmNodes {
    pub dev_root: PathBuf,
    pub sys_root: PathBuf,
}

impl DmNodes {
    /// The host's `/dev` and `/sys`.
    pub fn host() -> Self {
        DmNodes {
            dev_root: "/dev".into(),
            sys_root: "/sys".into(),
        }
    }

    /// Open `<dev_root>/mapper/<name>` as `O_PATH`, resolved beneath
    /// `dev_root` (udev's relative link to `../dm-N` may be followed; nothing
    /// may leave `dev_root`, no magic link, no mount crossed), then check on
    /// the fd: a block device, owned by root, whose
    /// `<sys_root>/dev/block/<major>:<minor>/dm/name` is `name`.
    /// `name` was validated by the caller (`fc-rootfs-*`).
    pub fn open(&self, name: &str) -> Result<OwnedFd, DmNodeError> {
        let path = self.dev_root.join("mapper").join(name);
        let anchor = rustix::fs::open(
            &self.dev_root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| DmNodeError::Open(self.dev_root.clone(), e.into()))?;
        let fd = rustix::fs::openat2(
            &anchor,
            Path::new("mapper").join(name),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
        )
        .map_err(|e| DmNodeError::Open(path.clone(), e.into()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| DmNodeError::Stat(path.clone(), e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::BlockDevice {
            return Err(DmNodeError::NotBlock(path));
        }
        if st.st_uid != 0 {
            return Err(DmNodeError::NotRoot(path, st.st_uid));
        }
        let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
        let sys = self
            .sys_root
            .join(format!("dev/block/{major}:{minor}/dm/name"));
        match std::fs::read_to_string(sys) {
            Ok(n) if n.trim_end_matches('\n') == name => Ok(fd),
            _ => Err(DmNodeError::Mismatch {
                path,
                name: name.into(),
                major,
                minor,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_only_a_root_block_node_that_sysfs_names_passes() {
        if !banger_testkit::require_root("root_only_a_root_block_node_that_sysfs_names_passes") {
            return;
        }
        let d = tempfile::Builder::new()
            .prefix("bgtest-")
            .tempdir()
            .unwrap();
        let (dev, sys) = (d.path().join("dev"), d.path().join("sys"));
        std::fs::create_dir_all(dev.join("mapper")).unwrap();
        let mk = |p: &Path, ft: FileType, rdev: u64| {
            rustix::fs::mknodat(rustix::fs::CWD, p, ft, Mode::from_raw_mode(0o600), rdev).unwrap();
        };
        // udev's layout: mapper/<name> -> ../dm-7, a block node 253:7.
        mk(
            &dev.join("dm-7"),
            FileType::BlockDevice,
            rustix::fs::makedev(253, 7),
        );
        std::os::unix::fs::symlink("../dm-7", dev.join("mapper/fc-rootfs-a")).unwrap();
        std::fs::create_dir_all(sys.join("dev/block/253:7/dm")).unwrap();
        std::fs::write(sys.join("dev/block/253:7/dm/name"), "fc-rootfs-a\n").unwrap();
        let nodes = DmNodes {
            dev_root: dev.clone(),
            sys_root: sys.clone(),
        };
        nodes.open("fc-rootfs-a").unwrap();
        // sysfs names another device.
        std::fs::write(sys.join("dev/block/253:7/dm/name"), "vg0-root\n").unwrap();
        assert!(matches!(
            nodes.open("fc-rootfs-a"),
            Err(DmNodeError::Mismatch { .. })
        ));
        // Not a block device; a link out of dev_root; a non-root node.
        mk(&dev.join("mapper/fc-rootfs-f"), FileType::Fifo, 0);
        assert!(matches!(
            nodes.open("fc-rootfs-f"),
            Err(DmNodeError::NotBlock(_))
        ));
        std::os::unix::fs::symlink("/dev/null", dev.join("mapper/fc-rootfs-o")).unwrap();
        assert!(matches!(
            nodes.open("fc-rootfs-o"),
            Err(DmNodeError::Open(..))
        ));
        mk(
            &dev.join("mapper/fc-rootfs-u"),
            FileType::BlockDevice,
            rustix::fs::makedev(253, 8),
        );
        std::os::unix::fs::chown(dev.join("mapper/fc-rootfs-u"), Some(7), None).unwrap();
        assert!(matches!(
            nodes.open("fc-rootfs-u"),
            Err(DmNodeError::NotRoot(_, 7))
        ));
        assert!(matches!(
            nodes.open("fc-rootfs-missing"),
            Err(DmNodeError::Open(..))
        ));
    }
}
