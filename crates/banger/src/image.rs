//! `banger image …`: import, build, pull, list, inspect and remove images.

use crate::client::{body, Client};
use crate::{detail, output, print};
use anyhow::Result;
use banger_proto::api::{Image, ImageBuild, ImageImport, ImagePull};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub(crate) enum ImageCmd {
    /// Import an image from an ext4 rootfs and an uncompressed kernel.
    Import {
        /// Name of the new image.
        name: String,
        /// ext4 root filesystem image (copied into the StateDir; the guest's
        /// `/`).
        #[arg(long)]
        rootfs: PathBuf,
        /// Uncompressed kernel (vmlinux) the VMs of this image boot.
        #[arg(long)]
        kernel: PathBuf,
        /// Initramfs to boot with the kernel (needed when the kernel's
        /// virtio and ext4 drivers are modules).
        #[arg(long)]
        initrd: Option<PathBuf>,
    },
    /// Build an image from an OCI layout / docker-save tarball, or Debian.
    Build {
        name: String,
        /// OCI image layout directory or `docker save` tarball.
        #[arg(long, conflicts_with = "debian")]
        from: Option<PathBuf>,
        /// Debian suite to debootstrap (e.g. bookworm).
        #[arg(long)]
        debian: Option<String>,
        /// Kernel to pair with the rootfs (vmlinux, or a compressed vmlinuz
        /// that is extracted). Default: the newest Debian kernel installed
        /// on the host, with a generated virtio initramfs.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Free space to add to the ext4 beyond its content, MiB.
        #[arg(long)]
        headroom: Option<u64>,
        /// Debian mirror for --debian (default http://deb.debian.org/debian).
        #[arg(long, requires = "debian")]
        mirror: Option<String>,
    },
    /// Pull an image from an OCI registry.
    Pull {
        /// Reference, e.g. `localhost:5000/debian:bookworm`.
        reference: String,
        /// Local name (default: derived from the reference).
        #[arg(long)]
        name: Option<String>,
        /// Kernel to pair with the rootfs (default: the host's, as for build).
        #[arg(long)]
        kernel: Option<PathBuf>,
    },
    /// List images.
    Ls,
    /// Show one image in detail.
    Inspect { name: String },
    /// Remove an image (refused while a VM uses it).
    Rm { name: String },
}

/// Run one `banger image` subcommand.
pub(crate) async fn run(client: &Client, j: bool, cmd: ImageCmd) -> Result<()> {
    let abs = |p: PathBuf| -> Result<String> { Ok(std::path::absolute(&p)?.display().to_string()) };
    let (method, path, body) = match cmd {
        ImageCmd::Ls => {
            let a = client.get::<Vec<Image>>("/v1/images").await?;
            print(j, &a.raw, || {
                let rows: Vec<Vec<String>> = a
                    .body
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            output::size(i.size_bytes),
                            i.source.clone(),
                            i.id.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "SIZE", "SOURCE", "ID"], &rows)
            });
            return Ok(());
        }
        ImageCmd::Import {
            name,
            rootfs,
            kernel,
            initrd,
        } => (
            "POST",
            "/v1/images".to_string(),
            body(&ImageImport {
                name,
                rootfs: abs(rootfs)?,
                kernel: abs(kernel)?,
                initrd: initrd.map(abs).transpose()?,
            }),
        ),
        ImageCmd::Build {
            name,
            from,
            debian,
            kernel,
            headroom,
            mirror,
        } => (
            "POST",
            "/v1/images/build".to_string(),
            body(&ImageBuild {
                name,
                from_oci: from.map(abs).transpose()?,
                debian,
                kernel: kernel.map(abs).transpose()?,
                headroom_mib: headroom,
                mirror,
            }),
        ),
        ImageCmd::Pull {
            reference,
            name,
            kernel,
        } => (
            "POST",
            "/v1/images/pull".to_string(),
            body(&ImagePull {
                reference,
                name,
                kernel: kernel.map(abs).transpose()?,
            }),
        ),
        ImageCmd::Inspect { name } => ("GET", format!("/v1/images/{name}"), None),
        ImageCmd::Rm { name } => ("DELETE", format!("/v1/images/{name}"), None),
    };
    let v = client.call_with_progress(method, &path, body).await?;
    print(j, &v, || detail(&v));
    Ok(())
}
