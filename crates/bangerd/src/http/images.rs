//! `/v1/images…`: list, inspect, remove, and import/build/pull as streamed
//! jobs.

use super::error::ApiFailure;
use super::handler::{parse, ApiResult, AppState};
use super::stream::{stream, stream_async};
use crate::daemon::Daemon;
use crate::images::catalog::{self, CatalogError};
use crate::progress::Progress;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use banger_proto::api::Image;

pub async fn list_images(State(d): State<AppState>) -> ApiResult<Vec<Image>> {
    let all = catalog::list(&d.store)?;
    Ok(Json(all.into_iter().map(|s| s.image).collect()))
}

pub async fn inspect_image(
    State(d): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Image> {
    match catalog::find(&d.store, &name)? {
        Some(s) => Ok(Json(s.image)),
        None => Err(CatalogError::NotFound(name).into()),
    }
}

pub async fn remove_image(State(d): State<AppState>, Path(name): Path<String>) -> ApiResult<Image> {
    tokio::task::spawn_blocking(move || catalog::remove(&d.store, &name))
        .await
        .map_err(ApiFailure::internal)?
        .map(Json)
        .map_err(Into::into)
}

/// Run a catalog operation as a streamed job.
fn image_job<F>(d: AppState, f: F) -> Response
where
    F: FnOnce(&Daemon, &Progress) -> Result<Image, CatalogError> + Send + 'static,
{
    stream(move |p| {
        let img = f(&d, p)?;
        Ok(serde_json::to_value(img).expect("images serialise"))
    })
}

pub async fn import_image(
    State(d): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiFailure> {
    let req: banger_proto::api::ImageImport = parse(&body)?;
    catalog::check_new_name(&d.store, &req.name)?;
    Ok(image_job(d, move |d, p| {
        catalog::import(&d.store, &d.paths.state_dir, &req, p)
    }))
}

pub async fn build_image(
    State(d): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiFailure> {
    let req: banger_proto::api::ImageBuild = parse(&body)?;
    catalog::check_new_name(&d.store, &req.name)?;
    Ok(image_job(d, move |d, p| {
        crate::images::build::build(&d.store, &d.paths.state_dir, &d.host_paths, &req, p)
    }))
}

pub async fn pull_image(
    State(d): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiFailure> {
    let req: banger_proto::api::ImagePull = parse(&body)?;
    Ok(stream_async(move |p| async move {
        let img = crate::images::build::pull(&d.store, &d.paths.state_dir, &d.host_paths, &req, &p)
            .await?;
        Ok(serde_json::to_value(img).expect("images serialise"))
    }))
}
