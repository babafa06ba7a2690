//! The jailer's argv, parsed the way the real one does (`--flag value`,
//! required `--id --exec-file --uid --gid`, repeatable `--cgroup` and
//! `--resource-limit`, everything after `--` forwarded), with its messages.

use std::path::PathBuf;

/// Longest jail id the real jailer accepts.
pub const MAX_ID: usize = 64;

/// Parsed jailer arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub id: String,
    pub exec_file: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub chroot_base: PathBuf,
    pub cgroup_version: u8,
    pub cgroups: Vec<(String, String)>,
    pub parent_cgroup: Option<String>,
    pub netns: Option<PathBuf>,
    pub resource_limits: Vec<(String, u64)>,
    pub daemonize: bool,
    pub new_pid_ns: bool,
    /// Arguments after `--`, forwarded to the exec file.
    pub extra: Vec<String>,
}

/// What the parse says instead of arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// `--help` / `--version`: print and exit 0.
    #[error("{0}")]
    Info(String),
    /// An argument error: the message and the real jailer's `Debug` form
    /// (`Failed to parse arguments: …` / `Error: ArgumentParsing(…)`), exit 1.
    #[error("Failed to parse arguments: {0}")]
    Parsing(String, String),
    /// A well-formed argument with a bad value: the message and the
    /// `Debug` form, exit 1.
    #[error("{0}")]
    Invalid(String, String),
}

const WITH_VALUE: &[&str] = &[
    "id",
    "exec-file",
    "uid",
    "gid",
    "chroot-base-dir",
    "netns",
    "cgroup",
    "resource-limit",
    "cgroup-version",
    "parent-cgroup",
];
const SWITCHES: &[&str] = &["daemonize", "new-pid-ns", "version", "help"];

/// Parse `argv` (without argv\[0\]).
pub fn parse(argv: &[String]) -> Result<Args, ArgsError> {
    let mut seen: Vec<(String, Option<String>)> = Vec::new();
    let mut extra = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            extra = it.by_ref().cloned().collect();
            break;
        }
        let Some(name) = a.strip_prefix("--") else {
            return Err(unexpected(a));
        };
        if WITH_VALUE.contains(&name) {
            let v = it.next().filter(|v| !v.starts_with("--")).ok_or_else(|| {
                parsing(
                    format!("The argument '{name}' requires a value, but none was supplied."),
                    format!("MissingValue({name:?})"),
                )
            })?;
            let multiple = name == "cgroup" || name == "resource-limit";
            if !multiple && seen.iter().any(|(n, _)| n == name) {
                return Err(parsing(
                    format!("The argument '{name}' was provided more than once."),
                    format!("DuplicateArgument({name:?})"),
                ));
            }
            seen.push((name.to_string(), Some(v.clone())));
        } else if SWITCHES.contains(&name) {
            seen.push((name.to_string(), None));
        } else {
            return Err(unexpected(name));
        }
    }
    let has = |n: &str| seen.iter().any(|(k, _)| k == n);
    if has("help") {
        return Err(ArgsError::Info(
            "jailer-double: the banger test double of the Firecracker jailer v1.16.1".into(),
        ));
    }
    if has("version") {
        return Err(ArgsError::Info("Jailer v1.16.1".into()));
    }
    let one = |n: &str| -> Option<String> {
        seen.iter()
            .find(|(k, _)| k == n)
            .and_then(|(_, v)| v.clone())
    };
    let all = |n: &str| -> Vec<String> {
        seen.iter()
            .filter(|(k, _)| k == n)
            .filter_map(|(_, v)| v.clone())
            .collect()
    };
    let required = |n: &str| {
        one(n).ok_or_else(|| {
            parsing(
                format!("Argument '{n}' required, but not found."),
                format!("MissingArgument({n:?})"),
            )
        })
    };
    let id = required("id")?;
    let exec_file = PathBuf::from(required("exec-file")?);
    let uid_s = required("uid")?;
    let gid_s = required("gid")?;
    validate_id(&id)?;
    let uid = uid_s
        .parse()
        .map_err(|_| invalid(format!("Invalid uid: {uid_s}"), format!("Uid({uid_s:?})")))?;
    let gid = gid_s
        .parse()
        .map_err(|_| invalid(format!("Invalid gid: {gid_s}"), format!("Gid({gid_s:?})")))?;
    let cgroup_version = match one("cgroup-version").as_deref() {
        None | Some("1") => 1,
        Some("2") => 2,
        Some(v) => {
            return Err(invalid(
                format!("{v} is an invalid cgroup version specifier"),
                format!("CgroupInvalidVersion({v:?})"),
            ))
        }
    };
    let mut cgroups = Vec::new();
    for c in all("cgroup") {
        match c.split_once('=') {
            Some((f, v)) if f.contains('.') && !f.contains('/') && !v.is_empty() => {
                cgroups.push((f.to_string(), v.to_string()))
            }
            _ => {
                return Err(invalid(
                    format!("Invalid format for cgroups: {c}"),
                    format!("CgroupFormat({c:?})"),
                ))
            }
        }
    }
    let parent_cgroup = one("parent-cgroup");
    if let Some(p) = &parent_cgroup {
        if p.starts_with('/') || p.split('/').any(|c| c == ".." || c == "." || c.is_empty()) {
            return Err(invalid(
                "Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'"
                    .into(),
                "CgroupInvalidParentPath".into(),
            ));
        }
    }
    let mut resource_limits = Vec::new();
    for r in all("resource-limit") {
        let (k, v) = r.split_once('=').ok_or_else(|| {
            invalid(
                format!("Invalid format for resources limits: {r}"),
                format!("ResLimitFormat({r:?})"),
            )
        })?;
        if k != "fsize" && k != "no-file" {
            return Err(invalid(
                format!("Invalid resource argument: {k}"),
                format!("ResLimitArgument({k:?})"),
            ));
        }
        let n = v.parse().map_err(|e: std::num::ParseIntError| {
            invalid(
                format!("Invalid limit value for resource: {k}: {e}"),
                format!("ResLimitValue({k:?}, {:?})", e.to_string()),
            )
        })?;
        resource_limits.push((k.to_string(), n));
    }
    Ok(Args {
        id,
        exec_file,
        uid,
        gid,
        chroot_base: PathBuf::from(one("chroot-base-dir").unwrap_or_else(|| "/srv/jailer".into())),
        cgroup_version,
        cgroups,
        parent_cgroup,
        netns: one("netns").map(PathBuf::from),
        resource_limits,
        daemonize: has("daemonize"),
        new_pid_ns: has("new-pid-ns"),
        extra,
    })
}

fn parsing(msg: String, debug: String) -> ArgsError {
    ArgsError::Parsing(msg, debug)
}

fn invalid(msg: String, debug: String) -> ArgsError {
    ArgsError::Invalid(msg, debug)
}

fn unexpected(name: &str) -> ArgsError {
    ArgsError::Parsing(
        format!("Found argument '{name}' which wasn't expected, or isn't valid in this context."),
        format!("UnexpectedArgument({name:?})"),
    )
}

/// Alphanumerics and hyphens, 1..=[`MAX_ID`].
fn validate_id(id: &str) -> Result<(), ArgsError> {
    if id.is_empty() || id.len() > MAX_ID {
        let n = id.len();
        return Err(ArgsError::Invalid(
            format!("Invalid instance ID: Invalid len ({n});  the length must be between 1 and {MAX_ID}"),
            format!("InvalidInstanceId(InvalidLen({n}, 1, {MAX_ID}))"),
        ));
    }
    if let Some((i, c)) = id
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(ArgsError::Invalid(
            format!("Invalid instance ID: Invalid char ({c}) at position {i}"),
            format!("InvalidInstanceId(InvalidChar({c:?}, {i}))"),
        ));
    }
    Ok(())
}

impl ArgsError {
    /// The real jailer's `Error: …` line (its error's `Debug` form).
    pub fn debug(&self) -> String {
        match self {
            ArgsError::Info(s) => s.clone(),
            ArgsError::Parsing(_, d) => format!("ArgumentParsing({d})"),
            ArgsError::Invalid(_, d) => d.clone(),
        }
    }
}

impl Args {
    /// The exec file's last component.
    pub fn exec_name(&self) -> Option<String> {
        self.exec_file
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
    }

    /// `<chroot base>/<exec name>/<id>/root`.
    pub fn chroot_dir(&self) -> Option<PathBuf> {
        Some(
            self.chroot_base
                .join(self.exec_name()?)
                .join(&self.id)
                .join("root"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn banger_argv_parses() {
        let a = parse(&v("--id vm-1 --exec-file /usr/local/bin/firecracker --uid 900000 --gid 900000 --chroot-base-dir /srv/j --cgroup-version 1 --cgroup memory.limit_in_bytes=1 --cgroup pids.max=34 -- --api-sock /run/firecracker.socket")).unwrap();
        assert_eq!(a.id, "vm-1");
        assert_eq!((a.uid, a.gid, a.cgroup_version), (900000, 900000, 1));
        assert_eq!(a.cgroups.len(), 2);
        assert_eq!(a.extra, v("--api-sock /run/firecracker.socket"));
        assert_eq!(
            a.chroot_dir().unwrap(),
            PathBuf::from("/srv/j/firecracker/vm-1/root")
        );
        let d = parse(&v("--id a --exec-file /f --uid 1 --gid 2")).unwrap();
        assert_eq!(d.chroot_base, PathBuf::from("/srv/jailer"));
        assert_eq!(d.cgroup_version, 1);
    }

    #[test]
    fn errors_say_what_the_real_one_says() {
        let p = |s: &str| parse(&v(s)).unwrap_err();
        // The real v1.16.1 jailer's lines, as printed (stderr, exit 1).
        let cases = [
            (
                "--exec-file /f --uid 1 --gid 2",
                "Failed to parse arguments: Argument 'id' required, but not found.",
                "ArgumentParsing(MissingArgument(\"id\"))",
            ),
            (
                "--id a --bogus",
                "Failed to parse arguments: Found argument 'bogus' which wasn't expected, or isn't valid in this context.",
                "ArgumentParsing(UnexpectedArgument(\"bogus\"))",
            ),
            (
                "--id a --id b --exec-file /f --uid 1 --gid 1",
                "Failed to parse arguments: The argument 'id' was provided more than once.",
                "ArgumentParsing(DuplicateArgument(\"id\"))",
            ),
            (
                "--id",
                "Failed to parse arguments: The argument 'id' requires a value, but none was supplied.",
                "ArgumentParsing(MissingValue(\"id\"))",
            ),
            (
                "--id a_b --exec-file /f --uid 5 --gid 5",
                "Invalid instance ID: Invalid char (_) at position 1",
                "InvalidInstanceId(InvalidChar('_', 1))",
            ),
            (
                "--id a --exec-file /f --uid x --gid 5",
                "Invalid uid: x",
                "Uid(\"x\")",
            ),
            (
                "--id a --exec-file /f --uid 5 --gid 5 --cgroup nodot",
                "Invalid format for cgroups: nodot",
                "CgroupFormat(\"nodot\")",
            ),
        ];
        for (argv, line, debug) in cases {
            let e = p(argv);
            assert_eq!(e.to_string(), line, "{argv}");
            assert_eq!(e.debug(), debug, "{argv}");
        }
        let long = p(&format!(
            "--id {} --exec-file /f --uid 5 --gid 5",
            "a".repeat(65)
        ));
        assert_eq!(
            long.to_string(),
            "Invalid instance ID: Invalid len (65);  the length must be between 1 and 64"
        );
        assert_eq!(long.debug(), "InvalidInstanceId(InvalidLen(65, 1, 64))");
        assert!(matches!(
            p("--id a --exec-file /f --uid 1 --gid 2 --parent-cgroup ../x"),
            ArgsError::Invalid(..)
        ));
        assert!(matches!(p("--version"), ArgsError::Info(_)));
    }
}
