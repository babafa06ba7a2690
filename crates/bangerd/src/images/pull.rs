//! `image pull`: an image's linux/amd64 manifest and blobs from a registry
//! into an OCI image layout directory, which `oci::build` then turns into
//! an ext4 rootfs. Blobs download concurrently; each is hashed once, while
//! it streams, by a blocking writer off the async runtime, and lands under
//! its digest only when digest and size match (a temp file otherwise,
//! removed).

use super::oci::{linux_amd64, sha256_digest, write_index, Document};
use super::reference::{digest_ok, Reference};
use super::registry::{Registry, RegistryError, TIMEOUT};
use hyper::body::Bytes;
use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, ImageManifest, MediaType, Os, PlatformBuilder,
};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Semaphore};

/// Blobs downloaded at once.
pub const BLOB_CONCURRENCY: usize = 4;

/// What a pull produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub layout: PathBuf,
    /// Digest of the image manifest (linux/amd64).
    pub manifest_digest: String,
    pub layers: usize,
    pub bytes: u64,
}

/// A descriptor's digest when it is a well-formed `sha256:` one.
fn sha256_of(d: &Descriptor) -> Result<String, RegistryError> {
    let s = d.digest().to_string();
    if digest_ok(&s) {
        Ok(s)
    } else {
        Err(RegistryError::BadDigest(s))
    }
}

/// Follow `r` (through indexes) to its linux/amd64 image manifest, each
/// document checked against the digest that named it and stored in
/// `blobs`. Returns the manifest, its digest and its size.
async fn resolve(
    reg: &Registry,
    r: &Reference,
    blobs: &Path,
) -> Result<(ImageManifest, String, u64), RegistryError> {
    let repo = &r.repository;
    let mut path = format!("/v2/{repo}/manifests/{}", r.manifest_ref());
    let mut expect = r.digest.clone();
    for _ in 0..4 {
        let data = reg.manifest(&path).await?;
        let digest = format!("sha256:{:x}", Sha256::digest(&data));
        if expect.as_ref().is_some_and(|e| *e != digest) {
            return Err(RegistryError::DigestMismatch(path));
        }
        let p = blobs.join(&digest[7..]);
        let size = data.len() as u64;
        let parsed = Document::parse(&data).map_err(|e| RegistryError::Json(path.clone(), e))?;
        tokio::fs::write(&p, data)
            .await
            .map_err(|e| RegistryError::Write(p, e))?;
        match parsed {
            Document::Manifest(m) => return Ok((*m, digest, size)),
            Document::Index(i) => {
                let m = linux_amd64(&i).ok_or_else(|| RegistryError::NoPlatform(path.clone()))?;
                let d = sha256_of(m)?;
                path = format!("/v2/{repo}/manifests/{d}");
                expect = Some(d);
            }
        }
    }
    Err(RegistryError::NoPlatform(path))
}

/// The blob at `dst` when it is there already and hashes to `digest`
/// (one streaming read; blocking, run off the runtime).
fn existing(dst: &Path, digest: &str) -> Option<u64> {
    let mut f = std::fs::File::open(dst).ok()?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).ok()?;
    (format!("sha256:{:x}", h.finalize()) == digest).then_some(n)
}

/// The blocking half of a download: a temp file in `blobs` gets each
/// chunk as it is hashed; returns the file and the digest of what came.
fn write_blob(
    blobs: &Path,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<(tempfile::NamedTempFile, String), RegistryError> {
    let write = |e| RegistryError::Write(blobs.into(), e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(blobs)
        .map_err(write)?;
    let mut h = Sha256::new();
    while let Some(chunk) = rx.blocking_recv() {
        h.update(&chunk);
        tmp.write_all(&chunk).map_err(write)?;
    }
    tmp.flush().map_err(write)?;
    Ok((tmp, format!("sha256:{:x}", h.finalize())))
}

/// Download one blob into `blobs/<hex>`, verified while it streams.
/// `cancel` turning true stops it (cleanly: its temp file is removed).
async fn fetch_blob(
    reg: Arc<Registry>,
    repo: String,
    desc: Descriptor,
    blobs: PathBuf,
    progress: mpsc::UnboundedSender<(String, u64)>,
    mut cancel: watch::Receiver<bool>,
) -> Result<u64, RegistryError> {
    let digest = sha256_of(&desc)?;
    let expected = desc.size();
    let dst = blobs.join(&digest[7..]);
    let (d2, dg) = (dst.clone(), digest.clone());
    let reused = tokio::task::spawn_blocking(move || existing(&d2, &dg))
        .await
        .map_err(RegistryError::Task)?;
    if let Some(n) = reused {
        return Ok(n);
    }
    let path = format!("/v2/{repo}/blobs/{digest}");
    let mut body = reg.get(&path, None).await?.into_body();
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let b2 = blobs.clone();
    let writer = tokio::task::spawn_blocking(move || write_blob(&b2, rx));
    let mut n = 0u64;
    // The first failure of the stream; the writer is always awaited (so
    // its temp file is gone before this returns).
    let mut failed: Option<RegistryError> = None;
    loop {
        let chunk = tokio::select! {
            c = reg.next_chunk(&mut body, &path) => c,
            _ = cancel.wait_for(|c| *c) => Err(RegistryError::Cancelled),
        };
        match chunk {
            Ok(Some(d)) => {
                n += d.len() as u64;
                if n > expected {
                    failed = Some(RegistryError::SizeMismatch {
                        digest: digest.clone(),
                        expected,
                        got: n,
                    });
                    break;
                }
                if tx.send(d).await.is_err() {
                    break; // the writer failed: its error is reported below
                }
                let _ = progress.send((digest.clone(), n));
            }
            Ok(None) => break,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(RegistryError::Task)?;
    let done = match (failed, written) {
        (Some(e), w) => Err((e, w.ok())),
        (None, Err(e)) => Err((e, None)),
        (None, Ok((tmp, _))) if n != expected => Err((
            RegistryError::SizeMismatch {
                digest: digest.clone(),
                expected,
                got: n,
            },
            Some((tmp, String::new())),
        )),
        (None, Ok((tmp, got))) if got != digest => Err((
            RegistryError::DigestMismatch(digest.clone()),
            Some((tmp, got)),
        )),
        (None, Ok((tmp, _))) => Ok(tmp),
    };
    // Unlink or rename off the runtime.
    tokio::task::spawn_blocking(move || match done {
        Ok(tmp) => tmp
            .persist(&dst)
            .map(|_| n)
            .map_err(|e| RegistryError::Write(dst, e.error)),
        Err((e, tmp)) => {
            drop(tmp);
            Err(e)
        }
    })
    .await
    .map_err(RegistryError::Task)?
}

/// Fetch `descs` at most [`BLOB_CONCURRENCY`] at a time; on the first
/// failure the others stop and their temp files are removed before it is
/// returned. Returns the bytes fetched.
async fn fetch_all(
    reg: Arc<Registry>,
    repo: &str,
    descs: &[Descriptor],
    blobs: &Path,
    progress: &mut (dyn FnMut(&str, u64) + Send),
) -> Result<u64, RegistryError> {
    let slots = Arc::new(Semaphore::new(BLOB_CONCURRENCY));
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let mut set = tokio::task::JoinSet::new();
    for d in descs {
        let (reg, repo, d, blobs) = (reg.clone(), repo.to_string(), d.clone(), blobs.to_owned());
        let (slots, ptx, mut cancel) = (slots.clone(), ptx.clone(), cancel_rx.clone());
        set.spawn(async move {
            let _slot = tokio::select! {
                s = slots.acquire_owned() => s.map_err(|_| RegistryError::Cancelled)?,
                _ = cancel.wait_for(|c| *c) => return Err(RegistryError::Cancelled),
            };
            fetch_blob(reg, repo, d, blobs, ptx, cancel).await
        });
    }
    drop(ptx);
    let mut total = 0;
    let mut first: Option<RegistryError> = None;
    loop {
        tokio::select! {
            Some((digest, n)) = prx.recv() => progress(&digest, n),
            joined = set.join_next() => match joined {
                None => break,
                Some(r) => match r.map_err(RegistryError::Task).and_then(|r| r) {
                    Ok(n) => total += n,
                    Err(e) => {
                        let _ = cancel_tx.send(true);
                        if first.is_none() || matches!(first, Some(RegistryError::Cancelled)) {
                            first = Some(e);
                        }
                    }
                },
            },
        }
    }
    while let Ok((digest, n)) = prx.try_recv() {
        progress(&digest, n);
    }
    match first {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// Pull `r` (linux/amd64) into the OCI layout directory `layout`.
/// `progress(blob digest, bytes so far)` is called while downloading.
pub async fn pull(
    r: &Reference,
    layout: &Path,
    progress: &mut (dyn FnMut(&str, u64) + Send),
) -> Result<Pulled, RegistryError> {
    pull_within(r, layout, TIMEOUT, progress).await
}

/// [`pull`] with every wait on the registry bounded by `timeout`.
pub async fn pull_within(
    r: &Reference,
    layout: &Path,
    timeout: std::time::Duration,
    progress: &mut (dyn FnMut(&str, u64) + Send),
) -> Result<Pulled, RegistryError> {
    let reg = Arc::new(Registry::connect(r, timeout)?);
    let blobs = layout.join("blobs/sha256");
    tokio::fs::create_dir_all(&blobs)
        .await
        .map_err(|e| RegistryError::Write(blobs.clone(), e))?;
    let (manifest, manifest_digest, manifest_size) = resolve(&reg, r, &blobs).await?;
    let mut descs = vec![manifest.config().clone()];
    descs.extend(manifest.layers().iter().cloned());
    for d in &descs {
        sha256_of(d)?;
    }
    let total = fetch_all(reg, &r.repository, &descs, &blobs, progress).await?;
    let media = manifest
        .media_type()
        .clone()
        .unwrap_or(MediaType::ImageManifest);
    let bad = |e: oci_spec::OciSpecError| RegistryError::BadDigest(e.to_string());
    let platform = PlatformBuilder::default()
        .os(Os::Linux)
        .architecture(Arch::Amd64)
        .build()
        .map_err(bad)?;
    let ref_name = r.tag.clone().unwrap_or_else(|| r.manifest_ref().into());
    let entry = DescriptorBuilder::default()
        .media_type(media)
        .digest(sha256_digest(&manifest_digest[7..]).map_err(RegistryError::Layout)?)
        .size(manifest_size)
        .platform(platform)
        .annotations(std::collections::HashMap::from([(
            "org.opencontainers.image.ref.name".to_string(),
            ref_name,
        )]))
        .build()
        .map_err(bad)?;
    let dir = layout.to_owned();
    tokio::task::spawn_blocking(move || write_index(&dir, entry))
        .await
        .map_err(RegistryError::Task)?
        .map_err(RegistryError::Layout)?;
    Ok(Pulled {
        layout: layout.into(),
        manifest_digest,
        layers: descs.len() - 1,
        bytes: total,
    })
}

#[cfg(test)]
#[path = "pull_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "pull_fake_tests.rs"]
mod fake_tests;
