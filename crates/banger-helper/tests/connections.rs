//! Socket exhaustion, over a real socket: the cap on open connections,
//! the idle timeout and the slow-request (slowloris) timeout each close the
//! attacker's connection, and the helper serves a normal request after.

use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_helper::server::{serve, Limits};
use banger_proto::install::InstallConfig;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const VERSION: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"helper.version\"}\n";

struct Srv {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn start(limits: Limits) -> Srv {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-conn-")
        .tempdir()
        .unwrap();
    let me = rustix::process::getuid().as_raw();
    let mut cfg = InstallConfig::for_owner(me, me, "/nonexistent".into());
    cfg.runtime_dir = dir.path().into();
    let socket = cfg.helper_socket();
    let helper = Arc::new(Helper {
        cfg,
        host: Host::recording(),
    });
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, helper, limits, async {
        let _ = rx.await;
    }));
    Srv {
        _dir: dir,
        socket,
        _stop: tx,
    }
}

/// Read one answer line (`Some`) or EOF (`None`), within `within`.
async fn read_answer(s: &mut UnixStream, within: Duration) -> Option<Value> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tokio::time::timeout(within, s.read(&mut byte))
            .await
            .expect("the helper answers or closes in time")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        if byte[0] == b'\n' {
            return Some(serde_json::from_slice(&buf).unwrap());
        }
        buf.push(byte[0]);
    }
}

/// A connection that has been accepted and served one request (so it holds
/// a slot), then kept open and silent. Retried for 5 s: a closed
/// connection's slot is given back just after the close its client sees.
async fn held(socket: &Path) -> UnixStream {
    let t0 = Instant::now();
    loop {
        let mut s = UnixStream::connect(socket).await.unwrap();
        if s.write_all(VERSION).await.is_ok() {
            if let Some(v) = read_answer(&mut s, Duration::from_secs(10)).await {
                assert!(v["result"].is_object(), "{v}");
                return s;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no slot came free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request is served within 5 s.
async fn served_soon(socket: &Path) {
    drop(held(socket).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once_and_serving_resumes() {
    let srv = start(Limits {
        max_connections: 4,
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    });
    let mut hold = Vec::new();
    for _ in 0..4 {
        hold.push(held(&srv.socket).await);
    }
    // Every extra connection is closed without an answer, at once (not
    // after any timeout), even with a complete request sent.
    for _ in 0..8 {
        let t0 = Instant::now();
        let mut s = UnixStream::connect(&srv.socket).await.unwrap();
        let _ = s.write_all(VERSION).await;
        assert_eq!(read_answer(&mut s, Duration::from_secs(5)).await, None);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    // The held ones still work.
    hold[0].write_all(VERSION).await.unwrap();
    assert!(read_answer(&mut hold[0], Duration::from_secs(5))
        .await
        .is_some());
    drop(hold);
    served_soon(&srv.socket).await;
    // All four slots are back.
    let mut again = Vec::new();
    for _ in 0..4 {
        again.push(held(&srv.socket).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let srv = start(Limits {
        max_connections: 1,
        idle_timeout: Duration::from_millis(400),
        ..Limits::default()
    });
    // Silent from the start.
    let t0 = Instant::now();
    let mut s = UnixStream::connect(&srv.socket).await.unwrap();
    assert_eq!(read_answer(&mut s, Duration::from_secs(5)).await, None);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Silent after one answered request: the timer starts again after it.
    served_soon(&srv.socket).await;
    let mut s = held(&srv.socket).await;
    let t0 = Instant::now();
    assert_eq!(read_answer(&mut s, Duration::from_secs(5)).await, None);
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t0.elapsed()
    );
    // The only slot is free again.
    served_soon(&srv.socket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_is_closed_after_the_read_timeout() {
    let srv = start(Limits {
        max_connections: 1,
        idle_timeout: Duration::from_secs(30),
        read_timeout: Duration::from_millis(500),
        ..Limits::default()
    });
    let s = UnixStream::connect(&srv.socket).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let t0 = Instant::now();
    // One byte every 100 ms, never a newline: each byte comes well within
    // the idle timeout, but the line never completes.
    let trickle = tokio::spawn(async move {
        for b in b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"helper.version\""
            .iter()
            .cycle()
        {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if t0.elapsed() > Duration::from_secs(10) {
                return;
            }
        }
    });
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(8), rd.read(&mut buf))
        .await
        .expect("closed before the trickle ends")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "{took:?}"
    );
    trickle.await.unwrap();
    // The only slot is free again, and a whole request is served.
    served_soon(&srv.socket).await;
}
