//! The HTTP side: routing by the contract, schema validation, recording, replies.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::record::Recorder;
use crate::schema::Contract;
use crate::state::{Reply, Vmm};
use crate::validate::validate;

/// What every connection shares.
pub(crate) struct Shared {
    pub contract: Contract,
    pub vmm: Mutex<Vmm>,
    pub recorder: Recorder,
    /// Flips to `true` when the guest starts powering off.
    pub poweroff: watch::Sender<bool>,
}

/// Firecracker's prefix for a body its serde types refuse.
const DESERIALIZE: &str = "An error occurred when deserializing the json body of a request";

/// The one handler: every method and path goes through the contract.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    shared
        .recorder
        .push(method.as_str(), &path, &String::from_utf8_lossy(&body));
    let reply = answer(&shared, method.as_str(), &path, &body);
    into_response(reply)
}

fn answer(shared: &Shared, method: &str, path: &str, body: &[u8]) -> Reply {
    let fault = |m: String| Reply::Fault(400, m);
    // Firecracker's `ParsedRequest::try_from`: the first path token picks the
    // resource, and bodies are checked for presence before anything else.
    let tokens: Vec<&str> = path.trim_start_matches('/').split_terminator('/').collect();
    let first = tokens.first().copied().unwrap_or("");
    match method {
        "GET" if !body.is_empty() => return fault("GET request cannot have a body.".into()),
        "PUT" if body.is_empty() => return fault("Empty PUT request.".into()),
        "PATCH" if body.is_empty() && first != "balloon" => {
            return fault("Empty PATCH request.".into())
        }
        _ => {}
    }
    let Some((op, param)) = shared.contract.route(method, path) else {
        if tokens.len() == 1 && shared.contract.wants_id(method, first) {
            return fault("The ID cannot be empty.".into());
        }
        return fault(format!(
            "Invalid request method and/or path: {method} {first}."
        ));
    };
    if let Some(id) = &param {
        if !id.chars().all(|c| c == '_' || c.is_alphanumeric()) {
            return fault(
                "API Resource IDs can only contain alphanumeric characters and underscores.".into(),
            );
        }
    }
    let parsed = match &op.body {
        Some(_) if body.is_empty() && !op.body_required => Value::Null,
        Some(shape) => {
            if let Err(e) = validate(&shared.contract, shape, body) {
                return fault(format!("{DESERIALIZE}: {e}."));
            }
            match serde_json::from_slice::<Value>(body) {
                Ok(v) => v,
                Err(e) => return fault(format!("{DESERIALIZE}: {e}.")),
            }
        }
        None => Value::Null,
    };
    let mut vmm = shared.vmm.lock().unwrap_or_else(|p| p.into_inner());
    let reply = vmm.handle(method, &op.template, param.as_deref(), &parsed);
    if vmm.guest_powering_off() {
        shared.poweroff.send_replace(true);
    }
    reply
}

fn into_response(reply: Reply) -> Response {
    let json_body = |status: StatusCode, v: Value| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response()
    };
    match reply {
        Reply::NoContent => StatusCode::NO_CONTENT.into_response(),
        Reply::Json(v) => json_body(StatusCode::OK, v),
        Reply::Fault(code, msg) => json_body(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            json!({ "fault_message": msg }),
        ),
    }
}
