//! The registry protocol (distribution API v2) client `image pull` uses:
//! HTTPS with the host's CA store (plain HTTP only for loopback
//! registries), redirects to blob storage, anonymous bearer tokens from the
//! registry's `WWW-Authenticate` challenge (Docker Hub, GHCR…), and
//! timeouts that surface as `TimedOut` I/O errors (the API's 504).

use super::reference::{BadReference, Reference};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::time::Duration;

/// Manifest media types we accept, in preference order.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted.
pub const MANIFEST_MAX: usize = 4 << 20;

/// How long connecting, the response head, and each body read may take
/// (unless the caller gives its own bound).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A failed pull.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    BadReference(#[from] BadReference),
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
    #[error("blob {digest} is {got} bytes or more, its descriptor says {expected}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        got: u64,
    },
    #[error("bad digest {0:?}")]
    BadDigest(String),
    #[error("write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("write the image layout")]
    Layout(#[source] crate::images::oci::OciError),
    #[error("a blob download task")]
    Task(#[source] tokio::task::JoinError),
    #[error("cancelled after another blob failed")]
    Cancelled,
}

/// An I/O `TimedOut` error for `what` (mapped to 504 like a connect timeout).
pub fn timeout_error(url: &str, what: &str, bound: Duration) -> RegistryError {
    RegistryError::Http(
        url.to_string(),
        Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} took longer than {bound:?}"),
        )),
    )
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// One registry's client: shared by the concurrent blob downloads.
pub struct Registry {
    client: Client<Connector, Empty<Bytes>>,
    /// `https://host[:port]`, or `http://` for loopback registries.
    base: String,
    /// The bearer token for `base`, from the first 401 challenge.
    token: std::sync::Mutex<Option<String>>,
    /// Bound on connecting, a response head, and each body read.
    timeout: Duration,
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
pub fn query_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Registry {
    /// The next data chunk of a body (`None` at its end), each read
    /// bounded by the client's timeout.
    pub async fn next_chunk(
        &self,
        body: &mut Incoming,
        url: &str,
    ) -> Result<Option<Bytes>, RegistryError> {
        loop {
            let frame = tokio::time::timeout(self.timeout, body.frame())
                .await
                .map_err(|_| timeout_error(url, "a read", self.timeout))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(RegistryError::Http(url.into(), e.into())),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        return Ok(Some(d));
                    }
                }
            }
        }
    }

    /// A client for `r`'s registry, every wait bounded by `timeout`.
    pub fn connect(r: &Reference, timeout: Duration) -> Result<Registry, RegistryError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        // TLS with the host's CA store; plain HTTP only for loopback registries.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(RegistryError::Roots)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let scheme = if r.is_loopback() { "http" } else { "https" };
        Ok(Registry {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: format!("{scheme}://{}", r.registry),
            token: std::sync::Mutex::new(None),
            timeout,
        })
    }

    async fn send(
        &self,
        url: &str,
        req: hyper::http::request::Builder,
    ) -> Result<hyper::Response<Incoming>, RegistryError> {
        let req = req
            .body(Empty::new())
            .map_err(|e| RegistryError::Http(url.into(), e.into()))?;
        tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| timeout_error(url, "the response", self.timeout))?
            .map_err(|e| RegistryError::Http(url.into(), e.into()))
    }

    /// GET `path` on the registry: redirects followed, one bearer challenge
    /// answered; a success status or an error.
    pub async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<hyper::Response<Incoming>, RegistryError> {
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
            let resp = self.send(&url, req).await?;
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
        let resp = self.send(&url, hyper::Request::get(&url)).await?;
        if !resp.status().is_success() {
            return Err(RegistryError::Status(url, resp.status().as_u16()));
        }
        let body = self.read_small(resp.into_body(), &url).await?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Json(url.clone(), e))?;
        t.token
            .or(t.access_token)
            .ok_or_else(|| RegistryError::Auth(self.base.clone(), "no token in the answer".into()))
    }

    /// A manifest or index (at most [`MANIFEST_MAX`] bytes).
    pub async fn manifest(&self, path: &str) -> Result<Vec<u8>, RegistryError> {
        let resp = self.get(path, Some(ACCEPT)).await?;
        self.read_small(resp.into_body(), path).await
    }

    /// A small body (manifest, token) in memory, at most [`MANIFEST_MAX`].
    async fn read_small(&self, mut body: Incoming, url: &str) -> Result<Vec<u8>, RegistryError> {
        let mut out = Vec::new();
        while let Some(d) = self.next_chunk(&mut body, url).await? {
            out.extend_from_slice(&d);
            if out.len() > MANIFEST_MAX {
                return Err(RegistryError::TooLarge(url.into()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
