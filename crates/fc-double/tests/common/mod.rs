//! Shared test plumbing: a double on a temp socket and a raw HTTP/1.1 caller.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_fc_double::{serve, DoubleConfig, DoubleError, Outcome, Recorder};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The tap the fixture sysfs holds.
pub const TAP: &str = "fctrtap0";

/// A double serving on `<dir>/bgtest-fc.sock`, with a fixture sysfs under
/// `<dir>/sys` holding [`TAP`]. Dropping it stops the server and removes
/// the directory.
pub struct Running {
    pub dir: TempDir,
    pub sock: PathBuf,
    pub recorder: Recorder,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<Outcome, DoubleError>>>,
}

impl Running {
    pub async fn start(guest_shutdown: Option<Duration>) -> Running {
        let dir = tempfile::Builder::new()
            .prefix("bgtest-fc-")
            .tempdir()
            .unwrap();
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(sys.join("class/net").join(TAP)).unwrap();
        let sock = dir.path().join("bgtest-fc.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let recorder = Recorder::default();
        let cfg = DoubleConfig {
            sys_root: sys,
            recorder: recorder.clone(),
            guest_shutdown,
            ..DoubleConfig::default()
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, cfg, async move {
            let _ = rx.await;
        }));
        Running {
            dir,
            sock,
            recorder,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stop the server and return why it ended.
    pub async fn stop(mut self) -> Outcome {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap().await.unwrap().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// One request on its own connection; returns the status and the body text.
pub async fn call(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let stream = tokio::net::UnixStream::connect(sock).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "localhost")
        .header("Accept", "application/json");
    if body.is_some() {
        req = req.header("Content-Type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The `fault_message` of an error body.
pub fn fault(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["fault_message"].as_str().unwrap_or_default().to_string()
}
