//! `vm create` without `--image`: the owner's `default_image`, built once
//! (Debian, as `banger image build NAME --debian SUITE`) when it does not
//! exist yet — or, for tests of a dev daemon only, imported from the files
//! of one this same build code made before ([`SEED_ENV`]).

use crate::daemon::Daemon;
use crate::images::{build, catalog, catalog::CatalogError};
use crate::progress::Progress;
use crate::userconfig::{self, UserConfigError};
use banger_core::paths::Mode;
use banger_proto::api::{ImageBuild, ImageImport};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Tests only, honoured by a `--dev` daemon alone: a directory holding
/// `rootfs.ext4`, `vmlinux` and maybe `initrd.img` of a Debian image that
/// banger's own build made (the real-guest tests' recipe-keyed cache). A
/// missing default image is imported from there instead of debootstrapped
/// again: every step of the create but the download is the real one.
pub const SEED_ENV: &str = "BANGER_DEFAULT_IMAGE_SEED";

/// Why the default image is not there to use.
#[derive(Debug, thiserror::Error)]
pub enum DefaultImageError {
    #[error("the owner's banger config")]
    Config(#[from] UserConfigError),
    #[error(
        "default image {0:?} does not exist and only `debian-SUITE` defaults are built \
         automatically: build or import it, or pass --image"
    )]
    NotBuildable(String),
    #[error("building the default image {0:?}")]
    Build(String, #[source] CatalogError),
    #[error("importing the default image {0:?} from {1} ({SEED_ENV})")]
    Seed(String, PathBuf, #[source] Box<CatalogError>),
}

/// The seed directory a dev daemon was given, if it holds a rootfs.
fn seed(mode: Mode, var: Option<std::ffi::OsString>) -> Option<PathBuf> {
    let dir = PathBuf::from(var?);
    (mode == Mode::Dev && dir.join(catalog::ROOTFS).is_file()).then_some(dir)
}

/// Import the seed's files as image `name`.
fn import_seed(d: &Daemon, name: &str, dir: &Path, p: &Progress) -> Result<(), DefaultImageError> {
    let initrd = dir.join(catalog::INITRD);
    let req = ImageImport {
        name: name.into(),
        rootfs: dir.join(catalog::ROOTFS).display().to_string(),
        kernel: dir.join(catalog::KERNEL).display().to_string(),
        initrd: initrd.is_file().then(|| initrd.display().to_string()),
    };
    catalog::import(&d.store, &d.paths.state_dir, &req, p)
        .map_err(|e| DefaultImageError::Seed(name.into(), dir.into(), Box::new(e)))?;
    Ok(())
}

/// One default-image build at a time; the others wait and then find it.
static BUILDING: Mutex<()> = Mutex::new(());

/// The image name `vm create` uses when none is given.
pub fn name(d: &Daemon) -> Result<String, DefaultImageError> {
    Ok(userconfig::load(&d.cfg.owner_home)?.default_image)
}

/// The Debian suite a default image name `debian-SUITE` asks for.
pub fn suite(name: &str) -> Option<&str> {
    name.strip_prefix("debian-")
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Make sure image `name` exists, building it (with progress) if it is a
/// `debian-SUITE` default that does not exist yet.
pub fn ensure(d: &Daemon, name: &str, p: &Progress) -> Result<(), DefaultImageError> {
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let exists = catalog::find(&d.store, name)
        .map_err(|e| DefaultImageError::Build(name.into(), e))?
        .is_some();
    if exists {
        return Ok(());
    }
    let suite = suite(name).ok_or_else(|| DefaultImageError::NotBuildable(name.into()))?;
    if let Some(dir) = seed(d.mode, std::env::var_os(SEED_ENV)) {
        p.log(format!(
            "default image {name} does not exist yet: importing it from {} ({SEED_ENV}, dev mode)",
            dir.display()
        ));
        import_seed(d, name, &dir, p)?;
        p.log(format!("default image {name} imported"));
        return Ok(());
    }
    p.log(format!(
        "default image {name} does not exist yet: building it once (Debian {suite})"
    ));
    let req = ImageBuild {
        name: name.into(),
        from_oci: None,
        debian: Some(suite.into()),
        kernel: None,
        headroom_mib: None,
        mirror: None,
    };
    build::build(&d.store, &d.paths.state_dir, &d.host_paths, &req, p)
        .map_err(|e| DefaultImageError::Build(name.into(), e))?;
    p.log(format!("default image {name} built"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_serves_a_dev_daemon_only_and_only_with_a_rootfs() {
        let t = tempfile::tempdir().unwrap();
        let var = || Some(t.path().as_os_str().to_owned());
        assert_eq!(seed(Mode::Dev, var()), None, "no rootfs there yet");
        std::fs::write(t.path().join(catalog::ROOTFS), b"x").unwrap();
        assert_eq!(seed(Mode::Dev, var()), Some(t.path().to_path_buf()));
        assert_eq!(seed(Mode::System, var()), None);
        assert_eq!(seed(Mode::Dev, None), None);
    }

    #[test]
    fn only_debian_suites_are_buildable_defaults() {
        assert_eq!(super::suite("debian-bookworm"), Some("bookworm"));
        for n in [
            "debian-",
            "ubuntu-noble",
            "debian-Bookworm",
            "debian-../x",
            "deb",
        ] {
            assert_eq!(super::suite(n), None, "{n}");
        }
    }
}
