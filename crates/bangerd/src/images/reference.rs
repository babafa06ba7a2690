//! Image references `[REGISTRY/]REPOSITORY[:TAG][@sha256:HEX]`, with Docker
//! Hub's names (`docker.io`, no registry, one-component repositories)
//! mapped to the host that serves its registry API.

use std::str::FromStr;

/// The host Docker Hub's registry API answers on (`docker.io` itself only
/// redirects browsers to the web site).
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// A reference that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("bad image reference {0:?}")]
pub struct BadReference(pub String);

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The host to contact, `host[:port]` (Docker Hub's names mapped).
    pub registry: String,
    pub repository: String,
    /// The tag given, or `latest` when neither a tag nor a digest is.
    pub tag: Option<String>,
    /// The manifest digest given (`sha256:…`): it pins what is fetched.
    pub digest: Option<String>,
}

/// The host serving the registry API for the domain of a reference:
/// Docker Hub's public names go to [`DOCKER_HUB`], others stay as written.
pub fn registry_host(domain: &str) -> &str {
    match domain {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB
        }
        other => other,
    }
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

/// `sha256:` and 64 lower-case hex digits (the one algorithm pulled).
pub fn digest_ok(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn tag_ok(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.as_bytes()[0] != b'.'
        && t.as_bytes()[0] != b'-'
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl FromStr for Reference {
    type Err = BadReference;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadReference(s.to_string());
        let (domain, rest) = match s.split_once('/') {
            Some((h, rest)) if h.contains('.') || h.contains(':') || h == "localhost" => (h, rest),
            _ => ("docker.io", s),
        };
        let registry = registry_host(domain).to_string();
        let (name_tag, digest) = match rest.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (rest, None),
        };
        let (repo, tag) = match name_tag.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (name_tag, None),
        };
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        let repository = if registry == DOCKER_HUB && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        };
        let host_ok = registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !host_ok
            || !repo_ok(&repository)
            || tag.as_deref().is_some_and(|t| !tag_ok(t))
            || digest.as_deref().is_some_and(|d| !digest_ok(d))
        {
            return Err(bad());
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl Reference {
    /// What the first manifest request names: the digest when one is
    /// given (it wins over the tag), else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// Whether the registry is on loopback (plain HTTP is allowed there).
    pub fn is_loopback(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(h, _)| h);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r: Reference = s.parse().unwrap();
        (r.registry, r.repository, r.tag, r.digest)
    }

    fn own(
        v: (&str, &str, Option<&str>, Option<&str>),
    ) -> (String, String, Option<String>, Option<String>) {
        (
            v.0.into(),
            v.1.into(),
            v.2.map(Into::into),
            v.3.map(Into::into),
        )
    }

    #[test]
    fn docker_hub_names_go_to_its_registry_host() {
        for s in [
            "debian",
            "debian:latest",
            "docker.io/debian",
            "docker.io/library/debian:latest",
            "index.docker.io/library/debian",
            "registry-1.docker.io/library/debian",
        ] {
            assert_eq!(
                parts(s),
                own((DOCKER_HUB, "library/debian", Some("latest"), None)),
                "{s}"
            );
        }
        assert_eq!(
            parts("docker.io/grafana/grafana:11.0.0"),
            own((DOCKER_HUB, "grafana/grafana", Some("11.0.0"), None))
        );
        assert_eq!(
            parts("bitnami/redis"),
            own((DOCKER_HUB, "bitnami/redis", Some("latest"), None))
        );
        assert_eq!(registry_host("docker.io"), DOCKER_HUB);
        assert_eq!(registry_host("ghcr.io"), "ghcr.io");
        assert_eq!(registry_host("localhost:5000"), "localhost:5000");
    }

    #[test]
    fn references_parse() {
        assert_eq!(
            parts("127.0.0.1:5000/bgtest/alpine:3.19"),
            own(("127.0.0.1:5000", "bgtest/alpine", Some("3.19"), None))
        );
        assert_eq!(
            parts("localhost/x"),
            own(("localhost", "x", Some("latest"), None))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r: Reference = format!("localhost:5000/a@{d}").parse().unwrap();
        assert_eq!((r.tag.as_deref(), r.digest.as_deref()), (None, Some(&*d)));
        assert_eq!(r.manifest_ref(), d);
        // name:tag@digest: the digest pins the manifest, the tag is kept.
        let r: Reference = format!("localhost:5000/a/b:v1@{d}").parse().unwrap();
        assert_eq!(
            (r.repository.as_str(), r.tag.as_deref(), r.manifest_ref()),
            ("a/b", Some("v1"), &*d)
        );
        let r: Reference = format!("debian:bookworm@{d}").parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            (DOCKER_HUB, "library/debian", Some("bookworm"))
        );
        for bad in [
            "",
            "localhost:5000/../etc",
            "localhost:5000/A",
            "localhost:5000/a:b:c",
            "localhost:5000/a@sha256:zz",
            "localhost:5000/a:v1@sha256:zz",
            "localhost:5000/a:@sha256:zz",
            "localhost:5000/a@sha512:00",
            "localhost:5000/a/../../x",
            "localhost:5000/a:-x",
            "localhost:5000/a?x",
            "localhost:5000/a:v1@",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
