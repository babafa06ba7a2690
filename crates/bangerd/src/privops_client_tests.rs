//! The helper client's connections: calls share one, a restarted helper
//! (the real server code) is reconnected to without an error, and a call
//! whose connection dies in flight is sent again only when idempotent.

use super::*;
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_helper::server::{serve, Limits};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;

/// The real helper server (recording host) on `sock`, in its own runtime;
/// stopped, with every connection it holds closed, when the returned
/// sender is dropped and the thread joined.
fn helper_on(
    sock: &Path,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let _ = std::fs::remove_file(sock);
    let me = rustix::process::getuid().as_raw();
    let helper = Arc::new(Helper {
        cfg: banger_proto::install::InstallConfig::for_owner(me, me, "/nonexistent".into()),
        host: Host::recording(),
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let std_listener = UnixListener::bind(sock).unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::UnixListener::from_std(std_listener).unwrap();
            let _ = serve(l, helper, Limits::default(), async {
                let _ = rx.await;
            })
            .await;
        });
        // The runtime drops here: every connection task with it.
    });
    (tx, t)
}

fn version(c: &HelperClient) -> Value {
    c.call_value(m::VERSION, Value::Null).unwrap()
}

#[test]
fn calls_share_one_connection_and_a_restarted_helper_is_reconnected() {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-hcl-")
        .tempdir()
        .unwrap();
    let sock = dir.path().join("helper.sock");
    let (stop, t) = helper_on(&sock);
    let c = HelperClient::new(sock.clone());
    for _ in 0..5 {
        assert_eq!(version(&c)["version"], banger_proto::VERSION);
    }
    assert_eq!(c.connections_opened(), 1, "five calls, one connection");

    // The helper restarts: its old connection is closed.
    drop(stop);
    t.join().unwrap();
    let (stop, t) = helper_on(&sock);
    assert_eq!(version(&c)["version"], banger_proto::VERSION, "no error");
    assert_eq!(c.connections_opened(), 2, "one new connection");
    for _ in 0..3 {
        version(&c);
    }
    assert_eq!(c.connections_opened(), 2, "and it is reused");

    // Helper down: the error says so (nothing hangs).
    drop(stop);
    t.join().unwrap();
    let _ = std::fs::remove_file(&sock);
    let e = c.call_value(m::VERSION, Value::Null).unwrap_err();
    assert!(matches!(e, PrivError::Connect(..)), "{e:?}");
}

/// A helper stand-in that, on the first request of each method in `die`,
/// closes the connection without answering (dies mid-call); it answers
/// everything else `{}`. Counts requests per method.
fn flaky(sock: &Path, die: &'static [&'static str]) -> Arc<Mutex<HashMap<String, usize>>> {
    let l = UnixListener::bind(sock).unwrap();
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                for line in BufReader::new(c).lines() {
                    let Ok(line) = line else { return };
                    let req: Value = serde_json::from_str(&line).unwrap();
                    let method = req["method"].as_str().unwrap().to_string();
                    let n = {
                        let mut s = s.lock().unwrap();
                        let n = s.entry(method.clone()).or_insert(0);
                        *n += 1;
                        *n
                    };
                    if n == 1 && die.contains(&method.as_str()) {
                        return; // closed, unanswered
                    }
                    let a = serde_json::json!({"jsonrpc": "2.0", "result": {}, "id": req["id"]});
                    if writeln!(w, "{a}").is_err() {
                        return;
                    }
                }
            });
        }
    });
    seen
}

#[test]
fn a_call_lost_in_flight_is_sent_again_only_when_idempotent() {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-hcl-")
        .tempdir()
        .unwrap();
    let sock = dir.path().join("helper.sock");
    let seen = flaky(&sock, &[m::LAUNCH_FIRECRACKER, m::ENSURE_NAT]);
    let c = HelperClient::new(sock);
    c.call_value(m::VERSION, Value::Null).unwrap();

    let e = c
        .call_value(m::LAUNCH_FIRECRACKER, serde_json::json!({}))
        .unwrap_err();
    assert!(matches!(e, PrivError::Lost), "{e:?}");
    assert!(crate::render_chain(&e).contains("not sent again"));
    assert_eq!(
        seen.lock().unwrap()[m::LAUNCH_FIRECRACKER],
        1,
        "never replayed"
    );

    // The next call goes out on a new connection, and works.
    c.call_value(m::VERSION, Value::Null).unwrap();
    assert_eq!(c.connections_opened(), 2);

    // An idempotent method lost in flight is sent once more.
    c.call_value(m::ENSURE_NAT, serde_json::json!({})).unwrap();
    assert_eq!(seen.lock().unwrap()[m::ENSURE_NAT], 2, "sent again");
    assert_eq!(c.connections_opened(), 3);
    assert!(!IDEMPOTENT.contains(&m::LAUNCH_FIRECRACKER));
    assert!(!IDEMPOTENT.contains(&m::KILL_PROCESS));
}
