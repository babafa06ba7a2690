//! banger's own SSH key pair (ed25519, `<state>/ssh/id_ed25519`, 0600),
//! made on first need: injected into every VM and used by `vm ssh`, so a
//! first VM needs no key of the owner's.

use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why banger's key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("create directory {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("generate an ed25519 key")]
    Generate(#[source] ssh_key::Error),
    #[error("write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("parse {0}")]
    Parse(PathBuf, #[source] ssh_key::Error),
    #[error("{0} is readable by others (mode {1:o}); make it 0600")]
    Exposed(PathBuf, u32),
}

/// Where banger's private key lives under `state_dir` (its public half is
/// beside it, `.pub`).
pub fn private_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ssh/id_ed25519")
}

/// banger's public key line (`ssh-ed25519 … banger`), the pair made
/// first if it does not exist. Two callers racing agree on one key: the
/// private key is linked into place only if absent.
pub fn ensure(state_dir: &Path) -> Result<String, KeyError> {
    let key = private_path(state_dir);
    let dir = key.parent().expect("a file under ssh/");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| KeyError::Dir(dir.into(), e))?;
    if !key.exists() {
        let mut k =
            PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(KeyError::Generate)?;
        k.set_comment("banger");
        let text = k.to_openssh(LineEnding::LF).map_err(KeyError::Generate)?;
        let tmp = tempfile::Builder::new()
            .prefix(".id_ed25519-")
            .tempfile_in(dir)
            .map_err(|e| KeyError::Write(dir.into(), e))?;
        // tempfile makes it 0600.
        tmp.as_file()
            .write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| KeyError::Write(tmp.path().into(), e))?;
        match std::fs::hard_link(tmp.path(), &key) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(KeyError::Write(key.clone(), e)),
        }
    }
    let meta = std::fs::metadata(&key).map_err(|e| KeyError::Read(key.clone(), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed(key, mode));
    }
    let k = PrivateKey::read_openssh_file(&key).map_err(|e| KeyError::Parse(key.clone(), e))?;
    let line = k
        .public_key()
        .to_openssh()
        .map_err(|e| KeyError::Parse(key.clone(), e))?;
    let public = key.with_extension("pub");
    if !public.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&public)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(|e| KeyError::Write(public.clone(), e))?;
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure(dir.path()).unwrap();
        assert!(
            a.starts_with("ssh-ed25519 ") && a.ends_with(" banger"),
            "{a}"
        );
        banger_core::guest::parse_public_key(&a).unwrap();
        let key = private_path(dir.path());
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(key.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        assert_eq!(ensure(dir.path()).unwrap(), a);
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        assert_eq!(public.trim_end(), a);
        // OpenSSH itself reads it and derives the same public key.
        let out = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let derived = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            derived.split_whitespace().nth(1),
            a.split_whitespace().nth(1)
        );
        // A key others can read is refused, not used.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(ensure(dir.path()), Err(KeyError::Exposed(..))));
    }
}
