//! Device-mapper snapshots: the table text, banger's names/UUIDs, and `DmOps`
//! (real via `dmsetup` argv, recording fake).

use crate::runner::{Cmd, Runner};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// Every banger dm device carries this UUID prefix; removal checks it so a
/// host LVM (`LVM-…`) or LUKS (`CRYPT-…`) volume can never be removed.
pub const UUID_PREFIX: &str = "BANGER-";

/// Whether the kernel has the device-mapper driver: `device-mapper` in
/// `<proc_root>/misc`. (`/dev/mapper/control` is no evidence: libdevmapper
/// creates that node whenever `dmsetup` runs, driver or not.)
pub fn kernel_has_dm(proc_root: &std::path::Path) -> bool {
    std::fs::read_to_string(proc_root.join("misc"))
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().nth(1) == Some("device-mapper"))
        })
        .unwrap_or(false)
}

/// The UUID banger gives the dm device `name`.
pub fn uuid_for(name: &str) -> String {
    format!("{UUID_PREFIX}{name}")
}

/// `0 <sectors> snapshot <origin> <cow> P <chunk>`: a persistent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTable {
    /// Length in 512-byte sectors (the origin's size).
    pub sectors: u64,
    /// Origin device, e.g. `/dev/loop3` or `7:3`.
    pub origin: String,
    /// COW device.
    pub cow: String,
    /// Chunk size in sectors.
    pub chunk_sectors: u32,
}

impl SnapshotTable {
    /// banger's snapshot: persistent, 4 KiB chunks.
    pub fn new(sectors: u64, origin: impl Into<String>, cow: impl Into<String>) -> Self {
        SnapshotTable {
            sectors,
            origin: origin.into(),
            cow: cow.into(),
            chunk_sectors: 8,
        }
    }
}

impl fmt::Display for SnapshotTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "0 {} snapshot {} {} P {}",
            self.sectors, self.origin, self.cow, self.chunk_sectors
        )
    }
}

/// Why a table line did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a banger snapshot table: {0}")]
pub struct ParseTableError(pub String);

impl FromStr for SnapshotTable {
    type Err = ParseTableError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTableError(s.to_string());
        let f: Vec<&str> = s.split_ascii_whitespace().collect();
        let [start, len, target, origin, cow, persist, chunk] = f.as_slice() else {
            return Err(err());
        };
        if *start != "0" || *target != "snapshot" || *persist != "P" {
            return Err(err());
        }
        let sectors: u64 = len.parse().map_err(|_| err())?;
        let chunk_sectors: u32 = chunk.parse().map_err(|_| err())?;
        if sectors == 0 || chunk_sectors == 0 || !chunk_sectors.is_power_of_two() {
            return Err(err());
        }
        let dev_ok = |d: &str| {
            d.starts_with("/dev/")
                || d.split_once(':')
                    .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
        };
        if !dev_ok(origin) || !dev_ok(cow) {
            return Err(err());
        }
        Ok(SnapshotTable {
            sectors,
            origin: origin.to_string(),
            cow: cow.to_string(),
            chunk_sectors,
        })
    }
}

/// A failed dm operation.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("create dm device {0}")]
    Create(String, #[source] crate::runner::RunError),
    #[error("remove dm device {0}")]
    Remove(String, #[source] crate::runner::RunError),
    #[error("query dm device {0}")]
    Info(String, #[source] crate::runner::RunError),
    #[error("dm device {name} has uuid {found:?}, not {expected}: refusing to remove it")]
    UuidMismatch {
        name: String,
        expected: String,
        found: String,
    },
    #[error("dm device {0} does not exist")]
    Missing(String),
    #[error("unexpected dmsetup info output for {0}: {1}")]
    BadInfo(String, String),
}

/// Device-mapper operations banger needs. Names are validated by the caller.
pub trait DmOps: Send + Sync {
    /// Create `name` with `uuid` and a one-line `table`.
    fn create(&self, name: &str, uuid: &str, table: &SnapshotTable) -> Result<(), DmError>;
    /// The UUID of `name`, or `None` if no such device.
    fn info(&self, name: &str) -> Result<Option<String>, DmError>;
    /// Remove `name` only when its UUID is `expected_uuid`.
    fn remove(&self, name: &str, expected_uuid: &str) -> Result<(), DmError>;
}

/// `dmsetup` through a [`Runner`].
pub struct DmSetup {
    pub runner: Arc<dyn Runner>,
}

impl DmSetup {
    pub fn new(runner: Arc<dyn Runner>) -> Self {
        DmSetup { runner }
    }
}

impl DmOps for DmSetup {
    fn create(&self, name: &str, uuid: &str, table: &SnapshotTable) -> Result<(), DmError> {
        let cmd = Cmd::new("dmsetup")
            .args(["create", name, "--uuid", uuid, "--table"])
            .arg(table.to_string());
        self.runner
            .run(&cmd)
            .map_err(|e| DmError::Create(name.into(), e))?;
        Ok(())
    }

    fn info(&self, name: &str) -> Result<Option<String>, DmError> {
        let cmd = Cmd::new("dmsetup").args([
            "info",
            "-c",
            "--noheadings",
            "-o",
            "name,uuid",
            "--separator",
            "\t",
            name,
        ]);
        let out = self
            .runner
            .output(&cmd)
            .map_err(|e| DmError::Info(name.into(), e))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.success() {
            if stderr.contains("not exist") || stderr.contains("No such device") {
                return Ok(None);
            }
            return Err(DmError::Info(
                name.into(),
                crate::runner::RunError::Failed {
                    program: "dmsetup".into(),
                    status: out.status,
                    stderr: stderr.trim().to_string(),
                },
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.trim_end_matches('\n');
        match line.split_once('\t') {
            Some((n, uuid)) if n == name && !line.contains('\n') => Ok(Some(uuid.to_string())),
            _ => Err(DmError::BadInfo(name.into(), line.to_string())),
        }
    }

    fn remove(&self, name: &str, expected_uuid: &str) -> Result<(), DmError> {
        check_uuid(self, name, expected_uuid)?;
        let cmd = Cmd::new("dmsetup").args(["remove", "--retry", name]);
        self.runner
            .run(&cmd)
            .map_err(|e| DmError::Remove(name.into(), e))?;
        Ok(())
    }
}

fn check_uuid(ops: &dyn DmOps, name: &str, expected: &str) -> Result<(), DmError> {
    match ops.info(name)? {
        None => Err(DmError::Missing(name.into())),
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(DmError::UuidMismatch {
            name: name.into(),
            expected: expected.into(),
            found,
        }),
    }
}

/// Every dm device as `(name, uuid)`, read from `<sys_root>/block/dm-*/dm/`
/// (world-readable: the daemon can list without root).
pub fn list_sysfs(sys_root: &std::path::Path) -> std::io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let dir = sys_root.join("block");
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("dm-") {
            continue;
        }
        let read = |f: &str| {
            std::fs::read_to_string(e.path().join("dm").join(f))
                .map(|s| s.trim_end_matches('\n').to_string())
        };
        if let Ok(n) = read("name") {
            out.push((n, read("uuid").unwrap_or_default()));
        }
    }
    out.sort();
    Ok(out)
}

/// One request the fake saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmRequest {
    Create {
        name: String,
        uuid: String,
        table: String,
    },
    Info {
        name: String,
    },
    Remove {
        name: String,
        uuid: String,
    },
}

/// A recording fake holding a table of devices (name → uuid).
#[derive(Debug, Default)]
pub struct RecordingDm {
    requests: Mutex<Vec<DmRequest>>,
    devices: Mutex<Vec<(String, String)>>,
    fail_create: Mutex<bool>,
}

impl RecordingDm {
    pub fn new() -> Self {
        Self::default()
    }
    /// Pretend a device exists (e.g. a host LVM volume).
    pub fn add_device(&self, name: &str, uuid: &str) {
        self.devices
            .lock()
            .unwrap()
            .push((name.into(), uuid.into()));
    }
    /// Make the next creates fail.
    pub fn fail_creates(&self, yes: bool) {
        *self.fail_create.lock().unwrap() = yes;
    }
    pub fn requests(&self) -> Vec<DmRequest> {
        self.requests.lock().unwrap().clone()
    }
    pub fn devices(&self) -> Vec<(String, String)> {
        self.devices.lock().unwrap().clone()
    }
}

impl DmOps for RecordingDm {
    fn create(&self, name: &str, uuid: &str, table: &SnapshotTable) -> Result<(), DmError> {
        self.requests.lock().unwrap().push(DmRequest::Create {
            name: name.into(),
            uuid: uuid.into(),
            table: table.to_string(),
        });
        let fail = *self.fail_create.lock().unwrap();
        let mut devs = self.devices.lock().unwrap();
        if fail || devs.iter().any(|(n, _)| n == name) {
            return Err(DmError::Create(
                name.into(),
                crate::runner::RunError::Failed {
                    program: "dmsetup".into(),
                    status: 1,
                    stderr: "device-mapper: create ioctl failed".into(),
                },
            ));
        }
        devs.push((name.into(), uuid.into()));
        Ok(())
    }

    fn info(&self, name: &str) -> Result<Option<String>, DmError> {
        self.requests
            .lock()
            .unwrap()
            .push(DmRequest::Info { name: name.into() });
        Ok(self
            .devices
            .lock()
            .unwrap()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, u)| u.clone()))
    }

    fn remove(&self, name: &str, expected_uuid: &str) -> Result<(), DmError> {
        check_uuid(self, name, expected_uuid)?;
        self.requests.lock().unwrap().push(DmRequest::Remove {
            name: name.into(),
            uuid: expected_uuid.into(),
        });
        self.devices.lock().unwrap().retain(|(n, _)| n != name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{CmdOutput, RecordingRunner};

    #[test]
    fn table_round_trips() {
        let t = SnapshotTable::new(2048, "/dev/loop3", "/dev/loop4");
        assert_eq!(t.to_string(), "0 2048 snapshot /dev/loop3 /dev/loop4 P 8");
        assert_eq!(t.to_string().parse::<SnapshotTable>().unwrap(), t);
        let m: SnapshotTable = "0 10 snapshot 7:3 7:4 P 16".parse().unwrap();
        assert_eq!(m.chunk_sectors, 16);
        assert_eq!(m.origin, "7:3");
    }

    #[test]
    fn table_rejects_other_shapes() {
        for bad in [
            "",
            "0 2048 linear /dev/loop3 0",
            "0 2048 snapshot /dev/loop3 /dev/loop4 N 8",
            "1 2048 snapshot /dev/loop3 /dev/loop4 P 8",
            "0 0 snapshot /dev/loop3 /dev/loop4 P 8",
            "0 2048 snapshot /dev/loop3 /dev/loop4 P 7",
            "0 2048 snapshot loop3 /dev/loop4 P 8",
            "0 2048 snapshot /dev/loop3 /dev/loop4 P 8 extra",
            "0 x snapshot /dev/loop3 /dev/loop4 P 8",
        ] {
            assert!(bad.parse::<SnapshotTable>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dmsetup_argv_is_exact() {
        let r = Arc::new(RecordingRunner::new());
        let dm = DmSetup::new(r.clone());
        dm.create(
            "fc-rootfs-a",
            "BANGER-fc-rootfs-a",
            &SnapshotTable::new(8, "/dev/loop1", "/dev/loop2"),
        )
        .unwrap();
        r.answer(
            "info",
            CmdOutput {
                stdout: b"fc-rootfs-a\tBANGER-fc-rootfs-a\n".to_vec(),
                ..Default::default()
            },
        );
        dm.remove("fc-rootfs-a", "BANGER-fc-rootfs-a").unwrap();
        assert_eq!(
            r.calls(),
            vec![
                vec![
                    "dmsetup",
                    "create",
                    "fc-rootfs-a",
                    "--uuid",
                    "BANGER-fc-rootfs-a",
                    "--table",
                    "0 8 snapshot /dev/loop1 /dev/loop2 P 8"
                ],
                vec![
                    "dmsetup",
                    "info",
                    "-c",
                    "--noheadings",
                    "-o",
                    "name,uuid",
                    "--separator",
                    "\t",
                    "fc-rootfs-a"
                ],
                vec!["dmsetup", "remove", "--retry", "fc-rootfs-a"],
            ]
        );
    }

    #[test]
    fn dmsetup_remove_refuses_a_foreign_uuid() {
        let r = Arc::new(RecordingRunner::new());
        let dm = DmSetup::new(r.clone());
        r.answer(
            "info",
            CmdOutput {
                stdout: b"fc-rootfs-a\tLVM-abcdef\n".to_vec(),
                ..Default::default()
            },
        );
        let e = dm.remove("fc-rootfs-a", "BANGER-fc-rootfs-a").unwrap_err();
        assert!(matches!(e, DmError::UuidMismatch { .. }), "{e}");
        r.answer(
            "info",
            CmdOutput {
                status: 1,
                stderr: b"Device does not exist.\n".to_vec(),
                ..Default::default()
            },
        );
        assert!(matches!(
            dm.remove("fc-rootfs-a", "BANGER-fc-rootfs-a"),
            Err(DmError::Missing(_))
        ));
        assert!(
            !r.calls().iter().any(|c| c[1] == "remove"),
            "{:?}",
            r.calls()
        );
    }

    #[test]
    fn lists_dm_devices_from_a_sysfs_fixture() {
        let tmp = tempfile::Builder::new()
            .prefix("bgtest-")
            .tempdir()
            .unwrap();
        for (dev, name, uuid) in [
            ("dm-0", "vg0-root", "LVM-abc"),
            ("dm-3", "fc-rootfs-a", "BANGER-fc-rootfs-a"),
        ] {
            let d = tmp.path().join("block").join(dev).join("dm");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(d.join("uuid"), format!("{uuid}\n")).unwrap();
        }
        std::fs::create_dir_all(tmp.path().join("block/loop0")).unwrap();
        assert_eq!(
            list_sysfs(tmp.path()).unwrap(),
            vec![
                ("fc-rootfs-a".to_string(), "BANGER-fc-rootfs-a".to_string()),
                ("vg0-root".to_string(), "LVM-abc".to_string())
            ]
        );
    }

    #[test]
    fn fake_refuses_foreign_uuid() {
        let dm = RecordingDm::new();
        dm.add_device("fc-rootfs-lvm", "LVM-xyz");
        assert!(matches!(
            dm.remove("fc-rootfs-lvm", "BANGER-fc-rootfs-lvm"),
            Err(DmError::UuidMismatch { .. })
        ));
        assert_eq!(dm.devices().len(), 1);
    }

    #[test]
    fn root_real_dm_create_info_remove() {
        if !banger_testkit::require_root("root_real_dm_create_info_remove") {
            return;
        }
        if !kernel_has_dm(std::path::Path::new("/proc")) {
            println!("skipped: no device-mapper in /proc/misc (kernel without device-mapper)");
            return;
        }
        let runner: Arc<dyn Runner> = Arc::new(crate::runner::HostRunner);
        let dm = DmSetup::new(runner.clone());
        let tmp = tempfile::Builder::new()
            .prefix("bgtest-")
            .tempdir()
            .unwrap();
        let base = tmp.path().join("bgtest-base");
        let cow = tmp.path().join("bgtest-cow");
        std::fs::File::create(&base)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        std::fs::File::create(&cow)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let loops = crate::loopdev::KernelLoops::new("/sys");
        use crate::loopdev::LoopOps;
        let b = loops
            .attach(&std::fs::File::open(&base).unwrap(), &base, true)
            .unwrap();
        let _gb = crate::loopdev::DetachGuard(&loops, b.clone());
        let c = loops
            .attach(
                &std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&cow)
                    .unwrap(),
                &cow,
                false,
            )
            .unwrap();
        let _gc = crate::loopdev::DetachGuard(&loops, c.clone());
        let name = format!("fc-rootfs-bgtest{}", std::process::id());
        let uuid = uuid_for(&name);
        dm.create(
            &name,
            &uuid,
            &SnapshotTable::new(8192, b.to_str().unwrap(), c.to_str().unwrap()),
        )
        .unwrap();
        assert_eq!(dm.info(&name).unwrap(), Some(uuid.clone()));
        assert!(matches!(
            dm.remove(&name, "BANGER-other"),
            Err(DmError::UuidMismatch { .. })
        ));
        dm.remove(&name, &uuid).unwrap();
        assert_eq!(dm.info(&name).unwrap(), None);
    }
}
