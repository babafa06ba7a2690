//! Gates for a jailed launch: the files made visible in the chroot, the
//! VM's size for its cgroup limits, and the cgroup keys the jailer gets.

use super::{files, storage, Refused};
use banger_proto::helper::JailSpec;
use std::path::{Path, PathBuf};

/// Most guest memory a jailed VM may ask for (1 TiB).
pub const MAX_MEMORY_MIB: u32 = 1 << 20;
/// Most vCPUs (Firecracker's own maximum).
pub const MAX_VCPUS: u32 = 32;
/// Memory the VMM itself may use on top of the guest's.
pub const VMM_OVERHEAD_MIB: u64 = 128;
/// Tasks a jailed VMM may have beyond one per vCPU (API, VMM, I/O threads).
pub const PIDS_BASE: u32 = 32;
/// CFS period for the optional CPU cap.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Where a jailed VM's root disk comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootDisk {
    /// The dm name (`fc-rootfs-*`) of the device.
    Dm(String),
    /// A file below StateDir (a clean absolute path).
    File(PathBuf),
}

/// A [`JailSpec`] that passed its gates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub root: RootDisk,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub cpu_percent: Option<u32>,
}

/// `priv.launch_firecracker` `jail`: kernel (and initrd if given) clean
/// paths below StateDir; root disk either `/dev/mapper/fc-rootfs-*` or
/// a clean file path below StateDir (exactly one); memory
/// 1..=[`MAX_MEMORY_MIB`]; vCPUs 1..=[`MAX_VCPUS`]; CPU cap 1..=100 per vCPU.
pub fn spec(state_dir: &Path, s: &JailSpec) -> Result<Spec, Refused> {
    let kernel = files::clean_path_below(state_dir, &s.kernel, "jail.kernel", "StateDir")?;
    let initrd = if s.initrd.is_empty() {
        None
    } else {
        Some(files::clean_path_below(
            state_dir,
            &s.initrd,
            "jail.initrd",
            "StateDir",
        )?)
    };
    let root = match (s.root_disk.is_empty(), s.root_disk_file.is_empty()) {
        (false, true) => RootDisk::Dm(
            storage::dm_device(&s.root_disk)
                .map_err(|_| Refused::new("jail.root_disk must be /dev/mapper/fc-rootfs-*"))?
                .to_string(),
        ),
        (true, false) => RootDisk::File(files::clean_path_below(
            state_dir,
            &s.root_disk_file,
            "jail.root_disk_file",
            "StateDir",
        )?),
        _ => {
            return Err(Refused::new(
                "jail needs exactly one of root_disk and root_disk_file",
            ))
        }
    };
    if !(1..=MAX_MEMORY_MIB).contains(&s.memory_mib) {
        return Err(Refused::new(format!(
            "jail.memory_mib must be 1..={MAX_MEMORY_MIB}"
        )));
    }
    if !(1..=MAX_VCPUS).contains(&s.vcpus) {
        return Err(Refused::new(format!("jail.vcpus must be 1..={MAX_VCPUS}")));
    }
    if let Some(p) = s.cpu_percent {
        if p == 0 || p > 100 * s.vcpus {
            return Err(Refused::new("jail.cpu_percent must be 1..=100 per vCPU"));
        }
    }
    Ok(Spec {
        kernel,
        initrd,
        root,
        memory_mib: s.memory_mib,
        vcpus: s.vcpus,
        cpu_percent: s.cpu_percent,
    })
}

/// The cgroup hierarchy the host really has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Controllers mounted one per directory under `<sys>/fs/cgroup/<controller>`.
    V1,
    /// The unified hierarchy at `<sys>/fs/cgroup` with the controllers enabled.
    V2,
}

impl CgroupVersion {
    pub fn arg(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "1",
            CgroupVersion::V2 => "2",
        }
    }
}

/// Which cgroup version to give the jailer, from `<sys_root>/fs/cgroup`:
/// v2 when it is the unified hierarchy offering `memory` and `pids`; v1
/// when `memory` and `pids` are v1 hierarchies of their own; else none
/// (the jailed launch is refused: its limits could not be set).
pub fn host_cgroup_version(sys_root: &Path) -> Option<CgroupVersion> {
    let cg = sys_root.join("fs/cgroup");
    if let Ok(ctrl) = std::fs::read_to_string(cg.join("cgroup.controllers")) {
        let has = |c: &str| ctrl.split_whitespace().any(|x| x == c);
        return (has("memory") && has("pids")).then_some(CgroupVersion::V2);
    }
    let v1 = cg.join("memory/memory.limit_in_bytes").exists() && cg.join("pids/tasks").exists();
    v1.then_some(CgroupVersion::V1)
}

/// The `--cgroup <file>=<value>` pairs for a VM: memory at the guest's
/// memory plus [`VMM_OVERHEAD_MIB`], pids at [`PIDS_BASE`] plus two per
/// vCPU, and the CPU cap if asked for.
pub fn cgroup_args(v: CgroupVersion, s: &Spec) -> Vec<String> {
    let mem = (u64::from(s.memory_mib) + VMM_OVERHEAD_MIB) * 1024 * 1024;
    let pids = PIDS_BASE + 2 * s.vcpus;
    let quota = s.cpu_percent.map(|p| u64::from(p) * CPU_PERIOD_US / 100);
    let mut out = match v {
        CgroupVersion::V1 => vec![
            format!("memory.limit_in_bytes={mem}"),
            format!("pids.max={pids}"),
        ],
        CgroupVersion::V2 => vec![format!("memory.max={mem}"), format!("pids.max={pids}")],
    };
    if let Some(q) = quota {
        match v {
            CgroupVersion::V1 => {
                out.push(format!("cpu.cfs_period_us={CPU_PERIOD_US}"));
                out.push(format!("cpu.cfs_quota_us={q}"));
            }
            CgroupVersion::V2 => out.push(format!("cpu.max={q} {CPU_PERIOD_US}")),
        }
    }
    out
}

/// The per-VM cgroup directories the jailer makes for `args`
/// (`<cgroup root>/<exec name>/<vm_id>`; one per v1 controller).
pub fn cgroup_dirs(
    sys_root: &Path,
    v: CgroupVersion,
    args: &[String],
    exec_name: &str,
    vm_id: &str,
) -> Vec<PathBuf> {
    let cg = sys_root.join("fs/cgroup");
    match v {
        CgroupVersion::V2 => vec![cg.join(exec_name).join(vm_id)],
        CgroupVersion::V1 => {
            let mut ctrls: Vec<&str> = args
                .iter()
                .filter_map(|a| a.split_once('.').map(|(c, _)| c))
                .collect();
            ctrls.dedup();
            ctrls
                .into_iter()
                .map(|c| cg.join(c).join(exec_name).join(vm_id))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js() -> JailSpec {
        JailSpec {
            kernel: "/var/lib/banger/images/x/vmlinux".into(),
            initrd: String::new(),
            root_disk: "/dev/mapper/fc-rootfs-vm1".into(),
            root_disk_file: String::new(),
            memory_mib: 512,
            vcpus: 2,
            cpu_percent: None,
        }
    }

    #[test]
    fn spec_gates() {
        let sd = Path::new("/var/lib/banger");
        let s = spec(sd, &js()).unwrap();
        assert_eq!(s.root, RootDisk::Dm("fc-rootfs-vm1".into()));
        let mut f = js();
        f.root_disk = String::new();
        f.root_disk_file = "/var/lib/banger/vms/a/rootfs.ext4".into();
        assert_eq!(
            spec(sd, &f).unwrap().root,
            RootDisk::File("/var/lib/banger/vms/a/rootfs.ext4".into())
        );
        assert_eq!(s.initrd, None);
        type Edit = Box<dyn Fn(&mut JailSpec)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|j| j.kernel = "/etc/shadow".into()),
                "jail.kernel must be below StateDir",
            ),
            (
                Box::new(|j| j.kernel = "/var/lib/banger/../x".into()),
                "jail.kernel must be lexically clean",
            ),
            (
                Box::new(|j| j.initrd = "/root/.ssh/id_ed25519".into()),
                "jail.initrd must be below StateDir",
            ),
            (
                Box::new(|j| j.root_disk = "/dev/sda".into()),
                "jail.root_disk must be",
            ),
            (
                Box::new(|j| j.root_disk = "/dev/mapper/fc-rootfs-../x".into()),
                "jail.root_disk must be",
            ),
            (
                Box::new(|j| j.root_disk_file = "/var/lib/banger/vms/a/rootfs.ext4".into()),
                "jail needs exactly one of root_disk and root_disk_file",
            ),
            (
                Box::new(|j| j.root_disk = String::new()),
                "jail needs exactly one of root_disk and root_disk_file",
            ),
            (
                Box::new(|j| {
                    j.root_disk = String::new();
                    j.root_disk_file = "/srv/other/rootfs.ext4".into();
                }),
                "jail.root_disk_file must be below StateDir",
            ),
            (
                Box::new(|j| {
                    j.root_disk = String::new();
                    j.root_disk_file = "/var/lib/banger/vms/../../x".into();
                }),
                "jail.root_disk_file must be lexically clean",
            ),
            (Box::new(|j| j.memory_mib = 0), "jail.memory_mib must be"),
            (Box::new(|j| j.vcpus = 33), "jail.vcpus must be"),
            (
                Box::new(|j| j.cpu_percent = Some(201)),
                "jail.cpu_percent must be",
            ),
            (
                Box::new(|j| j.cpu_percent = Some(0)),
                "jail.cpu_percent must be",
            ),
        ];
        for (f, want) in cases {
            let mut j = js();
            f(&mut j);
            let e = spec(sd, &j).unwrap_err();
            assert!(e.0.starts_with(want), "{} vs {want}", e.0);
        }
    }

    #[test]
    fn cgroup_keys_per_version() {
        let mut s = spec(Path::new("/var/lib/banger"), &js()).unwrap();
        let mem = (512 + VMM_OVERHEAD_MIB) * 1024 * 1024;
        assert_eq!(
            cgroup_args(CgroupVersion::V1, &s),
            [format!("memory.limit_in_bytes={mem}"), "pids.max=36".into()]
        );
        s.cpu_percent = Some(150);
        assert_eq!(
            cgroup_args(CgroupVersion::V2, &s),
            [
                format!("memory.max={mem}"),
                "pids.max=36".into(),
                "cpu.max=150000 100000".into()
            ]
        );
        let v1 = cgroup_args(CgroupVersion::V1, &s);
        assert_eq!(
            cgroup_dirs(
                Path::new("/sys"),
                CgroupVersion::V1,
                &v1,
                "firecracker",
                "a"
            ),
            [
                "/sys/fs/cgroup/memory/firecracker/a",
                "/sys/fs/cgroup/pids/firecracker/a",
                "/sys/fs/cgroup/cpu/firecracker/a"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn cgroup_version_from_a_sys_fixture() {
        let d = tempfile::Builder::new()
            .prefix("bgtest-")
            .tempdir()
            .unwrap();
        let cg = d.path().join("fs/cgroup");
        assert_eq!(host_cgroup_version(d.path()), None);
        std::fs::create_dir_all(cg.join("memory")).unwrap();
        std::fs::create_dir_all(cg.join("pids")).unwrap();
        std::fs::write(
            cg.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(cg.join("pids/tasks"), "").unwrap();
        assert_eq!(host_cgroup_version(d.path()), Some(CgroupVersion::V1));
        std::fs::write(cg.join("cgroup.controllers"), "cpu io memory\n").unwrap();
        assert_eq!(host_cgroup_version(d.path()), None, "v2 without pids");
        std::fs::write(cg.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        assert_eq!(host_cgroup_version(d.path()), Some(CgroupVersion::V2));
    }
}
