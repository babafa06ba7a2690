//! The served routes and `docs/api/openapi.yaml` agree, both ways, and every
//! documented route answers on a real socket (no 404 `no_route`, no 405).

use banger_core::paths::{Mode, Paths};
use banger_proto::install::InstallConfig;
use banger_testkit::http_unix;
use bangerd::daemon::Daemon;
use bangerd::http;
use bangerd::privops::RecordingPriv;
use bangerd::store::Store;
use std::collections::BTreeSet;
use std::sync::Arc;

fn documented() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api/openapi.yaml");
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut set = BTreeSet::new();
    for (p, item) in doc["paths"].as_mapping().unwrap() {
        for (m, _) in item.as_mapping().unwrap() {
            let m = m.as_str().unwrap();
            if m != "parameters" {
                set.insert((m.to_uppercase(), p.as_str().unwrap().to_string()));
            }
        }
    }
    set
}

fn served() -> BTreeSet<(String, String)> {
    bangerd::http::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect()
}

#[test]
fn routes_and_document_agree() {
    let doc = documented();
    let code = served();
    let missing_in_doc: Vec<_> = code.difference(&doc).collect();
    let missing_in_code: Vec<_> = doc.difference(&code).collect();
    assert!(
        missing_in_doc.is_empty(),
        "served but not documented: {missing_in_doc:?}"
    );
    assert!(
        missing_in_code.is_empty(),
        "documented but not served: {missing_in_code:?}"
    );
}

#[test]
fn every_documented_route_answers_on_a_real_socket() {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-api-")
        .tempdir()
        .unwrap();
    let paths = Paths {
        state_dir: dir.path().join("state"),
        runtime_dir: dir.path().join("run"),
    };
    let me = rustix::process::getuid().as_raw();
    let mut cfg = InstallConfig::for_owner(me, me, dir.path().into());
    cfg.state_dir = paths.state_dir.clone();
    cfg.runtime_dir = paths.runtime_dir.clone();
    let store = Store::open(&paths.database()).unwrap();
    let socket = paths.daemon_socket();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn({
        let socket = socket.clone();
        async move {
            let listener = http::bind_socket(&socket, me, me).unwrap();
            let d = Arc::new(Daemon {
                cfg,
                paths,
                mode: Mode::Dev,
                store,
                privops: Arc::new(RecordingPriv::new()),
                host_paths: Default::default(),
                vmms: Default::default(),
            });
            http::serve(d, listener, async {
                let _ = rx.await;
            })
            .await
        }
    });
    assert!(banger_testkit::wait_until(
        std::time::Duration::from_secs(10),
        || socket.exists()
    ));

    let doc = documented();
    for (method, path) in doc.clone() {
        let concrete = path.replace("{name}", "nosuch");
        let body = (method == "POST").then_some("{}");
        let (status, text) = http_unix(&socket, &method, &concrete, body).unwrap();
        assert_ne!(status, 405, "{method} {path}: {text}");
        assert!(
            !(status == 404 && text.contains("no_route")),
            "{method} {path} not routed: {text}"
        );
        let err_or_ok: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} answered non-JSON {text:?}: {e}"));
        if status >= 400 {
            assert!(err_or_ok["code"].is_string(), "{method} {path}: {text}");
        }
        // A method the document does not list for this path is refused.
        if !doc.contains(&("PUT".to_string(), path.clone())) {
            let (status, _) = http_unix(&socket, "PUT", &concrete, Some("{}")).unwrap();
            assert_eq!(status, 405, "PUT {path}");
        }
    }
    let (status, text) = http_unix(&socket, "GET", "/v2/nothing", None).unwrap();
    assert_eq!(status, 404);
    assert!(text.contains("no_route"));

    tx.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
    assert!(!socket.exists(), "clean shutdown removes the socket");
}
