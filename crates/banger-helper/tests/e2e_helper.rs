//! The real helper end to end: the `banger-helper` binary runs as root (in
//! a private network namespace, so bridges, taps and nftables rules never
//! touch the host's) with a temporary install.toml, and every method of
//! `banger_proto::helper::METHODS` is driven over its socket with JSON-RPC
//! from forked children: as the owner (valid params act for real where this
//! machine allows, gate-violating params get `-32602` with the rule text)
//! and as a third uid (closed without a byte, for every method).

use banger_proto::helper as m;
use banger_proto::install::InstallConfig;
use banger_testkit::{open_up, probe_as, require_root, wait_until, Probe, SystemUser};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HELPER: &str = env!("CARGO_BIN_EXE_banger-helper");

/// The fake VMM: prints its argv (one per line) to stdout — the log the
/// helper opened — and waits for signals. A real ELF, so `/proc/<pid>/cmdline`
/// argv[0] is the configured binary path, as for Firecracker.
const FAKE_VMM_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) printf("%s\n", argv[i]);
    fflush(stdout);
    for (;;) pause();
}
"#;

/// The real helper process; SIGKILLed and reaped when dropped.
struct HelperProc {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl HelperProc {
    /// Start `banger-helper --config <cfg> serve` in a fresh network
    /// namespace; wait for its socket.
    fn start(cfg_path: &Path, cfg: &InstallConfig, extra: &[&str], log: PathBuf) -> HelperProc {
        let stderr = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(HELPER);
        cmd.arg("--config")
            .arg(cfg_path)
            .args(extra)
            .arg("serve")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("BANGER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: unshare(2) is async-signal-safe; the closure touches no
        // memory shared with other threads.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("banger-helper starts");
        let socket = cfg.helper_socket();
        let p = HelperProc { child, socket, log };
        assert!(
            wait_until(Duration::from_secs(20), || p.socket.exists()),
            "helper socket never appeared; log:\n{}",
            p.log_text()
        );
        p
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run `argv` inside the helper's network namespace; stdout on success.
    fn in_netns(&self, argv: &[&str]) -> Result<String, String> {
        let out = Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .arg("--")
            .args(argv)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for HelperProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILLs every process still running one of the test's binaries
/// (the helper's launches survive the helper), by pid after checking its
/// cmdline names our temporary directory.
struct LaunchedGuard(PathBuf);

impl Drop for LaunchedGuard {
    fn drop(&mut self) {
        let needle = self.0.as_os_str().as_encoded_bytes().to_vec();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            if cmd.windows(needle.len()).any(|w| w == needle.as_slice()) {
                // SAFETY: kill(2) on a pid whose cmdline we just checked.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Lazily unmounts the mount points it holds (deepest last pushed first).
struct MountGuard(Vec<PathBuf>);

impl Drop for MountGuard {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg("--")
                .arg(p)
                .output();
        }
    }
}

/// Detaches any loop device whose backing file lies under the test dir
/// (left behind only if the helper's own undo failed).
struct LoopGuard(PathBuf);

fn loops_backed_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(b.trim()).starts_with(dir) {
                found.push(format!("/dev/{name}"));
            }
        }
    }
    found
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        for dev in loops_backed_under(&self.0) {
            let _ = Command::new("losetup").arg("-d").arg(dev).output();
        }
    }
}

fn request(method: &str, params: &Value) -> Vec<u8> {
    let mut line = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        .to_string()
        .into_bytes();
    line.push(b'\n');
    line
}

/// One request as `uid`/`gid` from a forked child; the parsed answer.
fn call_as(uid: u32, gid: u32, socket: &Path, method: &str, params: Value) -> Value {
    match probe_as(uid, gid, socket, &request(method, &params)) {
        Probe::Answered(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method}: bad answer {bytes:?}: {e}")),
        other => panic!("{method} as uid {uid}: expected an answer, got {other:?}"),
    }
}

fn result<'a>(method: &str, v: &'a Value) -> &'a Value {
    assert!(v["error"].is_null(), "{method} failed: {v}");
    &v["result"]
}

/// The error's code and message.
fn error(method: &str, v: &Value) -> (i64, String) {
    let code = v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("{method}: expected an error, got {v}"));
    (code, v["error"]["message"].as_str().unwrap().to_string())
}

fn assert_refused(method: &str, v: &Value, rule: &str) {
    let (code, msg) = error(method, v);
    assert_eq!(code, -32602, "{method}: {msg}");
    assert!(
        msg.contains(rule),
        "{method}: {msg:?} does not name {rule:?}"
    );
}

fn cmdline(pid: i64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The state letter of `/proc/<pid>/stat` (after the `(comm)` field).
fn proc_state(pid: i64) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The log text without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for d in it.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn short_tag() -> String {
    format!("{:06x}", std::process::id() & 0xff_ffff)
}

/// A test tree: `<dir>/{bin,state,run,jail}` and an install.toml naming them.
struct Layout {
    dir: tempfile::TempDir,
    cfg: InstallConfig,
    cfg_path: PathBuf,
}

fn layout(owner: &SystemUser, bridge: &str) -> Layout {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-e2eh-")
        .tempdir()
        .unwrap();
    open_up(dir.path());
    let root = dir.path().canonicalize().unwrap();
    let (bin, state, run, jail) = (
        root.join("bin"),
        root.join("state"),
        root.join("run"),
        root.join("jail"),
    );
    for d in [&bin, &state, &run, &jail] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&state, Some(owner.uid), Some(owner.gid)).unwrap();
    // RuntimeDir as the system layout has it: root-owned, the owner's group.
    std::os::unix::fs::chown(&run, Some(0), Some(owner.gid)).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o770)).unwrap();

    let fc = bin.join("firecracker");
    let mut cc = Command::new("cc")
        .args(["-O1", "-x", "c", "-o"])
        .arg(&fc)
        .arg("-")
        .stdin(Stdio::piped())
        .spawn()
        .expect("cc runs (the Rust toolchain's linker)");
    cc.stdin
        .take()
        .unwrap()
        .write_all(FAKE_VMM_C.as_bytes())
        .unwrap();
    assert!(cc.wait().unwrap().success(), "compiling the fake VMM");
    std::fs::copy(&fc, bin.join("jailer")).unwrap();
    for b in ["firecracker", "jailer"] {
        std::fs::set_permissions(bin.join(b), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let mut cfg = InstallConfig::for_owner(owner.uid, owner.gid, root.clone());
    cfg.state_dir = state;
    cfg.runtime_dir = run;
    cfg.jailer_base = jail;
    cfg.firecracker_bin = fc;
    cfg.jailer_bin = bin.join("jailer");
    cfg.bridge = bridge.to_string();
    cfg.subnet = "10.213.0.0/24".into();
    let cfg_path = root.join("install.toml");
    std::fs::write(&cfg_path, cfg.render()).unwrap();
    std::fs::set_permissions(&cfg_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Layout { dir, cfg, cfg_path }
}

/// The kernel's device-mapper driver is present (`/dev/mapper/control` is
/// no evidence: libdevmapper creates that node whenever `dmsetup` runs).
fn has_device_mapper() -> bool {
    std::fs::read_to_string("/proc/misc")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().nth(1) == Some("device-mapper"))
        })
        .unwrap_or(false)
}

/// Without a device-mapper driver, `dmsetup` still creates
/// `/dev/mapper/control`; remove that stray node (and the directory) when
/// it was absent before the test, so no later test mistakes it for dm.
struct DmNodeGuard(bool);

impl DmNodeGuard {
    fn new() -> Self {
        DmNodeGuard(!has_device_mapper() && !Path::new("/dev/mapper").exists())
    }
}

impl Drop for DmNodeGuard {
    fn drop(&mut self) {
        use std::os::unix::fs::FileTypeExt;
        let control = Path::new("/dev/mapper/control");
        if self.0
            && std::fs::symlink_metadata(control).is_ok_and(|m| m.file_type().is_char_device())
        {
            let _ = std::fs::remove_file(control);
            let _ = std::fs::remove_dir("/dev/mapper");
        }
    }
}

#[test]
fn root_real_helper_serves_every_method_to_the_owner_and_nothing_to_others() {
    if !require_root("root_real_helper_serves_every_method_to_the_owner_and_nothing_to_others") {
        return;
    }
    let owner = SystemUser::create("e2ehown");
    let third = SystemUser::create("e2eh3rd");
    let tag = short_tag();
    let bridge = format!("bgtest-{tag}");
    let tap = format!("banger-t{tag}");
    let l = layout(&owner, &bridge);
    let root = l.cfg.owner_home.clone();
    let _dm_node = DmNodeGuard::new();
    let loops = LoopGuard(root.clone());
    let launched = LaunchedGuard(root.clone());
    let mut mounts = MountGuard(Vec::new());
    let helper = HelperProc::start(&l.cfg_path, &l.cfg, &[], root.join("helper.log"));
    let sock = helper.socket.clone();
    let md = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o777),
        (0, owner.gid, 0o660)
    );

    let (state, run, jail) = (
        l.cfg.state_dir.clone(),
        l.cfg.runtime_dir.clone(),
        l.cfg.jailer_base.clone(),
    );
    // Every request the owner sends is replayed as a third uid at the end.
    let sent = std::cell::RefCell::new(Vec::<(&'static str, Value)>::new());
    let call = |method: &'static str, params: Value| {
        sent.borrow_mut().push((method, params.clone()));
        call_as(owner.uid, owner.gid, &sock, method, params)
    };
    let mut covered: BTreeSet<&str> = BTreeSet::new();

    // helper.version
    let v = call(m::VERSION, json!({}));
    assert_eq!(result(m::VERSION, &v)["version"], banger_proto::VERSION);
    let v = call(m::VERSION, json!({"uid": 0}));
    assert_refused(m::VERSION, &v, "unknown field `uid`");
    covered.insert(m::VERSION);

    // Bridge, tap, NAT: real netlink and nft, in the helper's namespace.
    let v = call(
        m::ENSURE_BRIDGE,
        json!({"name": bridge, "address": "10.213.0.1/24"}),
    );
    result(m::ENSURE_BRIDGE, &v);
    let link = helper
        .in_netns(&["ip", "-o", "addr", "show", "dev", &bridge])
        .unwrap();
    assert!(link.contains("10.213.0.1/24"), "{link}");
    let v = call(
        m::ENSURE_BRIDGE,
        json!({"name": bridge, "address": "10.213.0.1/24"}),
    );
    result(m::ENSURE_BRIDGE, &v);
    let v = call(
        m::ENSURE_BRIDGE,
        json!({"name": bridge, "address": "192.168.9.1/24"}),
    );
    assert_refused(m::ENSURE_BRIDGE, &v, "inside 10.213.0.0/24");
    let v = call(
        m::ENSURE_BRIDGE,
        json!({"name": "lo", "address": "10.213.0.1/24"}),
    );
    // Our bridge now routes the subnet: a second interface may not claim it.
    assert_refused(
        m::ENSURE_BRIDGE,
        &v,
        &format!("address must not overlap a host route (10.213.0.0/24 on {bridge})"),
    );
    covered.insert(m::ENSURE_BRIDGE);

    let v = call(m::CREATE_TAP, json!({"name": tap, "bridge": bridge}));
    result(m::CREATE_TAP, &v);
    let t = helper
        .in_netns(&["ip", "-o", "link", "show", "dev", &tap])
        .unwrap();
    assert!(t.contains(&format!("master {bridge}")), "{t}");
    let v = call(m::CREATE_TAP, json!({"name": "eth9", "bridge": bridge}));
    assert_refused(m::CREATE_TAP, &v, "tap must start with banger-");
    covered.insert(m::CREATE_TAP);

    let v = call(m::ENSURE_NAT, json!({"guest_ip": "10.213.0.2", "tap": tap}));
    result(m::ENSURE_NAT, &v);
    let rules = helper
        .in_netns(&["nft", "list", "table", "inet", "banger"])
        .unwrap();
    assert!(
        rules.contains("10.213.0.2") && rules.contains(&tap),
        "{rules}"
    );
    let v = call(m::ENSURE_NAT, json!({"guest_ip": "8.8.8.8", "tap": tap}));
    assert_refused(
        m::ENSURE_NAT,
        &v,
        "guest_ip must be a host address inside 10.213.0.0/24",
    );
    covered.insert(m::ENSURE_NAT);

    let v = call(m::CLEAR_NAT, json!({"guest_ip": "10.213.0.2", "tap": tap}));
    result(m::CLEAR_NAT, &v);
    let rules = helper
        .in_netns(&["nft", "list", "table", "inet", "banger"])
        .unwrap();
    assert!(!rules.contains(&tap), "rules left after clear_nat: {rules}");
    let v = call(
        m::CLEAR_NAT,
        json!({"guest_ip": "10.213.0.2", "tap": "eth0"}),
    );
    assert_refused(m::CLEAR_NAT, &v, "tap must start with banger-");
    covered.insert(m::CLEAR_NAT);

    // Resolver routing: systemd-resolved never sees a link of a private
    // namespace, so a valid request fails cleanly (or resolvectl is absent).
    for (method, params) in [
        (
            m::SYNC_RESOLVER_ROUTING,
            json!({"bridge": bridge, "resolver": "10.213.0.1", "domain": "vm"}),
        ),
        (m::CLEAR_RESOLVER_ROUTING, json!({"bridge": bridge})),
    ] {
        let v = call(method, params);
        if v["error"].is_object() {
            let (code, msg) = error(method, &v);
            assert_eq!(code, -32000, "{method}: {msg}");
            assert!(msg.contains("resolvectl"), "{method}: {msg}");
        }
    }
    let v = call(
        m::SYNC_RESOLVER_ROUTING,
        json!({"bridge": "br:0", "resolver": "10.213.0.1", "domain": "vm"}),
    );
    assert_refused(
        m::SYNC_RESOLVER_ROUTING,
        &v,
        "bridge must be an interface name",
    );
    let v = call(m::CLEAR_RESOLVER_ROUTING, json!({"bridge": "lo"}));
    assert_refused(
        m::CLEAR_RESOLVER_ROUTING,
        &v,
        "bridge must be an existing interface created by banger",
    );
    covered.insert(m::SYNC_RESOLVER_ROUTING);
    covered.insert(m::CLEAR_RESOLVER_ROUTING);

    let v = call(m::DELETE_TAP, json!({"name": tap}));
    result(m::DELETE_TAP, &v);
    assert!(helper
        .in_netns(&["ip", "link", "show", "dev", &tap])
        .is_err());
    let v = call(m::DELETE_TAP, json!({"name": "lo"}));
    assert_refused(m::DELETE_TAP, &v, "tap must start with banger-");
    assert!(helper
        .in_netns(&["ip", "link", "show", "dev", "lo"])
        .is_ok());
    covered.insert(m::DELETE_TAP);

    // ext4 through debugfs on a real image under StateDir.
    let image = state.join("bgtest-base.ext4");
    std::fs::write(&image, vec![0u8; 8 << 20]).unwrap();
    let mk = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        mk.status.success(),
        "{}",
        String::from_utf8_lossy(&mk.stderr)
    );
    let content = b"hello from the e2e test\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(content);
    let v = call(
        m::WRITE_EXT4_FILES,
        json!({"image": image, "files": [{"path": "/bgtest-hello.txt", "content_b64": b64,
            "mode": 0o640, "uid": 1234, "gid": 5678}]}),
    );
    result(m::WRITE_EXT4_FILES, &v);
    let stat = Command::new("debugfs")
        .arg("-R")
        .arg("stat /bgtest-hello.txt")
        .arg(&image)
        .output()
        .unwrap();
    let stat = String::from_utf8_lossy(&stat.stdout).into_owned();
    let words: Vec<&str> = stat.split_whitespace().collect();
    let after = |k: &str| words.iter().position(|w| *w == k).map(|i| words[i + 1]);
    assert_eq!(after("User:"), Some("1234"), "{stat}");
    assert_eq!(after("Group:"), Some("5678"), "{stat}");
    assert_eq!(after("Mode:"), Some("0640"), "{stat}");
    let v = call(
        m::WRITE_EXT4_FILES,
        json!({"image": image, "files": [{"path": "/../etc/shadow", "content_b64": b64,
            "mode": 0o600, "uid": 0, "gid": 0}]}),
    );
    assert_refused(m::WRITE_EXT4_FILES, &v, "guest path must be absolute");
    covered.insert(m::WRITE_EXT4_FILES);

    let v = call(
        m::READ_EXT4_FILE,
        json!({"image": image, "path": "/bgtest-hello.txt"}),
    );
    let got = result(m::READ_EXT4_FILE, &v)["content_b64"]
        .as_str()
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(got)
            .unwrap(),
        content
    );
    let escape = state.join("bgtest-escape.ext4");
    std::os::unix::fs::symlink("/etc/passwd", &escape).unwrap();
    for img in [Path::new("/etc/passwd"), escape.as_path()] {
        let v = call(
            m::READ_EXT4_FILE,
            json!({"image": img, "path": "/etc/hostname"}),
        );
        assert_refused(
            m::READ_EXT4_FILE,
            &v,
            "image must be under StateDir or /dev/mapper/fc-rootfs-*",
        );
    }
    covered.insert(m::READ_EXT4_FILE);

    // Device-mapper: real when the kernel has it; otherwise a clear failure.
    let dm_name = format!("fc-rootfs-bgtest{tag}");
    let cow = state.join("bgtest.cow");
    let v = call(
        m::CREATE_DM_SNAPSHOT,
        json!({"name": dm_name, "base_image": image, "cow_file": cow, "cow_size_bytes": 8u64 << 20}),
    );
    let handles = if has_device_mapper() {
        result(m::CREATE_DM_SNAPSHOT, &v)["handles"].clone()
    } else {
        let (code, msg) = error(m::CREATE_DM_SNAPSHOT, &v);
        assert_eq!(code, -32000, "{msg}");
        assert!(
            msg.contains("dm device") && msg.contains("dmsetup"),
            "{msg}"
        );
        assert!(!cow.exists(), "the COW file the helper made was not undone");
        assert_eq!(
            loops_backed_under(&root),
            Vec::<String>::new(),
            "loops left"
        );
        json!({"dm_name": dm_name})
    };
    let v = call(
        m::CREATE_DM_SNAPSHOT,
        json!({"name": "vg0-root", "base_image": image, "cow_file": cow, "cow_size_bytes": 1}),
    );
    assert_refused(m::CREATE_DM_SNAPSHOT, &v, "dm name must be fc-rootfs-<id>");
    covered.insert(m::CREATE_DM_SNAPSHOT);

    let dev = format!("/dev/mapper/{dm_name}");
    let v = call(m::FSCK_SNAPSHOT, json!({"device": dev}));
    if has_device_mapper() {
        assert_eq!(result(m::FSCK_SNAPSHOT, &v)["exit_code"], 0);
    } else {
        let (code, msg) = error(m::FSCK_SNAPSHOT, &v);
        assert_eq!(code, -32000, "{msg}");
        assert!(msg.contains(&format!("dm device {dm_name}")), "{msg}");
    }
    let v = call(m::FSCK_SNAPSHOT, json!({"device": "/dev/sda1"}));
    assert_refused(
        m::FSCK_SNAPSHOT,
        &v,
        "device must be /dev/mapper/fc-rootfs-*",
    );
    covered.insert(m::FSCK_SNAPSHOT);

    // Cleanup and remove: what is gone (or was never made) is fine.
    let v = call(m::CLEANUP_DM_SNAPSHOT, json!({"handles": handles}));
    result(m::CLEANUP_DM_SNAPSHOT, &v);
    assert_eq!(
        loops_backed_under(&root),
        Vec::<String>::new(),
        "loops left"
    );
    let v = call(
        m::CLEANUP_DM_SNAPSHOT,
        json!({"handles": {"dm_name": "vg0-root"}}),
    );
    assert_refused(m::CLEANUP_DM_SNAPSHOT, &v, "dm name must be fc-rootfs-<id>");
    let v = call(
        m::CLEANUP_DM_SNAPSHOT,
        json!({"handles": {"base_loop": "/dev/sda"}}),
    );
    assert_refused(m::CLEANUP_DM_SNAPSHOT, &v, "loop device must be /dev/loopN");
    covered.insert(m::CLEANUP_DM_SNAPSHOT);

    let v = call(m::REMOVE_DM_SNAPSHOT, json!({"target": dev}));
    result(m::REMOVE_DM_SNAPSHOT, &v);
    let v = call(
        m::REMOVE_DM_SNAPSHOT,
        json!({"target": "/dev/mapper/vg0-root"}),
    );
    assert_refused(
        m::REMOVE_DM_SNAPSHOT,
        &v,
        "target must be fc-rootfs-* or /dev/mapper/fc-rootfs-*",
    );
    covered.insert(m::REMOVE_DM_SNAPSHOT);

    // Socket hand-over: a real socket made by root under RuntimeDir.
    let fc_sock = run.join("bgtest-fc.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&fc_sock).unwrap();
    std::fs::set_permissions(&fc_sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let v = call(m::ENSURE_SOCKET_ACCESS, json!({"path": fc_sock}));
    result(m::ENSURE_SOCKET_ACCESS, &v);
    let md = std::fs::symlink_metadata(&fc_sock).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (owner.uid, owner.gid, 0o600)
    );
    let canary = root.join("canary");
    std::fs::write(&canary, b"canary").unwrap();
    let link = run.join("bgtest-link.sock");
    std::os::unix::fs::symlink(&canary, &link).unwrap();
    let v = call(m::ENSURE_SOCKET_ACCESS, json!({"path": link}));
    assert_refused(
        m::ENSURE_SOCKET_ACCESS,
        &v,
        "socket path must not be a symlink",
    );
    let v = call(m::ENSURE_SOCKET_ACCESS, json!({"path": "/etc/passwd"}));
    assert_refused(
        m::ENSURE_SOCKET_ACCESS,
        &v,
        "socket path must be below RuntimeDir",
    );
    let md = std::fs::metadata(&canary).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0), "the canary was chowned");
    covered.insert(m::ENSURE_SOCKET_ACCESS);

    // Launch (not jailed and jailed), signal, kill.
    let api = run.join("bgtest-vm1.sock");
    let log1 = state.join("bgtest-vm1.log");
    let v = call(
        m::LAUNCH_FIRECRACKER,
        json!({"vm_id": "bgtest-vm1", "api_socket": api, "log_file": log1}),
    );
    let pid = result(m::LAUNCH_FIRECRACKER, &v)["pid"].as_i64().unwrap();
    let want: Vec<String> = [
        l.cfg.firecracker_bin.to_str().unwrap(),
        "--id",
        "bgtest-vm1",
        "--api-sock",
        api.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(cmdline(pid), want);
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log1)
            .unwrap_or_default()
            .lines()
            .count()
            == want.len()
    }));
    assert_eq!(
        std::fs::read_to_string(&log1).unwrap(),
        want.join("\n") + "\n"
    );
    let md = std::fs::metadata(&log1).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (owner.uid, owner.gid, 0o600)
    );
    let log2 = state.join("bgtest-vm2.log");
    let v = call(
        m::LAUNCH_FIRECRACKER,
        json!({"vm_id": "bgtest-vm2", "api_socket": "", "jailed": true, "log_file": log2}),
    );
    let jailed = result(m::LAUNCH_FIRECRACKER, &v)["pid"].as_i64().unwrap();
    let jail_argv = cmdline(jailed);
    assert_eq!(jail_argv[0], l.cfg.jailer_bin.to_str().unwrap());
    assert_eq!(
        jail_argv[1..],
        [
            "--id",
            "bgtest-vm2",
            "--exec-file",
            l.cfg.firecracker_bin.to_str().unwrap(),
            "--uid",
            &owner.uid.to_string(),
            "--gid",
            &owner.gid.to_string(),
            "--chroot-base-dir",
            jail.to_str().unwrap(),
            "--cgroup-version",
            "2",
            "--",
            "--api-sock",
            "/run/firecracker.socket",
        ]
    );
    for (params, rule) in [
        (
            json!({"vm_id": "Bad_Id", "api_socket": api, "log_file": log1}),
            "vm_id must be 1-32 characters of [a-z0-9-]",
        ),
        (
            json!({"vm_id": "vm3", "api_socket": "/tmp/x.sock", "log_file": log1}),
            "api_socket must be below RuntimeDir",
        ),
        (
            json!({"vm_id": "vm3", "api_socket": api, "jailed": true, "log_file": log1}),
            "api_socket must be empty when jailed",
        ),
        (
            json!({"vm_id": "vm3", "api_socket": api, "log_file": "/etc/bgtest.log"}),
            "log_file must be below StateDir",
        ),
        (
            json!({"vm_id": "vm3", "api_socket": api, "log_file": log1, "firecracker_bin": "/bin/sh"}),
            "unknown field `firecracker_bin`",
        ),
    ] {
        let v = call(m::LAUNCH_FIRECRACKER, params);
        assert_refused(m::LAUNCH_FIRECRACKER, &v, rule);
    }
    covered.insert(m::LAUNCH_FIRECRACKER);

    let v = call(m::SIGNAL_PROCESS, json!({"pid": pid, "signal": "SIGSTOP"}));
    result(m::SIGNAL_PROCESS, &v);
    assert!(wait_until(Duration::from_secs(10), || proc_state(pid) == Some('T')));
    let v = call(m::SIGNAL_PROCESS, json!({"pid": pid, "signal": "SIGCONT"}));
    result(m::SIGNAL_PROCESS, &v);
    assert!(wait_until(Duration::from_secs(10), || proc_state(pid) == Some('S')));
    let v = call(m::SIGNAL_PROCESS, json!({"pid": pid, "signal": "SIGSEGV"}));
    assert_refused(m::SIGNAL_PROCESS, &v, "signal must be one of SIGTERM");
    covered.insert(m::SIGNAL_PROCESS);

    // A decoy: a process that is not Firecracker is never signalled, and
    // neither is the jailer (argv[0] is not firecracker).
    let decoy_bin = root.join("bin/decoy");
    std::fs::copy(&l.cfg.firecracker_bin, &decoy_bin).unwrap();
    let mut decoy = Command::new(&decoy_bin)
        .arg("firecracker")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let decoy_pid = decoy.id() as i64;
    for target in [decoy_pid, jailed] {
        let v = call(m::KILL_PROCESS, json!({"pid": target}));
        assert_refused(m::KILL_PROCESS, &v, "pid must be a firecracker process");
    }
    let v = call(m::KILL_PROCESS, json!({"pid": 1}));
    assert_refused(m::KILL_PROCESS, &v, "pid must be greater than 1");
    let v = call(m::KILL_PROCESS, json!({"pid": helper.pid()}));
    assert_refused(m::KILL_PROCESS, &v, "pid must not be the helper itself");
    assert_eq!(decoy.try_wait().unwrap(), None, "the decoy was signalled");
    assert!(proc_state(jailed).is_some(), "the jailer was signalled");
    let _ = decoy.kill();
    let _ = decoy.wait();
    let v = call(m::KILL_PROCESS, json!({"pid": pid}));
    result(m::KILL_PROCESS, &v);
    assert!(
        wait_until(Duration::from_secs(10), || proc_state(pid).is_none()),
        "pid {pid} still there after kill_process (state {:?})",
        proc_state(pid)
    );
    covered.insert(m::KILL_PROCESS);

    // Jailer chroot: real nested tmpfs mounts, unmounted and removed.
    let chroot = jail.join("firecracker/bgtest-vm9/root");
    let (dev, net) = (chroot.join("dev"), chroot.join("dev/net"));
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(chroot.join("rootfs.ext4"), b"x").unwrap();
    let mount = |target: &Path| {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "bgtest-tmpfs"])
            .arg(target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    mount(&dev);
    mounts.0.push(dev.clone());
    std::fs::create_dir(&net).unwrap();
    mount(&net);
    mounts.0.push(net.clone());
    let v = call(m::CLEANUP_JAILER_CHROOT, json!({"path": "/tmp"}));
    assert_refused(
        m::CLEANUP_JAILER_CHROOT,
        &v,
        "chroot path must be below the jailer base",
    );
    let v = call(
        m::CLEANUP_JAILER_CHROOT,
        json!({"path": chroot.join("../root")}),
    );
    assert_refused(
        m::CLEANUP_JAILER_CHROOT,
        &v,
        "chroot path must be lexically clean",
    );
    let v = call(m::CLEANUP_JAILER_CHROOT, json!({"path": chroot}));
    result(m::CLEANUP_JAILER_CHROOT, &v);
    assert!(!chroot.exists(), "chroot still there");
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(chroot.to_str().unwrap()),
        "still mounted:\n{mi}"
    );
    let v = call(m::CLEANUP_JAILER_CHROOT, json!({"path": chroot}));
    result(m::CLEANUP_JAILER_CHROOT, &v);
    covered.insert(m::CLEANUP_JAILER_CHROOT);

    assert_eq!(
        covered,
        m::METHODS.iter().copied().collect::<BTreeSet<_>>(),
        "every method is driven as the owner"
    );

    // A third uid, even in the owner's group (so it can connect): every
    // request the owner sent (valid and not, every method) is closed
    // without a byte, and none of them acts.
    let sent = sent.into_inner();
    assert!(sent.len() > 2 * m::METHODS.len());
    for (method, params) in &sent {
        let got = probe_as(third.uid, owner.gid, &sock, &request(method, params));
        assert_eq!(
            got,
            Probe::ClosedSilently,
            "{method} {params} as a third uid"
        );
    }
    assert!(
        helper
            .in_netns(&["ip", "link", "show", "dev", &tap])
            .is_err(),
        "tap recreated"
    );
    assert!(!chroot.exists(), "chroot recreated");
    assert!(
        proc_state(pid).is_none(),
        "vm1 relaunched under its old pid"
    );
    let relaunched = std::fs::read_to_string(&log1).unwrap();
    assert_eq!(relaunched, want.join("\n") + "\n", "vm1 relaunched");
    let got = probe_as(
        third.uid,
        third.gid,
        &sock,
        &request(m::VERSION, &json!({})),
    );
    assert_eq!(got, Probe::ConnectFailed(libc::EACCES), "outside the group");
    let links = helper.in_netns(&["ip", "-o", "link", "show"]).unwrap();
    assert!(
        links.contains(&bridge),
        "the bridge survives the third uid: {links}"
    );

    // The audit trail: one line per owner request, one per refused peer.
    let log = strip_ansi(&helper.log_text());
    let audited = log
        .lines()
        .filter(|l| l.contains(&format!("uid={} method=", owner.uid)))
        .count();
    assert_eq!(audited, sent.len(), "audit lines:\n{log}");
    let refused = log
        .lines()
        .filter(|l| l.contains(&format!("peer uid {} ", third.uid)))
        .count();
    assert_eq!(refused, sent.len(), "refused-peer lines:\n{log}");
    drop(mounts);
    drop(helper);
    drop(launched);
    drop(loops);
    drop(l.dir);
}

/// A request blocked in the helper (the image is a FIFO nobody writes:
/// opening it blocks) runs past `--request-timeout` and is answered
/// `-32001`; the connection keeps serving.
#[test]
fn root_request_timeout_answers_32001() {
    if !require_root("root_request_timeout_answers_32001") {
        return;
    }
    let owner = SystemUser::create("e2ehto");
    let l = layout(&owner, "bgtest-to0");
    let root = l.cfg.owner_home.clone();
    let helper = HelperProc::start(
        &l.cfg_path,
        &l.cfg,
        &["--request-timeout", "1"],
        root.join("helper.log"),
    );
    let fifo = l.cfg.state_dir.join("bgtest-fifo.ext4");
    mkfifo(&fifo);
    let t0 = Instant::now();
    let v = call_as(
        owner.uid,
        owner.gid,
        &helper.socket,
        m::READ_EXT4_FILE,
        json!({"image": fifo, "path": "/etc/hostname"}),
    );
    let took = t0.elapsed();
    let (code, msg) = error(m::READ_EXT4_FILE, &v);
    assert_eq!(code, -32001, "{msg}");
    assert!(msg.contains("timed out after 1s"), "{msg}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    release_fifo(&fifo);
    let v = call_as(owner.uid, owner.gid, &helper.socket, m::VERSION, json!({}));
    result(m::VERSION, &v);
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Open `fifo` for writing without blocking and close it: a reader blocked
/// in open(2) is released. True when there was such a reader.
fn release_fifo(fifo: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .is_ok()
}

/// How many of `pid`'s threads are blocked in openat2(2) right now
/// (`/proc/<pid>/task/<tid>/syscall` starts with the syscall number).
fn threads_in_openat2(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|it| {
            it.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("syscall"))
                        .map(|s| {
                            s.split_whitespace().next() == Some(&libc::SYS_openat2.to_string())
                        })
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// `--max-concurrent 2`: with three requests blocked in the helper, exactly
/// two execute; releasing one lets the third in; all three are answered.
#[test]
fn root_concurrency_cap_holds() {
    if !require_root("root_concurrency_cap_holds") {
        return;
    }
    let owner = SystemUser::create("e2ehcap");
    let l = layout(&owner, "bgtest-cap0");
    let root = l.cfg.owner_home.clone();
    let helper = HelperProc::start(
        &l.cfg_path,
        &l.cfg,
        &["--max-concurrent", "2", "--request-timeout", "60"],
        root.join("helper.log"),
    );
    let fifos: Vec<PathBuf> = (0..3)
        .map(|i| {
            let f = l.cfg.state_dir.join(format!("bgtest-fifo{i}.ext4"));
            mkfifo(&f);
            f
        })
        .collect();
    let (uid, gid, sock) = (owner.uid, owner.gid, helper.socket.clone());
    let calls: Vec<_> = fifos
        .iter()
        .cloned()
        .map(|f| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                call_as(
                    uid,
                    gid,
                    &sock,
                    m::READ_EXT4_FILE,
                    json!({"image": f, "path": "/x"}),
                )
            })
        })
        .collect();
    let pid = helper.pid();
    assert!(
        wait_until(Duration::from_secs(20), || threads_in_openat2(pid) == 2),
        "two requests never started"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(threads_in_openat2(pid), 2, "more than the cap executing");
    // Release whichever FIFOs have a reader: each release lets the waiting
    // request in, until all three have run.
    let mut released = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while released < 3 && Instant::now() < deadline {
        for f in &fifos {
            if release_fifo(f) {
                released += 1;
                assert!(threads_in_openat2(pid) <= 2, "cap exceeded");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(released, 3, "not every request reached its open");
    for c in calls {
        let v = c.join().unwrap();
        let (code, msg) = error(m::READ_EXT4_FILE, &v);
        // The FIFO opened once a writer came; it is not a regular file.
        assert_eq!(code, -32000, "{msg}");
    }
}
