use super::*;
use crate::privops::RecordingPriv;
use serde_json::{json, Value};
use std::os::unix::net::UnixListener;

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bgtest-sock-")
        .tempdir()
        .unwrap()
}

fn never() -> std::future::Pending<()> {
    std::future::pending()
}

#[tokio::test]
async fn wait_for_path_returns_deadline_exceeded_when_socket_never_appears() {
    let d = tmp();
    let path = d.path().join("fc.sock");
    let policy = WaitPolicy {
        deadline: Duration::ZERO,
        tick: Duration::from_millis(50),
    };
    let t = std::time::Instant::now();
    let err = wait_for_path(&path, "API socket", policy, never())
        .await
        .unwrap_err();
    assert!(
        t.elapsed() >= policy.tick,
        "gave up before one poll tick: {:?}",
        t.elapsed()
    );
    assert!(
        matches!(&err, SocketAccessError::DeadlineExceeded { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("waiting for the API socket at "),
        "labelled: {err}"
    );
}

#[tokio::test]
async fn wait_for_path_returns_once_socket_appears() {
    let d = tmp();
    let path = d.path().join("fc.sock");
    let p2 = path.clone();
    let maker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        UnixListener::bind(&p2).unwrap()
    });
    let policy = WaitPolicy {
        deadline: Duration::from_secs(30),
        tick: Duration::from_millis(10),
    };
    let t = std::time::Instant::now();
    wait_for_path(&path, "API socket", policy, never())
        .await
        .unwrap();
    assert!(path.exists());
    assert!(t.elapsed() < Duration::from_secs(30));
    drop(maker.await.unwrap());
}

#[tokio::test]
async fn a_socket_appearing_wakes_the_wait_whatever_the_tick() {
    let d = tmp();
    let path = d.path().join("fc.sock");
    let p2 = path.clone();
    let maker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        UnixListener::bind(&p2).unwrap()
    });
    // Only the directory watch can end this wait before the tick.
    let policy = WaitPolicy {
        deadline: Duration::from_secs(600),
        tick: Duration::from_secs(300),
    };
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        wait_for_path(&path, "API socket", policy, never()),
    )
    .await;
    assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    drop(maker.await.unwrap());
}

#[tokio::test]
async fn a_directory_made_after_the_wait_began_is_still_watched() {
    let d = tmp();
    let dir = d.path().join("jails/vm1");
    let path = dir.join("firecracker.socket");
    let (dir2, p2) = (dir.clone(), path.clone());
    let maker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        std::fs::create_dir_all(&dir2).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        UnixListener::bind(&p2).unwrap()
    });
    let policy = WaitPolicy {
        deadline: Duration::from_secs(30),
        tick: Duration::from_millis(10),
    };
    wait_for_path(&path, "API socket", policy, never())
        .await
        .unwrap();
    drop(maker.await.unwrap());
}

#[tokio::test]
async fn wait_for_path_respects_cancellation() {
    let d = tmp();
    let path = d.path().join("fc.sock");
    // A tick far longer than the cancellation: cancelling must not wait it out.
    let policy = WaitPolicy {
        deadline: Duration::from_secs(600),
        tick: Duration::from_secs(300),
    };
    let t = std::time::Instant::now();
    let err = wait_for_path(
        &path,
        "API socket",
        policy,
        tokio::time::sleep(Duration::from_millis(20)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SocketAccessError::Cancelled { .. }),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}

#[tokio::test]
async fn ensure_socket_access_times_out_before_touching_the_helper() {
    let d = tmp();
    let rec = Arc::new(RecordingPriv::new());
    let policy = WaitPolicy {
        deadline: Duration::from_millis(30),
        tick: Duration::from_millis(10),
    };
    let err = ensure_socket_access(
        rec.clone(),
        d.path().join("fc.sock"),
        "API socket".into(),
        policy,
        never(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SocketAccessError::DeadlineExceeded { .. }),
        "{err:?}"
    );
    assert!(
        rec.calls().is_empty(),
        "no privileged call: {:?}",
        rec.calls()
    );
}

#[tokio::test]
async fn ensure_socket_access_chown_failure_bubbles_untouched() {
    let d = tmp();
    let path = d.path().join("fc.sock");
    let _l = UnixListener::bind(&path).unwrap();
    let rec = Arc::new(RecordingPriv::new());
    rec.answer(
        m::ENSURE_SOCKET_ACCESS,
        Err((-32000, "fchownat: Operation not permitted".into())),
    );
    let err = ensure_socket_access(
        rec.clone(),
        path.clone(),
        "API socket".into(),
        WaitPolicy::default(),
        never(),
    )
    .await
    .unwrap_err();
    let SocketAccessError::Access { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(source, PrivError::Refused { code: -32000, message, .. } if message == "fchownat: Operation not permitted"),
        "{source:?}"
    );
    assert_eq!(
        rec.calls(),
        vec![(
            m::ENSURE_SOCKET_ACCESS.to_string(),
            json!({"path": path.display().to_string()})
        )]
    );
}

#[tokio::test]
async fn for_async_hands_over_each_socket_as_it_appears_in_order() {
    let d = tmp();
    let api = d.path().join("fc.sock");
    let vsock = d.path().join("v.sock");
    let rec = Arc::new(RecordingPriv::new());
    let (_cancel, rx) = tokio::sync::watch::channel(());
    // Spawned before the "launch", as the daemon does.
    let task = ensure_socket_access_for_async(
        rec.clone(),
        vec![
            ("API socket".into(), api.clone()),
            ("vsock socket".into(), vsock.clone()),
        ],
        WaitPolicy::default(),
        rx,
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(rec.calls().is_empty());
    let _a = UnixListener::bind(&api).unwrap();
    let _v = UnixListener::bind(&vsock).unwrap();
    task.await.unwrap().unwrap();
    let paths: Vec<Value> = rec.calls().into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        paths,
        vec![
            json!({"path": api.display().to_string()}),
            json!({"path": vsock.display().to_string()})
        ]
    );
}

#[tokio::test]
async fn for_async_stops_when_the_launch_is_abandoned() {
    let d = tmp();
    let rec = Arc::new(RecordingPriv::new());
    let (cancel, rx) = tokio::sync::watch::channel(());
    let task = ensure_socket_access_for_async(
        rec.clone(),
        vec![("API socket".into(), d.path().join("fc.sock"))],
        WaitPolicy {
            deadline: Duration::from_secs(600),
            tick: Duration::from_millis(10),
        },
        rx,
    );
    drop(cancel);
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(err, SocketAccessError::Cancelled { .. }),
        "{err:?}"
    );
    assert!(rec.calls().is_empty());
}

/// The whole hand-over for real: the in-process helper (`DirectOps`) as
/// root, a socket that appears after the task started, owned by the
/// registered owner when the task ends.
#[tokio::test]
async fn root_for_async_hands_a_late_socket_to_the_registered_owner() {
    use banger_helper::helper::Helper;
    use banger_helper::host::Host;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !rustix::process::geteuid().is_root() {
        println!("skipped: needs root to chown a socket");
        return;
    }
    let d = tmp();
    let run = d.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let mut cfg =
        banger_proto::install::InstallConfig::for_owner(4242, 4243, "/nonexistent".into());
    cfg.runtime_dir = run.clone();
    let ops: Arc<dyn PrivOps> = Arc::new(crate::privops::DirectOps::new(Helper {
        cfg,
        host: Host::real(),
    }));
    let api = run.join("fc-bgtest.sock");
    let (_cancel, rx) = tokio::sync::watch::channel(());
    let task = ensure_socket_access_for_async(
        ops,
        vec![("API socket".into(), api.clone())],
        WaitPolicy::default(),
        rx,
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    // "Firecracker" (root) creates its socket.
    let _l = UnixListener::bind(&api).unwrap();
    task.await.unwrap().unwrap();
    let md = std::fs::symlink_metadata(&api).unwrap();
    assert_eq!((md.uid(), md.gid()), (4242, 4243));
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
}
