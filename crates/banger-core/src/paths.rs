//! Which StateDir / RuntimeDir / sockets are in force (SPEC §9 "Paths").

use banger_proto::install::InstallConfig;
use std::path::PathBuf;

/// How the daemon was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Under `banger system install`: a root helper does privileged steps.
    System,
    /// `bangerd --dev`: privileged steps by `sudo -n`, or directly as root.
    Dev,
}

/// Every path a banger process needs, resolved once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
}

impl Paths {
    pub fn daemon_socket(&self) -> PathBuf {
        self.runtime_dir.join(banger_proto::DAEMON_SOCKET)
    }
    pub fn helper_socket(&self) -> PathBuf {
        self.runtime_dir.join(banger_proto::HELPER_SOCKET)
    }
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }
    /// `<state>/vms`: one directory per VM (disk, console log).
    pub fn vms_dir(&self) -> PathBuf {
        self.state_dir.join("vms")
    }
    /// `<state>/vms/<id>`.
    pub fn vm_dir(&self, vm_id: &str) -> PathBuf {
        self.vms_dir().join(vm_id)
    }
    /// `<state>/vms/<id>/console.log`: the serial console.
    pub fn console_log(&self, vm_id: &str) -> PathBuf {
        self.vm_dir(vm_id).join("console.log")
    }
    /// `<runtime>/vms/<id>`: the VM's sockets.
    pub fn vm_runtime_dir(&self, vm_id: &str) -> PathBuf {
        self.runtime_dir.join("vms").join(vm_id)
    }
    /// `<state>/known_hosts`: the VMs' pinned SSH host keys.
    pub fn known_hosts(&self) -> PathBuf {
        self.state_dir.join("known_hosts")
    }
}

/// The environment variables that decide paths, read by the caller.
#[derive(Debug, Clone, Default)]
pub struct PathEnv {
    pub banger_state_dir: Option<PathBuf>,
    pub banger_runtime_dir: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub uid: u32,
}

impl PathEnv {
    /// Read the variables from this process's environment.
    pub fn from_process(uid: u32) -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        PathEnv {
            banger_state_dir: var("BANGER_STATE_DIR"),
            banger_runtime_dir: var("BANGER_RUNTIME_DIR"),
            xdg_state_home: var("XDG_STATE_HOME"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            home: var("HOME"),
            uid,
        }
    }
}

/// Why paths could not be decided.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathsError {
    #[error("cannot find a state directory: set BANGER_STATE_DIR, XDG_STATE_HOME or HOME")]
    NoStateDir,
}

/// Resolve paths: explicit overrides first, then install metadata (system
/// mode), then XDG (development mode).
pub fn resolve(install: Option<&InstallConfig>, env: &PathEnv) -> Result<Paths, PathsError> {
    let state_dir = match (&env.banger_state_dir, install) {
        (Some(p), _) => p.clone(),
        (None, Some(cfg)) => cfg.state_dir.clone(),
        (None, None) => match (&env.xdg_state_home, &env.home) {
            (Some(x), _) => x.join("banger"),
            (None, Some(h)) => h.join(".local/state/banger"),
            (None, None) => return Err(PathsError::NoStateDir),
        },
    };
    let runtime_dir = match (&env.banger_runtime_dir, install) {
        (Some(p), _) => p.clone(),
        (None, Some(cfg)) => cfg.runtime_dir.clone(),
        (None, None) => match &env.xdg_runtime_dir {
            Some(x) => x.join("banger"),
            None => PathBuf::from(format!("/tmp/banger-{}", env.uid)),
        },
    };
    Ok(Paths {
        state_dir,
        runtime_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> PathEnv {
        PathEnv {
            home: Some("/home/al".into()),
            uid: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn dev_mode_uses_xdg_or_home() {
        let p = resolve(None, &env()).unwrap();
        assert_eq!(p.state_dir, PathBuf::from("/home/al/.local/state/banger"));
        assert_eq!(p.runtime_dir, PathBuf::from("/tmp/banger-1000"));
        let mut e = env();
        e.xdg_state_home = Some("/x/state".into());
        e.xdg_runtime_dir = Some("/run/user/1000".into());
        let p = resolve(None, &e).unwrap();
        assert_eq!(p.state_dir, PathBuf::from("/x/state/banger"));
        assert_eq!(
            p.daemon_socket(),
            PathBuf::from("/run/user/1000/banger/bangerd.sock")
        );
    }

    #[test]
    fn install_metadata_then_overrides() {
        let cfg = InstallConfig::for_owner(1000, 1000, "/home/al".into());
        let p = resolve(Some(&cfg), &env()).unwrap();
        assert_eq!(p.state_dir, PathBuf::from("/var/lib/banger"));
        assert_eq!(p.helper_socket(), PathBuf::from("/run/banger/helper.sock"));
        let mut e = env();
        e.banger_runtime_dir = Some("/tmp/t".into());
        e.banger_state_dir = Some("/tmp/s".into());
        let p = resolve(Some(&cfg), &e).unwrap();
        assert_eq!(p.helper_socket(), PathBuf::from("/tmp/t/helper.sock"));
        assert_eq!(p.database(), PathBuf::from("/tmp/s/state.db"));
    }

    #[test]
    fn no_home_no_state_dir() {
        let e = PathEnv {
            uid: 5,
            ..Default::default()
        };
        assert_eq!(resolve(None, &e), Err(PathsError::NoStateDir));
    }
}
