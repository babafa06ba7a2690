//! Build an ext4 rootfs from an OCI image layout directory or a
//! `docker save` tarball: layers in order (see `layer`), then
//! `fakeroot -i DB mkfs.ext4 -d` so ownership survives without root.

use super::layer::{self, FakeDb, LayerError};
use banger_sys::runner::{Cmd, RunError, Runner};
use oci_spec::image::{
    Arch, Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, OciLayoutBuilder, Os,
    Sha256Digest,
};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// A failed OCI build.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("read {0}")]
    Read(PathBuf, #[source] io::Error),
    #[error("parse {0}")]
    Json(PathBuf, #[source] serde_json::Error),
    #[error("{0} is neither an OCI image layout nor a docker save archive")]
    UnknownFormat(PathBuf),
    #[error("no linux/amd64 manifest in {0}")]
    NoManifest(PathBuf),
    #[error("bad digest {0:?}")]
    BadDigest(String),
    #[error("blob {0} does not match its digest")]
    DigestMismatch(String),
    #[error("unsafe path {0:?} in the image archive")]
    UnsafePath(String),
    #[error("unpack archive {0}")]
    Unpack(PathBuf, #[source] io::Error),
    #[error("apply layer {0}")]
    Layer(PathBuf, #[source] LayerError),
    #[error("decompress layer {0}")]
    Decompress(PathBuf, #[source] io::Error),
    #[error("write {0}")]
    Write(PathBuf, #[source] io::Error),
    #[error("describe {0}")]
    Spec(PathBuf, #[source] oci_spec::OciSpecError),
    #[error("run mkfs.ext4 for {0}")]
    Mkfs(PathBuf, #[source] RunError),
}

/// How the ext4 image is sized: content × (1 + headroom%) + extra.
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    pub headroom_percent: u64,
    pub extra_bytes: u64,
    pub min_bytes: u64,
}

impl Default for Sizing {
    fn default() -> Self {
        Sizing {
            headroom_percent: 30,
            extra_bytes: 64 << 20,
            min_bytes: 128 << 20,
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub size_bytes: u64,
    pub content_bytes: u64,
    pub inodes: u64,
    pub layers: usize,
    /// Extended attributes applied.
    pub xattrs: usize,
}

/// An index (or Docker manifest list) or an image manifest.
pub enum Document {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

impl Document {
    /// Parse a manifest document, telling the kinds apart by `manifests`.
    pub fn parse(data: &[u8]) -> Result<Document, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Peek {
            #[serde(default)]
            manifests: Option<serde::de::IgnoredAny>,
        }
        let peek: Peek = serde_json::from_slice(data)?;
        Ok(if peek.manifests.is_some() {
            Document::Index(Box::new(serde_json::from_slice(data)?))
        } else {
            Document::Manifest(Box::new(serde_json::from_slice(data)?))
        })
    }
}

/// The linux/amd64 entry of an index.
pub fn linux_amd64(index: &ImageIndex) -> Option<&Descriptor> {
    index.manifests().iter().find(|m| {
        m.platform()
            .as_ref()
            .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
    })
}

/// Whether a layout's layer blobs are hashed again before use (manifests
/// and indexes always are: they are small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blobs {
    /// A layout from outside: every blob checked against its digest.
    Verify,
    /// A layout banger wrote itself, each blob verified as it was written
    /// (a registry pull, a Debian tarball).
    Verified,
}

/// `sha256:<hex>` as an OCI digest (`hex` from a hash this process made).
pub fn sha256_digest(hex: &str) -> Result<oci_spec::image::Digest, OciError> {
    hex.parse::<Sha256Digest>()
        .map(Into::into)
        .map_err(|_| OciError::BadDigest(hex.into()))
}

/// Finish a layout: `oci-layout` and an `index.json` naming `manifest`.
pub fn write_index(layout: &Path, manifest: Descriptor) -> Result<(), OciError> {
    let spec = |e: oci_spec::OciSpecError| OciError::Spec(layout.into(), e);
    let marker = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(spec)?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .manifests(vec![manifest])
        .build()
        .map_err(spec)?;
    for (name, data) in [
        ("oci-layout", serde_json::to_vec(&marker)),
        ("index.json", serde_json::to_vec(&index)),
    ] {
        let p = layout.join(name);
        let data = data.map_err(|e| OciError::Json(p.clone(), e))?;
        std::fs::write(&p, data).map_err(|e| OciError::Write(p, e))?;
    }
    Ok(())
}

fn read_doc(p: &Path) -> Result<Document, OciError> {
    let data = std::fs::read(p).map_err(|e| OciError::Read(p.into(), e))?;
    Document::parse(&data).map_err(|e| OciError::Json(p.into(), e))
}

/// `sha256:<64 hex>` → the blob path inside the layout.
fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, OciError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| OciError::BadDigest(digest.into()))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(OciError::BadDigest(digest.into()));
    }
    Ok(layout.join("blobs/sha256").join(hex))
}

fn verify(path: &Path, digest: &str) -> Result<(), OciError> {
    let mut f = File::open(path).map_err(|e| OciError::Read(path.into(), e))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(|e| OciError::Read(path.into(), e))?;
    let got = format!("sha256:{:x}", h.finalize());
    if got == digest {
        Ok(())
    } else {
        Err(OciError::DigestMismatch(digest.into()))
    }
}

/// A relative path from an archive's metadata, without `..` or absolute parts.
fn safe_rel(s: &str) -> Result<PathBuf, OciError> {
    let p = Path::new(s);
    if s.is_empty()
        || p.is_absolute()
        || p.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        return Err(OciError::UnsafePath(s.into()));
    }
    Ok(p.to_path_buf())
}

/// The layer files of an image directory, in order (digests verified).
pub fn layers(dir: &Path) -> Result<Vec<PathBuf>, OciError> {
    layers_of(dir, Blobs::Verify)
}

/// The layer files of an image directory, in order.
pub fn layers_of(dir: &Path, blobs: Blobs) -> Result<Vec<PathBuf>, OciError> {
    if dir.join("index.json").exists() {
        let mut doc = read_doc(&dir.join("index.json"))?;
        // Follow nested indexes down to one image manifest.
        let manifest = loop {
            let index = match doc {
                Document::Manifest(m) => break m,
                Document::Index(i) => i,
            };
            let pick = linux_amd64(&index)
                .or_else(|| index.manifests().iter().find(|m| m.platform().is_none()))
                .ok_or_else(|| OciError::NoManifest(dir.into()))?;
            let d = pick.digest().to_string();
            let p = blob_path(dir, &d)?;
            verify(&p, &d)?;
            doc = read_doc(&p)?;
        };
        let mut out = Vec::new();
        for l in manifest.layers() {
            let d = l.digest().to_string();
            let p = blob_path(dir, &d)?;
            if blobs == Blobs::Verify {
                verify(&p, &d)?;
            }
            out.push(p);
        }
        Ok(out)
    } else if dir.join("manifest.json").exists() {
        #[derive(serde::Deserialize)]
        struct SaveEntry {
            #[serde(rename = "Layers")]
            layers: Vec<String>,
        }
        let p = dir.join("manifest.json");
        let f = File::open(&p).map_err(|e| OciError::Read(p.clone(), e))?;
        let m: Vec<SaveEntry> =
            serde_json::from_reader(BufReader::new(f)).map_err(|e| OciError::Json(p, e))?;
        let first = m.first().ok_or_else(|| OciError::NoManifest(dir.into()))?;
        first
            .layers
            .iter()
            .map(|l| Ok(dir.join(safe_rel(l)?)))
            .collect()
    } else {
        Err(OciError::UnknownFormat(dir.into()))
    }
}

/// Unpack a `docker save` / OCI tarball into `into`: only regular files and
/// directories with safe relative names (it holds blobs, never links).
pub fn unpack_archive(tarball: &Path, into: &Path) -> Result<(), OciError> {
    let f = File::open(tarball).map_err(|e| OciError::Read(tarball.into(), e))?;
    let mut ar = tar::Archive::new(BufReader::new(f));
    for e in ar
        .entries()
        .map_err(|e| OciError::Unpack(tarball.into(), e))?
    {
        let mut e = e.map_err(|e| OciError::Unpack(tarball.into(), e))?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let rel = safe_rel(&name)?;
        let dst = into.join(&rel);
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&dst).map_err(|err| OciError::Write(dst.clone(), err))?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = dst.parent() {
                    std::fs::create_dir_all(p).map_err(|err| OciError::Write(p.into(), err))?;
                }
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dst)
                    .map_err(|err| OciError::Write(dst.clone(), err))?;
                io::copy(&mut e, &mut out).map_err(|err| OciError::Write(dst.clone(), err))?;
            }
            _ => return Err(OciError::UnsafePath(name)),
        }
    }
    Ok(())
}

/// A layer blob as an uncompressed tar stream (gzip in process; zstd via
/// the `zstd` tool, argv only; plain tar as is).
fn open_layer(p: &Path) -> Result<Box<dyn Read>, OciError> {
    let mut f = File::open(p).map_err(|e| OciError::Read(p.into(), e))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .map_err(|e| OciError::Read(p.into(), e))?;
    let f = File::open(p).map_err(|e| OciError::Read(p.into(), e))?;
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(
            f,
        ))));
    }
    if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        let child = std::process::Command::new("zstd")
            .args(["-dc", "-q"])
            .env_clear()
            .env("PATH", banger_sys::runner::SAFE_PATH)
            .stdin(f)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| OciError::Decompress(p.into(), e))?;
        return Ok(Box::new(ChildReader(child)));
    }
    Ok(Box::new(BufReader::new(f)))
}

/// A decompressor's stdout; at EOF the child is reaped and a non-zero exit
/// becomes a read error (a truncated stream must not look like a short layer).
struct ChildReader(std::process::Child);

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.stdout.as_mut().map_or(Ok(0), |o| o.read(buf))?;
        if n == 0 && !buf.is_empty() {
            let st = self.0.wait()?;
            if !st.success() {
                return Err(io::Error::other(format!("decompressor exited with {st}")));
            }
        }
        Ok(n)
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Build `out` (a new ext4 image) from `source`: an OCI layout dir, a
/// docker-save dir, or a tarball of either. `scratch` is a private work dir.
pub fn build(
    runner: &dyn Runner,
    source: &Path,
    scratch: &Path,
    out: &Path,
    sizing: Sizing,
) -> Result<Built, OciError> {
    build_with_progress(
        runner,
        source,
        scratch,
        out,
        sizing,
        Blobs::Verify,
        &mut |_| {},
    )
}

/// A long step of [`build`], for progress bars or plain lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Unpacking the archive.
    Unpack,
    /// Applying layer `index` (1-based) of `total`; `bytes` as stored.
    Layer {
        index: usize,
        total: usize,
        bytes: u64,
    },
    /// Making the filesystem of `size_bytes`.
    Mkfs { size_bytes: u64 },
}

/// [`build`], reporting each long step.
pub fn build_with_progress(
    runner: &dyn Runner,
    source: &Path,
    scratch: &Path,
    out: &Path,
    sizing: Sizing,
    blobs: Blobs,
    progress: &mut dyn FnMut(Step),
) -> Result<Built, OciError> {
    let src_dir = if source.is_dir() {
        source.to_path_buf()
    } else {
        let d = scratch.join("archive");
        std::fs::create_dir(&d).map_err(|e| OciError::Write(d.clone(), e))?;
        progress(Step::Unpack);
        unpack_archive(source, &d)?;
        d
    };
    // A tarball's blobs came from outside, whatever the caller said.
    let blobs = if source.is_dir() {
        blobs
    } else {
        Blobs::Verify
    };
    let layer_files = layers_of(&src_dir, blobs)?;
    let root = scratch.join("rootfs");
    std::fs::create_dir(&root).map_err(|e| OciError::Write(root.clone(), e))?;
    let mut db = FakeDb::default();
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&root).map_err(|e| OciError::Read(root.clone(), e))?;
        db.inodes.insert(
            (m.dev(), m.ino()),
            layer::Meta {
                mode: 0o040755,
                uid: 0,
                gid: 0,
                rdev: 0,
            },
        );
    }
    for (i, l) in layer_files.iter().enumerate() {
        progress(Step::Layer {
            index: i + 1,
            total: layer_files.len(),
            bytes: std::fs::metadata(l).map(|m| m.len()).unwrap_or(0),
        });
        let r = open_layer(l)?;
        layer::apply(&root, r, &mut db).map_err(|e| OciError::Layer(l.clone(), e))?;
    }
    let (text, content, inodes) = db
        .render(&root)
        .map_err(|e| OciError::Read(root.clone(), e))?;
    let db_path = scratch.join("fakeroot.db");
    std::fs::write(&db_path, text).map_err(|e| OciError::Write(db_path.clone(), e))?;
    let size =
        (content + inodes * 256) * (100 + sizing.headroom_percent) / 100 + sizing.extra_bytes;
    let size = size.max(sizing.min_bytes).div_ceil(1 << 20) << 20;
    let img = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| OciError::Write(out.into(), e))?;
    img.set_len(size)
        .map_err(|e| OciError::Write(out.into(), e))?;
    drop(img);
    progress(Step::Mkfs { size_bytes: size });
    let n_inodes = (inodes * 2 + 4096).to_string();
    let cmd = Cmd::new("fakeroot")
        .arg("-i")
        .arg(&db_path)
        .args([
            "--",
            "mkfs.ext4",
            "-q",
            "-F",
            "-N",
            &n_inodes,
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(&root)
        .arg(out);
    if let Err(e) = runner.run(&cmd) {
        let _ = std::fs::remove_file(out);
        return Err(OciError::Mkfs(out.into(), e));
    }
    let xattrs = set_xattrs(runner, &db, scratch, out);
    Ok(Built {
        size_bytes: size,
        content_bytes: content,
        inodes,
        layers: layer_files.len(),
        xattrs,
    })
}

/// Bytes debugfs can take as one command argument.
fn debugfs_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/@+-:".contains(&b))
}

/// Apply the layers' xattrs with `debugfs ea_set -f VALUEFILE PATH NAME`:
/// only for paths and names in a strict charset (values go through files,
/// never the command text); others are skipped. Best effort: returns the
/// number requested.
fn set_xattrs(runner: &dyn Runner, db: &FakeDb, scratch: &Path, img: &Path) -> usize {
    let dir = scratch.join("xattrs");
    if db.xattrs.is_empty() || std::fs::create_dir(&dir).is_err() {
        return 0;
    }
    let mut cmds = String::new();
    let mut n = 0;
    for (i, (path, name, value)) in db.xattrs.iter().enumerate() {
        let vf = dir.join(i.to_string());
        if !debugfs_safe(path)
            || !debugfs_safe(name)
            || !vf.to_str().is_some_and(debugfs_safe)
            || std::fs::write(&vf, value).is_err()
        {
            continue;
        }
        cmds.push_str(&format!("ea_set -f {} {path} {name}\n", vf.display()));
        n += 1;
    }
    let cf = dir.join("cmds");
    if n == 0 || std::fs::write(&cf, cmds).is_err() {
        return 0;
    }
    match runner.run(&Cmd::new("debugfs").arg("-w").arg("-f").arg(&cf).arg(img)) {
        Ok(_) => n,
        Err(_) => 0,
    }
}

#[cfg(test)]
#[path = "oci_tests.rs"]
pub(crate) mod tests;
