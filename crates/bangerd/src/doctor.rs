//! `banger doctor`: what this host can do, which backend and disk driver
//! banger picks, and why. Host paths are read under an injected root so
//! tests use fixtures.

use banger_proto::api::Check;
use std::path::{Path, PathBuf};

/// Inputs the checks read besides the filesystem.
pub struct Facts<'a> {
    /// Filesystem root to read `/dev`, `/sys`, `/run` under (`/` in production).
    pub root: &'a Path,
    pub firecracker_bin: &'a Path,
    /// `helper`, `sudo` or `direct`.
    pub privileges: &'a str,
    pub domain: &'a str,
    /// The StateDir in force (probed for reflink support).
    pub state_dir: &'a Path,
    /// banger's bridge (named in the firewall hint).
    pub bridge: &'a str,
    /// The configured VMM choice (`vmm` in the config file).
    pub vmm: banger_proto::api::VmmChoice,
    /// The jailer (system install).
    pub jailer_bin: &'a Path,
}

fn at(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

fn check(name: &str, status: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status: status.into(),
        detail: detail.into(),
    }
}

/// What the backend choice reads off the host (under `root`).
pub fn host_facts(root: &Path, firecracker_bin: &Path) -> banger_core::machine::HostFacts {
    banger_core::machine::HostFacts {
        kvm: at(root, "/dev/kvm").exists(),
        nested_pvm: at(root, "/sys/module/kvm_pvm").exists(),
        firecracker: firecracker_bin.is_file(),
    }
}

/// Which VMM backend to use on this host, and why
/// ([`banger_core::machine::choose_backend`]).
pub fn backend(f: &Facts) -> Check {
    use banger_core::machine::{choose_vmm, Backend};
    let (backend, why) = choose_vmm(f.vmm, host_facts(f.root, f.firecracker_bin));
    match backend {
        Backend::Firecracker => match linked_dynamically(f.firecracker_bin) {
            // The jailer (system install) starts it in an empty chroot.
            Some(interp) => check(
                "backend",
                if f.privileges == "helper" { "warn" } else { "ok" },
                format!(
                    "firecracker ({} with /dev/kvm), dynamically linked ({interp}): the system install's jailer cannot start it in its empty chroot; install the static release binary",
                    f.firecracker_bin.display()
                ),
            ),
            None => check(
                "backend",
                "ok",
                format!(
                    "firecracker ({} with /dev/kvm); {why}",
                    f.firecracker_bin.display()
                ),
            ),
        },
        Backend::QemuTcg => check("backend", "warn", format!("qemu-microvm with TCG: {why}")),
        Backend::QemuKvm if f.vmm == banger_proto::api::VmmChoice::Qemu => {
            check("backend", "ok", format!("qemu-microvm with KVM: {why}"))
        }
        Backend::QemuKvm => check(
            "backend",
            "warn",
            format!(
                "qemu-microvm with KVM: no Firecracker binary at {} (install it from Firecracker's releases)",
                f.firecracker_bin.display()
            ),
        ),
    }
}

/// The jailer every system-install Firecracker starts under: present,
/// owned by root and not writable by others, and static (it runs before the
/// chroot, but the helper's gate and Firecracker's own advice want the
/// release binary). Development mode launches unjailed: only noted.
pub fn jailer(f: &Facts) -> Check {
    use std::os::unix::fs::MetadataExt;
    let bin = f.jailer_bin;
    let system = f.privileges == "helper";
    let bad = if system { "fail" } else { "ok" };
    let md = match std::fs::metadata(bin) {
        Ok(md) if md.is_file() => md,
        _ => {
            return check(
                "jailer",
                bad,
                format!(
                    "no jailer at {}{}",
                    bin.display(),
                    if system {
                        ": jailed Firecracker launches fail (install the release's jailer)"
                    } else {
                        " (development mode launches Firecracker unjailed)"
                    }
                ),
            )
        }
    };
    if md.uid() != 0 || md.mode() & 0o022 != 0 {
        return check(
            "jailer",
            bad,
            format!(
                "{} must be owned by root and not group/world-writable (uid {}, mode {:o})",
                bin.display(),
                md.uid(),
                md.mode() & 0o7777
            ),
        );
    }
    match linked_dynamically(bin) {
        Some(interp) => check(
            "jailer",
            "warn",
            format!(
                "{} is dynamically linked ({interp}); install the static release binary",
                bin.display()
            ),
        ),
        None => check(
            "jailer",
            "ok",
            format!("{} (root-owned, static)", bin.display()),
        ),
    }
}

/// The program interpreter `bin` needs, when it is a dynamically linked
/// ELF file (`None` for a static one, or one that cannot be read as ELF:
/// the launch gate reports those).
fn linked_dynamically(bin: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(bin)
        .ok()?
        .take(64 << 20)
        .read_to_end(&mut head)
        .ok()?;
    banger_core::elf::interpreter(&head).ok().flatten()
}

/// Which VM-disk driver to use, and why ([`crate::vmdisk::driver::select`]:
/// device-mapper listed in `<root>/proc/misc`, else the copy fallback with a
/// reflink probe of the StateDir).
pub fn disk_driver(f: &Facts) -> Check {
    use crate::vmdisk::driver::{select, Driver};
    let c = select(&at(f.root, "/proc"), f.state_dir);
    match c.driver {
        Driver::DmSnapshot => check(
            "disk driver",
            "ok",
            format!("dm-snapshot: O(1) copy-on-write VM disks ({})", c.reason),
        ),
        Driver::Copy => copy_driver(&c),
    }
}

/// The copy driver's line: one statement of what a VM disk is on this
/// StateDir (a reflink clone is cheap and says so; a full copy warns).
fn copy_driver(c: &crate::vmdisk::driver::Choice) -> Check {
    let (status, what) = match c.reflink {
        Some(true) => (
            "ok",
            "copy driver with reflink: each VM disk is a copy-on-write clone of its image",
        ),
        Some(false) => (
            "warn",
            "copy driver: each VM disk is a full sparse copy of its image",
        ),
        None => (
            "warn",
            "copy driver: each VM disk is a full sparse copy of its image (reflink unknown)",
        ),
    };
    check("disk driver", status, format!("{what} ({})", c.reason))
}

/// Whether `ssh <vm>.<domain>` can resolve from the host.
pub fn resolver(f: &Facts) -> Check {
    // What the daemon's network start-up did, when it ran in this process.
    if let Some(status) = crate::network::status() {
        return status.check();
    }
    if at(f.root, "/run/systemd/resolve/io.systemd.Resolve").exists() {
        check(
            "dns routing",
            "ok",
            format!("systemd-resolved routes ~{} to banger's DNS", f.domain),
        )
    } else {
        check(
            "dns routing",
            "warn",
            format!(
                "systemd-resolved is not running; to resolve *.{d} from the host add `server=/{d}/<bridge address>` to dnsmasq, or use `banger vm ssh NAME`",
                d = f.domain
            ),
        )
    }
}

/// Whether guests' packets can be forwarded to the outside: IPv4
/// forwarding on, and no Docker firewall in the way (Docker sets the
/// iptables FORWARD policy to DROP, which banger's accept rules in its own
/// table cannot override; the daemon cannot list other tables as non-root,
/// so Docker's presence is the evidence).
pub fn forwarding(f: &Facts) -> Check {
    let path = at(f.root, "/proc/sys/net/ipv4/ip_forward");
    let mut warn = Vec::new();
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => warn.push(
            "IPv4 forwarding is off, so VMs cannot reach the outside (the daemon turns it on at start-up; `banger system restart` does it again)"
                .to_string(),
        ),
        Err(e) => warn.push(format!("cannot read {}: {e}", path.display())),
    }
    let docker =
        at(f.root, "/sys/class/net/docker0").exists() || at(f.root, "/run/docker.sock").exists();
    if docker {
        warn.push(format!(
            "Docker is present: if its FORWARD policy is DROP, let banger's bridge through with `iptables -I DOCKER-USER -i {b} -j ACCEPT` and `iptables -I DOCKER-USER -o {b} -j ACCEPT`",
            b = f.bridge
        ));
    }
    if warn.is_empty() {
        check("forwarding", "ok", "IPv4 forwarding is on")
    } else {
        check("forwarding", "warn", warn.join("; "))
    }
}

/// How privileged steps are done.
pub fn privileges(f: &Facts) -> Check {
    match f.privileges {
        "helper" => check("privileges", "ok", "root helper (system install)"),
        "direct" => check(
            "privileges",
            "warn",
            "development mode as root: helper hardening bypassed; not for shared hosts",
        ),
        other => check(
            "privileges",
            "warn",
            format!(
                "development mode via {other}: helper hardening bypassed; not for shared hosts"
            ),
        ),
    }
}

/// Every check, in display order.
pub fn run(f: &Facts) -> Vec<Check> {
    vec![
        backend(f),
        disk_driver(f),
        resolver(f),
        forwarding(f),
        privileges(f),
        jailer(f),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_driver_line_says_one_thing_per_filesystem() {
        use crate::vmdisk::driver::{Choice, Driver};
        let choice = |reflink| Choice {
            driver: Driver::Copy,
            reason: "no device-mapper in /proc/misc; x".into(),
            reflink,
        };
        let yes = copy_driver(&choice(Some(true)));
        assert_eq!(yes.status, "ok");
        assert!(yes.detail.contains("copy-on-write clone"), "{yes:?}");
        assert!(!yes.detail.contains("full"), "{yes:?}");
        for r in [Some(false), None] {
            let no = copy_driver(&choice(r));
            assert_eq!(no.status, "warn");
            assert!(no.detail.contains("full sparse copy"), "{no:?}");
            assert!(!no.detail.contains("clone"), "{no:?}");
        }
    }

    fn facts<'a>(root: &'a Path, fc: &'a Path) -> Facts<'a> {
        Facts {
            root,
            firecracker_bin: fc,
            privileges: "helper",
            domain: "vm",
            state_dir: root,
            bridge: "banger0",
            vmm: banger_proto::api::VmmChoice::Auto,
            jailer_bin: Path::new("/nonexistent/jailer"),
        }
    }

    #[test]
    fn the_jailer_must_be_present_root_owned_and_static() {
        let root = tempfile::tempdir().unwrap();
        let mut f = facts(root.path(), Path::new("/bin/ls"));
        let c = jailer(&f);
        assert_eq!(c.status, "fail", "{c:?}");
        assert!(c.detail.contains("no jailer"), "{c:?}");
        f.privileges = "sudo";
        assert_eq!(jailer(&f).status, "ok", "development: only noted");
        f.privileges = "helper";
        // A root-owned dynamic binary (when tests run as root), or not root's.
        f.jailer_bin = Path::new("/bin/ls");
        let c = jailer(&f);
        assert_ne!(c.status, "ok", "{c:?}");
        let mine = root.path().join("jailer");
        std::fs::write(&mine, b"x").unwrap();
        f.jailer_bin = &mine;
        let c = jailer(&f);
        if rustix::process::getuid().is_root() {
            // Root made it: root-owned, mode 0644 from umask, not ELF.
            assert_eq!(c.status, "ok", "{c:?}");
        } else {
            assert!(c.detail.contains("owned by root"), "{c:?}");
        }
    }

    #[test]
    fn a_forced_vmm_is_shown_with_why() {
        let root = tempfile::tempdir().unwrap();
        let mut f = facts(root.path(), Path::new("/nonexistent/fc"));
        f.vmm = banger_proto::api::VmmChoice::Qemu;
        let c = backend(&f);
        assert!(c.detail.contains("vmm = qemu (forced)"), "{c:?}");
        f.vmm = banger_proto::api::VmmChoice::Firecracker;
        let c = backend(&f);
        assert!(c.detail.starts_with("firecracker"), "{c:?}");
    }

    fn touch(root: &Path, p: &str) {
        let p = at(root, p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }

    #[test]
    fn nested_pvm_picks_qemu_tcg_and_no_dm_picks_copy() {
        let root = tempfile::tempdir().unwrap();
        touch(root.path(), "/dev/kvm");
        std::fs::create_dir_all(at(root.path(), "/sys/module/kvm_pvm")).unwrap();
        let fc = root.path().join("fc");
        let c = run(&facts(root.path(), &fc));
        assert!(
            c[0].detail.contains("TCG") && c[0].detail.contains("kvm_pvm"),
            "{c:?}"
        );
        assert!(c[1].detail.starts_with("copy driver"), "{c:?}");
        assert!(c[2].detail.contains("server=/vm/"));
    }

    #[test]
    fn kvm_firecracker_dm_resolved_all_ok() {
        let root = tempfile::tempdir().unwrap();
        for p in [
            "/dev/kvm",
            "/proc/misc",
            "/proc/sys/net/ipv4/ip_forward",
            "/run/systemd/resolve/io.systemd.Resolve",
        ] {
            touch(root.path(), p);
        }
        std::fs::write(at(root.path(), "/proc/misc"), "236 device-mapper\n").unwrap();
        std::fs::write(at(root.path(), "/proc/sys/net/ipv4/ip_forward"), "1\n").unwrap();
        let fc = root.path().join("fc");
        std::fs::write(&fc, "").unwrap();
        let mut f = facts(root.path(), &fc);
        // A root-owned jailer only root can make; others check the rest.
        let jailer = root.path().join("jailer");
        std::fs::write(&jailer, "").unwrap();
        f.jailer_bin = &jailer;
        let c = run(&f);
        let is_root = rustix::process::getuid().is_root();
        assert!(
            c.iter()
                .all(|c| c.status == "ok" || (!is_root && c.name == "jailer")),
            "{c:?}"
        );
        assert!(c[0].detail.starts_with("firecracker"));
        assert!(c[1].detail.starts_with("dm-snapshot"));
    }

    #[test]
    fn forwarding_off_and_docker_are_reported_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let fc = root.path().join("fc");
        let f = facts(root.path(), &fc);
        // Unreadable: said, not assumed.
        let c = forwarding(&f);
        assert_eq!(c.status, "warn");
        assert!(c.detail.contains("cannot read"), "{c:?}");
        touch(root.path(), "/proc/sys/net/ipv4/ip_forward");
        std::fs::write(at(root.path(), "/proc/sys/net/ipv4/ip_forward"), "0\n").unwrap();
        let c = forwarding(&f);
        assert_eq!(c.status, "warn");
        assert!(c.detail.starts_with("IPv4 forwarding is off"), "{c:?}");
        std::fs::write(at(root.path(), "/proc/sys/net/ipv4/ip_forward"), "1\n").unwrap();
        assert_eq!(forwarding(&f).status, "ok");
        std::fs::create_dir_all(at(root.path(), "/sys/class/net/docker0")).unwrap();
        let c = forwarding(&f);
        assert_eq!(c.status, "warn");
        assert!(
            c.detail
                .contains("iptables -I DOCKER-USER -i banger0 -j ACCEPT"),
            "{c:?}"
        );
        assert!(!c.detail.contains("forwarding is off"));
    }

    #[test]
    fn a_dynamically_linked_firecracker_is_a_warning() {
        let root = tempfile::tempdir().unwrap();
        touch(root.path(), "/dev/kvm");
        // ls stands in for a glibc-linked build; busybox-static for the release binary.
        let c = backend(&facts(root.path(), Path::new("/bin/ls")));
        assert_eq!(c.status, "warn", "{c:?}");
        assert!(c.detail.contains("dynamically linked"), "{c:?}");
        // Unjailed in development mode it runs: said, not warned.
        let mut dev = facts(root.path(), Path::new("/bin/ls"));
        dev.privileges = "direct";
        let c = backend(&dev);
        assert_eq!(c.status, "ok", "{c:?}");
        assert!(c.detail.contains("dynamically linked"), "{c:?}");
        let c = backend(&facts(root.path(), Path::new("/bin/busybox")));
        assert_eq!(c.status, "ok", "{c:?}");
    }
}
