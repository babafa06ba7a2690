//! The helper's socket contract, over real Unix sockets: peer admission by
//! uid, framing limits, strict decoding and error codes, concurrency.

use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_helper::server::{serve, Limits};
use banger_proto::install::InstallConfig;
use banger_proto::jsonrpc;
use banger_testkit::{open_up, probe_as, require_root, Probe, SystemUser};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

struct Running {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

fn start(owner_uid: u32) -> Running {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-helper-")
        .tempdir()
        .unwrap();
    let mut cfg = InstallConfig::for_owner(owner_uid, owner_uid, "/nonexistent".into());
    cfg.runtime_dir = dir.path().to_path_buf();
    cfg.state_dir = dir.path().join("state");
    let socket = cfg.helper_socket();
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let helper = Arc::new(Helper {
        cfg,
        host: Host::real(),
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    let limits = Limits {
        max_concurrent: 4,
        request_timeout: Duration::from_secs(10),
        // Two hundred clients connect at once below.
        max_connections: 256,
        ..Limits::default()
    };
    let task = tokio::spawn(serve(listener, helper, limits, async {
        let _ = rx.await;
    }));
    Running {
        _dir: dir,
        socket,
        stop: Some(tx),
        task,
    }
}

struct Client {
    rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    wr: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    async fn connect(path: &Path) -> Client {
        let (rd, wr) = UnixStream::connect(path).await.unwrap().into_split();
        Client {
            rd: BufReader::new(rd),
            wr,
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> Value {
        self.wr.write_all(bytes).await.unwrap();
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), self.rd.read_line(&mut line))
            .await
            .expect("answer within 20 s")
            .unwrap();
        serde_json::from_str(&line).unwrap()
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
        self.send_raw(format!("{req}\n").as_bytes()).await
    }
}

fn code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

#[tokio::test]
async fn root_peer_is_admitted_and_version_answers() {
    let me = rustix::process::getuid().as_raw();
    let srv = start(if me == 0 { 4242 } else { me });
    let mut c = Client::connect(&srv.socket).await;
    let v = c.call("helper.version", json!({})).await;
    assert_eq!(v["result"]["version"], banger_proto::VERSION);
    assert_eq!(v["result"]["protocol"], banger_proto::HELPER_PROTOCOL);
    assert_eq!(v["id"], 7);
    srv.stop().await;
}

#[tokio::test]
async fn bad_input_gets_the_right_error_and_the_server_keeps_serving() {
    let srv = start(rustix::process::getuid().as_raw());
    let mut c = Client::connect(&srv.socket).await;

    // A 2 MiB line.
    let mut big = vec![b'a'; 2 * 1024 * 1024];
    big.push(b'\n');
    let v = c.send_raw(&big).await;
    assert_eq!(code(&v), jsonrpc::INVALID_REQUEST, "{v}");
    let v = c.call("helper.version", json!({})).await;
    assert!(v["result"].is_object(), "still serving after 2 MiB: {v}");

    // Invalid JSON.
    let v = c.send_raw(b"{not json\n").await;
    assert_eq!(code(&v), jsonrpc::PARSE_ERROR, "{v}");
    assert!(v["id"].is_null());

    // Unknown method.
    let v = c.call("priv.format_disk", json!({})).await;
    assert_eq!(code(&v), jsonrpc::METHOD_NOT_FOUND, "{v}");

    // Unknown field in params.
    let v = c.call("helper.version", json!({"surprise": 1})).await;
    assert_eq!(code(&v), jsonrpc::INVALID_PARAMS, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("surprise"));

    // Wrong type for params.
    let v = c.call("helper.version", json!([1, 2])).await;
    assert_eq!(code(&v), jsonrpc::INVALID_PARAMS, "{v}");

    // Not a JSON-RPC request at all / wrong version / unknown envelope field.
    let v = c.send_raw(b"[1,2,3]\n").await;
    assert_eq!(code(&v), jsonrpc::INVALID_REQUEST, "{v}");
    let v = c
        .send_raw(b"{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"helper.version\"}\n")
        .await;
    assert_eq!(code(&v), jsonrpc::INVALID_REQUEST, "{v}");
    let v = c
        .send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"helper.version\",\"x\":0}\n")
        .await;
    assert_eq!(code(&v), jsonrpc::INVALID_REQUEST, "{v}");

    // And still serving.
    let v = c.call("helper.version", json!(null)).await;
    assert_eq!(v["result"]["version"], banger_proto::VERSION);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections_are_served() {
    let srv = start(rustix::process::getuid().as_raw());
    let socket = srv.socket.clone();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let socket = socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&socket).await;
            let req = json!({"jsonrpc":"2.0","id":i,"method":"helper.version"});
            let v = c.send_raw(format!("{req}\n").as_bytes()).await;
            assert_eq!(v["id"], i);
            assert!(v["result"].is_object());
        }));
    }
    let all = futures_join(tasks);
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("200 connections served without a hang");
    srv.stop().await;
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_owner_uid_is_admitted_and_a_third_uid_gets_no_answer() {
    if !require_root("root_owner_uid_is_admitted_and_a_third_uid_gets_no_answer") {
        return;
    }
    let owner = SystemUser::create("hown");
    let third = SystemUser::create("hthird");
    let srv = start(owner.uid);
    open_up(srv.socket.parent().unwrap());
    std::fs::set_permissions(
        &srv.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let req = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"helper.version\"}\n".to_vec();

    let socket = srv.socket.clone();
    let (o_uid, o_gid) = (owner.uid, owner.gid);
    let r = req.clone();
    let probe = tokio::task::spawn_blocking(move || probe_as(o_uid, o_gid, &socket, &r))
        .await
        .unwrap();
    match probe {
        Probe::Answered(bytes) => {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["result"]["version"], banger_proto::VERSION);
        }
        other => panic!("owner was not answered: {other:?}"),
    }

    let socket = srv.socket.clone();
    let (t_uid, t_gid) = (third.uid, third.gid);
    let probe = tokio::task::spawn_blocking(move || probe_as(t_uid, t_gid, &socket, &req))
        .await
        .unwrap();
    assert_eq!(probe, Probe::ClosedSilently, "third uid must get no answer");

    // The server still serves root afterwards.
    let mut c = Client::connect(&srv.socket).await;
    assert!(c.call("helper.version", json!({})).await["result"].is_object());
    srv.stop().await;
}
