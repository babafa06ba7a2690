use super::*;
use banger_core::machine::{qemu_argv, Backend, MachineSpec, QemuIo};
use banger_sys::runner::HostRunner;

fn fake_elf() -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01".to_vec();
    v.extend((0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    v
}

fn compress(tool: &str, extra: &[&str], data: &[u8]) -> Vec<u8> {
    HostRunner
        .run(&Cmd::new(tool).args(extra).stdin(data.to_vec()))
        .unwrap()
        .stdout
}

#[test]
fn extracts_the_elf_whatever_the_compression() {
    let elf = fake_elf();
    for (tool, args) in [
        ("gzip", &["-c"][..]),
        ("xz", &["-c", "--check=crc32"][..]),
        ("zstd", &["-c", "-q"][..]),
        ("lz4", &["-l", "-c", "-q"][..]),
        ("bzip2", &["-c"][..]),
    ] {
        let mut wrapped = b"MZ setup code \x1f\x8b junk that is not a stream".to_vec();
        wrapped.extend(compress(tool, args, &elf));
        wrapped.extend(b"trailing data after the stream");
        let got = extract_vmlinux(&HostRunner, &wrapped, Path::new("fake")).unwrap();
        assert_eq!(got, elf, "{tool}");
    }
    assert!(matches!(
        extract_vmlinux(&HostRunner, b"no kernel here", Path::new("x")),
        Err(KernelError::NoVmlinux(_))
    ));
    assert_eq!(
        extract_vmlinux(&HostRunner, &elf, Path::new("x")).unwrap(),
        elf
    );
}

#[test]
fn load_order_from_a_modules_dep_fixture() {
    let tmp = banger_testkit::tmp();
    std::fs::write(
        tmp.path().join("modules.dep"),
        "kernel/drivers/virtio/virtio_mmio.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
         kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
         kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
         kernel/net/core/failover.ko:\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("modules.builtin"),
        "kernel/drivers/block/virtio_blk.ko\n",
    )
    .unwrap();
    let order: Vec<String> = load_order(tmp.path(), VIRTIO_MODULES)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(
        order,
        [
            "virtio_ring",
            "virtio",
            "virtio_mmio",
            "failover",
            "net_failover",
            "virtio_net"
        ]
    );
    assert!(matches!(
        load_order(tmp.path(), &["nope"]),
        Err(KernelError::NoModule(_))
    ));
}

fn installed() -> Option<HostKernel> {
    host_kernels(Path::new("/boot"), Path::new("/lib/modules")).pop()
}

#[test]
fn real_kernel_vmlinux_and_initramfs() {
    let Some(k) = installed() else {
        println!("skipped: no Debian kernel in /boot with modules in /lib/modules");
        return;
    };
    let z = std::fs::read(&k.vmlinuz).unwrap();
    let elf = extract_vmlinux(&HostRunner, &z, &k.vmlinuz).unwrap();
    assert!(elf.starts_with(b"\x7fELF\x02"), "64-bit ELF");
    assert_eq!(&elf[18..20], &[0x3e, 0x00], "x86-64");
    assert!(elf.len() > z.len(), "{} vs {}", elf.len(), z.len());
    let order: Vec<String> = load_order(&k.modules, VIRTIO_MODULES)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    let pos = |n: &str| order.iter().position(|m| m == n);
    for m in VIRTIO_MODULES {
        // Each is either loaded or built in.
        assert!(
            pos(m).is_some()
                || std::fs::read_to_string(k.modules.join("modules.builtin"))
                    .unwrap()
                    .contains(&format!("/{m}.ko")),
            "{m}"
        );
    }
    if let (Some(f), Some(nf), Some(vn)) = (pos("failover"), pos("net_failover"), pos("virtio_net"))
    {
        assert!(f < nf && nf < vn, "{order:?}");
    }
    let cpio = initramfs(
        &HostRunner,
        &k.modules,
        Path::new("/bin/busybox"),
        VIRTIO_MODULES,
    )
    .unwrap();
    let list = HostRunner
        .run(&Cmd::new("cpio").args(["-it", "--quiet"]).stdin(cpio))
        .unwrap()
        .stdout;
    let list = String::from_utf8(list).unwrap();
    for want in ["init", "bin/busybox", "bin/switch_root", "dev/console"] {
        assert!(list.lines().any(|l| l == want), "{want} in {list}");
    }
    for m in &order {
        assert!(
            list.lines().any(|l| l == format!("lib/modules/{m}.ko")),
            "{m}"
        );
    }
}

/// The host TSC in kHz for `tsc_early_khz` (TCG boots hang at random
/// without it), as the daemon reads it.
pub(crate) fn host_tsc_khz() -> Option<u64> {
    crate::vms::run::host_tsc_khz()
}

/// A tiny guest for QEMU tests: the host's Debian kernel as `vmlinux`, the
/// generated virtio initramfs, and a busybox ext4 root whose `/sbin/init` is
/// `init` (a busybox `sh` script). `None` when the host has no kernel.
pub(crate) struct BusyboxGuest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
}

pub(crate) fn busybox_guest(t: &Path, init: &str) -> Option<BusyboxGuest> {
    let k = installed()?;
    let z = std::fs::read(&k.vmlinuz).unwrap();
    let g = BusyboxGuest {
        kernel: t.join("vmlinux"),
        initrd: t.join("initrd"),
        rootfs: t.join("root.ext4"),
    };
    std::fs::write(
        &g.kernel,
        extract_vmlinux(&HostRunner, &z, &k.vmlinuz).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &g.initrd,
        initramfs(
            &HostRunner,
            &k.modules,
            Path::new("/bin/busybox"),
            VIRTIO_MODULES,
        )
        .unwrap(),
    )
    .unwrap();
    let root = t.join("root");
    for d in ["bin", "sbin", "dev", "proc", "sys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::write(root.join("sbin/init"), init).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("sbin/init"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    HostRunner
        .run(
            &Cmd::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&root)
                .arg(&g.rootfs)
                .arg("32M"),
        )
        .unwrap();
    Some(g)
}

/// Boots the real kernel + generated initramfs under QEMU microvm (TCG):
/// the virtio modules load, `/dev/vda` mounts, switch_root runs our init.
#[test]
fn qemu_boots_the_extracted_kernel_through_the_initramfs() {
    if !Path::new("/usr/bin/qemu-system-x86_64").exists() {
        println!("skipped: qemu-system-x86_64 not installed");
        return;
    }
    let tmp = banger_testkit::tmp();
    let init = "#!/bin/busybox sh\n/bin/busybox echo BANGER-BOOT-OK\n/bin/busybox poweroff -f\n";
    let Some(g) = busybox_guest(tmp.path(), init) else {
        println!("skipped: no host kernel");
        return;
    };
    // The argv the daemon's QEMU backend renders, serial on stdio.
    let spec = MachineSpec {
        vcpus: 1,
        memory_mib: 256,
        kernel: g.kernel,
        initrd: Some(g.initrd),
        rootfs: g.rootfs,
        net: None,
        tsc_khz: host_tsc_khz(),
    };
    let io = QemuIo {
        serial_log: None,
        qmp_socket: None,
    };
    let out = HostRunner
        .output(
            &Cmd::new("timeout")
                .args(["180", "qemu-system-x86_64"])
                .args(qemu_argv(&spec, Backend::QemuTcg, &io)),
        )
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("BANGER-BOOT-OK"),
        "status {}\n{console}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
