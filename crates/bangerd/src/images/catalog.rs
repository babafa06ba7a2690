//! The image catalog: images stored read-only under `<state>/images/<id>/`
//! (`rootfs.ext4`, `vmlinux`, optional `initrd.img`) with SHA-256 digests
//! recorded in the state DB; import, lookup and removal.

use crate::progress::Progress;
use crate::store::{Store, StoreError};
use banger_proto::api::Image;
use rusqlite::OptionalExtension;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const ROOTFS: &str = "rootfs.ext4";
pub const KERNEL: &str = "vmlinux";
pub const INITRD: &str = "initrd.img";

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Invalid(String),
    #[error("an image named {0:?} already exists")]
    Exists(String),
    #[error("no image {0:?}")]
    NotFound(String),
    #[error("image {name:?} is used by VM(s): {vms}")]
    InUse { name: String, vms: String },
    #[error("reading {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("writing {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("extracting the kernel")]
    Kernel(#[source] crate::images::kernel::KernelError),
    #[error("building the initramfs")]
    Initramfs(#[source] crate::images::kernel::KernelError),
    #[error("building the rootfs")]
    Rootfs(#[source] crate::images::oci::OciError),
    #[error("building the Debian rootfs")]
    Debian(#[source] crate::images::debian::DebianError),
    #[error("pulling the image")]
    Pull(#[source] crate::images::registry::RegistryError),
    #[error("reading random bytes for a new id")]
    Random(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

crate::store::sql_errors_into_store!(CatalogError);

/// A stored image with its files.
#[derive(Debug, Clone)]
pub struct Stored {
    pub image: Image,
    pub dir: PathBuf,
    pub has_initrd: bool,
}

impl Stored {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(ROOTFS)
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join(KERNEL)
    }
    pub fn initrd(&self) -> Option<PathBuf> {
        self.has_initrd.then(|| self.dir.join(INITRD))
    }
}

pub fn images_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("images")
}

/// A new random id (12 hex chars).
pub fn new_id() -> Result<String, CatalogError> {
    let mut b = [0u8; 6];
    // getrandom(2) without flags blocks only before the pool is seeded.
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| CatalogError::Random(e.into()))?;
    Ok(banger_core::names::id_from_bytes(&b))
}

fn read_head(p: &Path, len: usize, at: u64) -> Result<Vec<u8>, CatalogError> {
    let mut f = std::fs::File::open(p).map_err(|e| CatalogError::Read(p.into(), e))?;
    f.seek(SeekFrom::Start(at))
        .map_err(|e| CatalogError::Read(p.into(), e))?;
    let mut buf = vec![0u8; len];
    let n = f
        .read(&mut buf)
        .map_err(|e| CatalogError::Read(p.into(), e))?;
    buf.truncate(n);
    Ok(buf)
}

/// Is `p` an ext4 (or ext2/3) filesystem image: superblock magic 0xEF53.
pub fn check_ext4(p: &Path) -> Result<(), CatalogError> {
    if !p.is_file() {
        return Err(CatalogError::Invalid(format!(
            "{} is not a regular file",
            p.display()
        )));
    }
    if read_head(p, 2, 1024 + 56)? != [0x53, 0xEF] {
        return Err(CatalogError::Invalid(format!(
            "{} is not an ext4 filesystem image (no superblock magic)",
            p.display()
        )));
    }
    Ok(())
}

/// Copy `src` to `dst` hashing it, keeping all-zero 1 MiB blocks as holes.
pub fn copy_hashed(
    src: &Path,
    dst: &Path,
    step: &str,
    p: &Progress,
) -> Result<String, CatalogError> {
    let mut from = std::fs::File::open(src).map_err(|e| CatalogError::Read(src.into(), e))?;
    let total = from
        .metadata()
        .map_err(|e| CatalogError::Read(src.into(), e))?
        .len();
    let mut to = std::fs::File::create(dst).map_err(|e| CatalogError::Write(dst.into(), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = from
            .read(&mut buf)
            .map_err(|e| CatalogError::Read(src.into(), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if buf[..n].iter().all(|b| *b == 0) {
            to.seek(SeekFrom::Current(n as i64))
                .map_err(|e| CatalogError::Write(dst.into(), e))?;
        } else {
            to.write_all(&buf[..n])
                .map_err(|e| CatalogError::Write(dst.into(), e))?;
        }
        done += n as u64;
        p.bytes(step, done, Some(total));
    }
    to.set_len(done)
        .map_err(|e| CatalogError::Write(dst.into(), e))?;
    to.sync_all()
        .map_err(|e| CatalogError::Write(dst.into(), e))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The SHA-256 (hex) of a file, reporting progress as `step`.
pub fn digest_file(path: &Path, step: &str, p: &Progress) -> Result<String, CatalogError> {
    let mut f = std::fs::File::open(path).map_err(|e| CatalogError::Read(path.into(), e))?;
    let total = f.metadata().map(|m| m.len()).ok();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| CatalogError::Read(path.into(), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        p.bytes(step, done, total);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Write `bytes` to `dst` and return their digest.
fn write_hashed(dst: &Path, bytes: &[u8]) -> Result<String, CatalogError> {
    std::fs::write(dst, bytes).map_err(|e| CatalogError::Write(dst.into(), e))?;
    Ok(format!("{:x}", Sha256::digest(bytes)))
}

/// Put the kernel at `dst` as an uncompressed ELF vmlinux (extracting it
/// from a compressed vmlinuz/bzImage when needed); returns its digest.
pub fn store_kernel(src: &Path, dst: &Path, p: &Progress) -> Result<String, CatalogError> {
    if read_head(src, 4, 0)? == b"\x7fELF" {
        return copy_hashed(src, dst, "copy kernel", p);
    }
    p.log(format!(
        "{} is compressed: extracting vmlinux",
        src.display()
    ));
    let bytes = std::fs::read(src).map_err(|e| CatalogError::Read(src.into(), e))?;
    let vmlinux =
        crate::images::kernel::extract_vmlinux(&banger_sys::runner::HostRunner, &bytes, src)
            .map_err(CatalogError::Kernel)?;
    write_hashed(dst, &vmlinux)
}

/// A partially built image directory, removed on drop unless committed.
pub struct Staging {
    pub dir: PathBuf,
    pub id: String,
    committed: bool,
}

impl Staging {
    pub fn new(state_dir: &Path) -> Result<Staging, CatalogError> {
        let id = new_id()?;
        let dir = images_dir(state_dir).join(format!(".{id}.partial"));
        std::fs::create_dir_all(&dir).map_err(|e| CatalogError::Write(dir.clone(), e))?;
        Ok(Staging {
            dir,
            id,
            committed: false,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a finished staging dir holds.
pub struct Digests {
    pub rootfs: String,
    pub kernel: String,
}

/// Make the staged files read-only, move them into place and record the
/// image in one transaction.
pub fn commit(
    store: &Store,
    state_dir: &Path,
    mut staging: Staging,
    name: &str,
    source: &str,
    digests: Digests,
) -> Result<Image, CatalogError> {
    let final_dir = images_dir(state_dir).join(&staging.id);
    let mut size = 0u64;
    for f in [ROOTFS, KERNEL, INITRD] {
        let p = staging.dir.join(f);
        if let Ok(m) = std::fs::metadata(&p) {
            size += m.len();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444))
                .map_err(|e| CatalogError::Write(p.clone(), e))?;
        }
    }
    let image = Image {
        id: staging.id.clone(),
        name: name.to_string(),
        size_bytes: size,
        rootfs_sha256: digests.rootfs,
        kernel_sha256: digests.kernel,
        source: source.to_string(),
        created_at: now(),
    };
    let has_initrd = staging.dir.join(INITRD).exists();
    store.write(|tx| {
        let taken: Option<String> = tx
            .query_row("SELECT id FROM images WHERE name=?1", [name], |r| r.get(0))
            .optional()?;
        if taken.is_some() {
            return Err(CatalogError::Exists(name.to_string()));
        }
        tx.execute(
            "INSERT INTO images (id, name, rootfs, kernel, initrd, rootfs_sha256, kernel_sha256, size_bytes, source, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![
                image.id,
                image.name,
                final_dir.join(ROOTFS).display().to_string(),
                final_dir.join(KERNEL).display().to_string(),
                has_initrd.then(|| final_dir.join(INITRD).display().to_string()),
                image.rootfs_sha256,
                image.kernel_sha256,
                image.size_bytes as i64,
                image.source,
                image.created_at,
            ],
        )?;
        std::fs::rename(&staging.dir, &final_dir)
            .map_err(|e| CatalogError::Write(final_dir.clone(), e))?;
        Ok(())
    })?;
    staging.committed = true;
    std::fs::set_permissions(&final_dir, std::fs::Permissions::from_mode(0o555))
        .map_err(|e| CatalogError::Write(final_dir.clone(), e))?;
    Ok(image)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Refuse a name that is malformed or taken before doing any work.
pub fn check_new_name(store: &Store, name: &str) -> Result<(), CatalogError> {
    banger_core::names::validate_image_name(name).map_err(CatalogError::Invalid)?;
    if find(store, name)?.is_some() {
        return Err(CatalogError::Exists(name.to_string()));
    }
    Ok(())
}

/// `banger image import`.
pub fn import(
    store: &Store,
    state_dir: &Path,
    req: &banger_proto::api::ImageImport,
    p: &Progress,
) -> Result<Image, CatalogError> {
    check_new_name(store, &req.name)?;
    let (rootfs, kernel) = (Path::new(&req.rootfs), Path::new(&req.kernel));
    check_ext4(rootfs)?;
    if !kernel.is_file() {
        return Err(CatalogError::Invalid(format!(
            "{} is not a regular file",
            kernel.display()
        )));
    }
    let staging = Staging::new(state_dir)?;
    let rootfs_sha = copy_hashed(rootfs, &staging.dir.join(ROOTFS), "copy rootfs", p)?;
    let kernel_sha = store_kernel(kernel, &staging.dir.join(KERNEL), p)?;
    if let Some(initrd) = &req.initrd {
        copy_hashed(
            Path::new(initrd),
            &staging.dir.join(INITRD),
            "copy initrd",
            p,
        )?;
    }
    let img = commit(
        store,
        state_dir,
        staging,
        &req.name,
        "import",
        Digests {
            rootfs: rootfs_sha,
            kernel: kernel_sha,
        },
    )?;
    p.log(format!("imported image {} ({})", img.name, img.id));
    Ok(img)
}

/// Columns [`stored_from_row`] reads, in order.
const COLUMNS: &str =
    "id, name, size_bytes, rootfs_sha256, kernel_sha256, source, created_at, rootfs, initrd";

fn stored_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    let rootfs: String = r.get(7)?;
    let initrd: Option<String> = r.get(8)?;
    Ok(Stored {
        image: Image {
            id: r.get(0)?,
            name: r.get(1)?,
            size_bytes: r.get::<_, i64>(2)? as u64,
            rootfs_sha256: r.get(3)?,
            kernel_sha256: r.get(4)?,
            source: r.get(5)?,
            created_at: r.get(6)?,
        },
        dir: Path::new(&rootfs)
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf(),
        has_initrd: initrd.is_some(),
    })
}

/// The image called `name` (or with that id).
pub fn find(store: &Store, name: &str) -> Result<Option<Stored>, CatalogError> {
    let sql = format!("SELECT {COLUMNS} FROM images WHERE name=?1 OR id=?1");
    Ok(store.read(|c| c.query_row(&sql, [name], stored_from_row).optional())?)
}

/// Every image, by name.
pub fn list(store: &Store) -> Result<Vec<Stored>, CatalogError> {
    let sql = format!("SELECT {COLUMNS} FROM images ORDER BY name");
    Ok(store.read(|c| {
        c.prepare(&sql)?
            .query_map([], stored_from_row)?
            .collect::<Result<Vec<_>, _>>()
    })?)
}

/// `banger image rm`: refused while a VM uses the image.
pub fn remove(store: &Store, name: &str) -> Result<Image, CatalogError> {
    let stored = find(store, name)?.ok_or_else(|| CatalogError::NotFound(name.to_string()))?;
    store.write(|tx| {
        let vms = crate::store::vms::names_using_image(tx, &stored.image.id)?;
        if !vms.is_empty() {
            return Err(CatalogError::InUse {
                name: stored.image.name.clone(),
                vms: vms.join(", "),
            });
        }
        tx.execute("DELETE FROM images WHERE id=?1", [&stored.image.id])?;
        Ok(())
    })?;
    let _ = std::fs::set_permissions(&stored.dir, std::fs::Permissions::from_mode(0o700));
    std::fs::remove_dir_all(&stored.dir).map_err(|e| CatalogError::Write(stored.dir.clone(), e))?;
    Ok(stored.image)
}
