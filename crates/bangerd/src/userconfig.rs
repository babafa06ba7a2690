//! The owner's banger settings, `<home>/.config/banger/config.toml` (absent:
//! the defaults): the image `vm create` uses without `--image`, and the
//! file_sync entries copied into every new VM with their total size cap,
//! and the root disk size a new VM gets when `--disk-size` is not given.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The image `banger vm create NAME` boots when no `--image` is given.
pub const DEFAULT_IMAGE: &str = "debian-bookworm";
/// Default cap on the bytes all file_sync entries copy into one VM.
pub const DEFAULT_FILE_SYNC_MAX_BYTES: u64 = 64 << 20;

/// `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    #[serde(default = "default_image")]
    pub default_image: String,
    #[serde(default)]
    pub file_sync: Vec<FileSyncEntry>,
    #[serde(default = "default_max")]
    pub file_sync_max_bytes: u64,
    /// Root disk size of a new VM without `--disk-size` (`"8G"`, or
    /// bytes): images smaller are grown to it, larger ones kept as they are.
    #[serde(default, deserialize_with = "disk_size")]
    pub disk_size: Option<u64>,
}

/// `disk_size`: a size string (`"8G"`) or a number of bytes.
fn disk_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(Some(n)),
        Size::Text(t) => banger_core::size::parse(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// One `[[file_sync]]` table: a file or directory under the owner's home
/// (absolute, `~/…`, or relative to the home) → an absolute guest path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSyncEntry {
    pub host: PathBuf,
    pub guest: String,
    /// Guest mode for a file (default: the source's).
    #[serde(default)]
    pub mode: Option<u32>,
}

fn default_image() -> String {
    DEFAULT_IMAGE.into()
}

fn default_max() -> u64 {
    DEFAULT_FILE_SYNC_MAX_BYTES
}

impl Default for UserConfig {
    fn default() -> Self {
        UserConfig {
            default_image: default_image(),
            file_sync: vec![],
            file_sync_max_bytes: default_max(),
            disk_size: None,
        }
    }
}

/// Why the owner's config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UserConfigError {
    #[error("read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("parse {0}")]
    Parse(PathBuf, #[source] toml::de::Error),
}

/// `<home>/.config/banger/config.toml`.
pub fn path(home: &Path) -> PathBuf {
    home.join(".config/banger/config.toml")
}

/// The owner's config, read afresh (edits apply to the next create);
/// the defaults when the file does not exist.
pub fn load(home: &Path) -> Result<UserConfig, UserConfigError> {
    let p = path(home);
    match std::fs::read_to_string(&p) {
        Ok(text) => parse(&text).map_err(|e| UserConfigError::Parse(p, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserConfig::default()),
        Err(e) => Err(UserConfigError::Read(p, e)),
    }
}

/// Parse the text of `config.toml`.
pub fn parse(text: &str) -> Result<UserConfig, toml::de::Error> {
    toml::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_file_gives_defaults_and_keys_parse() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(load(home.path()).unwrap(), UserConfig::default());
        let c = parse(
            "default_image = \"mine\"\nfile_sync_max_bytes = 10\n\
             [[file_sync]]\nhost = \"~/.gitconfig\"\nguest = \"/root/.gitconfig\"\n",
        )
        .unwrap();
        assert_eq!(c.default_image, "mine");
        assert_eq!(c.file_sync_max_bytes, 10);
        assert_eq!(c.file_sync[0].guest, "/root/.gitconfig");
        assert!(
            parse("defualt_image = \"x\"\n").is_err(),
            "typos are refused"
        );
        std::fs::create_dir_all(home.path().join(".config/banger")).unwrap();
        std::fs::write(path(home.path()), "default_image = 3\n").unwrap();
        assert!(matches!(load(home.path()), Err(UserConfigError::Parse(..))));
    }

    #[test]
    fn disk_size_is_a_size_string_or_bytes() {
        assert_eq!(parse("").unwrap().disk_size, None);
        assert_eq!(
            parse("disk_size = \"8G\"\n").unwrap().disk_size,
            Some(8 << 30)
        );
        assert_eq!(
            parse("disk_size = 1048576\n").unwrap().disk_size,
            Some(1 << 20)
        );
        let e = parse("disk_size = \"8 gigs\"\n").unwrap_err().to_string();
        assert!(e.contains("invalid size \"8 gigs\""), "{e}");
    }
}
