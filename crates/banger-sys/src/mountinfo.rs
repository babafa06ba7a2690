//! One line of `/proc/<pid>/mountinfo` as a pure `FromStr`/`Display` type.
//!
//! Format (proc(5)):
//! `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
//! — mount id, parent id, major:minor, root, mount point, mount options,
//! zero or more optional fields, a `-` separator, fs type, source, super
//! options. Paths escape space, tab, newline and backslash as `\ooo` octal.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One mount, as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u64,
    pub parent_id: u64,
    pub major: u32,
    pub minor: u32,
    /// The root of the mount within its filesystem.
    pub root: PathBuf,
    /// Where it is mounted, relative to the reader's root.
    pub mount_point: PathBuf,
    pub mount_options: String,
    /// Optional fields such as `shared:1` or `master:2`.
    pub optional: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

/// Why a mountinfo line did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountInfoError {
    #[error("mountinfo line has no `{0}` field")]
    Missing(&'static str),
    #[error("mountinfo field `{0}` is not a number")]
    Number(&'static str),
    #[error("mountinfo device is not major:minor")]
    Device,
    #[error("mountinfo line has a bad octal escape")]
    Escape,
}

/// Undo the kernel's `\ooo` escaping of a path field.
pub fn unescape(field: &str) -> Result<OsString, MountInfoError> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let digits = b.get(i + 1..i + 4).ok_or(MountInfoError::Escape)?;
            if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                return Err(MountInfoError::Escape);
            }
            let v = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(v).map_err(|_| MountInfoError::Escape)?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(OsString::from_vec(out))
}

/// Escape a path the way the kernel does (space, tab, newline, backslash).
pub fn escape(p: &Path) -> String {
    let mut s = String::new();
    for c in p.as_os_str().to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => s.push_str(&format!("\\{:03o}", c as u32)),
            c => s.push(c),
        }
    }
    s
}

impl FromStr for MountInfo {
    type Err = MountInfoError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let mut it = line.split(' ');
        let mut next = |name: &'static str| {
            it.next()
                .filter(|s| !s.is_empty())
                .ok_or(MountInfoError::Missing(name))
        };
        let mount_id = next("mount id")?
            .parse()
            .map_err(|_| MountInfoError::Number("mount id"))?;
        let parent_id = next("parent id")?
            .parse()
            .map_err(|_| MountInfoError::Number("parent id"))?;
        let (major, minor) = next("major:minor")?
            .split_once(':')
            .ok_or(MountInfoError::Device)?;
        let major = major.parse().map_err(|_| MountInfoError::Device)?;
        let minor = minor.parse().map_err(|_| MountInfoError::Device)?;
        let root = PathBuf::from(unescape(next("root")?)?);
        let mount_point = PathBuf::from(unescape(next("mount point")?)?);
        let mount_options = next("mount options")?.to_string();
        let mut optional = Vec::new();
        loop {
            let f = next("separator")?;
            if f == "-" {
                break;
            }
            optional.push(f.to_string());
        }
        let fs_type = next("fs type")?.to_string();
        let source = next("source")?.to_string();
        let super_options = next("super options")?.to_string();
        Ok(MountInfo {
            mount_id,
            parent_id,
            major,
            minor,
            root,
            mount_point,
            mount_options,
            optional,
            fs_type,
            source,
            super_options,
        })
    }
}

impl fmt::Display for MountInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}:{} {} {} {}",
            self.mount_id,
            self.parent_id,
            self.major,
            self.minor,
            escape(&self.root),
            escape(&self.mount_point),
            self.mount_options
        )?;
        for o in &self.optional {
            write!(f, " {o}")?;
        }
        write!(
            f,
            " - {} {} {}",
            self.fs_type, self.source, self.super_options
        )
    }
}

/// Parse a whole mountinfo text; blank lines are skipped.
pub fn parse_all(text: &str) -> Result<Vec<MountInfo>, MountInfoError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Mounts whose mount point is `dir` or lies below it (component-wise, so
/// `/a/bc` is not below `/a/b`), deepest first. Stacked mounts on one point
/// keep the kernel's order reversed (the top one first).
pub fn at_or_below<'a>(mounts: &'a [MountInfo], dir: &Path) -> Vec<&'a MountInfo> {
    let mut v: Vec<(usize, &MountInfo)> = mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| m.mount_point.starts_with(dir))
        .collect();
    v.sort_by(|(ia, a), (ib, b)| {
        let da = a.mount_point.components().count();
        let db = b.mount_point.components().count();
        db.cmp(&da).then(ib.cmp(ia))
    });
    v.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC5: &str =
        "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue";

    #[test]
    fn parses_the_proc5_example() {
        let m: MountInfo = PROC5.parse().unwrap();
        assert_eq!(m.mount_id, 36);
        assert_eq!(m.parent_id, 35);
        assert_eq!((m.major, m.minor), (98, 0));
        assert_eq!(m.root, Path::new("/mnt1"));
        assert_eq!(m.mount_point, Path::new("/mnt/parent"));
        assert_eq!(m.mount_options, "rw,noatime");
        assert_eq!(m.optional, vec!["master:1"]);
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert_eq!(m.super_options, "rw,errors=continue");
        assert_eq!(m.to_string(), PROC5);
    }

    #[test]
    fn no_optional_fields_and_several() {
        let a = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard";
        let m: MountInfo = a.parse().unwrap();
        assert!(m.optional.is_empty());
        assert_eq!(m.to_string(), a);
        let b = "40 31 0:37 / /x rw shared:5 master:2 propagate_from:1 - tmpfs tmpfs rw";
        let m: MountInfo = b.parse().unwrap();
        assert_eq!(m.optional.len(), 3);
        assert_eq!(m.to_string(), b);
    }

    #[test]
    fn octal_escapes_round_trip() {
        let line =
            r"88 27 0:50 / /tmp/with\040space/tab\011nl\012back\134slash rw - tmpfs tmpfs rw";
        let m: MountInfo = line.parse().unwrap();
        assert_eq!(
            m.mount_point,
            Path::new("/tmp/with space/tab\tnl\nback\\slash")
        );
        assert_eq!(m.to_string(), line);
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        for bad in [
            "",
            "x 1 0:1 / / rw - t s o",
            "1 1 01 / / rw - t s o",
            "1 1 0:1 / / rw t s o",
            "1 1 0:1 / /a\\04 rw - t s o",
            "1 1 0:1 / /a\\777 rw - t s o",
            "1 1 0:1 / /a\\9zz rw - t s o",
            "1 1 0:1 / / rw -",
        ] {
            assert!(bad.parse::<MountInfo>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn selects_at_or_below_deepest_first() {
        let text = "\
1 0 0:1 / / rw - ext4 /dev/vda rw
10 1 0:2 / /j/root rw - tmpfs t rw
11 10 0:3 / /j/root/a rw - tmpfs t rw
12 11 0:4 / /j/root/a/b/c rw - tmpfs t rw
13 10 0:5 / /j/root/d rw - tmpfs t rw
14 13 0:6 / /j/root/d rw - tmpfs t rw
15 1 0:7 / /j/rootfs rw - tmpfs t rw
";
        let all = parse_all(text).unwrap();
        let sel: Vec<u64> = at_or_below(&all, Path::new("/j/root"))
            .iter()
            .map(|m| m.mount_id)
            .collect();
        assert_eq!(sel, vec![12, 14, 13, 11, 10]);
    }
}
