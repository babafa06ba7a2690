//! Customising a VM disk before first boot through `priv.write_ext4_files`:
//! hostname, network, resolver, machine-id, the owner's SSH key, a fresh SSH
//! host key pinned in banger's `known_hosts`, and file_sync entries (sources
//! locked to the owner's home).

use super::driver::Driver;
pub use super::error::CustomError;
use super::error::VmDiskError;
use super::handles::{call, check_vm_id, load, save};
use super::known_hosts::pin_host;
use crate::daemon::Daemon;
use banger_core::guest::{self, GuestIdentity};
use banger_proto::helper::{self as m, method};
use banger_sys::beneath::{self, Access};
use base64::Engine;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Largest single file sent to the guest (its base64 must fit a 1 MiB message).
pub const FILE_MAX_BYTES: u64 = 512 << 10;
/// Content bytes per `priv.write_ext4_files` call.
const BATCH_BYTES: usize = 512 << 10;
/// Files per call (the helper's limit).
const BATCH_FILES: usize = 256;

/// One file copied from the owner's home into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSync {
    /// Absolute, or relative to the owner's home; must resolve inside it.
    pub source: PathBuf,
    /// Absolute guest path.
    pub dest: String,
    /// Guest mode; default: the source's permission bits.
    pub mode: Option<u32>,
}

/// What to write into a VM's disk.
#[derive(Debug, Clone)]
pub struct Customisation {
    pub identity: GuestIdentity,
    /// The owner's public key file; default every `<home>/.ssh/*.pub`.
    pub ssh_public_key: Option<PathBuf>,
    pub file_sync: Vec<FileSync>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Customised {
    /// The VM's SSH host key (public line).
    pub host_key: String,
    /// The line added to `<state>/known_hosts`.
    pub known_hosts_line: String,
    /// Guest paths written, in order.
    pub files: Vec<String>,
}

/// Read a regular file that resolves (symlinks, `..`) inside `home`,
/// opened beneath the resolved home with no symlink followed, so a swap
/// after the check is refused too. Returns content and permission bits.
pub fn read_in_home(home: &Path, path: &Path, max: u64) -> Result<(Vec<u8>, u32), CustomError> {
    let home_c = home
        .canonicalize()
        .map_err(|e| CustomError::Home(home.into(), e))?;
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        home_c.join(path)
    };
    let real = full
        .canonicalize()
        .map_err(|e| CustomError::Resolve(path.into(), e))?;
    let rel = real
        .strip_prefix(&home_c)
        .map_err(|_| CustomError::OutsideHome(path.into()))?;
    if rel.as_os_str().is_empty() {
        return Err(CustomError::OutsideHome(path.into()));
    }
    let f = beneath::open_file(&home_c, rel, Access::Read)
        .map_err(|e| CustomError::Open(path.into(), e))?;
    let meta = f
        .metadata()
        .map_err(|e| CustomError::Read(path.into(), e))?;
    if meta.len() > max {
        return Err(CustomError::TooLarge(path.into(), max));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CustomError::Read(path.into(), e))?;
    if buf.len() as u64 > max {
        return Err(CustomError::TooLarge(path.into(), max));
    }
    Ok((buf, meta.mode() & 0o7777))
}

/// The owner's public keys: `explicit`, or every `<home>/.ssh/*.pub`
/// (sorted; none when there is no `.ssh`: banger's own key serves); each
/// must resolve inside the home and parse as a key line.
pub fn owner_keys(home: &Path, explicit: Option<&Path>) -> Result<Vec<String>, CustomError> {
    let paths = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => {
            let dir = home.join(".ssh");
            let entries = match std::fs::read_dir(&dir) {
                Ok(it) => it,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
                Err(e) => return Err(CustomError::ListKeys(dir.clone(), e)),
            };
            let mut v: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            v.sort();
            v
        }
    };
    let mut keys = Vec::new();
    for p in paths {
        let (bytes, _) = read_in_home(home, &p, 16 << 10)?;
        let text = String::from_utf8_lossy(&bytes);
        let line = text.lines().next().unwrap_or("").to_string();
        guest::parse_public_key(&line).map_err(|e| CustomError::BadKey(p.clone(), e))?;
        keys.push(line);
    }
    Ok(keys)
}

/// A fresh ed25519 host key, made in process (`ssh-key`, the OS RNG): the
/// private half in the OpenSSH format `ssh-keygen` writes and sshd reads,
/// and the public line `ssh-ed25519 <base64> <comment>`. Returns
/// `(private, public line)`.
pub fn generate_host_key(comment: &str) -> Result<(Vec<u8>, String), CustomError> {
    let mut key =
        PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(CustomError::Keygen)?;
    key.set_comment(comment);
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(CustomError::Keygen)?;
    let public = key.public_key().to_openssh().map_err(CustomError::Keygen)?;
    Ok((private.as_bytes().to_vec(), public))
}

fn file(path: &str, content: impl Into<Vec<u8>>, mode: u32) -> (String, Vec<u8>, u32) {
    (path.to_string(), content.into(), mode)
}

/// Customise VM `vm_id`'s disk before first boot (dm snapshot active, or
/// the copy): every file in as few `priv.write_ext4_files` calls as fit,
/// then the host key pinned in `<state>/known_hosts` for `<vm>.<domain>`
/// and the VM's IP.
pub fn customise(d: &Daemon, vm_id: &str, c: &Customisation) -> Result<Customised, VmDiskError> {
    check_vm_id(vm_id)?;
    c.identity.validate().map_err(CustomError::from)?;
    let (drv, mut h) = load(d, vm_id)?;
    if h.file.is_empty() {
        return Err(VmDiskError::NoDisk(vm_id.into()));
    }
    let image = match (&h.dm, drv) {
        (Some(dm), _) => dm.dm_device.clone(),
        (None, Some(Driver::Copy)) => h.file.clone(),
        (None, _) => return Err(VmDiskError::NotActive(vm_id.into())),
    };
    let home = &d.cfg.owner_home;
    let mut keys = owner_keys(home, c.ssh_public_key.as_deref())?;
    // banger's own key, in every VM: `vm ssh`/`vm exec` need nothing of the owner's.
    keys.push(crate::sshkey::ensure(&d.paths.state_dir).map_err(CustomError::BangerKey)?);
    let mut synced = Vec::new();
    for fs in &c.file_sync {
        banger_sys::ext4::check_guest_path(&fs.dest)
            .map_err(|_| CustomError::BadDest(fs.dest.clone()))?;
        let (bytes, mode) = read_in_home(home, &fs.source, FILE_MAX_BYTES)?;
        synced.push((fs.dest.clone(), bytes, fs.mode.unwrap_or(mode) & 0o7777));
    }
    let id = &c.identity;
    let (host_priv, host_pub) = generate_host_key(&format!("root@{}", id.fqdn()))?;
    let mut mid = [0u8; 16];
    rustix::rand::getrandom(&mut mid, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| CustomError::Random(e.into()))?;

    let mut files = vec![
        file("/etc/hostname", id.hostname_file(), 0o644),
        file("/etc/hosts", id.hosts(), 0o644),
        file(
            "/etc/systemd/network/10-banger.network",
            id.networkd(),
            0o644,
        ),
        file("/etc/network/interfaces", id.interfaces(), 0o644),
        file("/etc/resolv.conf", id.resolv_conf(), 0o644),
        file("/etc/machine-id", guest::machine_id(mid), 0o444),
        file(
            "/root/.ssh/authorized_keys",
            guest::authorized_keys(&keys).map_err(CustomError::from)?,
            0o600,
        ),
        file("/etc/ssh/ssh_host_ed25519_key", host_priv, 0o600),
        file(
            "/etc/ssh/ssh_host_ed25519_key.pub",
            format!("{host_pub}\n"),
            0o644,
        ),
    ];
    files.extend(synced);
    write_batched(d, &image, &files)?;

    let names = vec![id.fqdn(), id.net.ip.to_string()];
    let line = guest::known_hosts_line(&names, &host_pub).map_err(CustomError::from)?;
    let mut old_names = std::mem::take(&mut h.known_hosts);
    old_names.extend(names.iter().cloned());
    pin_host(d, &old_names, Some(&line))?;
    h.known_hosts = names;
    save(d, vm_id, drv, &h)?;
    Ok(Customised {
        host_key: host_pub,
        known_hosts_line: line,
        files: files.into_iter().map(|f| f.0).collect(),
    })
}

fn write_batched(
    d: &Daemon,
    image: &str,
    files: &[(String, Vec<u8>, u32)],
) -> Result<(), VmDiskError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut batch: Vec<m::Ext4File> = Vec::new();
    let mut bytes = 0usize;
    let flush = |batch: &mut Vec<m::Ext4File>| -> Result<(), VmDiskError> {
        if batch.is_empty() {
            return Ok(());
        }
        call::<method::WriteExt4Files>(
            d,
            &m::WriteExt4Files {
                image: image.to_string(),
                files: std::mem::take(batch),
            },
        )?;
        Ok(())
    };
    for (path, content, mode) in files {
        if !batch.is_empty() && (bytes + content.len() > BATCH_BYTES || batch.len() >= BATCH_FILES)
        {
            flush(&mut batch)?;
            bytes = 0;
        }
        bytes += content.len();
        batch.push(m::Ext4File {
            path: path.clone(),
            content_b64: b64.encode(content),
            mode: *mode,
            uid: 0,
            gid: 0,
        });
    }
    flush(&mut batch)
}
