//! The HTTP side: routing by the contract, schema validation, recording, replies.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::schema::Contract;
use crate::state::{Reply, Vmm};
use crate::validate::validate;
use crate::Recorder;

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
    let empty = body.iter().all(u8::is_ascii_whitespace);
    // Firecracker's request parser refuses a bodiless PUT/PATCH before
    // looking at the path.
    if empty && (method == "PUT" || method == "PATCH") {
        return fault(format!("Empty {method} request."));
    }
    let Some((op, param)) = shared.contract.route(method, path) else {
        return fault(format!(
            "Invalid request method and/or path: {method} {}.",
            path.trim_start_matches('/')
        ));
    };
    let parsed = match &op.body {
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
