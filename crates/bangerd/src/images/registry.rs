//! `image pull`: fetch an image from an OCI/Docker registry (distribution
//! API v2) into an OCI image layout directory, digests verified, which
//! `oci::build` then turns into an ext4 rootfs. HTTPS with the host's CA
//! store (plain HTTP only for loopback registries), anonymous bearer tokens
//! from the registry's `WWW-Authenticate` challenge (Docker Hub, GHCR…).

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
    #[error("refusing a redirect from HTTPS to plain HTTP: {0}")]
    InsecureRedirect(String),
    #[error("loading the host's CA certificates (install ca-certificates)")]
    Roots(#[source] std::io::Error),
    #[error("{0} asked for authentication this client does not speak: {1}")]
    Auth(String, String),
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

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

struct Http {
    client: Client<Connector, Empty<Bytes>>,
    /// `https://host[:port]`, or `http://` for loopback registries.
    base: String,
    /// The bearer token for `base`, from the first 401 challenge.
    token: std::sync::Mutex<Option<String>>,
}

/// A `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parse a Bearer challenge (quoted values may contain commas).
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let rest = h.trim().strip_prefix("Bearer ")?;
    let mut fields = std::collections::HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            let v = chars.by_ref().take_while(|c| *c != '"').collect();
            v
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect()
        };
        fields.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge {
        realm: fields.remove("realm")?,
        service: fields.remove("service"),
        scope: fields.remove("scope"),
    })
}

/// `application/x-www-form-urlencoded`-style escaping for query values.
fn query_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Http {
    async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, RegistryError> {
        let mut url = format!("{}{path}", self.base);
        let mut challenged = false;
        // Follow a few redirects (blob storage may live elsewhere) and one
        // authentication challenge.
        for _ in 0..6 {
            let mut req = hyper::Request::get(&url);
            if let Some(a) = accept {
                req = req.header(hyper::header::ACCEPT, a);
            }
            // The token goes to the registry only, never to a redirect target.
            if url.starts_with(&self.base) {
                if let Some(t) = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                    req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
                }
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
                let plain_ok = url.starts_with("http://") && self.base.starts_with("http://");
                if !(url.starts_with("https://") || plain_ok) {
                    return Err(RegistryError::InsecureRedirect(url));
                }
                continue;
            }
            if st == hyper::StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let h = resp
                    .headers()
                    .get(hyper::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let c = parse_challenge(&h)
                    .ok_or_else(|| RegistryError::Auth(self.base.clone(), h.clone()))?;
                let token = self.fetch_token(&c).await?;
                *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
                continue;
            }
            if !st.is_success() {
                return Err(RegistryError::Status(url, st.as_u16()));
            }
            return Ok(resp);
        }
        Err(RegistryError::Status(url, 310))
    }

    /// Anonymous token from the challenge's realm (HTTPS, or plain HTTP
    /// only when the registry itself is a loopback one).
    async fn fetch_token(&self, c: &Challenge) -> Result<String, RegistryError> {
        let secure = c.realm.starts_with("https://");
        let loopback_plain = c.realm.starts_with("http://") && self.base.starts_with("http://");
        if !secure && !loopback_plain {
            return Err(RegistryError::Auth(self.base.clone(), c.realm.clone()));
        }
        let mut url = c.realm.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for (k, v) in [("service", &c.service), ("scope", &c.scope)] {
            if let Some(v) = v {
                url.push(sep);
                url.push_str(&format!("{k}={}", query_escape(v)));
                sep = '&';
            }
        }
        let req = hyper::Request::get(&url)
            .body(Empty::new())
            .map_err(|e| RegistryError::Http(url.clone(), e.into()))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| RegistryError::Http(url.clone(), e.into()))?;
        if !resp.status().is_success() {
            return Err(RegistryError::Status(url, resp.status().as_u16()));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| RegistryError::Http(url.clone(), e.into()))?
            .to_bytes();
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Json(url.clone(), e))?;
        v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Auth(self.base.clone(), "no token in the answer".into()))
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
        progress: &mut (dyn FnMut(&str, u64) + Send),
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
    progress: &mut (dyn FnMut(&str, u64) + Send),
) -> Result<Pulled, RegistryError> {
    // TLS with the host's CA store; plain HTTP only for loopback registries.
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(RegistryError::Roots)?
        .https_or_http()
        .enable_http1()
        .build();
    let scheme = if r.is_loopback() { "http" } else { "https" };
    let http = Http {
        client: Client::builder(TokioExecutor::new()).build(connector),
        base: format!("{scheme}://{}", r.registry),
        token: std::sync::Mutex::new(None),
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
