//! The HTTP/JSON API under `/v1` (documented in `docs/api/openapi.yaml`).
//! The router is built from [`routes`], the one table the OpenAPI test
//! compares with the document; handlers live per resource.

pub mod archive;
pub mod error;
pub mod exec;
pub mod handler;
pub mod images;
pub mod listener;
pub mod ports;
pub mod serve;
pub mod stream;
pub mod system;
pub mod vms;

use axum::http::{Method, StatusCode};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

pub use error::ApiFailure;
pub use handler::AppState;
pub use serve::{bind_socket, serve, ServeError};

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
        r!(GET, "/v1/health", system::health),
        r!(GET, "/v1/version", system::version),
        r!(GET, "/v1/doctor", system::doctor),
        r!(GET, "/v1/images", images::list_images),
        r!(POST, "/v1/images", images::import_image),
        r!(POST, "/v1/images/build", images::build_image),
        r!(POST, "/v1/images/pull", images::pull_image),
        r!(GET, "/v1/images/{name}", images::inspect_image),
        r!(DELETE, "/v1/images/{name}", images::remove_image),
        r!(GET, "/v1/vms", vms::list_vms),
        r!(POST, "/v1/vms", vms::create_vm),
        r!(GET, "/v1/vms/{name}", vms::inspect_vm),
        r!(DELETE, "/v1/vms/{name}", vms::remove_vm),
        r!(POST, "/v1/vms/{name}/start", vms::start_vm),
        r!(POST, "/v1/vms/{name}/stop", vms::stop_vm),
        r!(POST, "/v1/vms/{name}/restart", vms::restart_vm),
        r!(GET, "/v1/vms/{name}/logs", vms::vm_logs),
        r!(POST, "/v1/vms/{name}/exec", exec::exec_vm),
        r!(GET, "/v1/vms/{name}/archive", archive::get_archive),
        r!(PUT, "/v1/vms/{name}/archive", archive::put_archive),
        r!(GET, "/v1/vms/{name}/ports", ports::list_ports),
        r!(POST, "/v1/vms/{name}/ports", ports::add_port),
        r!(DELETE, "/v1/vms/{name}/ports/{host}", ports::remove_port),
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
