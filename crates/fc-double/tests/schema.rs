//! The double enforces the yaml: required fields, enums, paths and methods,
//! for the endpoints banger drives and for ones it does not.

mod common;

use banger_fc_double::schema::{Contract, Shape};
use banger_fc_double::state::{NOT_AFTER_START, NOT_BEFORE_START};
use banger_fc_double::validate::validate;
use common::{call, fault, Running};
use serde_json::{json, Map, Value};

const DESER: &str = "An error occurred when deserializing the json body of a request";

/// A value of `shape` that Firecracker's serde types accept.
fn sample(c: &Contract, shape: &Shape) -> Value {
    match shape {
        Shape::Str => json!("x"),
        Shape::Mac => json!("06:00:ac:10:00:02"),
        Shape::Bool => json!(false),
        Shape::Int(_) => json!(1),
        Shape::Enum { variants, .. } => json!(variants[0]),
        Shape::Struct(d) | Shape::Partial(d) => {
            let mut m = Map::new();
            for f in c.def(d).unwrap().fields.iter().filter(|f| f.required) {
                m.insert(f.name.clone(), sample(c, &f.shape));
            }
            Value::Object(m)
        }
        Shape::Array(_) => json!([]),
        Shape::Any => json!({}),
    }
}

#[test]
fn every_definition_enforces_each_required_field() {
    let c = Contract::vendored().unwrap();
    let mut checked = 0;
    for (name, def) in &c.defs {
        let shape = Shape::Struct(name.clone());
        let full = sample(&c, &shape);
        let text = full.to_string();
        validate(&c, &shape, text.as_bytes()).unwrap_or_else(|e| panic!("{name} {text}: {e}"));
        for f in def.fields.iter().filter(|f| f.required) {
            let mut body = full.clone();
            body.as_object_mut().unwrap().remove(&f.name);
            let text = body.to_string();
            let err = validate(&c, &shape, text.as_bytes())
                .unwrap_err()
                .to_string();
            // The missing field is reported once the closing brace is consumed.
            assert_eq!(
                err,
                format!("missing field `{}` at line 1 column {}", f.name, text.len()),
                "{name}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} required fields checked");
}

#[test]
fn every_definition_refuses_unknown_fields() {
    let c = Contract::vendored().unwrap();
    for name in c.defs.keys() {
        let shape = Shape::Struct(name.clone());
        let mut body = sample(&c, &shape);
        body.as_object_mut()
            .unwrap()
            .insert("bogus".into(), json!(1));
        let text = body.to_string();
        let err = validate(&c, &shape, text.as_bytes())
            .unwrap_err()
            .to_string();
        let col = text.find("\"bogus\"").unwrap() + "\"bogus\"".len();
        assert!(err.starts_with("unknown field `bogus`, "), "{name}: {err}");
        assert!(
            err.ends_with(&format!(" at line 1 column {col}")),
            "{name}: {err}"
        );
    }
}

#[tokio::test]
async fn required_fields_on_paths_banger_does_not_drive() {
    let d = Running::start(None).await;
    for (path, body, missing) in [
        ("/balloon", r#"{"amount_mib": 64}"#, "deflate_on_oom"),
        (
            "/snapshot/create",
            r#"{"snapshot_path": "/s"}"#,
            "mem_file_path",
        ),
        ("/mmds/config", r#"{"version": "V2"}"#, "network_interfaces"),
        ("/metrics", r#"{}"#, "metrics_path"),
    ] {
        let (status, got) = call(&d.sock, "PUT", path, Some(body)).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(
            fault(&got),
            format!(
                "{DESER}: missing field `{missing}` at line 1 column {}.",
                body.len()
            ),
            "{path}"
        );
    }
}

#[tokio::test]
async fn enums_are_enforced() {
    let d = Running::start(None).await;
    let cases = [
        ("PUT", "/actions", r#"{"action_type": "Reboot"}"#,
         "unknown variant `Reboot`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel` at line 1 column 24"),
        ("PATCH", "/vm", r#"{"state": "Running"}"#,
         "unknown variant `Running`, expected `Paused` or `Resumed` at line 1 column 19"),
        ("PUT", "/snapshot/create", r#"{"mem_file_path": "/m", "snapshot_path": "/s", "snapshot_type": "Partial"}"#,
         "unknown variant `Partial`, expected `Full` or `Diff` at line 1 column 73"),
        ("PUT", "/mmds/config", r#"{"network_interfaces": [], "version": "V3"}"#,
         "unknown variant `V3`, expected `V1` or `V2` at line 1 column 42"),
        ("PUT", "/machine-config", r#"{"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "1G"}"#,
         "unknown variant `1G`, expected `None` or `2M` at line 1 column 57"),
    ];
    for (method, path, body, want) in cases {
        let (status, got) = call(&d.sock, method, path, Some(body)).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(fault(&got), format!("{DESER}: {want}."), "{path}");
    }
    // The logger level is case-insensitive in Firecracker.
    let log = d.dir.path().join("bgtest-fc.log");
    std::fs::write(&log, b"").unwrap();
    let body = json!({"log_path": log, "level": "debug"}).to_string();
    assert_eq!(call(&d.sock, "PUT", "/logger", Some(&body)).await.0, 204);
}

#[tokio::test]
async fn paths_and_methods_outside_the_yaml() {
    let d = Running::start(None).await;
    // Firecracker names only the first path token in this message.
    for (method, path, body, want) in [
        ("PUT", "/nonexistent/x", Some("{}"), "PUT nonexistent"),
        ("DELETE", "/drives/rootfs", None, "DELETE drives"),
        ("GET", "/snapshot/create", None, "GET snapshot"),
        ("GET", "/entropy", None, "GET entropy"),
        ("GET", "/vm", None, "GET vm"),
        (
            "POST",
            "/actions",
            Some(r#"{"action_type": "InstanceStart"}"#),
            "POST actions",
        ),
        ("PATCH", "/vsock", Some("{}"), "PATCH vsock"),
    ] {
        let (status, got) = call(&d.sock, method, path, body).await;
        assert_eq!(status, 400, "{method} {path}");
        assert_eq!(
            fault(&got),
            format!("Invalid request method and/or path: {want}.")
        );
    }
    let (status, got) = call(&d.sock, "PUT", "/balloon", None).await;
    assert_eq!((status, fault(&got).as_str()), (400, "Empty PUT request."));
    let (_, got) = call(&d.sock, "GET", "/", Some("{}")).await;
    assert_eq!(fault(&got), "GET request cannot have a body.");
    let drive = r#"{"drive_id": "a-b", "is_root_device": false}"#;
    let (_, got) = call(&d.sock, "PUT", "/drives/a-b", Some(drive)).await;
    assert_eq!(
        fault(&got),
        "API Resource IDs can only contain alphanumeric characters and underscores."
    );
    let (_, got) = call(&d.sock, "PUT", "/network-interfaces/", Some("{}")).await;
    assert_eq!(fault(&got), "The ID cannot be empty.");
    // A body that is only whitespace is a body: serde_json finds no value.
    let (_, got) = call(&d.sock, "PUT", "/vsock", Some("  ")).await;
    assert_eq!(
        fault(&got),
        format!("{DESER}: EOF while parsing a value at line 1 column 2.")
    );
    // hinting/start's body is optional in the yaml (and the call is post-boot only).
    let (_, got) = call(&d.sock, "PATCH", "/balloon/hinting/start", None).await;
    assert_eq!(fault(&got), NOT_BEFORE_START);
}

#[tokio::test]
async fn nested_types_and_unknown_fields_elsewhere() {
    let d = Running::start(None).await;
    let body = r#"{"amount_mib": 1, "deflate_on_oom": true, "bogus": 1}"#;
    let (_, got) = call(&d.sock, "PUT", "/balloon", Some(body)).await;
    assert_eq!(
        fault(&got),
        format!("{DESER}: unknown field `bogus`, expected one of `amount_mib`, `deflate_on_oom`, \
                 `stats_polling_interval_s`, `free_page_hinting`, `free_page_reporting` at line 1 column 49.")
    );
    let body = r#"{"drive_id": "d", "is_root_device": false, "rate_limiter": {"bandwidth": {"size": "big", "refill_time": 1}}}"#;
    let (_, got) = call(&d.sock, "PUT", "/drives/d", Some(body)).await;
    assert_eq!(
        fault(&got),
        format!("{DESER}: invalid type: string \"big\", expected u64 at line 1 column 87.")
    );
    let (_, got) = call(
        &d.sock,
        "PUT",
        "/vsock",
        Some(r#"{"guest_cid": -3, "uds_path": "/x"}"#),
    )
    .await;
    assert_eq!(
        fault(&got),
        format!("{DESER}: invalid value: integer `-3`, expected u32 at line 1 column 16.")
    );
}

#[tokio::test]
async fn lifecycle_rules_beyond_the_transcript() {
    let d = Running::start(None).await;
    let s = &d.sock;
    let put = |p: &'static str, b: &'static str| async move { call(s, "PUT", p, Some(b)).await };
    // Post-boot-only calls before start.
    let (st, got) = call(s, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#)).await;
    assert_eq!((st, fault(&got).as_str()), (400, NOT_BEFORE_START));
    let (_, got) = put("/actions", r#"{"action_type": "SendCtrlAltDel"}"#).await;
    assert_eq!(fault(&got), NOT_BEFORE_START);
    let (_, got) = call(s, "PATCH", "/balloon", Some(r#"{"amount_mib": 1}"#)).await;
    assert_eq!(fault(&got), NOT_BEFORE_START);
    let snap = r#"{"mem_file_path": "/m", "snapshot_path": "/s"}"#;
    let (_, got) = call(s, "PUT", "/snapshot/create", Some(snap)).await;
    assert_eq!(fault(&got), NOT_BEFORE_START);
    let (_, got) = call(s, "GET", "/balloon/statistics", None).await;
    assert_eq!(fault(&got), NOT_BEFORE_START);
    // vCPU rules.
    let (_, got) = put(
        "/machine-config",
        r#"{"vcpu_count": 33, "mem_size_mib": 128}"#,
    )
    .await;
    assert!(
        fault(&got).starts_with("Machine config error: The number of vCPUs"),
        "{got}"
    );
    let (_, got) = put(
        "/machine-config",
        r#"{"vcpu_count": 3, "mem_size_mib": 128, "smt": true}"#,
    )
    .await;
    assert!(
        fault(&got).starts_with("Machine config error: The number of vCPUs"),
        "{got}"
    );
    assert_eq!(
        put(
            "/machine-config",
            r#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": true}"#
        )
        .await
        .0,
        204
    );
    let (_, got) = call(s, "GET", "/machine-config", None).await;
    let got: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(
        (got["vcpu_count"].clone(), got["smt"].clone()),
        (json!(2), json!(true))
    );
    // No kernel, no start.
    let (st, _) = put("/actions", r#"{"action_type": "InstanceStart"}"#).await;
    assert_eq!(st, 400);
    // Pre-boot storage of an undriven device, refused after start.
    assert_eq!(put("/entropy", "{}").await.0, 204);
    let kernel = d.dir.path().join("bgtest-k");
    std::fs::write(&kernel, b"k").unwrap();
    let b = json!({"kernel_image_path": kernel}).to_string();
    assert_eq!(call(s, "PUT", "/boot-source", Some(&b)).await.0, 204);
    assert_eq!(
        put("/actions", r#"{"action_type": "InstanceStart"}"#)
            .await
            .0,
        204
    );
    let (_, got) = put("/entropy", "{}").await;
    assert_eq!(fault(&got), NOT_AFTER_START);
    let (_, got) = call(
        s,
        "PUT",
        "/snapshot/load",
        Some(r#"{"snapshot_path": "/s"}"#),
    )
    .await;
    assert_eq!(fault(&got), NOT_AFTER_START);
    assert_eq!(
        put("/actions", r#"{"action_type": "FlushMetrics"}"#)
            .await
            .0,
        204
    );
    let (_, got) = call(
        s,
        "PATCH",
        "/machine-config",
        Some(r#"{"mem_size_mib": 512}"#),
    )
    .await;
    assert_eq!(fault(&got), NOT_AFTER_START);
}

#[tokio::test]
async fn enums_in_serde_tagged_form_are_read_too() {
    // serde_json also takes a unit variant as {"Variant": null}; Firecracker does.
    let d = Running::start(None).await;
    let kernel = d.dir.path().join("bgtest-k");
    std::fs::write(&kernel, b"k").unwrap();
    let b = json!({"kernel_image_path": kernel}).to_string();
    assert_eq!(call(&d.sock, "PUT", "/boot-source", Some(&b)).await.0, 204);
    let start = r#"{"action_type": {"InstanceStart": null}}"#;
    assert_eq!(call(&d.sock, "PUT", "/actions", Some(start)).await.0, 204);
    let (_, got) = call(&d.sock, "GET", "/", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&got).unwrap()["state"],
        "Running"
    );
    let (_, got) = call(&d.sock, "PATCH", "/vm", Some(r#"{"state": {"Paused": 1}}"#)).await;
    assert_eq!(
        fault(&got),
        format!("{DESER}: invalid type: integer `1`, expected unit at line 1 column 22.")
    );
}
