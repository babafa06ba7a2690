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

/// After debootstrap: an empty machine-id and no leftover SSH host keys
/// (the daemon injects a fresh machine-id and host key into each VM).
pub fn finish_tree(root: &Path) -> Result<(), DebianError> {
    let id = root.join("etc/machine-id");
    std::fs::write(&id, "").map_err(|e| DebianError::Write(id, e))?;
    for k in HOST_KEYS {
        let _ = std::fs::remove_file(root.join("etc/ssh").join(k));
    }
    Ok(())
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
/// whiteouts for the SSH host keys and an empty `/etc/machine-id`.
pub fn finish_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, std::io::empty())
            .expect("appending to an in-memory tar cannot fail");
    };
    for k in HOST_KEYS {
        add(&format!("etc/ssh/.wh.{k}"), 0o644);
    }
    add("etc/machine-id", 0o444);
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
        assert_eq!(names.len(), HOST_KEYS.len() + 1);
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
