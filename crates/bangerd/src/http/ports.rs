//! `/v1/vms/{name}/ports…`: list, add and remove a VM's port forwards.

use super::error::ApiFailure;
use super::handler::{parse, ApiResult, AppState};
use crate::vms::forward::{Forward, PortError};
use crate::vms::ports;
use crate::vms::VmError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

fn failure(e: VmError) -> ApiFailure {
    let status = match &e {
        VmError::Port(PortError::Spec(_) | PortError::Low(_)) => StatusCode::BAD_REQUEST,
        VmError::Port(PortError::Taken(..) | PortError::Bind(..)) => StatusCode::CONFLICT,
        VmError::Port(PortError::NoForward(..)) => StatusCode::NOT_FOUND,
        VmError::Port(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => return e.into(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid",
        StatusCode::CONFLICT => "conflict",
        StatusCode::NOT_FOUND => "not_found",
        _ => "internal",
    };
    ApiFailure::new(status, code, crate::render_chain(&e))
}

pub async fn list_ports(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<Forward>> {
    ports::list(&d, &name).map(Json).map_err(failure)
}

pub async fn add_port(
    State(d): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Vec<Forward>> {
    let f = parse::<Forward>(&body)?;
    if f.host == 0 || f.guest == 0 {
        return Err(failure(VmError::Port(PortError::Spec(format!(
            "{}:{}",
            f.host, f.guest
        )))));
    }
    ports::add(&d, &name, f).map(Json).map_err(failure)
}

pub async fn remove_port(
    State(d): State<AppState>,
    Path((name, host)): Path<(String, String)>,
) -> ApiResult<Vec<Forward>> {
    let host: u16 = host
        .parse()
        .map_err(|_| failure(VmError::Port(PortError::Spec(host.clone()))))?;
    ports::remove(&d, &name, host).map(Json).map_err(failure)
}
