//! The HTTP/JSON API under `/v1` (documented in `docs/api/openapi.yaml`).
//! The router is built from [`routes`], the one table the OpenAPI test
//! compares with the document.

use crate::catalog::{self, CatalogError};
use crate::daemon::Daemon;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use banger_proto::api::{ApiError, Doctor, Health, Image, VersionInfo, Vm};
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

fn ni(what: &'static str) -> impl Fn() -> std::future::Ready<ApiFailure> + Clone + Send + 'static {
    move || std::future::ready(not_implemented(what))
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
        r!(POST, "/v1/vms", ni("vm create")),
        r!(GET, "/v1/vms/{name}", inspect_vm),
        r!(DELETE, "/v1/vms/{name}", ni("vm rm")),
        r!(POST, "/v1/vms/{name}/start", ni("vm start")),
        r!(POST, "/v1/vms/{name}/stop", ni("vm stop")),
        r!(POST, "/v1/vms/{name}/restart", ni("vm restart")),
        r!(GET, "/v1/vms/{name}/logs", ni("vm logs")),
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

fn not_implemented(what: &str) -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        format!("{what} is not implemented yet"),
    )
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
        let (status, code) = match &e {
            CatalogError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            CatalogError::Exists(_) | CatalogError::InUse { .. } => {
                (StatusCode::CONFLICT, "conflict")
            }
            CatalogError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiFailure::new(status, code, crate::render_chain(&e))
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
