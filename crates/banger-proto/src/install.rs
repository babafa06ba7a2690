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

    // --- Host network caps (issue 9, hole 10). Optional keys: an
    // install.toml without them gets the defaults.
    /// Most banger taps (tun links carrying banger's mark) the helper lets
    /// exist on the host at once; `priv.create_tap` refuses past it.
    #[serde(default = "defaults::max_taps")]
    pub max_taps: u32,
    // --- end of host network caps.
    // ---- Jailed launches and launch caps (priv.launch_firecracker) ----
    /// First uid (and gid) of the range `banger system install` reserves
    /// for jailed Firecracker processes: VM slot `n` runs as
    /// `jail_uid_base + n` (uid and gid). Absent: no range is reserved and
    /// every jailed launch is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail_uid_base: Option<u32>,
    /// How many ids the range holds (also the most jailed VMs at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail_uid_count: Option<u32>,
    /// Most Firecracker processes the helper keeps launched at once.
    #[serde(default = "defaults::max_launches")]
    pub max_launches: u32,
    // ---- end of the jailed-launch keys ----
    /// Largest COW file (`priv.create_dm_snapshot` `cow_size_bytes`) the
    /// helper creates for one VM. Absent in older files: [`DEFAULT_MAX_COW_BYTES`].
    #[serde(default = "defaults::max_cow_bytes")]
    pub max_cow_bytes: u64,
    /// Whether `vm port add` may forward host ports below 1024 (the daemon
    /// also needs the right to bind them).
    #[serde(default)]
    pub allow_low_ports: bool,
    /// The VMM of VMs created without `--vmm`: `auto` (the host decides),
    /// `firecracker` or `qemu` (forced).
    #[serde(default)]
    pub vmm: crate::api::VmmChoice,
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
    pub fn max_taps() -> u32 {
        1024
    }
    pub fn max_launches() -> u32 {
        256
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
    #[error("install.toml: {0}")]
    JailRange(&'static str),
}

/// The uid/gid range reserved for jailed Firecracker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JailRange {
    pub base: u32,
    pub count: u32,
}

impl JailRange {
    /// The uid (and gid) of slot `n`, if `n` is in the range.
    pub fn id(&self, slot: u32) -> Option<u32> {
        (slot < self.count).then(|| self.base + slot)
    }

    /// Whether `id` is one of the range's ids.
    pub fn contains(&self, id: u32) -> bool {
        id >= self.base && id - self.base < self.count
    }
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
            max_taps: defaults::max_taps(),
            jail_uid_base: None,
            jail_uid_count: None,
            max_launches: defaults::max_launches(),
            max_cow_bytes: defaults::max_cow_bytes(),
            allow_low_ports: false,
            vmm: Default::default(),
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
        cfg.jail_range()?;
        Ok(cfg)
    }

    /// The reserved jail id range, checked: both keys or neither; count
    /// 1..=65536; never root, the owner's uid or gid, nor the owner's
    /// subordinate ids (the owner could map those in a user namespace).
    /// `Ok(None)` when no range is reserved.
    pub fn jail_range(&self) -> Result<Option<JailRange>, InstallConfigError> {
        use InstallConfigError::JailRange as E;
        let (base, count) = match (self.jail_uid_base, self.jail_uid_count) {
            (None, None) => return Ok(None),
            (Some(b), Some(c)) => (b, c),
            _ => return Err(E("jail_uid_base and jail_uid_count go together")),
        };
        if count == 0 || count > 65536 {
            return Err(E("jail_uid_count must be 1..=65536"));
        }
        let r = JailRange { base, count };
        if base == 0 || base.checked_add(count).is_none() {
            return Err(E("the jail uid range must not include 0 or wrap"));
        }
        if r.contains(self.owner_uid) || r.contains(self.owner_gid) {
            return Err(E(
                "the jail uid range must not include the owner's uid or gid",
            ));
        }
        if let Some((s, e)) = self.owner_subids.as_deref().and_then(parse_range) {
            if s < base + count && base <= e {
                return Err(E(
                    "the jail uid range must not overlap the owner's subordinate ids",
                ));
            }
        }
        Ok(Some(r))
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

/// `START-END` (inclusive) as written in `owner_subids`.
fn parse_range(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
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
        assert_eq!(cfg.max_taps, 1024, "absent keys take their defaults");
        let capped = InstallConfig::parse(&format!("{text}max_taps = 3\n")).unwrap();
        assert_eq!(capped.max_taps, 3);
        assert_eq!(InstallConfig::parse(&capped.render()).unwrap(), capped);
    }

    #[test]
    fn vmm_defaults_to_auto_and_is_read_and_checked() {
        use crate::api::VmmChoice;
        let base = "owner_uid = 1000\nowner_gid = 1000\nowner_home = \"/home/a\"\n";
        assert_eq!(InstallConfig::parse(base).unwrap().vmm, VmmChoice::Auto);
        for (v, c) in [
            ("auto", VmmChoice::Auto),
            ("firecracker", VmmChoice::Firecracker),
            ("qemu", VmmChoice::Qemu),
        ] {
            let cfg = InstallConfig::parse(&format!("{base}vmm = \"{v}\"\n")).unwrap();
            assert_eq!(cfg.vmm, c);
            assert_eq!(
                InstallConfig::parse(&cfg.render()).unwrap().vmm,
                c,
                "round trip"
            );
        }
        assert!(InstallConfig::parse(&format!("{base}vmm = \"kvm\"\n")).is_err());
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

    #[test]
    fn jail_range_keys_are_optional_and_checked() {
        let base = "owner_uid=1000\nowner_gid=1000\nowner_home=\"/h\"\n";
        let old = InstallConfig::parse(base).unwrap();
        assert_eq!(old.jail_range().unwrap(), None);
        assert_eq!(old.max_launches, 256);
        let ok = InstallConfig::parse(&format!(
            "{base}jail_uid_base=900000\njail_uid_count=256\nmax_launches=8\n"
        ))
        .unwrap();
        let r = ok.jail_range().unwrap().unwrap();
        assert_eq!(
            (r.id(0), r.id(255), r.id(256)),
            (Some(900000), Some(900255), None)
        );
        assert!(r.contains(900000) && !r.contains(900256) && !r.contains(899999));
        assert_eq!(InstallConfig::parse(&ok.render()).unwrap(), ok);
        for bad in [
            "jail_uid_base=900000\n",
            "jail_uid_base=0\njail_uid_count=10\n",
            "jail_uid_base=999\njail_uid_count=2\n",
            "jail_uid_base=900000\njail_uid_count=0\n",
            "jail_uid_base=4294967290\njail_uid_count=10\n",
            "jail_uid_base=100500\njail_uid_count=10\nowner_subids=\"100000-165535\"\n",
        ] {
            assert!(
                matches!(
                    InstallConfig::parse(&format!("{base}{bad}")),
                    Err(InstallConfigError::JailRange(_))
                ),
                "{bad}"
            );
        }
    }
}
