use super::*;
use crate::images::oci::{self, Sizing};
use crate::images::registry::RegistryError;
use banger_sys::runner::{Cmd, HostRunner, Runner};
use http_body_util::Full;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A `docker-registry` on loopback, killed (by its pid) on drop.
struct Registry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_registry() -> Option<Registry> {
    if !Path::new("/usr/bin/docker-registry").exists() {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("bgtest-registry-")
        .tempdir()
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n", dir.path().join("data").display()),
    )
    .unwrap();
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reg = Registry {
        child,
        addr,
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(&reg.addr).is_ok() {
            return Some(reg);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("docker-registry did not start");
}

type PushClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn send(
    c: &PushClient,
    method: &str,
    url: &str,
    ctype: &str,
    body: Vec<u8>,
) -> hyper::Response<hyper::body::Incoming> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    c.request(req).await.unwrap()
}

/// Push an OCI layout's blobs and its manifest as `repo:tag`.
async fn push(addr: &str, layout: &Path, repo: &str, tag: &str) -> String {
    let c: PushClient = Client::builder(TokioExecutor::new()).build_http();
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let digest = format!("sha256:{}", e.file_name().to_str().unwrap());
        let r = send(
            &c,
            "POST",
            &format!("http://{addr}/v2/{repo}/blobs/uploads/"),
            "application/octet-stream",
            vec![],
        )
        .await;
        assert_eq!(r.status(), 202);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with('/') {
            format!("http://{addr}{loc}")
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = send(
            &c,
            "PUT",
            &format!("{loc}{sep}digest={digest}"),
            "application/octet-stream",
            std::fs::read(e.path()).unwrap(),
        )
        .await;
        assert_eq!(r.status(), 201, "{digest}");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = std::fs::read(layout.join("blobs/sha256").join(&md[7..])).unwrap();
    let r = send(
        &c,
        "PUT",
        &format!("http://{addr}/v2/{repo}/manifests/{tag}"),
        "application/vnd.oci.image.manifest.v1+json",
        manifest,
    )
    .await;
    assert_eq!(r.status(), 201);
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_a_real_registry_then_build() {
    let Some(reg) = start_registry().await else {
        println!("skipped: docker-registry not installed");
        return;
    };
    let tmp = banger_testkit::tmp();
    let src = tmp.path().join("src");
    let layer = super::super::oci::tests::tar_bytes(&[
        super::super::oci::tests::E::Dir("etc/", 0o755, 0, 0),
        super::super::oci::tests::E::File("etc/os-release", b"ID=bgtest\n", 0o644, 0, 0),
        super::super::oci::tests::E::Dir("home/u/", 0o700, 1234, 1234),
    ]);
    super::super::oci::tests::oci_layout(&src, &[layer]);
    let md = push(&reg.addr, &src, "bgtest/tiny", "v1").await;

    let out = tmp.path().join("pulled");
    let r: Reference = format!("{}/bgtest/tiny:v1", reg.addr).parse().unwrap();
    let mut seen = 0u64;
    let pulled = pull(&r, &out, &mut |_, n| seen = seen.max(n))
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, md);
    assert_eq!(pulled.layers, 1);
    assert!(seen > 0);
    // By digest too, into the same layout (blobs already there are reused).
    let r2: Reference = format!("{}/bgtest/tiny@{md}", reg.addr).parse().unwrap();
    assert_eq!(
        pull(&r2, &out, &mut |_, _| {})
            .await
            .unwrap()
            .manifest_digest,
        md
    );

    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let img = tmp.path().join("root.ext4");
    oci::build(&HostRunner, &out, &scratch, &img, Sizing::default()).unwrap();
    let cat = HostRunner
        .run(
            &Cmd::new("debugfs")
                .args(["-R", "cat /etc/os-release"])
                .arg(&img),
        )
        .unwrap();
    assert_eq!(cat.stdout, b"ID=bgtest\n");
    let st = HostRunner
        .run(&Cmd::new("debugfs").args(["-R", "stat /home/u"]).arg(&img))
        .unwrap();
    assert!(String::from_utf8_lossy(&st.stdout).contains("User:  1234"));

    let missing: Reference = format!("{}/bgtest/tiny:nope", reg.addr).parse().unwrap();
    assert!(matches!(
        pull(&missing, &tmp.path().join("m"), &mut |_, _| {}).await,
        Err(RegistryError::Status(_, 404))
    ));
}

/// A registry front that demands an anonymous bearer token, as Docker Hub
/// does: 401 + challenge without `Authorization: Bearer t0k`, a token
/// endpoint, and everything else proxied to the real registry behind it.
async fn bearer_front(upstream: String) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::{Query, Request};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let realm = format!("http://{addr}/token");
    let token = axum::routing::get(
        |Query(q): Query<std::collections::HashMap<String, String>>| async move {
            assert_eq!(
                q.get("service").map(String::as_str),
                Some("bgtest-registry")
            );
            assert_eq!(
                q.get("scope").map(String::as_str),
                Some("repository:bgtest/tiny:pull")
            );
            axum::Json(serde_json::json!({"token": "t0k"}))
        },
    );
    let proxy = move |req: Request| {
        let upstream = upstream.clone();
        let realm = realm.clone();
        async move {
            let authed = req
                .headers()
                .get("authorization")
                .is_some_and(|v| v == "Bearer t0k");
            if !authed {
                let challenge = format!(
                    r#"Bearer realm="{realm}",service="bgtest-registry",scope="repository:bgtest/tiny:pull""#
                );
                return (
                    hyper::StatusCode::UNAUTHORIZED,
                    [(hyper::header::WWW_AUTHENTICATE, challenge)],
                )
                    .into_response();
            }
            let client: Client<_, Empty<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let mut up = hyper::Request::get(format!("http://{upstream}{}", req.uri()));
            if let Some(a) = req.headers().get("accept") {
                up = up.header("accept", a);
            }
            let resp = client
                .request(up.body(Empty::new()).unwrap())
                .await
                .unwrap();
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            (parts.status, parts.headers, bytes).into_response()
        }
    };
    let app = axum::Router::new().route("/token", token).fallback(proxy);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_through_a_bearer_token_challenge() {
    let Some(reg) = start_registry().await else {
        println!("skipped: docker-registry not installed");
        return;
    };
    let tmp = banger_testkit::tmp();
    let src = tmp.path().join("src");
    let layer = super::super::oci::tests::tar_bytes(&[super::super::oci::tests::E::File(
        "etc/motd",
        b"behind a token\n",
        0o644,
        0,
        0,
    )]);
    super::super::oci::tests::oci_layout(&src, &[layer]);
    let md = push(&reg.addr, &src, "bgtest/tiny", "v1").await;
    let (front, task) = bearer_front(reg.addr.clone()).await;
    let r: Reference = format!("{front}/bgtest/tiny:v1").parse().unwrap();
    let pulled = pull(&r, &tmp.path().join("pulled"), &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, md);
    assert_eq!(pulled.layers, 1);
    task.abort();
}
