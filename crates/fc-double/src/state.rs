//! The simulated VMM: instance state and what each valid request does to it.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Firecracker's refusal of a pre-boot-only call after `InstanceStart`.
pub const NOT_AFTER_START: &str =
    "The requested operation is not supported after starting the microVM.";
/// Firecracker's refusal of a post-boot-only call before `InstanceStart`.
pub const NOT_BEFORE_START: &str =
    "The requested operation is not supported before starting the microVM.";
/// Firecracker's answer to a body id that differs from the path id.
pub const ID_MISMATCH: &str = "The id from the path does not match the id from the body!";
/// Firecracker v1.16's answer to hot-adding a device without PCI.
pub const PCI_DISABLED: &str = "PCI is not enabled";

/// Linux's IFNAMSIZ minus the NUL: the longest interface name.
const IFNAME_MAX: usize = 15;

/// A unit enum value as serde reads it: `"Variant"` or `{"Variant": null}`.
fn variant(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(m) if m.len() == 1 => m.keys().next().map(String::as_str),
        _ => None,
    }
}

/// What the double answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    NoContent,
    Json(Value),
    Fault(u16, String),
}

fn fault(msg: impl Into<String>) -> Reply {
    Reply::Fault(400, msg.into())
}

/// The instance state `GET /` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    NotStarted,
    Running,
    Paused,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::NotStarted => "Not started",
            Phase::Running => "Running",
            Phase::Paused => "Paused",
        }
    }
}

#[derive(Debug)]
struct Machine {
    vcpu_count: u64,
    mem_size_mib: u64,
    smt: bool,
    cpu_template: Option<String>,
    track_dirty_pages: bool,
    huge_pages: String,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: "None".into(),
        }
    }
}

impl Machine {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "vcpu_count": self.vcpu_count,
            "mem_size_mib": self.mem_size_mib,
            "smt": self.smt,
            "track_dirty_pages": self.track_dirty_pages,
            "huge_pages": self.huge_pages,
        });
        if let Some(t) = &self.cpu_template {
            v["cpu_template"] = json!(t);
        }
        v
    }

    /// Firecracker's `VmConfig::update`: every check on the merged result.
    fn update(&self, body: &Value, partial: bool) -> Result<Machine, Reply> {
        let get = |k: &str| body.get(k).filter(|v| !v.is_null());
        let b = |k: &str, cur: bool| get(k).and_then(Value::as_bool).unwrap_or(cur);
        let (smt0, dirty0, huge0) = if partial {
            (self.smt, self.track_dirty_pages, self.huge_pages.clone())
        } else {
            (false, false, "None".to_string())
        };
        let vcpu_count = get("vcpu_count")
            .and_then(Value::as_u64)
            .unwrap_or(self.vcpu_count);
        let smt = b("smt", smt0);
        if vcpu_count == 0 || vcpu_count > 32 || (smt && vcpu_count > 1 && vcpu_count % 2 == 1) {
            return Err(fault(
                "Machine config error: The number of vCPUs must be greater than 0, less than 32 \
                 and must be 1 or an even number if SMT is enabled.",
            ));
        }
        let mem_size_mib = get("mem_size_mib")
            .and_then(Value::as_u64)
            .unwrap_or(self.mem_size_mib);
        let huge_pages = get("huge_pages")
            .and_then(variant)
            .map_or(huge0, str::to_string);
        if mem_size_mib == 0 || (huge_pages == "2M" && mem_size_mib % 2 != 0) {
            return Err(fault(
                "Machine config error: The memory size (MiB) is either 0, or not a multiple of \
                 the configured page size.",
            ));
        }
        let cpu_template = match get("cpu_template").and_then(variant) {
            Some("None") => None,
            Some(t) => Some(t.to_string()),
            None if partial => self.cpu_template.clone(),
            None => None,
        };
        Ok(Machine {
            vcpu_count,
            mem_size_mib,
            smt,
            cpu_template,
            track_dirty_pages: b("track_dirty_pages", dirty0),
            huge_pages,
        })
    }
}

/// One simulated Firecracker process.
#[derive(Debug)]
pub struct Vmm {
    id: String,
    version: String,
    sys_root: PathBuf,
    phase: Phase,
    machine: Machine,
    boot_source: Option<Value>,
    /// Drives, the root device first (as Firecracker's `BlockBuilder`).
    drives: Vec<Value>,
    nics: Vec<Value>,
    vsock: Option<(Value, UnixListener)>,
    logger: Option<Value>,
    metrics: Option<Value>,
    mmds: Option<Value>,
    /// Bodies of the pre-boot PUTs the double only stores (balloon, entropy, ...).
    stored: BTreeMap<String, Value>,
    /// Set by `SendCtrlAltDel` on a running guest.
    ctrl_alt_del: bool,
}

impl Vmm {
    /// A fresh, unconfigured instance. `sys_root` stands for `/sys` (taps are
    /// looked up as `<sys_root>/class/net/<name>`).
    pub fn new(id: &str, version: &str, sys_root: &Path) -> Vmm {
        Vmm {
            id: id.to_string(),
            version: version.to_string(),
            sys_root: sys_root.to_path_buf(),
            phase: Phase::NotStarted,
            machine: Machine::default(),
            boot_source: None,
            drives: Vec::new(),
            nics: Vec::new(),
            vsock: None,
            logger: None,
            metrics: None,
            mmds: None,
            stored: BTreeMap::new(),
            ctrl_alt_del: false,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the guest was sent Ctrl+Alt+Del (and so is powering off).
    pub fn ctrl_alt_del_sent(&self) -> bool {
        self.ctrl_alt_del
    }

    fn started(&self) -> bool {
        self.phase != Phase::NotStarted
    }

    /// Apply one request whose body already passed schema validation.
    /// `template` is the yaml path, `param` the path parameter's value.
    pub fn handle(
        &mut self,
        method: &str,
        template: &str,
        param: Option<&str>,
        body: &Value,
    ) -> Reply {
        // The API server compares path and body ids before the VMM sees the call.
        let id_field = match template {
            "/drives/{drive_id}" => Some("drive_id"),
            "/network-interfaces/{iface_id}" => Some("iface_id"),
            "/pmem/{id}" => Some("id"),
            _ => None,
        };
        if let (Some(f), Some(p)) = (id_field, param) {
            if body.get(f).and_then(Value::as_str) != Some(p) {
                return fault(ID_MISMATCH);
            }
        }
        match (method, template) {
            ("GET", "/") => Reply::Json(json!({
                "id": self.id,
                "state": self.phase.as_str(),
                "vmm_version": self.version,
                "app_name": "Firecracker",
            })),
            ("GET", "/version") => Reply::Json(json!({"firecracker_version": self.version})),
            ("GET", "/machine-config") => Reply::Json(self.machine.to_json()),
            ("GET", "/vm/config") => Reply::Json(self.full_config()),
            ("PUT", "/machine-config") | ("PATCH", "/machine-config") => {
                self.machine_config(body, method == "PATCH")
            }
            ("PUT", "/boot-source") => self.boot_source(body),
            ("PUT", "/drives/{drive_id}") => self.put_drive(body),
            ("PATCH", "/drives/{drive_id}") => self.patch_device(body, "drive_id"),
            ("PUT", "/network-interfaces/{iface_id}") => self.put_nic(body),
            ("PATCH", "/network-interfaces/{iface_id}") => self.patch_device(body, "iface_id"),
            ("PUT", "/vsock") => self.put_vsock(body),
            ("PUT", "/logger") => self.put_log_target(body, "log_path", "Logger error"),
            ("PUT", "/metrics") => self.put_log_target(body, "metrics_path", "Metrics error"),
            ("PUT", "/actions") => self.action(body),
            ("PATCH", "/vm") => self.patch_vm(body),
            ("PUT", "/mmds") | ("PATCH", "/mmds") => {
                match (&mut self.mmds, method) {
                    (Some(Value::Object(cur)), "PATCH") => {
                        if let Value::Object(patch) = body {
                            cur.extend(patch.clone());
                        }
                    }
                    _ => self.mmds = Some(body.clone()),
                }
                Reply::NoContent
            }
            ("GET", "/mmds") => Reply::Json(self.mmds.clone().unwrap_or_else(|| json!({}))),
            ("PUT", "/snapshot/create") if !self.started() => fault(NOT_BEFORE_START),
            ("PUT", "/snapshot/load") if self.started() => fault(NOT_AFTER_START),
            ("PUT", "/snapshot/create") | ("PUT", "/snapshot/load") => {
                fault("fc-double: snapshots are not modelled")
            }
            ("GET", "/balloon/statistics") if !self.started() => fault(NOT_BEFORE_START),
            ("GET", t) => match self.stored.get(t) {
                Some(v) => Reply::Json(v.clone()),
                None => fault(format!("fc-double: {t} is not configured")),
            },
            ("PUT", t) => {
                if self.started() {
                    return fault(NOT_AFTER_START);
                }
                self.stored.insert(t.to_string(), body.clone());
                Reply::NoContent
            }
            (_, t) => {
                // Post-boot updates of devices the double only stores.
                if !self.started() {
                    return fault(NOT_BEFORE_START);
                }
                let device = t
                    .trim_end_matches("/{id}")
                    .split('/')
                    .take(2)
                    .collect::<Vec<_>>();
                let base = format!("/{}", device.get(1).copied().unwrap_or_default());
                if self.stored.keys().any(|k| k.starts_with(&base)) {
                    Reply::NoContent
                } else {
                    fault(format!("fc-double: {base} is not configured"))
                }
            }
        }
    }

    fn full_config(&self) -> Value {
        json!({
            "balloon": self.stored.get("/balloon"),
            "drives": self.drives,
            "boot-source": self.boot_source,
            "cpu-config": Value::Null,
            "logger": self.logger,
            "machine-config": self.machine.to_json(),
            "metrics": self.metrics,
            "memory-hotplug": self.stored.get("/hotplug/memory"),
            "mmds-config": self.stored.get("/mmds/config"),
            "network-interfaces": self.nics,
            "pmem": [],
            "vsock": self.vsock.as_ref().map(|(v, _)| v),
            "entropy": self.stored.get("/entropy"),
        })
    }

    fn machine_config(&mut self, body: &Value, partial: bool) -> Reply {
        if self.started() {
            return fault(NOT_AFTER_START);
        }
        if partial && body.as_object().is_some_and(|o| o.is_empty()) {
            return fault("Empty PATCH request.");
        }
        match self.machine.update(body, partial) {
            Ok(m) => {
                self.machine = m;
                Reply::NoContent
            }
            Err(r) => r,
        }
    }

    fn boot_source(&mut self, body: &Value) -> Reply {
        if self.started() {
            return fault(NOT_AFTER_START);
        }
        let kernel = body["kernel_image_path"].as_str().unwrap_or_default();
        if let Err(e) = std::fs::File::open(kernel) {
            return fault(format!(
                "Boot source error: The kernel file cannot be opened: {e}"
            ));
        }
        if let Some(initrd) = body["initrd_path"].as_str() {
            if let Err(e) = std::fs::File::open(initrd) {
                return fault(format!(
                    "Boot source error: The initrd file cannot be opened due to invalid path or \
                     invalid permissions. {e}"
                ));
            }
        }
        self.boot_source = Some(body.clone());
        Reply::NoContent
    }

    fn put_drive(&mut self, body: &Value) -> Reply {
        if self.started() {
            return fault(PCI_DISABLED);
        }
        let id = body["drive_id"].as_str().unwrap_or_default();
        let is_root = body["is_root_device"].as_bool().unwrap_or(false);
        let position = self.drives.iter().position(|d| d["drive_id"] == id);
        let has_root = self
            .drives
            .first()
            .is_some_and(|d| d["is_root_device"] == true);
        if is_root && has_root && position != Some(0) {
            return fault("Drive config error: A root block device already exists!");
        }
        match (body["path_on_host"].as_str(), body["socket"].as_str()) {
            (Some(path), _) => {
                let read_only = body["is_read_only"].as_bool().unwrap_or(false);
                let open = OpenOptions::new().read(true).write(!read_only).open(path);
                if let Err(e) = open {
                    return fault(format!(
                        "Drive config error: Unable to create the virtio block device: Virtio \
                         backend error: Error manipulating the backing file: {e} {path}"
                    ));
                }
            }
            (None, Some(_)) => {}
            (None, None) => {
                return fault(
                    "Drive config error: fc-double: a drive needs path_on_host (virtio-block) \
                     or socket (vhost-user-block)",
                )
            }
        }
        match position {
            Some(i) => {
                self.drives[i] = body.clone();
                if i != 0 && is_root {
                    self.drives.swap(0, i);
                }
            }
            None if is_root => self.drives.insert(0, body.clone()),
            None => self.drives.push(body.clone()),
        }
        Reply::NoContent
    }

    /// PATCH of a drive or NIC: post-boot only, the device must exist, a new
    /// backing file must open.
    fn patch_device(&mut self, body: &Value, id_field: &str) -> Reply {
        if !self.started() {
            return fault(NOT_BEFORE_START);
        }
        let id = &body[id_field];
        let list = if id_field == "drive_id" {
            &mut self.drives
        } else {
            &mut self.nics
        };
        let Some(dev) = list.iter_mut().find(|d| &d[id_field] == id) else {
            return fault(format!(
                "fc-double: no device with {id_field} {id} to update"
            ));
        };
        if let Some(path) = body["path_on_host"].as_str() {
            if let Err(e) = std::fs::File::open(path) {
                return fault(format!(
                    "Drive config error: Unable to patch the block device: {e} {path}"
                ));
            }
        }
        if let (Value::Object(d), Value::Object(b)) = (dev, body) {
            d.extend(b.clone());
        }
        Reply::NoContent
    }

    fn put_nic(&mut self, body: &Value) -> Reply {
        if self.started() {
            return fault(PCI_DISABLED);
        }
        let id = &body["iface_id"];
        let tap = body["host_dev_name"].as_str().unwrap_or_default();
        const PREFIX: &str = "Network config error: Could not create the network device: ";
        if let Some(other) = self.nics.iter().find(|n| &n["iface_id"] != id) {
            if other["host_dev_name"] == tap {
                return fault(format!(
                    "Network config error: The host device name {tap} is already in use."
                ));
            }
            if body["guest_mac"].is_string() && other["guest_mac"] == body["guest_mac"] {
                return fault(format!(
                    "Network config error: The guest MAC address {} is already in use.",
                    body["guest_mac"].as_str().unwrap_or_default()
                ));
            }
        }
        if tap.is_empty() || tap.len() > IFNAME_MAX {
            return fault(format!(
                "{PREFIX}Open tap device failed: Invalid interface name"
            ));
        }
        if !crate::tap::exists(&self.sys_root, tap) {
            return fault(format!(
                "{PREFIX}Open tap device failed: Error while creating ifreq structure: No such \
                 device (os error 19). Invalid TUN/TAP Backend provided by {tap}. Check our \
                 documentation on setting up the network devices."
            ));
        }
        match self.nics.iter().position(|n| &n["iface_id"] == id) {
            Some(i) => self.nics[i] = body.clone(),
            None => self.nics.push(body.clone()),
        }
        Reply::NoContent
    }

    fn put_vsock(&mut self, body: &Value) -> Reply {
        if self.started() {
            return fault(NOT_AFTER_START);
        }
        let path = body["uds_path"].as_str().unwrap_or_default();
        // Drop a previous device first, as Firecracker replaces it.
        self.vsock = None;
        match UnixListener::bind(path) {
            Ok(l) => {
                self.vsock = Some((body.clone(), l));
                Reply::NoContent
            }
            Err(e) => fault(format!(
                "Vsock config error: Cannot create backend for vsock device: Error binding to \
                 the host-side Unix socket: {e}"
            )),
        }
    }

    /// Logger and metrics: the target (file or FIFO) must already exist.
    fn put_log_target(&mut self, body: &Value, field: &str, what: &str) -> Reply {
        if self.started() {
            return fault(NOT_AFTER_START);
        }
        if let Some(path) = body[field].as_str() {
            if let Err(e) = OpenOptions::new().append(true).open(path) {
                return fault(format!("{what}: Failed to open target file: {e}"));
            }
        }
        if field == "log_path" {
            self.logger = Some(body.clone());
        } else {
            self.metrics = Some(body.clone());
        }
        Reply::NoContent
    }

    fn action(&mut self, body: &Value) -> Reply {
        match (variant(&body["action_type"]), self.phase) {
            (Some("InstanceStart"), Phase::NotStarted) => {
                if self.boot_source.is_none() {
                    return fault(
                        "Start microvm error: Cannot start microvm without kernel configuration.",
                    );
                }
                self.phase = Phase::Running;
                Reply::NoContent
            }
            (Some("InstanceStart"), _) => fault(NOT_AFTER_START),
            (_, Phase::NotStarted) => fault(NOT_BEFORE_START),
            (Some("SendCtrlAltDel"), _) => {
                // A paused guest sees the key press once resumed.
                self.ctrl_alt_del = true;
                Reply::NoContent
            }
            _ => Reply::NoContent,
        }
    }

    fn patch_vm(&mut self, body: &Value) -> Reply {
        if !self.started() {
            return fault(NOT_BEFORE_START);
        }
        self.phase = match variant(&body["state"]) {
            Some("Paused") => Phase::Paused,
            _ => Phase::Running,
        };
        Reply::NoContent
    }

    /// Whether the guest is powering off now (Ctrl+Alt+Del seen while running).
    pub fn guest_powering_off(&self) -> bool {
        self.ctrl_alt_del && self.phase == Phase::Running
    }
}
