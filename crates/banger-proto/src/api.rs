//! Types of the daemon's HTTP/JSON API under `/v1` (see `docs/api/openapi.yaml`).

use serde::{Deserialize, Serialize};

/// Body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `not_found`, `not_implemented`.
    pub code: String,
    /// One human-readable line.
    pub message: String,
}

/// `GET /v1/version`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VersionInfo {
    pub daemon: String,
    pub api: String,
    /// How privileged steps are done: `helper`, `sudo` or `direct`.
    pub privileges: String,
    /// The helper's version when the daemon uses one and it answered.
    #[serde(default)]
    pub helper: Option<String>,
    /// Why the helper's version is missing, when it is.
    #[serde(default)]
    pub helper_error: Option<String>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub ok: bool,
    pub pid: u32,
    pub state_dir: String,
    pub runtime_dir: String,
}

/// One image, as `GET /v1/images` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub size_bytes: u64,
    pub rootfs_sha256: String,
    pub kernel_sha256: String,
    /// How it was made: `import`, `oci`, `debian`, `pull`.
    pub source: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// One VM, as `GET /v1/vms` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    pub id: String,
    pub name: String,
    pub image: String,
    pub state: String,
    #[serde(default)]
    pub ip: Option<String>,
    pub created_at: i64,
    #[serde(default)]
    pub vcpus: Option<u8>,
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// The VMM process, while one may run.
    #[serde(default)]
    pub pid: Option<i64>,
    /// The backend it last ran on (`firecracker`, `qemu-kvm`, `qemu-tcg`).
    #[serde(default)]
    pub backend: Option<String>,
    /// Its VMM choice (`auto`, `firecracker`, `qemu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm: Option<VmmChoice>,
    /// The backend that choice gives on this host now, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm_reason: Option<String>,
}

/// Which VMM a VM runs on: `auto` (the host decides, as `banger doctor`
/// shows), or forced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmmChoice {
    #[default]
    Auto,
    Firecracker,
    Qemu,
}

impl VmmChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            VmmChoice::Auto => "auto",
            VmmChoice::Firecracker => "firecracker",
            VmmChoice::Qemu => "qemu",
        }
    }
}

impl std::fmt::Display for VmmChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VMM name that is not `auto`, `firecracker` or `qemu`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown VMM {0:?} (expected auto, firecracker or qemu)")]
pub struct UnknownVmm(pub String);

impl std::str::FromStr for VmmChoice {
    type Err = UnknownVmm;
    fn from_str(s: &str) -> Result<Self, UnknownVmm> {
        match s {
            "auto" => Ok(VmmChoice::Auto),
            "firecracker" => Ok(VmmChoice::Firecracker),
            "qemu" => Ok(VmmChoice::Qemu),
            other => Err(UnknownVmm(other.to_string())),
        }
    }
}

/// `POST /v1/vms` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VmCreate {
    pub name: String,
    /// Absent: the owner's `default_image`, built once if missing.
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub vcpus: Option<u8>,
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Start it once made (default true).
    #[serde(default)]
    pub start: Option<bool>,
    /// Its VMM (default: the daemon config's `vmm`, itself `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm: Option<VmmChoice>,
    /// Its root disk's size in bytes, grown (with its ext4) from the
    /// image's before first boot; never smaller than the image. Absent:
    /// the owner's `disk_size`, else the image's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size_bytes: Option<u64>,
}

/// `GET /v1/vms/{name}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    pub text: String,
    /// Where `text` ends in the console file (ask from there to follow).
    #[serde(default)]
    pub offset: u64,
}

/// One line of `GET /v1/doctor`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    /// `ok`, `warn` or `fail`.
    pub status: String,
    pub detail: String,
}

/// `GET /v1/doctor`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Doctor {
    pub checks: Vec<Check>,
}

/// One line of a long operation's `application/x-ndjson` answer (image
/// import, build, pull): progress, log lines, then exactly one `done` or
/// `error`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// `done` of `total` units of `step`: bytes when `unit` is `bytes`,
    /// seconds when `s`, a finished phase's microseconds when `us`
    /// ([`PHASE_UNIT`]), a plain count (layers, steps) when absent.
    Progress {
        step: String,
        done: u64,
        #[serde(default)]
        total: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
    /// A line of narration.
    Log { message: String },
    /// The operation succeeded with this result.
    Done { result: serde_json::Value },
    /// The operation failed.
    Error { code: String, message: String },
}

/// The `unit` of a `progress` event reporting one finished phase of a VM
/// create or start: `done` = `total` = the phase's duration in
/// microseconds, `step` its name (one of [`PHASES`]). A client that does
/// not know the unit sees a finished step, so the stream stays readable by
/// older clients.
pub const PHASE_UNIT: &str = "us";

/// The phases of a VM create and start, in the order they run (`vm start`
/// runs the part from `disk_activate` on). `ip` records the VM's row and
/// its address in one transaction; `tap` is empty for a jailed Firecracker (its tap is made for
/// the jail uid inside `vmm_spawn`); QEMU has no `vmm_configure`.
pub const PHASES: &[&str] = &[
    "validate",
    "ip",
    "disk_clone",
    "customise",
    "disk_activate",
    "tap",
    "nat",
    "vmm_spawn",
    "vmm_configure",
    "boot_to_ssh",
];

/// The phase whose time is the guest's own (not the control plane's).
pub const GUEST_PHASE: &str = "boot_to_ssh";

impl Event {
    /// The event reporting that phase `name` took `took`.
    pub fn phase(name: &str, took: std::time::Duration) -> Event {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        Event::Progress {
            step: name.to_string(),
            done: us,
            total: Some(us),
            unit: Some(PHASE_UNIT.to_string()),
        }
    }

    /// The phase and its duration, if this event reports one.
    pub fn as_phase(&self) -> Option<(&str, std::time::Duration)> {
        match self {
            Event::Progress {
                step,
                done,
                unit: Some(u),
                ..
            } if u == PHASE_UNIT => Some((step, std::time::Duration::from_micros(*done))),
            _ => None,
        }
    }
}

/// One phase's duration, as `banger vm create --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PhaseTiming {
    pub phase: String,
    /// Milliseconds, to the microsecond.
    pub ms: f64,
}

impl PhaseTiming {
    pub fn new(phase: &str, took: std::time::Duration) -> Self {
        PhaseTiming {
            phase: phase.to_string(),
            ms: took.as_micros() as f64 / 1000.0,
        }
    }
}

/// `POST /v1/images` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageImport {
    pub name: String,
    pub rootfs: String,
    pub kernel: String,
    #[serde(default)]
    pub initrd: Option<String>,
}

/// `POST /v1/images/build` body: exactly one of `from_oci` and `debian`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageBuild {
    pub name: String,
    #[serde(default)]
    pub from_oci: Option<String>,
    #[serde(default)]
    pub debian: Option<String>,
    /// Kernel to pair with the rootfs (vmlinux or vmlinuz); default: the
    /// newest Debian kernel installed on the host, with a generated initramfs.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Extra space in the ext4 beyond the content, MiB.
    #[serde(default)]
    pub headroom_mib: Option<u64>,
    /// Debian mirror for `debian` builds (default `http://deb.debian.org/debian`).
    #[serde(default)]
    pub mirror: Option<String>,
}

/// `POST /v1/images/pull` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImagePull {
    pub reference: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kernel: Option<String>,
}

/// `POST /v1/vms/{name}/exec` body: one command in the guest, no terminal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VmExec {
    /// The command and its arguments (each arrives as given).
    pub argv: Vec<String>,
    /// Bytes for the command's stdin (base64; default none: stdin is empty).
    #[serde(default)]
    pub stdin_b64: Option<String>,
    /// Give up after this many seconds (the command is killed).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// One line of the `application/x-ndjson` answer of `POST
/// /v1/vms/{name}/exec`: output as it comes, then one `exit` or `error`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecFrame {
    /// Bytes the command wrote to stdout (base64).
    Stdout { data_b64: String },
    /// Bytes the command wrote to stderr (base64).
    Stderr { data_b64: String },
    /// The command ended with this status (255: SSH itself failed).
    Exit { exit_code: i32 },
    /// It could not run, or `timeout` ran out.
    Error { code: String, message: String },
}

/// One port forward: host loopback `host` reaches the VM's `guest`
/// (`POST /v1/vms/{name}/ports`; `GET` answers a list of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub host: u16,
    pub guest: u16,
}

/// A `HOSTPORT:GUESTPORT` that is not one (ports are 1-65535).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not HOSTPORT:GUESTPORT (ports 1-65535)")]
pub struct ForwardSpecError(pub String);

impl std::str::FromStr for Forward {
    type Err = ForwardSpecError;

    /// `HOSTPORT:GUESTPORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ForwardSpecError(s.to_string());
        let (h, g) = s.split_once(':').ok_or_else(bad)?;
        let p = |x: &str| x.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
        Ok(Forward {
            host: p(h)?,
            guest: p(g)?,
        })
    }
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.guest)
    }
}
