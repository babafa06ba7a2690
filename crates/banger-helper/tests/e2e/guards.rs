//! Clean-up guards and /proc probes for the end-to-end helper test:
//! whatever the test made is removed even when an assertion fails.

use crate::harness::{error, HelperProc};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// SIGKILLs every process still running one of the test's binaries
/// (the helper's launches survive the helper), by pid after checking its
/// cmdline names our temporary directory.
pub struct LaunchedGuard(pub PathBuf);

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

/// Detaches any loop device whose backing file lies under the test dir
/// (left behind only if the helper's own undo failed).
pub struct LoopGuard(pub PathBuf);

pub fn loops_backed_under(dir: &Path) -> Vec<String> {
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

pub fn assert_refused(method: &str, v: &Value, rule: &str) {
    let (code, msg) = error(method, v);
    assert_eq!(code, -32602, "{method}: {msg}");
    assert!(
        msg.contains(rule),
        "{method}: {msg:?} does not name {rule:?}"
    );
}

pub fn cmdline(pid: i64) -> Vec<String> {
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
pub fn proc_state(pid: i64) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The log text without terminal colour sequences (`ESC [ ... m`).
pub fn strip_ansi(s: &str) -> String {
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

pub fn short_tag() -> String {
    format!("{:06x}", std::process::id() & 0xff_ffff)
}

/// The kernel's device-mapper driver is present (`/dev/mapper/control` is
/// no evidence: libdevmapper creates that node whenever `dmsetup` runs).
pub fn has_device_mapper() -> bool {
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
pub struct DmNodeGuard(bool);

impl DmNodeGuard {
    pub fn new() -> Self {
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

/// Run `argv` inside the helper's network namespace; stdout on success.
pub fn in_netns(helper: &HelperProc, argv: &[&str]) -> Result<String, String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", helper.pid()))
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

/// SIGKILLs a pid on drop (a jailed VMM's cmdline does not name the test
/// directory, so [`LaunchedGuard`] cannot find it).
pub struct KillPid(pub i64);

impl Drop for KillPid {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid the helper launched for this test.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// `/dev/mapper/fc-rootfs-<id>`: a block node standing in for the VM's
/// root disk (the helper only needs a block device of that name); removed
/// on drop, with `/dev/mapper` if it was absent and is now empty.
pub struct DmNode(pub PathBuf, bool);

impl DmNode {
    pub fn new(id: &str) -> DmNode {
        let dir = Path::new("/dev/mapper");
        let made = std::fs::create_dir(dir).is_ok();
        let path = dir.join(format!("fc-rootfs-{id}"));
        let _ = std::fs::remove_file(&path);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(7, 251),
        )
        .unwrap();
        DmNode(path, made)
    }
}

impl Drop for DmNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if self.1 {
            let _ = std::fs::remove_dir("/dev/mapper");
        }
    }
}
