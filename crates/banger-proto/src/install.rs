//! Install metadata: the `install.toml` both services read (SPEC §9).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the system install keeps its metadata.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/banger/install.toml";

/// The contents of `install.toml`. Written by `banger system install`
/// (root-owned, 0644); trusted by the helper because only root can write it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InstallConfig {
    pub owner_uid: u32,
    pub owner_gid: u32,
    pub owner_home: PathBuf,
    #[serde(default = "defaults::state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "defaults::runtime_dir")]
    pub runtime_dir: PathBuf,
    #[serde(default = "defaults::firecracker_bin")]
    pub firecracker_bin: PathBuf,
    #[serde(default = "defaults::jailer_bin")]
    pub jailer_bin: PathBuf,
    #[serde(default = "defaults::jailer_base")]
    pub jailer_base: PathBuf,
    #[serde(default = "defaults::bridge")]
    pub bridge: String,
    #[serde(default = "defaults::subnet")]
    pub subnet: String,
    #[serde(default = "defaults::domain")]
    pub domain: String,
    /// The subordinate uid/gid range (`START-END`) `banger system install`
    /// gave the owner for rootless image builds, so uninstall removes
    /// exactly that; absent when the owner already had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_subids: Option<String>,
    /// Largest COW file (`priv.create_dm_snapshot` `cow_size_bytes`) the
    /// helper creates for one VM. Absent in older files: [`DEFAULT_MAX_COW_BYTES`].
    #[serde(default = "defaults::max_cow_bytes")]
    pub max_cow_bytes: u64,
}

/// Default per-VM COW cap: 256 GiB (sparse, so only what the guest writes
/// takes space; the cap bounds what one VM can make the host hold).
pub const DEFAULT_MAX_COW_BYTES: u64 = 256 << 30;

mod defaults {
    use std::path::PathBuf;
    pub fn state_dir() -> PathBuf {
        "/var/lib/banger".into()
    }
    pub fn runtime_dir() -> PathBuf {
        "/run/banger".into()
    }
    pub fn firecracker_bin() -> PathBuf {
        "/usr/local/bin/firecracker".into()
    }
    pub fn jailer_bin() -> PathBuf {
        "/usr/local/bin/jailer".into()
    }
    pub fn jailer_base() -> PathBuf {
        "/srv/jailer".into()
    }
    pub fn bridge() -> String {
        "banger0".into()
    }
    pub fn subnet() -> String {
        "172.30.0.0/24".into()
    }
    pub fn domain() -> String {
        "vm".into()
    }
    pub fn max_cow_bytes() -> u64 {
        super::DEFAULT_MAX_COW_BYTES
    }
}

/// Why an `install.toml` was refused.
#[derive(Debug, thiserror::Error)]
pub enum InstallConfigError {
    #[error("install.toml does not parse")]
    Parse(#[source] toml::de::Error),
    #[error("install.toml: {0} must be an absolute path")]
    NotAbsolute(&'static str),
}

impl InstallConfig {
    /// A config with every default for the given owner.
    pub fn for_owner(uid: u32, gid: u32, home: PathBuf) -> Self {
        InstallConfig {
            owner_uid: uid,
            owner_gid: gid,
            owner_home: home,
            state_dir: defaults::state_dir(),
            runtime_dir: defaults::runtime_dir(),
            firecracker_bin: defaults::firecracker_bin(),
            jailer_bin: defaults::jailer_bin(),
            jailer_base: defaults::jailer_base(),
            bridge: defaults::bridge(),
            subnet: defaults::subnet(),
            domain: defaults::domain(),
            owner_subids: None,
            max_cow_bytes: defaults::max_cow_bytes(),
        }
    }

    /// Parse and check the text of an `install.toml`.
    pub fn parse(text: &str) -> Result<Self, InstallConfigError> {
        let cfg: InstallConfig = toml::from_str(text).map_err(InstallConfigError::Parse)?;
        for (name, p) in [
            ("owner_home", &cfg.owner_home),
            ("state_dir", &cfg.state_dir),
            ("runtime_dir", &cfg.runtime_dir),
            ("firecracker_bin", &cfg.firecracker_bin),
            ("jailer_bin", &cfg.jailer_bin),
            ("jailer_base", &cfg.jailer_base),
        ] {
            if !p.is_absolute() {
                return Err(InstallConfigError::NotAbsolute(name));
            }
        }
        Ok(cfg)
    }

    /// Render as TOML text.
    pub fn render(&self) -> String {
        toml::to_string(self).expect("InstallConfig always serialises")
    }

    /// `<runtime_dir>/bangerd.sock`.
    pub fn daemon_socket(&self) -> PathBuf {
        self.runtime_dir.join(crate::DAEMON_SOCKET)
    }

    /// `<runtime_dir>/helper.sock`.
    pub fn helper_socket(&self) -> PathBuf {
        self.runtime_dir.join(crate::HELPER_SOCKET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_parses_and_round_trips() {
        let text = r#"
owner_uid = 1000
owner_gid = 1000
owner_home = "/home/alice"
state_dir = "/var/lib/banger"
runtime_dir = "/run/banger"
firecracker_bin = "/usr/local/bin/firecracker"
jailer_bin = "/usr/local/bin/jailer"
jailer_base = "/srv/jailer"
bridge = "banger0"
subnet = "172.30.0.0/24"
domain = "vm"
"#;
        let cfg = InstallConfig::parse(text).unwrap();
        assert_eq!(cfg.owner_uid, 1000);
        assert_eq!(
            cfg.helper_socket(),
            PathBuf::from("/run/banger/helper.sock")
        );
        assert_eq!(InstallConfig::parse(&cfg.render()).unwrap(), cfg);
    }

    #[test]
    fn max_cow_bytes_defaults_when_absent_and_is_read_when_present() {
        let old = "owner_uid=1\nowner_gid=1\nowner_home=\"/h\"\n";
        assert_eq!(
            InstallConfig::parse(old).unwrap().max_cow_bytes,
            DEFAULT_MAX_COW_BYTES
        );
        let set = format!("{old}max_cow_bytes = 1048576\n");
        let cfg = InstallConfig::parse(&set).unwrap();
        assert_eq!(cfg.max_cow_bytes, 1 << 20);
        assert_eq!(InstallConfig::parse(&cfg.render()).unwrap(), cfg);
    }

    #[test]
    fn relative_paths_and_unknown_keys_are_refused() {
        let rel = "owner_uid=1\nowner_gid=1\nowner_home=\"home\"\n";
        assert!(matches!(
            InstallConfig::parse(rel),
            Err(InstallConfigError::NotAbsolute("owner_home"))
        ));
        let unknown = "owner_uid=1\nowner_gid=1\nowner_home=\"/h\"\nbogus=1\n";
        assert!(matches!(
            InstallConfig::parse(unknown),
            Err(InstallConfigError::Parse(_))
        ));
    }
}
