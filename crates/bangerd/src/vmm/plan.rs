//! A VM's backend-neutral [`MachineSpec`] as Firecracker's boot plan (the
//! QEMU side renders its argv from the same spec in `banger-core`).

use super::firecracker::BootPlan;
use banger_core::machine::{kernel_cmdline, Backend, MachineSpec};
use banger_proto::firecracker::{
    BootSource, Drive, LogLevel, Logger, MachineConfiguration, NetworkInterface, Vsock,
};
use std::path::{Path, PathBuf};

/// The drive id of every VM's root disk.
pub const ROOT_DRIVE: &str = "rootfs";
/// The interface id of every VM's NIC.
pub const NIC: &str = "eth0";

/// A path the Firecracker API cannot carry (its JSON strings are UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {0} is not UTF-8; Firecracker's API cannot name it")]
pub struct NotUtf8(pub PathBuf);

fn text(p: &Path) -> Result<String, NotUtf8> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| NotUtf8(p.to_path_buf()))
}

/// Where Firecracker writes its own log and binds the vsock socket, as the
/// Firecracker process sees them (inside its jail in the system install).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FcFiles {
    pub log: Option<PathBuf>,
    /// The vsock's Unix socket and the guest's context id (≥ 3).
    pub vsock: Option<(PathBuf, u32)>,
}

/// The calls that boot `spec` under Firecracker, in boot order.
pub fn firecracker_plan(spec: &MachineSpec, files: &FcFiles) -> Result<BootPlan, NotUtf8> {
    Ok(BootPlan {
        logger: match &files.log {
            Some(p) => Some(Logger {
                log_path: Some(text(p)?),
                level: Some(LogLevel::Info),
                ..Logger::default()
            }),
            None => None,
        },
        machine: MachineConfiguration {
            vcpu_count: spec.vcpus,
            mem_size_mib: u64::from(spec.memory_mib),
            smt: None,
            cpu_template: None,
            track_dirty_pages: None,
            huge_pages: None,
        },
        boot_source: BootSource {
            kernel_image_path: text(&spec.kernel)?,
            boot_args: Some(kernel_cmdline(spec, Backend::Firecracker)),
            initrd_path: spec.initrd.as_deref().map(text).transpose()?,
        },
        drives: vec![Drive {
            drive_id: ROOT_DRIVE.into(),
            partuuid: None,
            is_root_device: true,
            cache_type: None,
            is_read_only: Some(false),
            path_on_host: Some(text(&spec.rootfs)?),
            rate_limiter: None,
            io_engine: None,
            socket: None,
        }],
        network_interfaces: spec
            .net
            .iter()
            .map(|n| NetworkInterface {
                iface_id: NIC.into(),
                host_dev_name: n.tap.clone(),
                guest_mac: Some(n.mac.clone()),
                mtu: None,
                rx_rate_limiter: None,
                tx_rate_limiter: None,
            })
            .collect(),
        vsock: match &files.vsock {
            Some((p, cid)) => Some(Vsock {
                guest_cid: *cid,
                uds_path: text(p)?,
                vsock_id: None,
            }),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_core::machine::GuestNet;
    use std::os::unix::ffi::OsStrExt;

    fn spec() -> MachineSpec {
        MachineSpec {
            vcpus: 2,
            memory_mib: 512,
            kernel: "/srv/jailer/firecracker/ab12/root/vmlinux".into(),
            initrd: None,
            rootfs: "/dev/mapper/fc-rootfs-ab12".into(),
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
    fn renders_every_call_from_the_spec() {
        let p = firecracker_plan(&spec(), &FcFiles::default()).unwrap();
        assert_eq!(p.logger, None);
        assert_eq!(p.vsock, None);
        assert_eq!((p.machine.vcpu_count, p.machine.mem_size_mib), (2, 512));
        let args = p.boot_source.boot_args.unwrap();
        assert!(args.contains("ip=172.30.0.2::172.30.0.1:255.255.255.0::eth0:off"));
        // Firecracker runs on KVM: no TSC hint.
        assert!(!args.contains("tsc_early_khz"));
        assert_eq!(p.drives.len(), 1);
        assert_eq!(p.drives[0].drive_id, "rootfs");
        assert_eq!(
            p.drives[0].path_on_host.as_deref(),
            Some("/dev/mapper/fc-rootfs-ab12")
        );
        assert_eq!(p.network_interfaces[0].host_dev_name, "banger-ab12cd34");
        assert_eq!(
            p.network_interfaces[0].guest_mac.as_deref(),
            Some("06:00:ac:1e:00:02")
        );
        let mut s = spec();
        s.net = None;
        let p = firecracker_plan(&s, &FcFiles::default()).unwrap();
        assert!(p.network_interfaces.is_empty());
    }

    #[test]
    fn a_non_utf8_path_is_refused_with_the_path() {
        let mut s = spec();
        let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/srv/\xff/vmlinux"));
        s.kernel = bad.clone();
        assert_eq!(firecracker_plan(&s, &FcFiles::default()), Err(NotUtf8(bad)));
    }
}
