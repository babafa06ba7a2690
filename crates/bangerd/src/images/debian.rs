//! `banger image build --debian SUITE`: a Debian root filesystem made with
//! debootstrap (as root) or `mmdebstrap --mode=unshare` (as the owner, no
//! root: a user namespace keeps ownership), with openssh-server and systemd
//! as init, ifupdown for the static network config banger writes into each
//! VM, an empty machine-id and no SSH host keys (each VM gets its own).

use banger_sys::runner::{Cmd, Runner};
use std::path::{Path, PathBuf};

/// Packages every banger Debian image has on top of minbase.
pub const INCLUDE: &str =
    "systemd-sysv,udev,kmod,openssh-server,iproute2,ifupdown,ca-certificates,netbase,dbus";

/// The default mirror.
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// Why a Debian build failed.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("invalid Debian suite {0:?}: use a codename like bookworm or trixie")]
    Suite(String),
    #[error("invalid mirror {0:?}: use an http(s) URL")]
    Mirror(String),
    #[error("running {0}")]
    Tool(&'static str, #[source] banger_sys::runner::RunError),
    #[error("preparing {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("measuring {0}")]
    Measure(PathBuf, #[source] std::io::Error),
    #[error(
        "a Debian build as the owner needs the setuid newuidmap, which this daemon cannot run \
         (NoNewPrivileges, as in the system install): build it with a development daemon \
         (`bangerd --dev`) and `banger image import` it"
    )]
    NoNewPrivs,
}

/// Whether a `/proc/<pid>/status` text says `NoNewPrivs` is set: then no
/// setuid helper (`newuidmap`) gains its privileges.
pub fn no_new_privs(status: &str) -> bool {
    status
        .lines()
        .filter_map(|l| l.strip_prefix("NoNewPrivs:"))
        .any(|v| v.trim() == "1")
}

/// A suite is a lowercase codename (or stable/testing/unstable/sid).
pub fn check_suite(suite: &str) -> Result<(), DebianError> {
    let ok = !suite.is_empty()
        && suite.len() <= 32
        && suite
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && suite.as_bytes()[0].is_ascii_lowercase();
    ok.then_some(())
        .ok_or_else(|| DebianError::Suite(suite.into()))
}

/// A mirror is an http(s) URL without whitespace.
pub fn check_mirror(m: &str) -> Result<(), DebianError> {
    let ok = (m.starts_with("http://") || m.starts_with("https://"))
        && !m.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(())
        .ok_or_else(|| DebianError::Mirror(m.into()))
}

/// The debootstrap argv (root path): into `target`. debootstrap takes no
/// `--`; [`check_suite`] keeps the suite from looking like an option.
pub fn debootstrap_cmd(suite: &str, target: &Path, mirror: &str) -> Cmd {
    Cmd::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={INCLUDE}"))
        .arg(suite)
        .arg(target)
        .arg(mirror)
}

/// The mmdebstrap argv (owner path): a tarball made in a user namespace.
pub fn mmdebstrap_cmd(suite: &str, tarball: &Path, mirror: &str) -> Cmd {
    Cmd::new("mmdebstrap")
        .arg("--mode=unshare")
        .arg("--variant=minbase")
        .arg(format!("--include={INCLUDE}"))
        .arg("--")
        .arg(suite)
        .arg(tarball)
        .arg(mirror)
}

/// After debootstrap: an empty machine-id, no leftover SSH host keys (the
/// daemon injects a fresh machine-id and host key into each VM) and the
/// boot trim ([`trim_entries`]).
pub fn finish_tree(root: &Path) -> Result<(), DebianError> {
    let id = root.join("etc/machine-id");
    std::fs::write(&id, "").map_err(|e| DebianError::Write(id, e))?;
    for k in HOST_KEYS {
        let _ = std::fs::remove_file(root.join("etc/ssh").join(k));
    }
    for d in TRIM_DIRS {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(|e| DebianError::Write(p, e))?;
    }
    for (path, entry) in trim_entries() {
        let p = root.join(&path);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DebianError::Write(p, e)),
        }
        match entry {
            Trim::Mask => std::os::unix::fs::symlink("/dev/null", &p),
            Trim::File(body) => std::fs::write(&p, body),
        }
        .map_err(|e| DebianError::Write(p, e))?;
    }
    Ok(())
}

/// Units a sandbox does not start at boot, masked (`/etc/systemd/system/
/// NAME -> /dev/null`). Under QEMU/TCG every process costs, so this is
/// everything but journald, the network (ifupdown), sshd and the serial
/// getty: periodic jobs (apt, dpkg backup, e2scrub, fstrim, tmpfiles
/// clean), the VT getty, pstore, module preloads and the debug/tracing/
/// hugepages/mqueue/configfs/fusectl mounts, the random seed (the kernel's
/// RNG seeds itself), utmp records, sysusers (the users are in the image),
/// remount-fs (the cmdline mounts `/` rw; fstab is empty), modules-load,
/// the journal flush (the journal stays in /run), ifupdown's `udevadm
/// settle` helper, logind (root over SSH needs no sessions), and udev (the
/// initramfs loads the virtio drivers; the serial getty is bound to no
/// device instead, see [`SERIAL_GETTY`]). Ctrl+Alt+Del is PID 1's own.
pub const MASKED_UNITS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "systemd-tmpfiles-clean.timer",
    "e2scrub_reap.service",
    "getty@tty1.service",
    "systemd-pstore.service",
    "modprobe@configfs.service",
    "modprobe@dm_mod.service",
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
    "modprobe@fuse.service",
    "modprobe@loop.service",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "systemd-random-seed.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-sysusers.service",
    "systemd-remount-fs.service",
    "systemd-modules-load.service",
    "systemd-journal-flush.service",
    "ifupdown-pre.service",
    "systemd-logind.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
];

/// Generators with nothing to find in a VM (no LUKS, verity, integrity,
/// GPT auto-discovery, hibernation or offline updates), masked in
/// `/etc/systemd/system-generators`.
pub const MASKED_GENERATORS: &[&str] = &[
    "systemd-cryptsetup-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-integritysetup-generator",
    "systemd-veritysetup-generator",
    "systemd-system-update-generator",
    // Cmdline debugging (`systemd.mask=`, `systemd.run=`): banger writes the cmdline.
    "systemd-debug-generator",
    "systemd-run-generator",
];

/// Directories the trim adds (for its drop-ins and generator masks).
const TRIM_DIRS: &[&str] = &[
    "etc/systemd/system-generators",
    "etc/systemd/system/ssh.service.d",
    "etc/systemd/system/networking.service.d",
    "etc/systemd/system/dbus.service.d",
    "etc/systemd/system.conf.d",
    "etc/ssh/sshd_config.d",
];

/// The serial console's getty as Debian's template has it, but bound to no
/// `dev-ttyS0.device` (without udev that device unit never appears).
pub const SERIAL_GETTY: &str = r#"# banger: Debian's serial-getty@.service without BindsTo/After=dev-%i.device
# (no udev in a banger VM, so that device unit never appears).
[Unit]
Description=Serial Getty on %I
Documentation=man:agetty(8)
After=systemd-user-sessions.service getty-pre.target rc-local.service
Before=getty.target
IgnoreOnIsolate=yes
Conflicts=rescue.service
Before=rescue.service

[Service]
ExecStart=-/sbin/agetty -o '-p -- \\u' --keep-baud 115200,57600,38400,9600 - $TERM
Type=idle
Restart=always
UtmpIdentifier=%I
StandardInput=tty
StandardOutput=tty
TTYPath=/dev/%I
TTYReset=yes
TTYVHangup=yes
IgnoreSIGPIPE=no
SendSIGHUP=yes
"#;

/// Drop-ins and unit files the trim writes: sshd starts without its
/// `sshd -t` pre-check and loads only the host key banger writes; `ifup`
/// runs without the if-*.d hook scripts (the daemon writes resolv.conf
/// itself); dbus starts after sshd (still there for what needs it, off the
/// path to SSH); PID 1 prints only errors on the console (each status line
/// is emulated serial output); the serial getty.
const TRIM_FILES: &[(&str, &str)] = &[
    (
        "etc/ssh/sshd_config.d/banger.conf",
        "# banger: each VM gets one ed25519 host key (no rsa/ecdsa to try).\n\
         HostKey /etc/ssh/ssh_host_ed25519_key\n",
    ),
    (
        "etc/systemd/system.conf.d/banger.conf",
        "# banger: the console shows errors only (serial output is slow under emulation).\n\
         [Manager]\nShowStatus=error\n",
    ),
    (
        "etc/systemd/system/ssh.service.d/banger.conf",
        "# banger: no `sshd -t` before each start (one process less at boot).\n\
         [Service]\nExecStartPre=\n",
    ),
    (
        "etc/systemd/system/networking.service.d/banger.conf",
        "# banger: ifup without the if-*.d hooks (resolv.conf is written by banger).\n\
         [Service]\nExecStart=\nExecStart=/sbin/ifup -a --read-environment --no-scripts\n",
    ),
    (
        "etc/systemd/system/dbus.service.d/banger.conf",
        "# banger: D-Bus after sshd, off the path to SSH.\n[Unit]\nAfter=ssh.service\n",
    ),
    (
        "etc/systemd/system/serial-getty@ttyS0.service",
        SERIAL_GETTY,
    ),
];

/// What one trim path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    /// A symlink to `/dev/null` (a masked unit or generator).
    Mask,
    /// A regular file (0644) with this content.
    File(&'static str),
}

/// Every path the trim writes (relative to the root), in order: the same
/// list for [`finish_tree`] and [`finish_layer`].
pub fn trim_entries() -> Vec<(String, Trim)> {
    let mut v: Vec<(String, Trim)> = MASKED_UNITS
        .iter()
        .map(|u| (format!("etc/systemd/system/{u}"), Trim::Mask))
        .collect();
    v.extend(
        MASKED_GENERATORS
            .iter()
            .map(|g| (format!("etc/systemd/system-generators/{g}"), Trim::Mask)),
    );
    v.extend(
        TRIM_FILES
            .iter()
            .map(|(p, b)| (p.to_string(), Trim::File(b))),
    );
    v
}

/// SSH host keys Debian's openssh-server generates at install.
const HOST_KEYS: &[&str] = &[
    "ssh_host_rsa_key",
    "ssh_host_rsa_key.pub",
    "ssh_host_ecdsa_key",
    "ssh_host_ecdsa_key.pub",
    "ssh_host_ed25519_key",
    "ssh_host_ed25519_key.pub",
];

/// What [`finish_tree`] does, as an OCI layer for the rootless path: OCI
/// whiteouts for the SSH host keys, an empty `/etc/machine-id` and the
/// boot trim (its directories, `/dev/null` symlinks and files).
pub fn finish_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(kind);
        h
    };
    let fail = "appending to an in-memory tar cannot fail";
    for k in HOST_KEYS {
        let mut h = header(tar::EntryType::Regular, 0o644, 0);
        b.append_data(&mut h, format!("etc/ssh/.wh.{k}"), std::io::empty())
            .expect(fail);
    }
    let mut h = header(tar::EntryType::Regular, 0o444, 0);
    b.append_data(&mut h, "etc/machine-id", std::io::empty())
        .expect(fail);
    for d in TRIM_DIRS {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())
            .expect(fail);
    }
    for (path, entry) in trim_entries() {
        match entry {
            Trim::Mask => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, &path, "/dev/null").expect(fail);
            }
            Trim::File(body) => {
                let mut h = header(tar::EntryType::Regular, 0o644, body.len() as u64);
                b.append_data(&mut h, &path, body.as_bytes()).expect(fail);
            }
        }
    }
    b.into_inner()
        .expect("finishing an in-memory tar cannot fail")
}

/// Bytes used by a tree (`du -sb`), for sizing the ext4.
pub fn tree_bytes(runner: &dyn Runner, root: &Path) -> Result<u64, DebianError> {
    let out = runner
        .run(&Cmd::new("du").args(["-sb", "--"]).arg(root))
        .map_err(|e| DebianError::Tool("du", e))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            DebianError::Measure(root.into(), std::io::Error::other("du printed no size"))
        })
}

/// `mkfs.ext4 -d ROOT OUT SIZE` (as root: ownership is the tree's own).
pub fn mkfs_cmd(root: &Path, out: &Path, size_bytes: u64) -> Cmd {
    Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "rootfs", "-d"])
        .arg(root)
        .arg(out)
        .arg(format!("{}k", size_bytes.div_ceil(1024)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_new_privs_is_read_from_the_status_text() {
        let status = "Name:\tbangerd\nSeccomp:\t2\nNoNewPrivs:\t1\nSpeculation_Store_Bypass:\tx\n";
        assert!(no_new_privs(status));
        assert!(!no_new_privs(
            &status.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0")
        ));
        assert!(!no_new_privs("Name:\tbangerd\n"));
        let e = DebianError::NoNewPrivs.to_string();
        assert!(!e.contains('\n') && e.contains("image import"), "{e}");
    }

    use super::*;

    #[test]
    fn suites_and_mirrors() {
        for ok in ["bookworm", "trixie", "sid", "stable"] {
            assert!(check_suite(ok).is_ok());
        }
        for bad in ["", "Bookworm", "../x", "a b", "--foreign", "1x"] {
            assert!(check_suite(bad).is_err(), "{bad}");
        }
        assert!(check_mirror(MIRROR).is_ok());
        assert!(check_mirror("file:///etc").is_err());
        assert!(check_mirror("http://a b").is_err());
    }

    #[test]
    fn argv_never_lets_a_suite_become_an_option() {
        let c = debootstrap_cmd("bookworm", Path::new("/s/t"), MIRROR);
        assert_eq!(
            c.argv(),
            vec![
                "debootstrap",
                "--variant=minbase",
                &format!("--include={INCLUDE}"),
                "bookworm",
                "/s/t",
                MIRROR
            ]
        );
        let c = mmdebstrap_cmd("trixie", Path::new("/s/r.tar"), MIRROR);
        assert_eq!(c.argv()[1], "--mode=unshare");
        assert_eq!(c.argv()[4], "--");
    }

    #[test]
    fn finish_layer_whiteouts_every_host_key() {
        let bytes = finish_layer();
        let mut a = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"etc/ssh/.wh.ssh_host_ed25519_key".to_string()));
        assert!(names.contains(&"etc/machine-id".to_string()));
        assert_eq!(
            names.len(),
            HOST_KEYS.len() + 1 + TRIM_DIRS.len() + trim_entries().len()
        );
    }

    #[test]
    fn the_trim_keeps_what_a_vm_needs() {
        for keep in [
            "ssh",
            "journald",
            "networking",
            "getty",
            "ctrl-alt-del",
            "reboot",
            "poweroff",
        ] {
            assert!(
                !MASKED_UNITS.iter().any(|u| u.contains(keep))
                    || keep == "getty" && MASKED_UNITS.contains(&"getty@tty1.service"),
                "{keep}"
            );
        }
        assert!(!MASKED_UNITS.iter().any(|u| u.starts_with("serial-getty")));
        let e = trim_entries();
        let mut paths: Vec<&String> = e.iter().map(|(p, _)| p).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), e.len(), "no path twice");
        for (p, _) in &e {
            let parent = Path::new(p).parent().unwrap().to_str().unwrap();
            assert!(
                parent == "etc/systemd/system" || TRIM_DIRS.contains(&parent),
                "{p}"
            );
        }
    }

    /// The root path's tree and the rootless path's layer carry the same
    /// trim: each path the same kind, target and content.
    #[test]
    fn tree_and_layer_trim_alike() {
        use std::collections::BTreeMap;
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc/ssh/sshd_config.d")).unwrap();
        std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
        // An enabled unit's file in the way: replaced by the mask.
        std::fs::write(r.join("etc/systemd/system/fstrim.timer"), "x").unwrap();
        finish_tree(r).unwrap();
        finish_tree(r).unwrap(); // idempotent
        let mut tree = BTreeMap::new();
        for (p, _) in trim_entries() {
            let full = r.join(&p);
            let m = std::fs::symlink_metadata(&full).unwrap();
            let v = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&full).unwrap().display())
            } else {
                std::fs::read_to_string(&full).unwrap()
            };
            tree.insert(p, v);
        }
        let bytes = finish_layer();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut layer = BTreeMap::new();
        let mut dirs = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            match e.header().entry_type() {
                tar::EntryType::Symlink => {
                    let t = e.link_name().unwrap().unwrap().display().to_string();
                    layer.insert(p, format!("-> {t}"));
                }
                tar::EntryType::Directory => dirs.push(p.trim_end_matches('/').to_string()),
                _ if p.starts_with("etc/ssh/.wh.") || p == "etc/machine-id" => {}
                _ => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                    layer.insert(p, s);
                }
            }
        }
        assert_eq!(tree, layer);
        assert_eq!(dirs, TRIM_DIRS);
        assert_eq!(tree["etc/systemd/system/fstrim.timer"], "-> /dev/null");
        assert!(tree["etc/systemd/system/serial-getty@ttyS0.service"].contains("'-p -- \\\\u'"));
        for d in TRIM_DIRS {
            assert!(r.join(d).is_dir(), "{d}");
        }
    }

    #[test]
    fn finish_tree_empties_machine_id_and_drops_host_keys() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc/ssh")).unwrap();
        std::fs::write(r.join("etc/machine-id"), "abc\n").unwrap();
        std::fs::write(r.join("etc/ssh/ssh_host_ed25519_key"), "k").unwrap();
        std::fs::write(r.join("etc/ssh/sshd_config"), "x").unwrap();
        finish_tree(r).unwrap();
        assert_eq!(
            std::fs::read_to_string(r.join("etc/machine-id")).unwrap(),
            ""
        );
        assert!(!r.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(r.join("etc/ssh/sshd_config").exists());
        finish_tree(r).unwrap(); // idempotent
    }
}
