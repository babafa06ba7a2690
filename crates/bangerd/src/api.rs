//! The HTTP/JSON API under `/v1` (documented in `docs/api/openapi.yaml`).
//! The router is built from [`routes`], the one table the OpenAPI test
//! compares with the document.

use crate::catalog::{self, CatalogError};
use crate::daemon::Daemon;
use crate::vms::VmError;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use banger_proto::api::{ApiError, Doctor, Health, Image, Logs, VersionInfo, Vm, VmCreate};
use std::sync::Arc;

type AppState = Arc<Daemon>;

/// An API failure: status plus the stable error body.
pub struct ApiFailure(pub StatusCode, pub ApiError);

impl ApiFailure {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiFailure(
            status,
            ApiError {
                code: code.into(),
                message: message.into(),
            },
        )
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        ApiFailure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiFailure>;

/// One route: method, path (axum syntax = OpenAPI syntax), handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<AppState>,
}

fn route(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

/// `r!(GET, "/v1/x", handler)`: a route whose method is named once.
macro_rules! r {
    ($m:ident, $path:expr, $handler:expr) => {
        route(Method::$m, $path, on(MethodFilter::$m, $handler))
    };
}

/// Every route the daemon serves.
pub fn routes() -> Vec<Route> {
    vec![
        r!(GET, "/v1/health", health),
        r!(GET, "/v1/version", version),
        r!(GET, "/v1/doctor", doctor),
        r!(GET, "/v1/images", list_images),
        r!(POST, "/v1/images", import_image),
        r!(POST, "/v1/images/build", build_image),
        r!(POST, "/v1/images/pull", pull_image),
        r!(GET, "/v1/images/{name}", inspect_image),
        r!(DELETE, "/v1/images/{name}", remove_image),
        r!(GET, "/v1/vms", list_vms),
        r!(POST, "/v1/vms", create_vm),
        r!(GET, "/v1/vms/{name}", inspect_vm),
        r!(DELETE, "/v1/vms/{name}", remove_vm),
        r!(POST, "/v1/vms/{name}/start", start_vm),
        r!(POST, "/v1/vms/{name}/stop", stop_vm),
        r!(POST, "/v1/vms/{name}/restart", restart_vm),
        r!(GET, "/v1/vms/{name}/logs", vm_logs),
    ]
}

/// The router built from [`routes`], with JSON answers for unknown paths
/// (404 `no_route`) and methods (405 `method_not_allowed`).
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        router = router.route(r.path, r.handler);
    }
    router
        .fallback(|| async {
            ApiFailure::new(StatusCode::NOT_FOUND, "no_route", "no such API route")
        })
        .method_not_allowed_fallback(|| async {
            ApiFailure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .with_state(state)
}

async fn health(State(d): State<AppState>) -> ApiResult<Health> {
    Ok(Json(Health {
        ok: true,
        pid: std::process::id(),
        state_dir: d.paths.state_dir.display().to_string(),
        runtime_dir: d.paths.runtime_dir.display().to_string(),
    }))
}

async fn version(State(d): State<AppState>) -> ApiResult<VersionInfo> {
    let ops = d.privops.clone();
    let helper = tokio::task::spawn_blocking(move || {
        ops.call::<_, banger_proto::helper::VersionResult>(
            banger_proto::helper::VERSION,
            &banger_proto::helper::NoParams {},
        )
    })
    .await
    .map_err(ApiFailure::internal)?;
    let (helper, helper_error) = match helper {
        Ok(v) => (Some(v.version), None),
        Err(e) => (None, Some(crate::render_chain(&e))),
    };
    Ok(Json(VersionInfo {
        daemon: banger_proto::VERSION.to_string(),
        api: banger_proto::API_PREFIX.trim_start_matches('/').to_string(),
        privileges: d.privops.kind().to_string(),
        helper,
        helper_error,
    }))
}

async fn doctor(State(d): State<AppState>) -> ApiResult<Doctor> {
    let facts = crate::doctor::Facts {
        root: std::path::Path::new("/"),
        firecracker_bin: &d.cfg.firecracker_bin,
        privileges: d.privops.kind(),
        domain: &d.cfg.domain,
        state_dir: &d.paths.state_dir,
        bridge: &d.cfg.bridge,
    };
    Ok(Json(Doctor {
        checks: crate::doctor::run(&facts),
    }))
}

async fn list_images(State(d): State<AppState>) -> ApiResult<Vec<Image>> {
    let all = catalog::list(&d.store)?;
    Ok(Json(all.into_iter().map(|s| s.image).collect()))
}

async fn inspect_image(State(d): State<AppState>, Path(name): Path<String>) -> ApiResult<Image> {
    match catalog::find(&d.store, &name)? {
        Some(s) => Ok(Json(s.image)),
        None => Err(CatalogError::NotFound(name).into()),
    }
}

async fn remove_image(State(d): State<AppState>, Path(name): Path<String>) -> ApiResult<Image> {
    tokio::task::spawn_blocking(move || catalog::remove(&d.store, &name))
        .await
        .map_err(ApiFailure::internal)?
        .map(Json)
        .map_err(Into::into)
}

/// Decode a JSON body strictly, answering 400 `invalid` (never axum's
/// plain-text rejection).
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiFailure> {
    serde_json::from_slice(body).map_err(|e| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("invalid request body: {e}"),
        )
    })
}

/// Run a catalog operation as a streamed job.
fn image_job<F>(d: AppState, f: F) -> Response
where
    F: FnOnce(&Daemon, &crate::jobs::Progress) -> Result<Image, CatalogError> + Send + 'static,
{
    crate::jobs::stream(move |p| {
        let img = f(&d, p)?;
        Ok(serde_json::to_value(img).expect("images serialise"))
    })
}

async fn import_image(
    State(d): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiFailure> {
    let req: banger_proto::api::ImageImport = parse(&body)?;
    catalog::check_new_name(&d.store, &req.name)?;
    Ok(image_job(d, move |d, p| {
        catalog::import(&d.store, &d.paths.state_dir, &req, p)
    }))
}

async fn build_image(
    State(d): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiFailure> {
    let req: banger_proto::api::ImageBuild = parse(&body)?;
    catalog::check_new_name(&d.store, &req.name)?;
    Ok(image_job(d, move |d, p| {
        crate::builds::build(&d.store, &d.paths.state_dir, &d.host_paths, &req, p)
    }))
}

async fn pull_image(
    State(d): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiFailure> {
    let req: banger_proto::api::ImagePull = parse(&body)?;
    Ok(image_job(d, move |d, p| {
        crate::builds::pull(&d.store, &d.paths.state_dir, &d.host_paths, &req, p)
    }))
}

impl From<CatalogError> for ApiFailure {
    fn from(e: CatalogError) -> Self {
        let (status, code) = catalog_status(&e);
        ApiFailure::new(status, code, crate::render_chain(&e))
    }
}

/// The HTTP status and error code of a catalog failure.
fn catalog_status(e: &CatalogError) -> (StatusCode, &'static str) {
    match e {
        CatalogError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        CatalogError::Exists(_) | CatalogError::InUse { .. } => (StatusCode::CONFLICT, "conflict"),
        CatalogError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

async fn list_vms(State(d): State<AppState>) -> ApiResult<Vec<Vm>> {
    d.vms().map(Json).map_err(ApiFailure::internal)
}

async fn inspect_vm(State(d): State<AppState>, Path(name): Path<String>) -> ApiResult<Vm> {
    let all = d.vms().map_err(ApiFailure::internal)?;
    all.into_iter()
        .find(|v| v.name == name || v.id == name)
        .map(Json)
        .ok_or_else(|| {
            ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no VM {name:?}"),
            )
        })
}

impl From<VmError> for ApiFailure {
    fn from(e: VmError) -> Self {
        let (status, code) = match &e {
            VmError::BadName(_) => (StatusCode::BAD_REQUEST, "invalid"),
            VmError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            VmError::Exists(_)
            | VmError::Refused(..)
            | VmError::Busy(_)
            | VmError::IsRunning(..) => (StatusCode::CONFLICT, "conflict"),
            VmError::Image(c) => catalog_status(c),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiFailure::new(status, code, crate::render_chain(&e))
    }
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
    let row = crate::vms::find(d, name)?;
    d.vms()
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
            &'a crate::jobs::Progress,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<String, VmError>> + Send + 'a>,
        > + Send
        + 'static,
{
    let rt = tokio::runtime::Handle::current();
    crate::jobs::stream(move |p| {
        let id = rt.block_on(f(&d, p))?;
        let vm = vm_view(&d, &id)?;
        Ok(serde_json::to_value(vm).expect("VMs serialise"))
    })
}

async fn create_vm(
    State(d): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiFailure> {
    let req: VmCreate = parse(&body)?;
    banger_core::names::validate_vm_name(&req.name).map_err(VmError::BadName)?;
    if crate::vms::find(&d, &req.name).is_ok() {
        return Err(VmError::Exists(req.name).into());
    }
    if catalog::find(&d.store, &req.image)?.is_none() {
        return Err(CatalogError::NotFound(req.image).into());
    }
    let req = crate::vms::CreateReq {
        name: req.name,
        image: req.image,
        vcpus: req.vcpus.unwrap_or(1).max(1),
        memory_mib: req.memory_mib.unwrap_or(512).max(128),
        start: req.start.unwrap_or(true),
    };
    Ok(vm_job(d, move |d, p| {
        Box::pin(async move { crate::vms::create(d, &req, p).await.map(|r| r.id) })
    }))
}

async fn start_vm(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiFailure> {
    crate::vms::find(&d, &name)?;
    Ok(vm_job(d, move |d, p| {
        Box::pin(async move { crate::vms::start(d, &name, p).await.map(|r| r.id) })
    }))
}

async fn stop_vm(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Force>,
) -> Result<Response, ApiFailure> {
    crate::vms::find(&d, &name)?;
    Ok(vm_job(d, move |d, p| {
        Box::pin(async move { crate::vms::stop(d, &name, q.force, p).await.map(|r| r.id) })
    }))
}

async fn restart_vm(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiFailure> {
    crate::vms::find(&d, &name)?;
    Ok(vm_job(d, move |d, p| {
        Box::pin(async move { crate::vms::restart(d, &name, p).await.map(|r| r.id) })
    }))
}

async fn remove_vm(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Force>,
) -> Result<Response, ApiFailure> {
    let view = vm_view(&d, &name)?;
    let row = crate::vms::find(&d, &name)?;
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
    let rt = tokio::runtime::Handle::current();
    Ok(crate::jobs::stream(move |p| {
        rt.block_on(crate::vms::remove(&d, &name, q.force, p))?;
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

async fn vm_logs(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LogsFrom>,
) -> ApiResult<Logs> {
    use std::io::{Read, Seek, SeekFrom};
    let row = crate::vms::find(&d, &name)?;
    let path = crate::vms::run::console_log(&d, &row.id);
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
