//! `/v1/vms…`: list, inspect, logs, and the lifecycle as streamed jobs.

use super::error::ApiFailure;
use super::handler::{parse, ApiResult, AppState};
use super::stream::stream_async;
use crate::daemon::Daemon;
use crate::progress::Progress;
use crate::vms::{self, VmError};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use banger_proto::api::{Logs, Vm, VmCreate};

pub async fn list_vms(State(d): State<AppState>) -> ApiResult<Vec<Vm>> {
    vms::list(&d.store).map(Json).map_err(ApiFailure::internal)
}

pub async fn inspect_vm(State(d): State<AppState>, Path(name): Path<String>) -> ApiResult<Vm> {
    let all = vms::list(&d.store).map_err(ApiFailure::internal)?;
    all.into_iter()
        .find(|v| v.name == name || v.id == name)
        .map(|mut v| {
            let (b, why) = vms::run::backend_for(&d, &v.id);
            v.vmm = Some(vms::run::vmm_choice(&d, &v.id));
            v.vmm_reason = Some(format!("{} ({why})", b.as_str()));
            Json(v)
        })
        .ok_or_else(|| {
            ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no VM {name:?}"),
            )
        })
}

/// `?force=true` on stop and rm.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Force {
    #[serde(default)]
    force: bool,
}

/// The VM `name` as the API shows it.
fn vm_view(d: &Daemon, name: &str) -> Result<Vm, ApiFailure> {
    let row = vms::find(d, name)?;
    vms::list(&d.store)
        .map_err(ApiFailure::internal)?
        .into_iter()
        .find(|v| v.id == row.id)
        .ok_or_else(|| VmError::NotFound(name.to_string()).into())
}

/// Run a VM lifecycle operation as a streamed job ending with the VM.
fn vm_job<F>(d: AppState, f: F) -> Response
where
    F: for<'a> FnOnce(
            &'a Daemon,
            &'a Progress,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<String, VmError>> + Send + 'a>,
        > + Send
        + 'static,
{
    stream_async(move |p| async move {
        let id = f(&d, &p).await?;
        let vm = vm_view(&d, &id)?;
        Ok(serde_json::to_value(vm).expect("VMs serialise"))
    })
}

pub async fn create_vm(
    State(d): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiFailure> {
    let mut body = parse::<VmCreate>(&body)?;
    // No image named: the owner's default, built in the job if missing.
    let default = body.image.is_none();
    if default {
        body.image = Some(vms::default_image::name(&d).map_err(VmError::from)?);
    }
    let req = vms::CreateReq::from_api(body);
    match req.check(&d) {
        Err(VmError::Image(crate::images::catalog::CatalogError::NotFound(_))) if default => {}
        r => {
            r?;
        }
    }
    Ok(vm_job(d, move |d, p| {
        Box::pin(async move {
            if default {
                vms::default_image::ensure(d, &req.image, p)?;
            }
            vms::create(d, &req, p).await.map(|r| r.id)
        })
    }))
}

pub async fn start_vm(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiFailure> {
    vms::find(&d, &name)?;
    Ok(vm_job(d, move |d, p| {
        Box::pin(async move { vms::start(d, &name, p).await.map(|r| r.id) })
    }))
}

pub async fn stop_vm(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Force>,
) -> Result<Response, ApiFailure> {
    vms::find(&d, &name)?;
    Ok(vm_job(d, move |d, p| {
        Box::pin(async move { vms::stop(d, &name, q.force, p).await.map(|r| r.id) })
    }))
}

pub async fn restart_vm(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiFailure> {
    vms::find(&d, &name)?;
    Ok(vm_job(d, move |d, p| {
        Box::pin(async move { vms::restart(d, &name, p).await.map(|r| r.id) })
    }))
}

pub async fn remove_vm(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Force>,
) -> Result<Response, ApiFailure> {
    let view = vm_view(&d, &name)?;
    let row = vms::find(&d, &name)?;
    if !q.force
        && matches!(
            row.state,
            banger_core::vm::VmState::Starting
                | banger_core::vm::VmState::Running
                | banger_core::vm::VmState::Stopping
        )
    {
        return Err(VmError::IsRunning(row.name, row.state).into());
    }
    Ok(stream_async(move |p| async move {
        vms::remove(&d, &name, q.force, &p).await?;
        Ok(serde_json::to_value(view).expect("VMs serialise"))
    }))
}

/// At most this much console text per answer.
const LOG_MAX: u64 = 1 << 20;

/// `?offset=N` on logs: the console from byte N (default: its last MiB).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsFrom {
    #[serde(default)]
    offset: Option<u64>,
}

pub async fn vm_logs(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LogsFrom>,
) -> ApiResult<Logs> {
    use std::io::{Read, Seek, SeekFrom};
    let row = vms::find(&d, &name)?;
    let path = d.paths.console_log(&row.id);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Json(Logs {
                text: String::new(),
                offset: 0,
            }))
        }
        Err(e) => {
            return Err(ApiFailure::internal(format!(
                "open {}: {e}",
                path.display()
            )))
        }
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // A console shorter than the offset was started afresh: from its start.
    let from = match q.offset {
        Some(o) if o <= len => o,
        Some(_) => 0,
        None => len.saturating_sub(LOG_MAX),
    };
    f.seek(SeekFrom::Start(from))
        .map_err(|e| ApiFailure::internal(format!("seek {}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.take(LOG_MAX)
        .read_to_end(&mut buf)
        .map_err(|e| ApiFailure::internal(format!("read {}: {e}", path.display())))?;
    Ok(Json(Logs {
        offset: from + buf.len() as u64,
        text: String::from_utf8_lossy(&buf).into_owned(),
    }))
}
