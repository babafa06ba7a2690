//! Gates for paths the caller names: sockets under RuntimeDir, jailer
//! chroots under the jailer base, log files under StateDir.

use super::Refused;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::io;
use std::path::{Component, Path, PathBuf};

/// Linux `PATH_MAX` minus the terminating NUL.
pub const MAX_PATH_BYTES: usize = 4095;
/// Linux `NAME_MAX`.
pub const MAX_NAME_BYTES: usize = 255;

/// Rule text for the component character set below a configured directory.
pub const CHARSET_RULE: &str = "may only use [A-Za-z0-9._-] in each component";

fn name_char_ok(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
}

/// `raw` as a path strictly below `base`: absolute, no NUL, lexically clean
/// (no empty, `.` or `..` component, no trailing `/`), at most PATH_MAX,
/// and every component below `base` from `[A-Za-z0-9._-]`, 1..=NAME_MAX
/// bytes. `what` names the argument in the refusal, `base_name` the
/// configured directory (e.g. `RuntimeDir`).
pub fn clean_path_below(
    base: &Path,
    raw: &str,
    what: &str,
    base_name: &str,
) -> Result<PathBuf, Refused> {
    if raw.contains('\0') {
        return Err(Refused::new(format!("{what} must not contain a NUL byte")));
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(Refused::new(format!(
            "{what} must be at most {MAX_PATH_BYTES} bytes"
        )));
    }
    if !raw.starts_with('/') {
        return Err(Refused::new(format!("{what} must be an absolute path")));
    }
    let clean = raw.len() > 1
        && !raw.ends_with('/')
        && raw[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !clean {
        return Err(Refused::new(format!(
            "{what} must be lexically clean (no empty, `.` or `..` component, no trailing /)"
        )));
    }
    let path = PathBuf::from(raw);
    let rel = match path.strip_prefix(base) {
        Ok(r) if r.components().next().is_some() => r.to_path_buf(),
        _ => {
            return Err(Refused::new(format!(
                "{what} must be below {base_name} ({})",
                base.display()
            )))
        }
    };
    for c in rel.components() {
        let Component::Normal(name) = c else {
            unreachable!("a clean absolute path has only normal components")
        };
        let b = name.as_encoded_bytes();
        if b.len() > MAX_NAME_BYTES || !b.iter().all(|c| name_char_ok(*c)) {
            return Err(Refused::new(format!(
                "{what} below {base_name} {CHARSET_RULE} (at most {MAX_NAME_BYTES} bytes)"
            )));
        }
    }
    Ok(path)
}

/// What `lstat` says about a leaf, without following it.
fn lstat(path: &Path) -> io::Result<std::fs::Metadata> {
    std::fs::symlink_metadata(path)
}

/// The type of the leaf of `path` (strictly below `base`), looked up from
/// the `base` anchor with `openat2(O_PATH|O_NOFOLLOW)` and `RESOLVE_BENEATH
/// | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`: a symlink at the leaf is
/// returned as one, a symlink in a directory fails with `ELOOP`, and no
/// mount below `base` is ever entered (`EXDEV`) — a FUSE mount the owner
/// placed there cannot park the helper thread in a lookup.
fn leaf_type_beneath(base: &Path, path: &Path) -> io::Result<FileType> {
    let rel = path
        .strip_prefix(base)
        .map_err(|_| io::Error::from_raw_os_error(libc::EXDEV))?;
    let anchor = rustix::fs::open(
        base,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let fd = rustix::fs::openat2(
        &anchor,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        banger_sys::beneath::strict(),
    )?;
    Ok(FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode))
}

/// The refusal for a failed [`leaf_type_beneath`] lookup other than ENOENT.
fn walk_refusal(what: &str, base_name: &str, e: &io::Error) -> Refused {
    match e.raw_os_error() {
        Some(libc::ELOOP) => Refused::new(format!("{what} must not pass through a symlink")),
        Some(libc::EXDEV) => {
            Refused::new(format!("{what} must not cross a mount below {base_name}"))
        }
        _ => Refused::new(format!("{what} must exist")),
    }
}

/// `priv.ensure_socket_access`: a clean path below RuntimeDir whose leaf
/// exists, is not a symlink and is a socket, reached with no symlink and no
/// mount on the way (`leaf_type_beneath`). The leaf can still be
/// swapped afterwards: the host operation resolves it again with no symlink
/// allowed anywhere (`openat2`), and acts through the fd it opened.
pub fn socket_path(runtime_dir: &Path, raw: &str) -> Result<PathBuf, Refused> {
    let path = clean_path_below(runtime_dir, raw, "socket path", "RuntimeDir")?;
    let ft = leaf_type_beneath(runtime_dir, &path)
        .map_err(|e| walk_refusal("socket path", "RuntimeDir", &e))?;
    if ft == FileType::Symlink {
        return Err(Refused::new("socket path must not be a symlink"));
    }
    if ft != FileType::Socket {
        return Err(Refused::new("socket path must be a socket"));
    }
    Ok(path)
}

/// The rule a socket broke when the helper opened it (checked on the fd, or
/// refused by the kernel's resolve flags), or `None` for a host failure.
pub fn socket_opened(e: &banger_sys::fsops::FsError) -> Option<Refused> {
    use banger_sys::fsops::FsError;
    let rule = match e {
        FsError::WrongType(..) => "socket path must be a socket".to_string(),
        FsError::HardLinked(_, n) => format!("socket path must have exactly one link (it has {n})"),
        FsError::ForeignOwner(_, uid) => {
            format!("socket path must be owned by the owner, root or a jail uid (it is owned by uid {uid})")
        }
        FsError::Open(_, io) => match io.raw_os_error() {
            Some(libc::ELOOP) => "socket path must not pass through a symlink".to_string(),
            Some(libc::EXDEV) => "socket path must not cross a mount below RuntimeDir".to_string(),
            _ => return None,
        },
        _ => return None,
    };
    Some(Refused::new(rule))
}

/// A validated jail chroot: present (symlink-free, a directory) or absent
/// (already cleaned up: nothing to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chroot {
    Present(PathBuf),
    Absent(PathBuf),
}

/// `priv.cleanup_jailer_chroot`: a clean path strictly below the jailer
/// base; the leaf (lstat) must not be a symlink and must be a directory;
/// no intermediate component may be a symlink either (the canonical path
/// must equal the cleaned one, which also requires the jailer base itself
/// to be symlink-free).
pub fn jailer_chroot(jailer_base: &Path, raw: &str) -> Result<Chroot, Refused> {
    let path = clean_path_below(jailer_base, raw, "chroot path", "the jailer base")?;
    let md = match lstat(&path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Chroot::Absent(path)),
        Err(_) => return Err(Refused::new("chroot path must be readable by lstat")),
    };
    if md.file_type().is_symlink() {
        return Err(Refused::new("chroot path must not be a symlink"));
    }
    if !md.is_dir() {
        return Err(Refused::new("chroot path must be a directory"));
    }
    match std::fs::canonicalize(&path) {
        Ok(real) if real == path => Ok(Chroot::Present(path)),
        _ => Err(Refused::new(
            "chroot path must not pass through a symlink (canonical path must equal the cleaned path)",
        )),
    }
}

/// `priv.launch_firecracker` `api_socket` (not jailed): a clean path below
/// RuntimeDir; Firecracker creates it, so the leaf need not exist, but its
/// directory must: resolved beneath RuntimeDir with no symlink in any
/// component and no mount crossed (`openat2` `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`), and a leaf that exists must
/// not be a symlink (looked up from that directory fd).
pub fn api_socket(runtime_dir: &Path, raw: &str) -> Result<PathBuf, Refused> {
    let path = clean_path_below(runtime_dir, raw, "api_socket", "RuntimeDir")?;
    let rel = path
        .strip_prefix(runtime_dir)
        .expect("clean_path_below checked the prefix");
    let parent = rel.parent().filter(|p| !p.as_os_str().is_empty());
    let leaf = rel.file_name().expect("a clean path has a last component");
    let anchor = rustix::fs::open(
        runtime_dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|_| Refused::new("api_socket: RuntimeDir must be a directory"))?;
    let dir = rustix::fs::openat2(
        &anchor,
        parent.unwrap_or(Path::new(".")),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        banger_sys::beneath::strict(),
    )
    .map_err(|_| {
        Refused::new(
            "api_socket directory must exist below RuntimeDir with no symlink and no mount in its path",
        )
    })?;
    match rustix::fs::statat(&dir, leaf, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
            Err(Refused::new("api_socket must not be a symlink"))
        }
        _ => Ok(path),
    }
}

/// `priv.launch_firecracker` `log_file`: a clean path below StateDir whose
/// leaf, if present, is not a symlink, reached with no symlink and no mount
/// on the way. The host operation opens it beneath StateDir the same way,
/// `O_NONBLOCK`, and refuses hard-linked, foreign or non-regular files.
pub fn log_file(state_dir: &Path, raw: &str) -> Result<PathBuf, Refused> {
    let path = clean_path_below(state_dir, raw, "log_file", "StateDir")?;
    match leaf_type_beneath(state_dir, &path) {
        Ok(FileType::Symlink) => Err(Refused::new("log_file must not be a symlink")),
        Ok(_) => Ok(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path),
        Err(e) => Err(walk_refusal("log_file", "StateDir", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::net::UnixListener;

    use banger_testkit::tmp;

    #[test]
    fn clean_path_below_accepts_and_refuses() {
        let b = Path::new("/run/banger");
        let ok = |s: &str| clean_path_below(b, s, "p", "RuntimeDir");
        assert_eq!(
            ok("/run/banger/fc.sock").unwrap(),
            Path::new("/run/banger/fc.sock")
        );
        assert!(ok("/run/banger/vm-1/fc_api.sock").is_ok());
        for (bad, rule) in [
            ("", "absolute"),
            ("run/banger/x", "absolute"),
            ("/run/banger/../etc/shadow", "lexically clean"),
            ("/run/banger/./x", "lexically clean"),
            ("/run/banger//x", "lexically clean"),
            ("/run/banger/x/", "lexically clean"),
            ("/run/banger", "below RuntimeDir"),
            ("/run/bangerx/y", "below RuntimeDir"),
            ("/etc/passwd", "below RuntimeDir"),
            ("/", "lexically clean"),
            ("/run/banger/a b", "[A-Za-z0-9._-]"),
            ("/run/banger/é", "[A-Za-z0-9._-]"),
            ("/run/banger/a\nb", "[A-Za-z0-9._-]"),
            ("/run/banger/a\0b", "NUL"),
        ] {
            let e = ok(bad).unwrap_err();
            assert!(e.0.contains(rule), "{bad:?}: {e}");
        }
        let long = format!("/run/banger/{}", "a".repeat(256));
        assert!(ok(&long).unwrap_err().0.contains("at most 255"));
        let huge = format!("/run/banger/{}", "a/".repeat(2100));
        assert!(ok(&huge).unwrap_err().0.contains("4095"));
    }

    #[test]
    fn socket_path_requires_a_real_socket_leaf() {
        let d = tmp();
        let rt = d.path();
        let sock = rt.join("fc.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        assert_eq!(socket_path(rt, sock.to_str().unwrap()).unwrap(), sock);
        std::fs::write(rt.join("file"), b"x").unwrap();
        std::os::unix::fs::symlink(&sock, rt.join("link")).unwrap();
        let s = |n: &str| rt.join(n).to_str().unwrap().to_string();
        assert_eq!(
            socket_path(rt, &s("link")).unwrap_err().0,
            "socket path must not be a symlink"
        );
        assert_eq!(
            socket_path(rt, &s("file")).unwrap_err().0,
            "socket path must be a socket"
        );
        assert_eq!(
            socket_path(rt, &s("missing")).unwrap_err().0,
            "socket path must exist"
        );
        assert!(socket_path(rt, "/etc/passwd")
            .unwrap_err()
            .0
            .contains("below RuntimeDir"));
    }

    #[test]
    fn jailer_chroot_refuses_symlinks_at_leaf_and_in_between() {
        let d = tmp();
        let base = d.path().join("jail");
        std::fs::create_dir_all(base.join("firecracker/vm1/root")).unwrap();
        std::fs::create_dir_all(d.path().join("elsewhere/root")).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), base.join("firecracker/vm2"))
            .unwrap();
        std::os::unix::fs::symlink(
            d.path().join("elsewhere/root"),
            base.join("firecracker/vm1/leaf"),
        )
        .unwrap();
        std::fs::write(base.join("firecracker/file"), b"").unwrap();
        let s = |r: &str| base.join(r).to_str().unwrap().to_string();
        assert_eq!(
            jailer_chroot(&base, &s("firecracker/vm1/root")).unwrap(),
            Chroot::Present(base.join("firecracker/vm1/root"))
        );
        assert_eq!(
            jailer_chroot(&base, &s("firecracker/vm9/root")).unwrap(),
            Chroot::Absent(base.join("firecracker/vm9/root"))
        );
        assert!(jailer_chroot(&base, &s("firecracker/vm1/leaf"))
            .unwrap_err()
            .0
            .contains("must not be a symlink"));
        assert!(jailer_chroot(&base, &s("firecracker/vm2/root"))
            .unwrap_err()
            .0
            .contains("must not pass through a symlink"));
        assert!(jailer_chroot(&base, &s("firecracker/file"))
            .unwrap_err()
            .0
            .contains("directory"));
        assert!(jailer_chroot(&base, base.to_str().unwrap())
            .unwrap_err()
            .0
            .contains("below the jailer base"));
        assert!(jailer_chroot(&base, "/")
            .unwrap_err()
            .0
            .contains("lexically clean"));
        assert!(jailer_chroot(&base, &s("firecracker/../../x")).is_err());
    }

    #[test]
    fn log_file_and_api_socket() {
        let d = tmp();
        let st = d.path();
        let s = |r: &str| st.join(r).to_str().unwrap().to_string();
        assert!(log_file(st, &s("vms/a/console.log")).is_ok());
        std::os::unix::fs::symlink("/etc/shadow", st.join("evil.log")).unwrap();
        assert_eq!(
            log_file(st, &s("evil.log")).unwrap_err().0,
            "log_file must not be a symlink"
        );
        assert!(log_file(st, "/var/log/x")
            .unwrap_err()
            .0
            .contains("below StateDir"));
        assert!(api_socket(st, &s("fc.sock")).is_ok());
        assert!(api_socket(st, "/tmp/../fc.sock").is_err());
        // Intermediate directories: must exist, no symlink among them.
        std::fs::create_dir_all(st.join("vms/a")).unwrap();
        assert!(api_socket(st, &s("vms/a/fc.sock")).is_ok());
        std::fs::create_dir(d.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), st.join("vms/b")).unwrap();
        for bad in ["vms/b/fc.sock", "vms/missing/fc.sock"] {
            assert!(
                api_socket(st, &s(bad))
                    .unwrap_err()
                    .0
                    .starts_with("api_socket directory must exist below RuntimeDir"),
                "{bad}"
            );
        }
        std::os::unix::fs::symlink("/etc/shadow", st.join("vms/a/link.sock")).unwrap();
        assert_eq!(
            api_socket(st, &s("vms/a/link.sock")).unwrap_err().0,
            "api_socket must not be a symlink"
        );
    }

    proptest! {
        #[test]
        fn accepted_paths_are_clean_ascii_and_below(raw in "(/run/banger)?(/[a-zA-Z0-9._\\- \\x00é]{0,6}){0,5}/?") {
            let base = Path::new("/run/banger");
            if let Ok(p) = clean_path_below(base, &raw, "p", "RuntimeDir") {
                prop_assert!(!raw.contains('\0'));
                prop_assert!(raw.is_ascii());
                prop_assert!(!raw.chars().any(char::is_whitespace));
                prop_assert!(p.starts_with(base) && p != base);
                prop_assert!(p.components().all(|c| matches!(c, Component::Normal(_) | Component::RootDir)));
                prop_assert!(!raw.split('/').any(|c| c == ".."));
                prop_assert!(raw.len() <= MAX_PATH_BYTES);
            }
        }

        #[test]
        fn any_input_is_answered_without_panic(raw in "\\PC{0,40}") {
            let _ = clean_path_below(Path::new("/run/banger"), &raw, "p", "RuntimeDir");
        }
    }
}
