//! The helper's per-request timeout and concurrency cap, over a real
//! socket: the host operation is a runner that takes a known time and
//! counts how many run at once.

use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_helper::server::{serve, Limits};
use banger_proto::install::InstallConfig;
use banger_sys::dm::RecordingDm;
use banger_sys::ext4::Ext4Tools;
use banger_sys::runner::{Cmd, CmdOutput, RunError, Runner};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Every command takes `delay`; records the most that ran at once.
struct SlowRunner {
    delay: Duration,
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Runner for SlowRunner {
    fn output(&self, _cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(CmdOutput::default())
    }
}

struct Srv {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    runner: Arc<SlowRunner>,
    stop: tokio::sync::oneshot::Sender<()>,
}

fn start(limits: Limits, delay: Duration) -> Srv {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-lim-")
        .tempdir()
        .unwrap();
    let me = rustix::process::getuid().as_raw();
    let mut cfg = InstallConfig::for_owner(me, me, "/nonexistent".into());
    cfg.runtime_dir = dir.path().into();
    let socket = cfg.helper_socket();
    let runner = Arc::new(SlowRunner {
        delay,
        now: AtomicUsize::new(0),
        max: AtomicUsize::new(0),
    });
    let dm = Arc::new(RecordingDm::new());
    dm.add_device(
        "fc-rootfs-slow",
        &banger_sys::dm::uuid_for("fc-rootfs-slow"),
    );
    let helper = Arc::new(Helper {
        cfg,
        host: Host {
            dm,
            ext4: Arc::new(Ext4Tools::new(runner.clone())),
            ..Host::recording()
        },
    });
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, helper, limits, async {
        let _ = rx.await;
    }));
    Srv {
        _dir: dir,
        socket,
        runner,
        stop: tx,
    }
}

async fn call(socket: &std::path::Path, method: &str, params: Value) -> Value {
    let s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (rd, mut wr) = s.into_split();
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    wr.write_all(format!("{req}\n").as_bytes()).await.unwrap();
    let mut line = String::new();
    BufReader::new(rd).read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap()
}

const FSCK: &str = "priv.fsck_snapshot";

fn fsck_params() -> Value {
    json!({"device": "/dev/mapper/fc-rootfs-slow"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_budget_is_answered_32001_and_serving_goes_on() {
    let limits = Limits {
        max_concurrent: 4,
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let srv = start(limits, Duration::from_secs(2));
    let t0 = Instant::now();
    let v = call(&srv.socket, FSCK, fsck_params()).await;
    let took = t0.elapsed();
    assert_eq!(v["error"]["code"], -32001, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("timed out"));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1800),
        "{took:?}"
    );
    let v = call(&srv.socket, "helper.version", json!({})).await;
    assert!(v["result"].is_object(), "{v}");
    let _ = srv.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_cap_bounds_work_in_flight() {
    let limits = Limits {
        max_concurrent: 1,
        request_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let srv = start(limits, Duration::from_millis(400));
    let t0 = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let s = srv.socket.clone();
            tokio::spawn(async move { call(&s, FSCK, fsck_params()).await })
        })
        .collect();
    for c in calls {
        let v = c.await.unwrap();
        assert_eq!(v["result"]["exit_code"], 0, "{v}");
    }
    assert_eq!(
        srv.runner.max.load(Ordering::SeqCst),
        1,
        "never more than the cap at once"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        t0.elapsed()
    );
    let _ = srv.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_keeps_its_slot_until_its_work_ends() {
    let limits = Limits {
        max_concurrent: 1,
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let srv = start(limits, Duration::from_millis(800));
    let v = call(&srv.socket, FSCK, fsck_params()).await;
    assert_eq!(v["error"]["code"], -32001, "{v}");
    // The first job still runs; a second one must wait for its slot and so
    // times out too, without ever running alongside it.
    let v = call(&srv.socket, FSCK, fsck_params()).await;
    assert_eq!(v["error"]["code"], -32001, "{v}");
    assert_eq!(srv.runner.max.load(Ordering::SeqCst), 1);
    let _ = srv.stop.send(());
}
