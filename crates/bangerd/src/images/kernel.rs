//! A kernel for the images from a Debian kernel package installed on the
//! host: the ELF `vmlinux` out of `/boot/vmlinuz-*` (whatever its
//! compression) and a small initramfs that loads the virtio modules.

use super::cpio::Cpio;
use banger_sys::runner::{Cmd, RunError, Runner};
use std::path::{Path, PathBuf};

/// Where host kernels and busybox are looked up (injected for tests).
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub boot: PathBuf,
    pub modules: PathBuf,
    pub busybox: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            boot: "/boot".into(),
            modules: "/lib/modules".into(),
            busybox: "/bin/busybox".into(),
        }
    }
}

/// The modules a Firecracker/QEMU-microvm guest needs before `/dev/vda`,
/// in the order asked (deps are added before each).
pub const VIRTIO_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
];

/// A failed kernel step.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("no compressed ELF kernel found in {0}")]
    NoVmlinux(PathBuf),
    #[error("module {0} is neither in modules.dep nor built in")]
    NoModule(String),
    #[error("unsafe module name {0:?}")]
    BadModuleName(String),
    #[error("decompress module {0}")]
    Decompress(PathBuf, #[source] RunError),
}

/// A kernel installed on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKernel {
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `/lib/modules/<version>`.
    pub modules: PathBuf,
}

/// Kernels with both `boot/vmlinuz-<v>` and `modules_root/<v>`, sorted by version.
pub fn host_kernels(boot: &Path, modules_root: &Path) -> Vec<HostKernel> {
    let mut out: Vec<HostKernel> = std::fs::read_dir(boot)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            let modules = modules_root.join(&version);
            modules.join("modules.dep").exists().then(|| HostKernel {
                vmlinuz: e.path(),
                modules,
                version,
            })
        })
        .collect();
    out.sort_by(|a, b| a.version.cmp(&b.version));
    out
}

/// Compressed-stream magics and the tool (argv) that decompresses them.
const MAGICS: &[(&[u8], &str)] = &[
    (&[0x1f, 0x8b, 0x08], "gzip"),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
    (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
    (b"BZh", "bzip2"),
];

const ELF_MAGIC: &[u8] = b"\x7fELF";

/// The ELF `vmlinux` inside `vmlinuz` bytes: each compressed-stream magic
/// in file order is tried with its tool (`TOOL -dc`, stdin); the first
/// output that is an ELF wins (tools may complain about trailing data).
pub fn extract_vmlinux(
    runner: &dyn Runner,
    vmlinuz: &[u8],
    name: &Path,
) -> Result<Vec<u8>, KernelError> {
    if vmlinuz.starts_with(ELF_MAGIC) {
        return Ok(vmlinuz.to_vec());
    }
    let mut candidates: Vec<(usize, &str)> = Vec::new();
    for (magic, tool) in MAGICS {
        let mut from = 0;
        while let Some(i) = find(&vmlinuz[from..], magic) {
            candidates.push((from + i, tool));
            from += i + 1;
        }
    }
    candidates.sort();
    for (off, tool) in candidates.into_iter().take(64) {
        let cmd = Cmd::new(tool).args(["-dc", "-q"]).stdin(&vmlinuz[off..]);
        if let Ok(out) = runner.output(&cmd) {
            if out.stdout.starts_with(ELF_MAGIC) {
                return Ok(out.stdout);
            }
        }
    }
    Err(KernelError::NoVmlinux(name.into()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A module to load: its name and file under the modules dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub rel_path: PathBuf,
}

fn module_name(rel: &str) -> String {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// Load order for `wanted` from `modules.dep` (deps first; built-ins skipped).
pub fn load_order(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>, KernelError> {
    let dep_path = modules_dir.join("modules.dep");
    let dep = std::fs::read_to_string(&dep_path).map_err(|e| KernelError::Read(dep_path, e))?;
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().map(module_name).collect();
    let mut deps: std::collections::HashMap<String, (String, Vec<String>)> = Default::default();
    for line in dep.lines() {
        let Some((m, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            module_name(m),
            (
                m.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            ),
        );
    }
    let mut out: Vec<Module> = Vec::new();
    for w in wanted {
        let w = w.replace('-', "_");
        let Some((path, ds)) = deps.get(&w) else {
            if builtin.contains(&w) {
                continue;
            }
            return Err(KernelError::NoModule(w));
        };
        // modprobe loads the dependency list from its end.
        for p in ds.iter().rev().chain(std::iter::once(path)) {
            let name = module_name(p);
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || name.is_empty() {
                return Err(KernelError::BadModuleName(name));
            }
            if !out.iter().any(|m| m.name == name) {
                out.push(Module {
                    name,
                    rel_path: p.into(),
                });
            }
        }
    }
    Ok(out)
}

/// The initramfs `/init`: mount the basics, insmod each module with its
/// `module.param=value` args from the kernel cmdline (what modprobe would
/// do: `virtio_mmio.device=…` matters), then switch_root to `root=`
/// (default `/dev/vda`) and exec `init=` (default `/sbin/init`).
pub fn init_script(modules: &[Module]) -> String {
    let mut s = String::from(
        r#"#!/bin/busybox sh
export PATH=/bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
params() {
  out=""
  for a in $(cat /proc/cmdline); do
    case "$a" in "$1".*) out="$out ${a#"$1".}" ;; esac
  done
  echo "$out"
}
"#,
    );
    for m in modules {
        s.push_str(&format!(
            "insmod /lib/modules/{0}.ko $(params {0})\n",
            m.name
        ));
    }
    s.push_str(
        r#"root=/dev/vda
init=/sbin/init
mode=rw
for a in $(cat /proc/cmdline); do
  case "$a" in
    root=/dev/*) root="${a#root=}" ;;
    init=/*) init="${a#init=}" ;;
    ro) mode=ro ;;
  esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if ! mount -t ext4 -o "$mode" "$root" /newroot; then
  echo "banger-initramfs: cannot mount $root" >/dev/console
  exec sh
fi
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
umount /sys /proc
exec switch_root /newroot "$init"
"#,
    );
    s
}

/// The initramfs (newc cpio): busybox, `/init`, the modules (decompressed).
pub fn initramfs(
    runner: &dyn Runner,
    modules_dir: &Path,
    busybox: &Path,
    wanted: &[&str],
) -> Result<Vec<u8>, KernelError> {
    let modules = load_order(modules_dir, wanted)?;
    let bb = std::fs::read(busybox).map_err(|e| KernelError::Read(busybox.into(), e))?;
    let mut c = Cpio::new();
    for d in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        c.dir(d, 0o755);
    }
    c.char_dev("dev/console", 0o600, 5, 1);
    c.char_dev("dev/null", 0o666, 1, 3);
    c.file("bin/busybox", 0o755, &bb);
    for applet in [
        "sh",
        "mount",
        "umount",
        "insmod",
        "sleep",
        "cat",
        "switch_root",
        "echo",
    ] {
        c.symlink(&format!("bin/{applet}"), "busybox");
    }
    for m in &modules {
        let p = modules_dir.join(&m.rel_path);
        let s = m.rel_path.to_string_lossy();
        let tool = if s.ends_with(".ko.xz") {
            Some("xz")
        } else if s.ends_with(".ko.zst") {
            Some("zstd")
        } else if s.ends_with(".ko.gz") {
            Some("gzip")
        } else {
            None
        };
        let data = match tool {
            None => std::fs::read(&p).map_err(|e| KernelError::Read(p.clone(), e))?,
            Some(t) => {
                runner
                    .run(&Cmd::new(t).args(["-dc", "-q"]).arg(&p))
                    .map_err(|e| KernelError::Decompress(p.clone(), e))?
                    .stdout
            }
        };
        c.file(&format!("lib/modules/{}.ko", m.name), 0o644, &data);
    }
    c.file("init", 0o755, init_script(&modules).as_bytes());
    Ok(c.finish())
}

#[cfg(test)]
#[path = "kernel_tests.rs"]
pub(crate) mod tests;
