//! What a VM boots with, independent of the VMM: the backend choice for this
//! host, the guest kernel command line, and the QEMU `microvm` argv (the
//! Firecracker API calls are rendered from the same spec by the daemon).

use crate::net::Subnet;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Which VMM runs guests on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Firecracker on KVM (the supported production path).
    Firecracker,
    /// QEMU `-M microvm` with KVM: no Firecracker binary installed.
    QemuKvm,
    /// QEMU `-M microvm` in software emulation: no usable KVM.
    QemuTcg,
}

impl Backend {
    /// The name recorded in `vms.backend` and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Firecracker => "firecracker",
            Backend::QemuKvm => "qemu-kvm",
            Backend::QemuTcg => "qemu-tcg",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Backend::Firecracker, Backend::QemuKvm, Backend::QemuTcg]
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| format!("unknown backend {s:?}"))
    }
}

/// What the host offers, as `banger doctor` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// `/dev/kvm` exists.
    pub kvm: bool,
    /// `/sys/module/kvm_pvm` exists: a nested PVM hypervisor, under which a
    /// stock guest kernel dies early (emulation failure).
    pub nested_pvm: bool,
    /// The configured Firecracker binary is a file.
    pub firecracker: bool,
}

/// The backend for `facts`, and why (one line for the doctor).
pub fn choose_backend(facts: HostFacts) -> (Backend, &'static str) {
    match facts {
        HostFacts { kvm: false, .. } => (Backend::QemuTcg, "/dev/kvm is absent"),
        HostFacts {
            nested_pvm: true, ..
        } => (
            Backend::QemuTcg,
            "/dev/kvm is a nested PVM hypervisor (kvm_pvm loaded) that cannot run a stock guest kernel",
        ),
        HostFacts {
            firecracker: true, ..
        } => (Backend::Firecracker, "/dev/kvm works and Firecracker is installed"),
        _ => (
            Backend::QemuKvm,
            "no Firecracker binary (install it from Firecracker's releases)",
        ),
    }
}

/// The backend for a VM whose VMM is `choice` on a host with `facts`, and
/// why. `auto` is [`choose_backend`]; `firecracker` is forced (a host that
/// cannot boot it fails at launch with Firecracker's own reason); `qemu` is
/// QEMU with KVM where KVM runs a stock guest, else TCG.
pub fn choose_vmm(choice: banger_proto::api::VmmChoice, facts: HostFacts) -> (Backend, String) {
    use banger_proto::api::VmmChoice as C;
    match choice {
        C::Auto => {
            let (b, why) = choose_backend(facts);
            (b, format!("vmm = auto: {why}"))
        }
        C::Firecracker => (Backend::Firecracker, "vmm = firecracker (forced)".into()),
        C::Qemu if facts.kvm && !facts.nested_pvm => (
            Backend::QemuKvm,
            "vmm = qemu (forced); /dev/kvm works".into(),
        ),
        C::Qemu => (
            Backend::QemuTcg,
            "vmm = qemu (forced); no usable /dev/kvm, so TCG".into(),
        ),
    }
}

/// A guest's network: its tap on banger's bridge and its static address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNet {
    pub tap: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub subnet: Subnet,
}

/// Everything a VMM needs to boot one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSpec {
    pub vcpus: u8,
    pub memory_mib: u32,
    /// Uncompressed `vmlinux`.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The VM's own disk (snapshot device or copy), attached as `/dev/vda`.
    pub rootfs: PathBuf,
    pub net: Option<GuestNet>,
    /// Host TSC in kHz, passed as `tsc_early_khz` under emulation, where
    /// boots otherwise hang at random ("Marking TSC unstable").
    pub tsc_khz: Option<u64>,
}

/// The netmask of a prefix length, dotted.
fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// The guest kernel command line: serial console, `/dev/vda` as root,
/// reboot and panic turned into a VMM exit, and the static address in the
/// `ip=` form systemd-network-generator understands (the kernel's own
/// `CONFIG_IP_PNP` may be absent; the disk also carries the network file).
pub fn kernel_cmdline(spec: &MachineSpec, backend: Backend) -> String {
    let mut parts = vec![
        "console=ttyS0".to_string(),
        "reboot=k".into(),
        "panic=1".into(),
        "root=/dev/vda".into(),
        "rw".into(),
    ];
    if let Some(n) = &spec.net {
        parts.push(format!(
            "ip={}::{}:{}::eth0:off",
            n.ip,
            n.subnet.gateway(),
            netmask(n.subnet.prefix())
        ));
    }
    if backend == Backend::QemuTcg {
        if let Some(khz) = spec.tsc_khz {
            parts.push(format!("tsc_early_khz={khz}"));
        }
    }
    parts.join(" ")
}

/// Where a QEMU guest's serial console and control socket go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuIo {
    /// The serial console: `None` for stdio (tests), else a log file.
    pub serial_log: Option<PathBuf>,
    /// A QMP socket for `system_powerdown` and `quit`.
    pub qmp_socket: Option<PathBuf>,
}

/// The `qemu-system-x86_64` argv (without the program) for `spec`.
/// `backend` must be one of the QEMU backends.
pub fn qemu_argv(spec: &MachineSpec, backend: Backend, io: &QemuIo) -> Vec<String> {
    let accel = match backend {
        // TCG's code cache dominates memory (1 GiB by default).
        Backend::QemuTcg => "tcg,tb-size=64",
        Backend::QemuKvm | Backend::Firecracker => "kvm",
    };
    let mut a: Vec<String> = [
        "-M",
        "microvm",
        "-accel",
        accel,
        "-smp",
        &spec.vcpus.to_string(),
        "-m",
        &spec.memory_mib.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        // A keyboard controller, so Ctrl+Alt+Del reaches the guest as on
        // Firecracker (its only use there too).
        "-device",
        "i8042",
        "-kernel",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(spec.kernel.display().to_string());
    if let Some(i) = &spec.initrd {
        a.extend(["-initrd".into(), i.display().to_string()]);
    }
    a.extend(["-append".into(), kernel_cmdline(spec, backend)]);
    a.extend([
        "-drive".into(),
        format!(
            "id=root,file={},format=raw,if=none",
            qemu_escape(&spec.rootfs.display().to_string())
        ),
        "-device".into(),
        "virtio-blk-device,drive=root".into(),
    ]);
    if let Some(n) = &spec.net {
        a.extend([
            "-netdev".into(),
            format!("tap,id=net0,ifname={},script=no,downscript=no", n.tap),
            "-device".into(),
            format!("virtio-net-device,netdev=net0,mac={}", n.mac),
        ]);
    }
    a.push("-serial".into());
    a.push(match &io.serial_log {
        None => "stdio".into(),
        Some(p) => format!("file:{}", p.display()),
    });
    if let Some(q) = &io.qmp_socket {
        a.extend([
            "-qmp".into(),
            format!(
                "unix:{},server=on,wait=off",
                qemu_escape(&q.display().to_string())
            ),
        ]);
    }
    a
}

/// QEMU option values separate with `,`; a literal comma is doubled.
fn qemu_escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// The host TSC frequency in kHz: the kernel's `tsc: Detected N MHz` line
/// (from the kernel log), else the first `cpu MHz` of `/proc/cpuinfo`.
pub fn tsc_khz(kernel_log: &str, cpuinfo: &str) -> Option<u64> {
    let from_log = kernel_log
        .lines()
        .find(|l| l.contains("tsc: Detected") && l.contains("MHz"))
        .and_then(|l| l.split("Detected ").nth(1)?.split(' ').next()?.parse().ok());
    let from_cpuinfo = || {
        cpuinfo
            .lines()
            .find(|l| l.starts_with("cpu MHz"))?
            .split(':')
            .nth(1)?
            .trim()
            .parse::<f64>()
            .ok()
    };
    let mhz: f64 = from_log.or_else(from_cpuinfo)?;
    (mhz.is_finite() && mhz > 0.0).then_some((mhz * 1000.0) as u64)
}

#[cfg(test)]
mod tests {

    #[test]
    fn backend_names_round_trip() {
        for b in [Backend::Firecracker, Backend::QemuKvm, Backend::QemuTcg] {
            assert_eq!(b.as_str().parse::<Backend>(), Ok(b));
        }
        assert!("qemu".parse::<Backend>().is_err());
    }

    use super::*;

    #[test]
    fn vmm_choice_parses_and_chooses() {
        use banger_proto::api::VmmChoice as C;
        for (text, c) in [
            ("auto", C::Auto),
            ("firecracker", C::Firecracker),
            ("qemu", C::Qemu),
        ] {
            assert_eq!(text.parse::<C>().unwrap(), c);
            assert_eq!(c.to_string(), text);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{text}\""));
        }
        for bad in ["", "Auto", "QEMU", "fc", "qemu-tcg"] {
            assert!(bad.parse::<C>().is_err(), "{bad}");
        }
        let fc_host = HostFacts {
            kvm: true,
            nested_pvm: false,
            firecracker: true,
        };
        let no_kvm = HostFacts {
            kvm: false,
            nested_pvm: false,
            firecracker: true,
        };
        let pvm = HostFacts {
            kvm: true,
            nested_pvm: true,
            firecracker: true,
        };
        let no_fc = HostFacts {
            kvm: true,
            nested_pvm: false,
            firecracker: false,
        };
        assert_eq!(choose_vmm(C::Auto, fc_host).0, Backend::Firecracker);
        assert_eq!(choose_vmm(C::Auto, no_kvm).0, Backend::QemuTcg);
        assert_eq!(choose_vmm(C::Auto, no_fc).0, Backend::QemuKvm);
        assert!(choose_vmm(C::Auto, no_kvm).1.contains("/dev/kvm is absent"));
        // Forced Firecracker stays Firecracker whatever the host.
        for f in [fc_host, no_kvm, pvm, no_fc] {
            assert_eq!(choose_vmm(C::Firecracker, f).0, Backend::Firecracker);
        }
        assert_eq!(choose_vmm(C::Qemu, fc_host).0, Backend::QemuKvm);
        assert_eq!(choose_vmm(C::Qemu, pvm).0, Backend::QemuTcg);
        assert_eq!(choose_vmm(C::Qemu, no_kvm).0, Backend::QemuTcg);
        assert!(choose_vmm(C::Qemu, no_kvm).1.contains("forced"));
    }

    fn spec() -> MachineSpec {
        MachineSpec {
            vcpus: 2,
            memory_mib: 256,
            kernel: "/var/lib/banger/images/deb/vmlinux".into(),
            initrd: Some("/var/lib/banger/images/deb/initrd".into()),
            rootfs: "/var/lib/banger/vms/ab12/disk.ext4".into(),
            net: Some(GuestNet {
                tap: "banger-ab12cd34".into(),
                mac: "06:00:ac:1e:00:02".into(),
                ip: "172.30.0.2".parse().unwrap(),
                subnet: "172.30.0.0/24".parse().unwrap(),
            }),
            tsc_khz: Some(2_999_998),
        }
    }

    #[test]
    fn backend_choice_covers_every_host() {
        let f = |kvm, nested_pvm, firecracker| {
            choose_backend(HostFacts {
                kvm,
                nested_pvm,
                firecracker,
            })
            .0
        };
        assert_eq!(f(true, false, true), Backend::Firecracker);
        assert_eq!(f(true, false, false), Backend::QemuKvm);
        // This machine: nested PVM, whatever is installed.
        assert_eq!(f(true, true, true), Backend::QemuTcg);
        assert_eq!(f(false, false, true), Backend::QemuTcg);
        assert_eq!(f(false, true, false), Backend::QemuTcg);
    }

    #[test]
    fn cmdline_has_the_address_and_tsc_only_under_tcg() {
        let s = spec();
        assert_eq!(
            kernel_cmdline(&s, Backend::QemuTcg),
            "console=ttyS0 reboot=k panic=1 root=/dev/vda rw \
             ip=172.30.0.2::172.30.0.1:255.255.255.0::eth0:off tsc_early_khz=2999998"
        );
        assert!(!kernel_cmdline(&s, Backend::Firecracker).contains("tsc_early_khz"));
        let mut s = spec();
        s.net = None;
        assert!(!kernel_cmdline(&s, Backend::QemuKvm).contains("ip="));
    }

    #[test]
    fn spec_round_trips_through_json_and_a_bad_subnet_is_refused() {
        let j = serde_json::to_value(spec()).unwrap();
        assert_eq!(j["net"]["subnet"], "172.30.0.0/24");
        assert_eq!(
            serde_json::from_value::<MachineSpec>(j.clone()).unwrap(),
            spec()
        );
        let mut bad = j;
        bad["net"]["subnet"] = "172.30.0.1/24".into();
        assert!(serde_json::from_value::<MachineSpec>(bad).is_err());
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(netmask(8), Ipv4Addr::new(255, 0, 0, 0));
    }

    #[test]
    fn qemu_argv_for_a_tcg_guest_with_network() {
        let io = QemuIo {
            serial_log: Some("/var/lib/banger/vms/ab12/console.log".into()),
            qmp_socket: Some("/run/banger/vms/ab12/qmp.sock".into()),
        };
        let a = qemu_argv(&spec(), Backend::QemuTcg, &io);
        let joined = a.join(" ");
        assert!(joined.starts_with(
            "-M microvm -accel tcg,tb-size=64 -smp 2 -m 256 -nodefaults -no-user-config -nographic -no-reboot -device i8042 -kernel /var/lib/banger/images/deb/vmlinux -initrd /var/lib/banger/images/deb/initrd -append "
        ), "{joined}");
        let after = |flag: &str| {
            a.iter()
                .position(|x| x == flag)
                .map(|i| a[i + 1].clone())
                .unwrap()
        };
        assert_eq!(
            after("-drive"),
            "id=root,file=/var/lib/banger/vms/ab12/disk.ext4,format=raw,if=none"
        );
        assert_eq!(
            after("-netdev"),
            "tap,id=net0,ifname=banger-ab12cd34,script=no,downscript=no"
        );
        assert!(a.contains(&"virtio-net-device,netdev=net0,mac=06:00:ac:1e:00:02".to_string()));
        assert_eq!(
            after("-serial"),
            "file:/var/lib/banger/vms/ab12/console.log"
        );
        assert_eq!(
            after("-qmp"),
            "unix:/run/banger/vms/ab12/qmp.sock,server=on,wait=off"
        );
        // The kernel command line is one argv element, never split.
        assert_eq!(after("-append"), kernel_cmdline(&spec(), Backend::QemuTcg));
    }

    #[test]
    fn qemu_argv_without_network_or_initrd_and_with_kvm() {
        let mut s = spec();
        s.net = None;
        s.initrd = None;
        s.rootfs = "/tmp/a,b.ext4".into();
        let io = QemuIo {
            serial_log: None,
            qmp_socket: None,
        };
        let a = qemu_argv(&s, Backend::QemuKvm, &io);
        assert!(a.windows(2).any(|w| w == ["-accel", "kvm"]));
        assert!(!a
            .iter()
            .any(|x| x == "-initrd" || x == "-netdev" || x == "-qmp"));
        assert!(a.windows(2).any(|w| w == ["-serial", "stdio"]));
        // A comma in a path cannot inject a drive option.
        assert!(a
            .iter()
            .any(|x| x.starts_with("id=root,file=/tmp/a,,b.ext4,format=raw")));
    }

    #[test]
    fn tsc_from_the_kernel_log_then_cpuinfo() {
        let log = "[    0.000000] tsc: Detected 2999.998 MHz processor\n";
        let cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2100.000\n";
        assert_eq!(tsc_khz(log, cpuinfo), Some(2_999_998));
        assert_eq!(tsc_khz("", cpuinfo), Some(2_100_000));
        assert_eq!(tsc_khz("tsc: Detected garbage MHz", ""), None);
        assert_eq!(tsc_khz("", "cpu MHz : 0\n"), None);
        assert_eq!(tsc_khz("", ""), None);
    }
}
