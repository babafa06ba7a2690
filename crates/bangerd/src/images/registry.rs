//! `image pull`: fetch an image from an OCI/Docker registry (distribution
//! API v2) into an OCI image layout directory, digests verified, which
//! `oci::build` then turns into an ext4 rootfs. Plain HTTP only for now
//! (loopback / insecure registries).

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Manifest media types we accept, in preference order.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted.
pub const MANIFEST_MAX: usize = 4 << 20;

/// A failed pull.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("bad image reference {0:?}")]
    BadReference(String),
    #[error("registry {0} needs HTTPS, which this build does not speak yet")]
    TlsUnsupported(String),
    #[error("GET {0}")]
    Http(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("GET {0}: HTTP {1}")]
    Status(String, u16),
    #[error("manifest {0} is larger than 4 MiB")]
    TooLarge(String),
    #[error("parse manifest {0}")]
    Json(String, #[source] serde_json::Error),
    #[error("no linux/amd64 manifest in {0}")]
    NoPlatform(String),
    #[error("{0} does not match its digest")]
    DigestMismatch(String),
    #[error("bad digest {0:?}")]
    BadDigest(String),
    #[error("write {0}")]
    Write(PathBuf, #[source] std::io::Error),
}

/// `[REGISTRY/]REPOSITORY[:TAG|@sha256:HEX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    pub repository: String,
    /// A tag or a `sha256:` digest.
    pub reference: String,
}

fn repo_ok(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && r.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        })
}

fn digest_ok(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RegistryError::BadReference(s.to_string());
        let (registry, rest) = match s.split_once('/') {
            Some((h, rest)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), rest)
            }
            _ => ("registry-1.docker.io".to_string(), s),
        };
        let (repo, reference) = if let Some((r, d)) = rest.split_once('@') {
            (r, d.to_string())
        } else {
            match rest.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t.to_string()),
                _ => (rest, "latest".to_string()),
            }
        };
        let repo = if registry == "registry-1.docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        };
        let tag_ok = |t: &str| {
            !t.is_empty()
                && t.len() <= 128
                && t.as_bytes()[0] != b'.'
                && t.as_bytes()[0] != b'-'
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        let host_ok = registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !host_ok
            || !repo_ok(&repo)
            || !(digest_ok(&reference) || (!reference.contains(':') && tag_ok(&reference)))
        {
            return Err(bad());
        }
        Ok(Reference {
            registry,
            repository: repo,
            reference,
        })
    }
}

impl Reference {
    fn is_loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(h, _)| h);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

/// What a pull produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub layout: PathBuf,
    /// Digest of the image manifest (linux/amd64).
    pub manifest_digest: String,
    pub layers: usize,
    pub bytes: u64,
}

struct Http {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    base: String,
}

impl Http {
    async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, RegistryError> {
        let mut url = format!("{}{path}", self.base);
        // Follow a few redirects (blob storage may live elsewhere).
        for _ in 0..5 {
            let mut req = hyper::Request::get(&url);
            if let Some(a) = accept {
                req = req.header(hyper::header::ACCEPT, a);
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| RegistryError::Http(url.clone(), e.into()))?;
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| RegistryError::Http(url.clone(), e.into()))?;
            let st = resp.status();
            if st.is_redirection() {
                let loc = resp
                    .headers()
                    .get(hyper::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                url = if loc.starts_with('/') {
                    format!("{}{loc}", self.base)
                } else {
                    loc
                };
                if !url.starts_with("http://") {
                    return Err(RegistryError::TlsUnsupported(url));
                }
                continue;
            }
            if !st.is_success() {
                return Err(RegistryError::Status(url, st.as_u16()));
            }
            return Ok(resp);
        }
        Err(RegistryError::Status(url, 310))
    }

    async fn bytes(&self, path: &str, accept: Option<&str>) -> Result<Vec<u8>, RegistryError> {
        let resp = self.get(path, accept).await?;
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            let f = f.map_err(|e| RegistryError::Http(path.into(), e.into()))?;
            if let Ok(d) = f.into_data() {
                out.extend_from_slice(&d);
                if out.len() > MANIFEST_MAX {
                    return Err(RegistryError::TooLarge(path.into()));
                }
            }
        }
        Ok(out)
    }

    /// Stream a blob into `dst`, verifying `digest`; returns its size.
    async fn blob(
        &self,
        repo: &str,
        digest: &str,
        dst: &Path,
        progress: &mut dyn FnMut(&str, u64),
    ) -> Result<u64, RegistryError> {
        if dst.exists() {
            let data = std::fs::read(dst).map_err(|e| RegistryError::Write(dst.into(), e))?;
            if format!("sha256:{:x}", Sha256::digest(&data)) == digest {
                return Ok(data.len() as u64);
            }
        }
        let resp = self
            .get(&format!("/v2/{repo}/blobs/{digest}"), None)
            .await?;
        let tmp = dst.with_extension("partial");
        let mut f =
            std::fs::File::create(&tmp).map_err(|e| RegistryError::Write(tmp.clone(), e))?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut body = resp.into_body();
        while let Some(fr) = body.frame().await {
            let fr = fr.map_err(|e| RegistryError::Http(digest.into(), e.into()))?;
            if let Ok(d) = fr.into_data() {
                h.update(&d);
                f.write_all(&d)
                    .map_err(|e| RegistryError::Write(tmp.clone(), e))?;
                n += d.len() as u64;
                progress(digest, n);
            }
        }
        if format!("sha256:{:x}", h.finalize()) != digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(RegistryError::DigestMismatch(digest.into()));
        }
        std::fs::rename(&tmp, dst).map_err(|e| RegistryError::Write(dst.into(), e))?;
        Ok(n)
    }
}

fn put(layout: &Path, data: &[u8]) -> Result<String, RegistryError> {
    let hex = format!("{:x}", Sha256::digest(data));
    let p = layout.join("blobs/sha256").join(&hex);
    std::fs::write(&p, data).map_err(|e| RegistryError::Write(p, e))?;
    Ok(format!("sha256:{hex}"))
}

/// Pull `r` (linux/amd64) into the OCI layout directory `layout`.
/// `progress(blob digest, bytes so far)` is called while downloading.
pub async fn pull(
    r: &Reference,
    layout: &Path,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<Pulled, RegistryError> {
    if !r.is_loopback() {
        return Err(RegistryError::TlsUnsupported(r.registry.clone()));
    }
    let http = Http {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://{}", r.registry),
    };
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| RegistryError::Write(blobs.clone(), e))?;
    let repo = &r.repository;
    let mut path = format!("/v2/{repo}/manifests/{}", r.reference);
    let mut expect = digest_ok(&r.reference).then(|| r.reference.clone());
    let (manifest, manifest_digest) = loop {
        let data = http.bytes(&path, Some(ACCEPT)).await?;
        let digest = put(layout, &data)?;
        if expect.as_ref().is_some_and(|e| *e != digest) {
            return Err(RegistryError::DigestMismatch(path));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&data).map_err(|e| RegistryError::Json(path.clone(), e))?;
        if let Some(ms) = v["manifests"].as_array() {
            let m = ms
                .iter()
                .find(|m| {
                    m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64"
                })
                .ok_or_else(|| RegistryError::NoPlatform(path.clone()))?;
            let d = m["digest"]
                .as_str()
                .filter(|d| digest_ok(d))
                .ok_or_else(|| RegistryError::BadDigest(m["digest"].to_string()))?;
            path = format!("/v2/{repo}/manifests/{d}");
            expect = Some(d.to_string());
            continue;
        }
        break (v, digest);
    };
    let mut descs = vec![manifest["config"].clone()];
    descs.extend(manifest["layers"].as_array().cloned().unwrap_or_default());
    let mut total = 0;
    for d in &descs {
        let digest = d["digest"]
            .as_str()
            .filter(|d| digest_ok(d))
            .ok_or_else(|| RegistryError::BadDigest(d["digest"].to_string()))?;
        total += http
            .blob(repo, digest, &blobs.join(&digest[7..]), progress)
            .await?;
    }
    let manifest_bytes = std::fs::metadata(blobs.join(&manifest_digest[7..]))
        .map(|m| m.len())
        .unwrap_or(0);
    let media = manifest["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json");
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": media, "digest": manifest_digest,
        "size": manifest_bytes, "platform": {"os": "linux", "architecture": "amd64"},
        "annotations": {"org.opencontainers.image.ref.name": r.reference}}]});
    let write = |name: &str, data: Vec<u8>| {
        let p = layout.join(name);
        std::fs::write(&p, data).map_err(|e| RegistryError::Write(p, e))
    };
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())?;
    write("index.json", serde_json::to_vec(&index).expect("json"))?;
    Ok(Pulled {
        layout: layout.into(),
        manifest_digest,
        layers: descs.len() - 1,
        bytes: total,
    })
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
