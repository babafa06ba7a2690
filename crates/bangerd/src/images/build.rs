//! Image builds: an OCI layout / docker-save tarball, or a registry pull,
//! turned into an ext4 rootfs, paired with a kernel (given, or the newest
//! Debian kernel on the host with a generated virtio initramfs).

use crate::blocking::leaf;
use crate::images::catalog::{self, CatalogError, Digests, Staging};
use crate::images::debian;
use crate::images::kernel::{self, HostPaths};
use crate::images::oci::{self, Blobs};
use crate::images::pull;
use crate::images::reference::{BadReference, Reference};
use crate::progress::Progress;
use crate::store::Store;
use banger_proto::api::{Image, ImageBuild, ImagePull};
use banger_sys::runner::{HostRunner, Runner};
use std::path::{Path, PathBuf};

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
    .map_err(CatalogError::Initramfs)?;
    let path = staging.dir.join(catalog::INITRD);
    std::fs::write(&path, initrd).map_err(|e| CatalogError::Write(path, e))?;
    Ok(digest)
}

/// Build the rootfs of `staging` from an OCI source dir or tarball
/// (`blobs`: whether its layer blobs were verified as they were written).
fn rootfs_from_oci(
    source: &Path,
    blobs: Blobs,
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
    let built = oci::build_with_progress(
        &HostRunner,
        source,
        scratch.path(),
        &out,
        sizing,
        blobs,
        &mut |step| match step {
            oci::Step::Unpack => p.log("unpacking the archive"),
            oci::Step::Layer {
                index,
                total,
                bytes,
            } => {
                p.step("extract layers", index as u64, Some(total as u64));
                p.log(format!("layer {index}/{total} ({} KiB)", bytes >> 10));
            }
            oci::Step::Mkfs { size_bytes } => {
                p.log(format!("mkfs.ext4 ({} MiB)", size_bytes >> 20))
            }
        },
    )
    .map_err(CatalogError::Rootfs)?;
    p.log(format!(
        "rootfs: {} layers, {} MiB of content in a {} MiB ext4",
        built.layers,
        built.content_bytes >> 20,
        built.size_bytes >> 20
    ));
    drop(scratch);
    catalog::digest_file(&out, "digest rootfs", p)
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
        (None, Some(suite)) => {
            let staging = Staging::new(state_dir)?;
            let mirror = req.mirror.as_deref().unwrap_or(debian::MIRROR);
            let rootfs = rootfs_from_debian(suite, mirror, &staging, req.headroom_mib, p)?;
            let kernel = add_kernel(&staging, req.kernel.as_deref(), host, p)?;
            let digests = Digests { rootfs, kernel };
            return catalog::commit(store, state_dir, staging, &req.name, "debian", digests);
        }
        _ => {
            return Err(CatalogError::Invalid(
                "give exactly one of --from (OCI layout or docker-save tarball) and --debian"
                    .into(),
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
    let rootfs = rootfs_from_oci(&source, Blobs::Verify, &staging, req.headroom_mib, p)?;
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

/// `<last repository component>-<tag>`, e.g. `debian-bookworm` (the first
/// 12 hex digits of the digest when only a digest is given).
pub fn default_name(r: &Reference) -> String {
    let repo = r.repository.rsplit('/').next().unwrap_or("image");
    let tag = match (&r.tag, &r.digest) {
        (Some(t), _) => t.as_str(),
        (None, Some(d)) => &d[7..19],
        (None, None) => "latest",
    };
    format!("{repo}-{tag}").to_ascii_lowercase()
}

/// `banger image pull`: the registry protocol into a private OCI layout
/// (async, on the daemon's runtime), then the same build (blocking, handed
/// off at the leaf).
pub async fn pull(
    store: &Store,
    state_dir: &Path,
    host: &HostPaths,
    req: &ImagePull,
    p: &Progress,
) -> Result<Image, CatalogError> {
    let r: Reference = req
        .reference
        .parse()
        .map_err(|e: BadReference| CatalogError::Pull(e.into()))?;
    let name = match &req.name {
        Some(n) => n.clone(),
        None => default_name(&r),
    };
    let staging = leaf(|| {
        catalog::check_new_name(store, &name)?;
        Staging::new(state_dir)
    })?;
    let layout = staging.dir.join(".layout");
    let pulled = pull::pull(&r, &layout, &mut |what, bytes| p.bytes(what, bytes, None))
        .await
        .map_err(CatalogError::Pull)?;
    p.log(format!(
        "pulled {} ({} layers, {} bytes)",
        pulled.manifest_digest, pulled.layers, pulled.bytes
    ));
    leaf(|| {
        let rootfs = rootfs_from_oci(&layout, Blobs::Verified, &staging, None, p)?;
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
    })
}

/// An uncompressed rootfs tar (plus `extra`, a small layer applied on top)
/// as an OCI layout, so it goes through the same safe extraction and
/// ownership-keeping mkfs as any image.
fn tar_as_layout(
    tarball: &Path,
    extra: &[u8],
    layout: &Path,
    p: &Progress,
) -> Result<(), CatalogError> {
    use oci_spec::image::{
        Arch, Descriptor, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os, RootFs,
    };
    use sha2::{Digest, Sha256};
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| CatalogError::Write(blobs.clone(), e))?;
    let spec = |e| CatalogError::Rootfs(oci::OciError::Spec(layout.into(), e));
    let put = |media: MediaType, bytes: &[u8]| -> Result<Descriptor, CatalogError> {
        let hex = format!("{:x}", Sha256::digest(bytes));
        let p = blobs.join(&hex);
        std::fs::write(&p, bytes).map_err(|e| CatalogError::Write(p, e))?;
        let digest = oci::sha256_digest(&hex).map_err(CatalogError::Rootfs)?;
        Ok(Descriptor::new(media, bytes.len() as u64, digest))
    };
    // The layer (it can be large) is hashed, then moved into place.
    let hex = catalog::digest_file(tarball, "digest rootfs tarball", p)?;
    let size = std::fs::metadata(tarball).map(|m| m.len()).unwrap_or(0);
    let dst = blobs.join(&hex);
    std::fs::rename(tarball, &dst).map_err(|e| CatalogError::Write(dst, e))?;
    let rootfs_layer = Descriptor::new(
        MediaType::ImageLayer,
        size,
        oci::sha256_digest(&hex).map_err(CatalogError::Rootfs)?,
    );
    let extra_layer = put(MediaType::ImageLayer, extra)?;
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .rootfs(RootFs::default())
        .build()
        .map_err(spec)?;
    let config = serde_json::to_vec(&config)
        .map_err(|e| CatalogError::Rootfs(oci::OciError::Json(layout.into(), e)))?;
    let config = put(MediaType::ImageConfig, &config)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![rootfs_layer, extra_layer])
        .build()
        .map_err(spec)?;
    let manifest = serde_json::to_vec(&manifest)
        .map_err(|e| CatalogError::Rootfs(oci::OciError::Json(layout.into(), e)))?;
    let manifest = put(MediaType::ImageManifest, &manifest)?;
    oci::write_index(layout, manifest).map_err(CatalogError::Rootfs)
}

/// The Debian rootfs of `staging`: debootstrap + mkfs as root, or
/// mmdebstrap in a user namespace + the OCI pipeline as the owner.
fn rootfs_from_debian(
    suite: &str,
    mirror: &str,
    staging: &Staging,
    headroom_mib: Option<u64>,
    p: &Progress,
) -> Result<String, CatalogError> {
    let deb = CatalogError::Debian;
    debian::check_suite(suite).map_err(deb)?;
    debian::check_mirror(mirror).map_err(deb)?;
    let out = staging.dir.join(catalog::ROOTFS);
    if rustix::process::geteuid().is_root() {
        let target = staging.dir.join(".debootstrap");
        p.log(format!(
            "debootstrap {suite} from {mirror} (about a minute)"
        ));
        HostRunner
            .run(&debian::debootstrap_cmd(suite, &target, mirror))
            .map_err(|e| deb(debian::DebianError::Tool("debootstrap", e)))?;
        debian::finish_tree(&target).map_err(deb)?;
        let content = debian::tree_bytes(&HostRunner, &target).map_err(deb)?;
        let size = content * 13 / 10 + (headroom_mib.unwrap_or(256) << 20);
        p.log(format!(
            "mkfs.ext4: {} MiB for {} MiB of files",
            size >> 20,
            content >> 20
        ));
        HostRunner
            .run(&debian::mkfs_cmd(&target, &out, size))
            .map_err(|e| deb(debian::DebianError::Tool("mkfs.ext4", e)))?;
        let _ = std::fs::remove_dir_all(&target);
        return catalog::digest_file(&out, "digest rootfs", p);
    }
    // Under NoNewPrivileges (the installed unit) newuidmap cannot map the
    // namespace: refused up front instead of mmdebstrap's own failure.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if debian::no_new_privs(&status) {
        return Err(deb(debian::DebianError::NoNewPrivs));
    }
    let tarball = staging.dir.join(".rootfs.tar");
    p.log(format!(
        "mmdebstrap {suite} from {mirror} in a user namespace"
    ));
    HostRunner
        .run(&debian::mmdebstrap_cmd(suite, &tarball, mirror))
        .map_err(|e| deb(debian::DebianError::Tool("mmdebstrap", e)))?;
    let layout = staging.dir.join(".layout");
    tar_as_layout(&tarball, &debian::finish_layer(), &layout, p)?;
    let digest = rootfs_from_oci(&layout, Blobs::Verified, staging, headroom_mib, p)?;
    let _ = std::fs::remove_dir_all(&layout);
    Ok(digest)
}
