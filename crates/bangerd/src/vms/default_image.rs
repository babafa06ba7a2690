//! `vm create` without `--image`: the owner's `default_image`, built once
//! (Debian, as `banger image build NAME --debian SUITE`) when it does not
//! exist yet.

use crate::daemon::Daemon;
use crate::images::{build, catalog, catalog::CatalogError};
use crate::progress::Progress;
use crate::userconfig::{self, UserConfigError};
use banger_proto::api::ImageBuild;
use std::sync::Mutex;

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
