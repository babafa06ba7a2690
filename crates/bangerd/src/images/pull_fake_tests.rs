//! `pull` against an in-process registry serving the distribution API,
//! shaped per test: a blob that lies about its digest or size, blobs that
//! only answer once two are asked for at once, tags and digests that name
//! different manifests.

use super::*;
use crate::images::oci::tests::{tar_bytes, E};
use crate::images::registry::RegistryError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

fn sha(d: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(d))
}

/// An image: its manifest (bytes, digest) and the blobs it names.
struct Image {
    manifest: Vec<u8>,
    digest: String,
    config: String,
    layers: Vec<String>,
    blobs: HashMap<String, Vec<u8>>,
}

fn image(layers: &[Vec<u8>]) -> Image {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let mut blobs = HashMap::from([(sha(config), config.to_vec())]);
    let ls: Vec<_> = layers
        .iter()
        .map(|l| {
            blobs.insert(sha(l), l.clone());
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(l), "size": l.len()})
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": config.len()},
        "layers": ls}))
    .unwrap();
    Image {
        digest: sha(&manifest),
        config: sha(config),
        layers: layers.iter().map(|l| sha(l)).collect(),
        manifest,
        blobs,
    }
}

fn layer(name: &str, body: &[u8]) -> Vec<u8> {
    tar_bytes(&[E::File(name, body, 0o644, 0, 0)])
}

/// What the fake registry serves and saw.
#[derive(Default)]
struct Fake {
    /// Tag or digest → manifest bytes.
    manifests: HashMap<String, Vec<u8>>,
    /// Digest → the bytes served for it (a test may make them lie).
    blobs: HashMap<String, Vec<u8>>,
    /// Blobs held back until this many such requests are in flight at once.
    gate: Option<(usize, Vec<String>)>,
    waiting: tokio::sync::Notify,
    in_flight: AtomicU64,
    /// Digest → streamed slowly, 64 KiB a chunk, as many chunks as it takes.
    slow: Option<String>,
    sent: AtomicU64,
    /// Digest → its first byte, then nothing more (the connection stays open).
    stall: Option<String>,
    requests: Mutex<Vec<String>>,
}

impl Fake {
    fn serve(&mut self, img: &Image, tag: &str) {
        self.manifests.insert(tag.into(), img.manifest.clone());
        self.manifests
            .insert(img.digest.clone(), img.manifest.clone());
        self.blobs
            .extend(img.blobs.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

async fn handle(State(f): State<Arc<Fake>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    f.requests.lock().unwrap().push(path.clone());
    if let Some((_, r)) = path.split_once("/manifests/") {
        return match f.manifests.get(r) {
            Some(m) => (
                [("content-type", "application/vnd.oci.image.manifest.v1+json")],
                m.clone(),
            )
                .into_response(),
            None => hyper::StatusCode::NOT_FOUND.into_response(),
        };
    }
    let Some((_, digest)) = path.split_once("/blobs/") else {
        return hyper::StatusCode::NOT_FOUND.into_response();
    };
    let Some(data) = f.blobs.get(digest).cloned() else {
        return hyper::StatusCode::NOT_FOUND.into_response();
    };
    if let Some((n, gated)) = &f.gate {
        if gated.iter().any(|g| g == digest) {
            // Answer only once `n` gated requests wait together: a client
            // that fetches one blob after another never gets there.
            f.in_flight.fetch_add(1, Ordering::SeqCst);
            f.waiting.notify_waiters();
            let all_there = tokio::time::timeout(Duration::from_secs(5), async {
                while f.in_flight.load(Ordering::SeqCst) < *n as u64 {
                    let notified = f.waiting.notified();
                    if f.in_flight.load(Ordering::SeqCst) >= *n as u64 {
                        break;
                    }
                    notified.await;
                }
            })
            .await;
            f.waiting.notify_waiters();
            if all_there.is_err() {
                return hyper::StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        }
    }
    if f.stall.as_deref() == Some(digest) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Bytes::copy_from_slice(&data[..1]))).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tx);
        });
        return Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response();
    }
    if f.slow.as_deref() == Some(digest) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let f = f.clone();
        tokio::spawn(async move {
            for chunk in data.chunks(64 << 10) {
                if tx.send(Ok(Bytes::copy_from_slice(chunk))).await.is_err() {
                    return; // the client hung up
                }
                f.sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        return Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response();
    }
    data.into_response()
}

async fn start(fake: Fake) -> (Reference, Arc<Fake>, tokio::task::JoinHandle<()>) {
    let fake = Arc::new(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let r = format!("{addr}/bgtest/fake:v1").parse().unwrap();
    (r, fake, task)
}

/// The names in `blobs/sha256` of a layout.
fn blob_names(layout: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_lies_about_its_digest_is_refused_and_leaves_nothing() {
    let img = image(&[layer("etc/motd", b"honest\n")]);
    let bad = img.layers[0].clone();
    let mut fake = Fake::default();
    fake.serve(&img, "v1");
    // Same length, other bytes: only the digest can tell.
    let lie = layer("etc/motd", b"forged\n");
    assert_eq!(lie.len(), fake.blobs[&bad].len());
    fake.blobs.insert(bad.clone(), lie);
    let (r, _fake, task) = start(fake).await;
    let tmp = banger_testkit::tmp();
    let out = tmp.path().join("layout");
    let err = pull(&r, &out, &mut |_, _| {}).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::DigestMismatch(d) if *d == bad),
        "{err:?}"
    );
    // Neither the blob nor a temp file of it is left; no index names it.
    let names = blob_names(&out);
    assert!(!names.contains(&bad[7..].to_string()), "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    assert!(!out.join("index.json").exists());
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_longer_than_its_descriptor_is_cut_off_mid_stream() {
    let img = image(&[layer("etc/motd", b"small\n")]);
    let bad = img.layers[0].clone();
    let mut fake = Fake::default();
    fake.serve(&img, "v1");
    // 64 MiB behind a descriptor of a few KiB, sent 64 KiB at a time.
    let big = vec![7u8; 64 << 20];
    fake.blobs.insert(bad.clone(), big);
    fake.slow = Some(bad.clone());
    let (r, fake, task) = start(fake).await;
    let tmp = banger_testkit::tmp();
    let out = tmp.path().join("layout");
    let err = pull(&r, &out, &mut |_, _| {}).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::SizeMismatch { digest, .. } if *digest == bad),
        "{err:?}"
    );
    // The client hung up long before the server got through the body.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = fake.sent.load(Ordering::SeqCst);
    assert!(sent < 8 << 20, "the server sent {sent} bytes");
    let names = blob_names(&out);
    assert!(!names.contains(&bad[7..].to_string()), "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_download_concurrently() {
    let img = image(&[
        layer("a", b"first layer\n"),
        layer("b", b"second layer\n"),
        layer("c", b"third layer\n"),
    ]);
    let mut fake = Fake::default();
    fake.serve(&img, "v1");
    // The three layers are only served while all three are asked at once.
    fake.gate = Some((3, img.layers.clone()));
    let (r, fake, task) = start(fake).await;
    let tmp = banger_testkit::tmp();
    let out = tmp.path().join("layout");
    let mut seen = HashMap::new();
    let pulled = pull(&r, &out, &mut |d, n| {
        seen.insert(d.to_string(), n);
    })
    .await
    .unwrap();
    assert_eq!(pulled.layers, 3);
    assert_eq!(pulled.manifest_digest, img.digest);
    assert_eq!(fake.in_flight.load(Ordering::SeqCst), 3);
    for l in &img.layers {
        assert_eq!(
            std::fs::read(out.join("blobs/sha256").join(&l[7..])).unwrap(),
            img.blobs[l]
        );
        assert_eq!(seen.get(l).copied(), Some(img.blobs[l].len() as u64));
    }
    assert!(out.join("blobs/sha256").join(&img.config[7..]).exists());
    assert!(blob_names(&out).iter().all(|n| !n.starts_with('.')));
    // A second pull into the same layout reuses the blobs (no blob GETs).
    fake.requests.lock().unwrap().clear();
    pull(&r, &out, &mut |_, _| {}).await.unwrap();
    let again = fake.requests.lock().unwrap().clone();
    assert!(again.iter().all(|p| !p.contains("/blobs/")), "{again:?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_tag_at_digest_fetches_the_digest_and_keeps_the_tag() {
    let old = image(&[layer("etc/v", b"old\n")]);
    let new = image(&[layer("etc/v", b"new\n")]);
    let mut fake = Fake::default();
    fake.serve(&new, "v1");
    fake.serve(&old, "v0");
    let (r, fake, task) = start(fake).await;
    let host = &r.registry;
    let tmp = banger_testkit::tmp();
    // The tag names `new`; the digest pins `old`, and wins.
    let pinned: Reference = format!("{host}/bgtest/fake:v1@{}", old.digest)
        .parse()
        .unwrap();
    let out = tmp.path().join("pinned");
    let pulled = pull(&pinned, &out, &mut |_, _| {}).await.unwrap();
    assert_eq!(pulled.manifest_digest, old.digest);
    let asked = fake.requests.lock().unwrap().clone();
    assert!(
        asked.contains(&format!("/v2/bgtest/fake/manifests/{}", old.digest)),
        "{asked:?}"
    );
    assert!(
        !asked.iter().any(|p| p.ends_with("/manifests/v1")),
        "{asked:?}"
    );
    let index: oci_spec::image::ImageIndex =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let entry = &index.manifests()[0];
    assert_eq!(entry.digest().to_string(), old.digest);
    assert_eq!(
        entry.annotations().as_ref().unwrap()["org.opencontainers.image.ref.name"],
        "v1"
    );
    let layers = crate::images::oci::layers(&out).unwrap();
    assert_eq!(
        layers,
        vec![out.join("blobs/sha256").join(&old.layers[0][7..])]
    );
    // A digest the registry does not have is its 404, not the tag's image.
    let missing = format!("sha256:{}", "0".repeat(64));
    let gone: Reference = format!("{host}/bgtest/fake:v1@{missing}").parse().unwrap();
    let err = pull(&gone, &tmp.path().join("gone"), &mut |_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Status(_, 404)), "{err:?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_leads_to_its_linux_amd64_manifest() {
    let amd = image(&[layer("etc/arch", b"amd64\n")]);
    let arm = image(&[layer("etc/arch", b"arm64\n")]);
    let entry = |img: &Image, arch: &str| {
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.digest, "size": img.manifest.len(),
            "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")]}))
    .unwrap();
    let mut fake = Fake::default();
    fake.serve(&amd, "amd");
    fake.serve(&arm, "arm");
    fake.manifests.insert("v1".into(), index.clone());
    let (r, _fake, task) = start(fake).await;
    let tmp = banger_testkit::tmp();
    let out = tmp.path().join("layout");
    let pulled = pull(&r, &out, &mut |_, _| {}).await.unwrap();
    assert_eq!(pulled.manifest_digest, amd.digest);
    // The index is kept beside the manifest it chose; arm's layer is not fetched.
    let names = blob_names(&out);
    assert!(names.contains(&sha(&index)[7..].to_string()));
    assert!(!names.contains(&arm.layers[0][7..].to_string()));
    task.abort();
}

/// The status the API gives a failed pull.
fn api_status(e: RegistryError) -> u16 {
    crate::http::error::ApiFailure::from(crate::images::catalog::CatalogError::Pull(e))
        .0
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_stops_sending_times_out_as_504_and_leaves_nothing() {
    let img = image(&[layer("etc/motd", b"never all of it\n")]);
    let mut fake = Fake::default();
    fake.serve(&img, "v1");
    fake.stall = Some(img.layers[0].clone());
    let (r, _fake, task) = start(fake).await;
    let tmp = banger_testkit::tmp();
    let out = tmp.path().join("layout");
    let t = std::time::Instant::now();
    let err = pull_within(&r, &out, Duration::from_millis(300), &mut |_, _| {})
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(matches!(err, RegistryError::Http(..)), "{err:?}");
    assert_eq!(api_status(err), 504);
    assert!(blob_names(&out).iter().all(|n| !n.starts_with('.')));
    assert!(!out.join("blobs/sha256").join(&img.layers[0][7..]).exists());
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_never_answers_times_out_as_504() {
    // Accepts connections, reads nothing, answers nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            held.push(c);
        }
    });
    let r: Reference = format!("{addr}/bgtest/silent:v1").parse().unwrap();
    let tmp = banger_testkit::tmp();
    let err = pull_within(
        &r,
        &tmp.path().join("l"),
        Duration::from_millis(300),
        &mut |_, _| {},
    )
    .await
    .unwrap_err();
    assert_eq!(api_status(err), 504);
    task.abort();
}
