//! What the real Debian guest tests share: the gate, a Debian image built
//! through the daemon's build path once per recipe (cached outside the
//! clone), the owner's key, `ssh` with banger's
//! pinned known_hosts only, and the console's tail for failure messages.

use super::guest_cache::{cached_debian, guest_cache_root};
use crate::images::kernel::HostPaths;
use crate::images::{build, catalog};
use crate::progress::Progress;
use crate::store::Store;
use banger_proto::api::{ImageBuild, ImageImport};
use banger_sys::runner::{Cmd, HostRunner, Runner};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why a real-guest test cannot run here, if it cannot.
pub(crate) fn gate() -> Result<(), &'static str> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (debootstrap, network namespaces, taps, nftables)");
    }
    if std::env::var_os("BANGER_SKIP_NETWORK_TESTS").is_some() {
        return Err("BANGER_SKIP_NETWORK_TESTS is set (downloads from the Debian mirror)");
    }
    if !Path::new("/usr/bin/qemu-system-x86_64").exists() {
        return Err("qemu-system-x86_64 not installed");
    }
    if crate::images::kernel::host_kernels(Path::new("/boot"), Path::new("/lib/modules")).is_empty()
    {
        return Err("no Debian kernel in /boot");
    }
    Ok(())
}

/// Makes a tree writable again when dropped (stored images are read-only),
/// so its temp dir can go.
pub(crate) struct Writable(pub PathBuf);

impl Drop for Writable {
    fn drop(&mut self) {
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(&self.0)
            .status();
    }
}

fn kernels() -> String {
    format!(
        "{:?}",
        crate::images::kernel::host_kernels(Path::new("/boot"), Path::new("/lib/modules"))
    )
}

/// Image `deb` (Debian bookworm, the host's kernel): built once per recipe
/// through the daemon's build path and kept in the guest cache; every
/// later test (in this run or the next) imports the cached files. Returns
/// how long it took. Concurrent callers wait on one lock, so one build
/// serves them all.
pub(crate) fn build_debian(store: &Store, state_dir: &Path) -> Duration {
    let t = Instant::now();
    let progress = Progress::new(tokio::sync::mpsc::unbounded_channel().0);
    let root = guest_cache_root();
    std::fs::create_dir_all(&root).unwrap();
    let cached = cached_debian(&kernels());
    let lock = std::fs::File::create(root.join("build.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if cached.join(catalog::ROOTFS).is_file() {
        let initrd = cached.join(catalog::INITRD);
        let req = ImageImport {
            name: "deb".into(),
            rootfs: cached.join(catalog::ROOTFS).display().to_string(),
            kernel: cached.join(catalog::KERNEL).display().to_string(),
            initrd: initrd.is_file().then(|| initrd.display().to_string()),
        };
        catalog::import(store, state_dir, &req, &progress).unwrap();
        println!("guest image: imported {}", cached.display());
        return t.elapsed();
    }
    let req = ImageBuild {
        name: "deb".into(),
        from_oci: None,
        debian: Some("bookworm".into()),
        kernel: None,
        headroom_mib: None,
        mirror: None,
    };
    let img = build::build(store, state_dir, &HostPaths::default(), &req, &progress).unwrap();
    // Keep it for the next caller: copy into a scratch dir, then rename
    // into place so a half-copied image is never seen.
    let dir = catalog::images_dir(state_dir).join(&img.id);
    let scratch = root.join(format!(".tmp-{}", img.id));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    for f in [catalog::ROOTFS, catalog::KERNEL, catalog::INITRD] {
        if dir.join(f).is_file() {
            std::fs::copy(dir.join(f), scratch.join(f)).unwrap();
        }
    }
    std::fs::rename(&scratch, &cached).unwrap();
    println!("guest image: built and cached in {}", cached.display());
    t.elapsed()
}

/// A fresh ed25519 owner key at `<home>/.ssh/id_ed25519` (replacing any
/// there); the private key's path.
pub(crate) fn owner_key(home: &Path) -> PathBuf {
    let key = home.join(".ssh/id_ed25519");
    for p in [key.clone(), key.with_extension("pub")] {
        let _ = std::fs::remove_file(p);
    }
    HostRunner
        .run(
            &Cmd::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "bgtest-owner", "-f"])
                .arg(&key),
        )
        .unwrap();
    key
}

/// `ssh root@ip remote` trusting only `known_hosts`, strictly; `wrapper`
/// comes first on the command line (`ip netns exec NS`, or nothing).
pub(crate) fn pinned_ssh(
    wrapper: &[&str],
    key: &Path,
    known_hosts: &Path,
    ip: Ipv4Addr,
    remote: &str,
) -> Output {
    let mut argv: Vec<&str> = wrapper.to_vec();
    argv.push("ssh");
    Command::new(argv[0])
        .args(&argv[1..])
        .args(["-F", "/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=30"])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(key)
        .arg(format!("root@{ip}"))
        .arg(remote)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The last 40 lines of a console log (for assertion messages).
pub(crate) fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
