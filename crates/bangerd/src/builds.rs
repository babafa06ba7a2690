//! Image builds: an OCI layout / docker-save tarball, or a registry pull,
//! turned into an ext4 rootfs, paired with a kernel (given, or the newest
//! Debian kernel on the host with a generated virtio initramfs).

use crate::catalog::{self, CatalogError, Digests, Staging};
use crate::images::{kernel, oci, registry};
use crate::jobs::Progress;
use crate::store::Store;
use banger_proto::api::{Image, ImageBuild, ImagePull};
use banger_sys::runner::HostRunner;
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

fn failed(what: &str, e: &(dyn std::error::Error + 'static)) -> CatalogError {
    CatalogError::Invalid(format!("{what}: {}", crate::render_chain(e)))
}

/// Pair the staged rootfs with a kernel: the one given, else the host's.
fn add_kernel(
    staging: &Staging,
    given: Option<&str>,
    host: &HostPaths,
    p: &Progress,
) -> Result<String, CatalogError> {
    let dst = staging.dir.join(catalog::KERNEL);
    if let Some(k) = given {
        return catalog::store_kernel(Path::new(k), &dst, p);
    }
    let hk = kernel::host_kernels(&host.boot, &host.modules)
        .pop()
        .ok_or_else(|| {
            CatalogError::Invalid(format!(
                "no kernel given and none installed under {} (apt install linux-image-cloud-amd64, or pass --kernel)",
                host.boot.display()
            ))
        })?;
    p.log(format!(
        "kernel: host {} with a virtio initramfs",
        hk.version
    ));
    let digest = catalog::store_kernel(&hk.vmlinuz, &dst, p)?;
    let initrd = kernel::initramfs(
        &HostRunner,
        &hk.modules,
        &host.busybox,
        kernel::VIRTIO_MODULES,
    )
    .map_err(|e| failed("building the initramfs", &e))?;
    let path = staging.dir.join(catalog::INITRD);
    std::fs::write(&path, initrd).map_err(|e| CatalogError::Write(path, e))?;
    Ok(digest)
}

/// Build the rootfs of `staging` from an OCI source dir or tarball.
fn rootfs_from_oci(
    source: &Path,
    staging: &Staging,
    headroom_mib: Option<u64>,
    p: &Progress,
) -> Result<String, CatalogError> {
    let scratch = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&staging.dir)
        .map_err(|e| CatalogError::Write(staging.dir.clone(), e))?;
    let mut sizing = oci::Sizing::default();
    if let Some(mib) = headroom_mib {
        sizing.extra_bytes = mib << 20;
    }
    let out = staging.dir.join(catalog::ROOTFS);
    p.log(format!("extracting layers of {}", source.display()));
    let built = oci::build(&HostRunner, source, scratch.path(), &out, sizing)
        .map_err(|e| failed("building the rootfs", &e))?;
    p.log(format!(
        "rootfs: {} layers, {} MiB of content in a {} MiB ext4",
        built.layers,
        built.content_bytes >> 20,
        built.size_bytes >> 20
    ));
    drop(scratch);
    digest_file(&out, p)
}

fn digest_file(path: &Path, p: &Progress) -> Result<String, CatalogError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
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
        p.step("digest rootfs", done, total);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// `banger image build`.
pub fn build(
    store: &Store,
    state_dir: &Path,
    host: &HostPaths,
    req: &ImageBuild,
    p: &Progress,
) -> Result<Image, CatalogError> {
    catalog::check_new_name(store, &req.name)?;
    let source = match (&req.from_oci, &req.debian) {
        (Some(s), None) => PathBuf::from(s),
        (None, Some(_)) => {
            return Err(CatalogError::Invalid(
                "building from Debian (debootstrap) is not implemented yet; build an OCI image and use --from".into(),
            ))
        }
        _ => {
            return Err(CatalogError::Invalid(
                "give exactly one of --from (OCI layout or docker-save tarball) and --debian".into(),
            ))
        }
    };
    if !source.exists() {
        return Err(CatalogError::Invalid(format!(
            "{} does not exist",
            source.display()
        )));
    }
    let staging = Staging::new(state_dir)?;
    let rootfs = rootfs_from_oci(&source, &staging, req.headroom_mib, p)?;
    let kernel = add_kernel(&staging, req.kernel.as_deref(), host, p)?;
    catalog::commit(
        store,
        state_dir,
        staging,
        &req.name,
        "oci",
        Digests { rootfs, kernel },
    )
}

/// `<last repository component>-<tag>`, e.g. `debian-bookworm`.
pub fn default_name(r: &registry::Reference) -> String {
    let repo = r.repository.rsplit('/').next().unwrap_or("image");
    let tag = r
        .reference
        .strip_prefix("sha256:")
        .map_or(r.reference.as_str(), |h| &h[..12]);
    format!("{repo}-{tag}").to_ascii_lowercase()
}

/// `banger image pull`: the registry protocol into a private OCI layout,
/// then the same build.
pub fn pull(
    store: &Store,
    state_dir: &Path,
    host: &HostPaths,
    req: &ImagePull,
    p: &Progress,
) -> Result<Image, CatalogError> {
    let r: registry::Reference = req
        .reference
        .parse()
        .map_err(|e| failed("bad reference", &e))?;
    let name = match &req.name {
        Some(n) => n.clone(),
        None => default_name(&r),
    };
    catalog::check_new_name(store, &name)?;
    let staging = Staging::new(state_dir)?;
    let layout = staging.dir.join(".layout");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CatalogError::Write(layout.clone(), e))?;
    let pulled = rt
        .block_on(registry::pull(&r, &layout, &mut |what, bytes| {
            p.step(what, bytes, None)
        }))
        .map_err(|e| failed("pulling", &e))?;
    p.log(format!(
        "pulled {} ({} layers, {} bytes)",
        pulled.manifest_digest, pulled.layers, pulled.bytes
    ));
    let rootfs = rootfs_from_oci(&layout, &staging, None, p)?;
    let _ = std::fs::remove_dir_all(&layout);
    let kernel = add_kernel(&staging, req.kernel.as_deref(), host, p)?;
    catalog::commit(
        store,
        state_dir,
        staging,
        &name,
        "pull",
        Digests { rootfs, kernel },
    )
}
