//! Gates for processes: which PIDs may be signalled, with which signals,
//! which binaries root may execute, and the shape of a VM id.

use super::Refused;
use banger_sys::fsops;
use nix::sys::signal::Signal;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Rule text of the Firecracker PID gate.
pub const FIRECRACKER_RULE: &str =
    "pid must be a firecracker process (/proc/<pid>/cmdline argv[0] must contain \"firecracker\")";

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

/// `priv.kill_process` / `priv.signal_process`: `<proc_root>/<pid>/cmdline`
/// must name a Firecracker process: the file name of argv\[0\] contains
/// `firecracker` (stricter than "anywhere in the cmdline": `sleep
/// firecracker` or `vim firecracker.json` do not pass). The caller holds a
/// pidfd for `pid` while this runs and checks it is still alive afterwards.
pub fn firecracker_pid(proc_root: &Path, pid: i32) -> Result<i32, Refused> {
    let pid = pid_shape(pid)?;
    let argv = banger_sys::pidfd::read_cmdline(proc_root, pid)
        .map_err(|_| Refused::new(FIRECRACKER_RULE))?;
    let argv0 = argv.first().ok_or_else(|| Refused::new(FIRECRACKER_RULE))?;
    let name = argv0.rsplit(|b| *b == b'/').next().unwrap_or(argv0);
    if name
        .windows(b"firecracker".len())
        .any(|w| w == b"firecracker")
    {
        Ok(pid)
    } else {
        Err(Refused::new(FIRECRACKER_RULE))
    }
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

/// `priv.launch_firecracker` `vm_id`: `[a-z0-9-]`, 1..=32 characters.
pub fn vm_id(id: &str) -> Result<&str, Refused> {
    let ok = (1..=MAX_VM_ID).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if ok {
        Ok(id)
    } else {
        Err(Refused::new("vm_id must be 1-32 characters of [a-z0-9-]"))
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

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("bgtest-")
            .tempdir()
            .unwrap()
    }

    fn fixture(pid: i32, cmdline: &[u8]) -> tempfile::TempDir {
        let d = tmp();
        std::fs::create_dir(d.path().join(pid.to_string())).unwrap();
        std::fs::write(d.path().join(format!("{pid}/cmdline")), cmdline).unwrap();
        d
    }

    #[test]
    fn firecracker_pid_from_fixtures() {
        let pid = 4242;
        for ok in [
            &b"/usr/local/bin/firecracker\0--api-sock\0/run/x\0"[..],
            b"/firecracker\0--id\0vm1\0",
            b"firecracker-v1.16.1\0",
        ] {
            assert_eq!(firecracker_pid(fixture(pid, ok).path(), pid), Ok(pid));
        }
        for bad in [
            &b"/usr/sbin/sshd\0-D\0"[..],
            b"sleep\0firecracker\0",
            b"/usr/bin/vim\0/srv/firecracker/x.json\0",
            b"/opt/firecracker/bin/sh\0",
            b"",
        ] {
            assert_eq!(
                firecracker_pid(fixture(pid, bad).path(), pid),
                Err(Refused::new(FIRECRACKER_RULE)),
                "{bad:?}"
            );
        }
        let empty = tmp();
        assert_eq!(
            firecracker_pid(empty.path(), pid),
            Err(Refused::new(FIRECRACKER_RULE))
        );
        let fc = fixture(1, b"/firecracker\0");
        assert_eq!(
            firecracker_pid(fc.path(), 1).unwrap_err().0,
            "pid must be greater than 1"
        );
        assert!(firecracker_pid(fc.path(), 0).is_err());
        assert!(firecracker_pid(fc.path(), -1).is_err());
        let me = std::process::id() as i32;
        assert_eq!(
            firecracker_pid(fixture(me, b"/firecracker\0").path(), me)
                .unwrap_err()
                .0,
            "pid must not be the helper itself"
        );
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
        for ok in ["a", "vm-1", "0123456789abcdef0123456789abcdef"] {
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
        ] {
            assert!(vm_id(bad).is_err(), "{bad}");
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
