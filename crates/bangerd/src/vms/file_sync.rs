//! The owner's `file_sync` entries (`~/.config/banger/config.toml`) as the
//! files a new VM's disk gets: each host path resolved (symlinks followed)
//! and required to stay under the owner's home, directories walked (every
//! file re-checked the same way), the total bounded; every refused entry
//! named in one error.

use crate::userconfig::{UserConfig, UserConfigError};
use crate::vmdisk::custom::FileSync;
use std::path::{Path, PathBuf};

/// Why the file_sync entries cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileSyncError {
    #[error("the owner's banger config")]
    Config(#[from] UserConfigError),
    #[error("file_sync refused: {}", .0.join("; "))]
    Refused(Vec<String>),
}

/// `~/x`, relative (to the home) or absolute.
fn expand(home: &Path, p: &Path) -> PathBuf {
    match p.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) if p.is_relative() => home.join(p),
        Err(_) => p.to_path_buf(),
    }
}

/// `p` resolved, if it stays inside `home_c` (already canonical).
fn inside(home_c: &Path, p: &Path) -> Result<PathBuf, String> {
    let real = p
        .canonicalize()
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if real == home_c || !real.starts_with(home_c) {
        return Err(format!(
            "{} resolves to {}, outside the owner's home",
            p.display(),
            real.display()
        ));
    }
    Ok(real)
}

/// Every file of `cfg`'s entries, with its guest path, or every refusal.
pub fn plan(home: &Path, cfg: &UserConfig) -> Result<Vec<FileSync>, FileSyncError> {
    let mut refused = Vec::new();
    let mut out = Vec::new();
    let mut total = 0u64;
    let home_c = match home.canonicalize() {
        Ok(h) => h,
        Err(e) if cfg.file_sync.is_empty() => {
            let _ = e;
            return Ok(vec![]);
        }
        Err(e) => {
            return Err(FileSyncError::Refused(vec![format!(
                "home {}: {e}",
                home.display()
            )]))
        }
    };
    for entry in &cfg.file_sync {
        let name = entry.host.display().to_string();
        if !entry.guest.starts_with('/') {
            refused.push(format!(
                "{name}: guest path {:?} is not absolute",
                entry.guest
            ));
            continue;
        }
        let root = match inside(&home_c, &expand(home, &entry.host)) {
            Ok(r) => r,
            Err(why) => {
                refused.push(format!("{name}: {why}"));
                continue;
            }
        };
        let mut stack = vec![(root.clone(), entry.guest.trim_end_matches('/').to_string())];
        while let Some((p, guest)) = stack.pop() {
            let meta = match std::fs::metadata(&p) {
                Ok(m) => m,
                Err(e) => {
                    refused.push(format!("{name}: {}: {e}", p.display()));
                    continue;
                }
            };
            if meta.is_dir() {
                let rd = match std::fs::read_dir(&p) {
                    Ok(rd) => rd,
                    Err(e) => {
                        refused.push(format!("{name}: {}: {e}", p.display()));
                        continue;
                    }
                };
                for e in rd.flatten() {
                    let child = e.path();
                    let Some(base) = child.file_name().and_then(|b| b.to_str()) else {
                        refused.push(format!("{name}: {} is not UTF-8", child.display()));
                        continue;
                    };
                    // Each file inside is resolved and checked again.
                    match inside(&home_c, &child) {
                        Ok(real) => stack.push((real, format!("{guest}/{base}"))),
                        Err(why) => refused.push(format!("{name}: {why}")),
                    }
                }
            } else if meta.is_file() {
                total += meta.len();
                out.push(FileSync {
                    source: p,
                    dest: guest,
                    mode: entry.mode,
                });
            } else {
                refused.push(format!(
                    "{name}: {} is not a file or directory",
                    p.display()
                ));
            }
        }
    }
    if total > cfg.file_sync_max_bytes {
        refused.push(format!(
            "{total} bytes in all, over file_sync_max_bytes = {}",
            cfg.file_sync_max_bytes
        ));
    }
    if !refused.is_empty() {
        return Err(FileSyncError::Refused(refused));
    }
    out.sort_by(|a, b| a.dest.cmp(&b.dest));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userconfig::FileSyncEntry;

    fn entry(host: &str, guest: &str) -> FileSyncEntry {
        FileSyncEntry {
            host: host.into(),
            guest: guest.into(),
            mode: None,
        }
    }

    #[test]
    fn files_dirs_escapes_and_the_cap() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        std::fs::create_dir_all(home.join("dots/sub")).unwrap();
        std::fs::write(home.join("dots/a"), "aa").unwrap();
        std::fs::write(home.join("dots/sub/b"), "bbb").unwrap();
        std::fs::write(home.join(".gitconfig"), "g").unwrap();
        std::fs::write(t.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), home.join("escape")).unwrap();
        let mut cfg = UserConfig {
            file_sync: vec![
                entry("~/.gitconfig", "/root/.gitconfig"),
                entry("dots", "/etc/dots/"),
            ],
            ..UserConfig::default()
        };
        let got: Vec<(String, PathBuf)> = plan(&home, &cfg)
            .unwrap()
            .into_iter()
            .map(|f| (f.dest, f.source))
            .collect();
        let hc = home.canonicalize().unwrap();
        assert_eq!(
            got,
            [
                ("/etc/dots/a".to_string(), hc.join("dots/a")),
                ("/etc/dots/sub/b".into(), hc.join("dots/sub/b")),
                ("/root/.gitconfig".into(), hc.join(".gitconfig")),
            ]
        );
        // A symlink out of the home, named; inside a synced directory too.
        std::os::unix::fs::symlink(t.path().join("secret"), home.join("dots/leak")).unwrap();
        cfg.file_sync.push(entry("~/escape", "/root/x"));
        cfg.file_sync.push(entry("/etc/passwd", "/root/p"));
        let Err(FileSyncError::Refused(r)) = plan(&home, &cfg) else {
            panic!("escapes accepted")
        };
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(
            r.iter()
                .any(|m| m.starts_with("~/escape:") && m.contains("outside the owner's home")),
            "{r:?}"
        );
        assert!(
            r.iter()
                .any(|m| m.starts_with("dots:") && m.contains("leak")),
            "{r:?}"
        );
        assert!(r.iter().any(|m| m.starts_with("/etc/passwd:")), "{r:?}");
        // The cap.
        std::fs::remove_file(home.join("dots/leak")).unwrap();
        cfg.file_sync.truncate(2);
        cfg.file_sync_max_bytes = 5;
        let Err(FileSyncError::Refused(r)) = plan(&home, &cfg) else {
            panic!("cap ignored")
        };
        assert!(r[0].contains("6 bytes in all"), "{r:?}");
    }
}
