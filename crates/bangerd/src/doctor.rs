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

/// Which VMM backend to use on this host, and why.
pub fn backend(f: &Facts) -> Check {
    let kvm = at(f.root, "/dev/kvm").exists();
    let pvm = at(f.root, "/sys/module/kvm_pvm").exists();
    let fc = f.firecracker_bin.is_file();
    match (kvm, pvm, fc) {
        (true, false, true) => check(
            "backend",
            "ok",
            format!("firecracker ({} with /dev/kvm)", f.firecracker_bin.display()),
        ),
        (true, true, _) => check(
            "backend",
            "warn",
            "qemu-microvm with TCG: /dev/kvm is a nested PVM hypervisor (kvm_pvm loaded) that cannot run a stock guest kernel",
        ),
        (false, _, _) => check(
            "backend",
            "warn",
            "qemu-microvm with TCG: /dev/kvm is absent",
        ),
        (true, false, false) => check(
            "backend",
            "warn",
            format!(
                "qemu-microvm with KVM: no Firecracker binary at {} (install it from Firecracker's releases)",
                f.firecracker_bin.display()
            ),
        ),
    }
}

/// Which VM-disk driver to use, and why ([`crate::disks::driver::select`]:
/// device-mapper listed in `<root>/proc/misc`, else the copy fallback with a
/// reflink probe of the StateDir).
pub fn disk_driver(f: &Facts) -> Check {
    use crate::disks::driver::{select, Driver};
    let c = select(&at(f.root, "/proc"), f.state_dir);
    match c.driver {
        Driver::DmSnapshot => check(
            "disk driver",
            "ok",
            format!("dm-snapshot: O(1) copy-on-write VM disks ({})", c.reason),
        ),
        Driver::Copy => check(
            "disk driver",
            "warn",
            format!(
                "copy fallback: each VM disk is a copy of its image that never writes it ({})",
                c.reason
            ),
        ),
    }
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
    vec![backend(f), disk_driver(f), resolver(f), privileges(f)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(root: &'a Path, fc: &'a Path) -> Facts<'a> {
        Facts {
            root,
            firecracker_bin: fc,
            privileges: "helper",
            domain: "vm",
            state_dir: root,
        }
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
        assert!(c[1].detail.starts_with("copy fallback"));
        assert!(c[2].detail.contains("server=/vm/"));
    }

    #[test]
    fn kvm_firecracker_dm_resolved_all_ok() {
        let root = tempfile::tempdir().unwrap();
        for p in [
            "/dev/kvm",
            "/proc/misc",
            "/run/systemd/resolve/io.systemd.Resolve",
        ] {
            touch(root.path(), p);
        }
        std::fs::write(at(root.path(), "/proc/misc"), "236 device-mapper\n").unwrap();
        let fc = root.path().join("fc");
        std::fs::write(&fc, "").unwrap();
        let c = run(&facts(root.path(), &fc));
        assert!(c.iter().all(|c| c.status == "ok"), "{c:?}");
        assert!(c[0].detail.starts_with("firecracker"));
        assert!(c[1].detail.starts_with("dm-snapshot"));
    }
}
