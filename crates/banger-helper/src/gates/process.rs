//! Gates for processes: the shape of a pid, which signals, which binaries
//! root may execute, which launches the mode allows, and the shape of a VM
//! id. Whether a pid is one the helper launched is `crate::launched`.

use super::Refused;
use banger_sys::fsops;
use nix::sys::signal::Signal;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Longest VM id.
pub const MAX_VM_ID: usize = 32;

/// A pid that may be a target at all: greater than 1 and not the helper.
pub fn pid_shape(pid: i32) -> Result<i32, Refused> {
    if pid <= 1 {
        return Err(Refused::new("pid must be greater than 1"));
    }
    if pid == std::process::id() as i32 {
        return Err(Refused::new("pid must not be the helper itself"));
    }
    Ok(pid)
}

/// Signals a caller may ask for, by name.
pub const SIGNALS: &[(&str, Signal)] = &[
    ("SIGTERM", Signal::SIGTERM),
    ("SIGKILL", Signal::SIGKILL),
    ("SIGINT", Signal::SIGINT),
    ("SIGHUP", Signal::SIGHUP),
    ("SIGQUIT", Signal::SIGQUIT),
    ("SIGCONT", Signal::SIGCONT),
    ("SIGSTOP", Signal::SIGSTOP),
    ("SIGUSR1", Signal::SIGUSR1),
    ("SIGUSR2", Signal::SIGUSR2),
];

/// `priv.signal_process` `signal`: one of [`SIGNALS`], exact spelling.
pub fn signal_by_name(name: &str) -> Result<Signal, Refused> {
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            Refused::new(
                "signal must be one of SIGTERM, SIGKILL, SIGINT, SIGHUP, SIGQUIT, SIGCONT, SIGSTOP, SIGUSR1, SIGUSR2",
            )
        })
}

/// Rule text of the VM id gate.
pub const VM_ID_RULE: &str = "vm_id must be 1-32 characters of [a-z0-9-] starting with [a-z0-9]";

/// `priv.launch_firecracker` `vm_id`: `[a-z0-9-]`, 1..=32 characters, the
/// first one `[a-z0-9]` (a leading `-` would read as a flag in the
/// jailer's or Firecracker's argv).
pub fn vm_id(id: &str) -> Result<&str, Refused> {
    let ok = (1..=MAX_VM_ID).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(id)
    } else {
        Err(Refused::new(VM_ID_RULE))
    }
}

/// Rule text of the launch-mode gate.
pub const JAILED_ONLY_RULE: &str =
    "jailed must be true: the system helper launches Firecracker only under the jailer (an unjailed launch is development mode only)";

/// `priv.launch_firecracker` `jailed` under the helper's launch policy.
pub fn launch_mode(policy: crate::host::LaunchPolicy, jailed: bool) -> Result<(), Refused> {
    match (policy, jailed) {
        (crate::host::LaunchPolicy::JailedOnly, false) => Err(Refused::new(JAILED_ONLY_RULE)),
        _ => Ok(()),
    }
}

/// `validateRootExecutable`: open `path` with `O_PATH|O_NOFOLLOW` and no
/// symlink allowed in any component (`RESOLVE_NO_SYMLINKS`), fstat through
/// that fd: a regular file, owned by root, not group- or world-writable.
/// Returns the fd, so the caller executes the very file it checked.
pub fn validate_root_executable(path: &Path) -> Result<OwnedFd, Refused> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(Refused::new(format!(
            "executable {shown} must be an absolute path"
        )));
    }
    let (fd, st) = fsops::open_path_no_symlinks(path).map_err(|e| match e {
        fsops::FsError::Open(_, io) if io.raw_os_error() == Some(libc::ELOOP) => Refused::new(
            format!("executable {shown} must not be a symlink or have one in its path"),
        ),
        _ => Refused::new(format!("executable {shown} must exist")),
    })?;
    // O_PATH|O_NOFOLLOW opens a symlink leaf as the link itself.
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(Refused::new(format!(
            "executable {shown} must not be a symlink or have one in its path"
        )));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Refused::new(format!(
            "executable {shown} must be a regular file"
        )));
    }
    if st.st_uid != 0 {
        return Err(Refused::new(format!(
            "executable {shown} must be owned by root"
        )));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(Refused::new(format!(
            "executable {shown} must not be group- or world-writable"
        )));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::PermissionsExt;

    use banger_testkit::tmp;

    #[test]
    fn pid_shape_refuses_init_the_helper_and_negatives() {
        assert_eq!(pid_shape(1).unwrap_err().0, "pid must be greater than 1");
        assert!(pid_shape(0).is_err() && pid_shape(-1).is_err());
        let me = std::process::id() as i32;
        assert_eq!(
            pid_shape(me).unwrap_err().0,
            "pid must not be the helper itself"
        );
        assert_eq!(pid_shape(4242), Ok(4242));
    }

    #[test]
    fn launch_mode_follows_the_policy() {
        use crate::host::LaunchPolicy::*;
        assert_eq!(
            launch_mode(JailedOnly, false).unwrap_err().0,
            JAILED_ONLY_RULE
        );
        assert!(launch_mode(JailedOnly, true).is_ok());
        assert!(launch_mode(Development, false).is_ok());
        assert!(launch_mode(Development, true).is_ok());
    }

    #[test]
    fn signals_allowlist() {
        assert_eq!(signal_by_name("SIGTERM"), Ok(Signal::SIGTERM));
        assert_eq!(signal_by_name("SIGKILL"), Ok(Signal::SIGKILL));
        assert_eq!(signal_by_name("SIGUSR2"), Ok(Signal::SIGUSR2));
        for bad in [
            "", "TERM", "sigterm", "SIGSEGV", "SIGTERM ", "9", "SIGRTMIN",
        ] {
            assert!(
                signal_by_name(bad)
                    .unwrap_err()
                    .0
                    .starts_with("signal must be one of"),
                "{bad}"
            );
        }
    }

    #[test]
    fn vm_id_shape() {
        for ok in ["a", "vm-1", "0-", "0123456789abcdef0123456789abcdef"] {
            assert_eq!(vm_id(ok), Ok(ok));
        }
        for bad in [
            "",
            "VM",
            "a_b",
            "a/b",
            "a b",
            "../x",
            "0123456789abcdef0123456789abcdef0",
            "é",
            "-",
            "--help",
            "-vm",
        ] {
            assert_eq!(vm_id(bad).unwrap_err().0, VM_ID_RULE, "{bad}");
        }
    }

    fn root_only() -> bool {
        if rustix::process::geteuid().is_root() {
            return true;
        }
        println!("skipped: needs root to chown fixtures");
        false
    }

    #[test]
    fn root_validate_root_executable_variants() {
        if !root_only() {
            return;
        }
        let d = tmp();
        let good = d.path().join("good");
        std::fs::copy("/usr/bin/true", &good).unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(validate_root_executable(&good).is_ok());

        std::os::unix::fs::symlink(&good, d.path().join("leaf-link")).unwrap();
        let e = validate_root_executable(&d.path().join("leaf-link")).unwrap_err();
        assert!(e.0.contains("must not be a symlink"), "{e}");

        std::os::unix::fs::symlink(d.path(), d.path().join("dir-link")).unwrap();
        let e = validate_root_executable(&d.path().join("dir-link/good")).unwrap_err();
        assert!(e.0.contains("must not be a symlink"), "{e}");

        let foreign = d.path().join("foreign");
        std::fs::copy(&good, &foreign).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        assert!(validate_root_executable(&foreign)
            .unwrap_err()
            .0
            .contains("owned by root"));

        for (name, mode) in [("gw", 0o775), ("ww", 0o757)] {
            let p = d.path().join(name);
            std::fs::copy(&good, &p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = validate_root_executable(&p).unwrap_err();
            assert!(e.0.contains("group- or world-writable"), "{name}: {e}");
        }

        std::fs::create_dir(d.path().join("dir")).unwrap();
        assert!(validate_root_executable(&d.path().join("dir"))
            .unwrap_err()
            .0
            .contains("regular file"));
        assert!(validate_root_executable(&d.path().join("missing"))
            .unwrap_err()
            .0
            .contains("must exist"));
        assert!(validate_root_executable(Path::new("rel/bin"))
            .unwrap_err()
            .0
            .contains("absolute"));
    }

    proptest! {
        #[test]
        fn accepted_vm_ids_are_short_lowercase_ascii(id in "\\PC{0,40}") {
            if vm_id(&id).is_ok() {
                prop_assert!(!id.is_empty() && id.len() <= MAX_VM_ID);
                prop_assert!(id.is_ascii());
                prop_assert!(!id.contains('/') && !id.contains('\0') && !id.contains(".."));
                prop_assert!(!id.chars().any(char::is_whitespace));
                prop_assert!(!id.starts_with('-'));
            }
        }

        #[test]
        fn accepted_signals_are_in_the_allowlist(name in "SIG[A-Z0-9]{0,6}|\\PC{0,10}") {
            if let Ok(sig) = signal_by_name(&name) {
                prop_assert!(SIGNALS.iter().any(|(n, s)| *n == name && *s == sig));
            }
        }

        #[test]
        fn pids_at_most_one_are_always_refused(pid in i32::MIN..=1) {
            prop_assert!(pid_shape(pid).is_err());
        }
    }
}
