//! `/v1/health`, `/v1/version`, `/v1/doctor`.

use super::error::ApiFailure;
use super::handler::{ApiResult, AppState};
use axum::extract::State;
use axum::Json;
use banger_proto::api::{Doctor, Health, VersionInfo};

pub async fn health(State(d): State<AppState>) -> ApiResult<Health> {
    Ok(Json(Health {
        ok: true,
        pid: std::process::id(),
        state_dir: d.paths.state_dir.display().to_string(),
        runtime_dir: d.paths.runtime_dir.display().to_string(),
    }))
}

pub async fn version(State(d): State<AppState>) -> ApiResult<VersionInfo> {
    let ops = d.privops.clone();
    let helper = tokio::task::spawn_blocking(move || {
        ops.call::<banger_proto::helper::method::Version>(&banger_proto::helper::NoParams {})
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

pub async fn doctor(State(d): State<AppState>) -> ApiResult<Doctor> {
    let facts = crate::doctor::Facts {
        root: std::path::Path::new("/"),
        firecracker_bin: &d.cfg.firecracker_bin,
        privileges: d.privops.kind(),
        domain: &d.cfg.domain,
        state_dir: &d.paths.state_dir,
        bridge: &d.cfg.bridge,
        vmm: d.cfg.vmm,
        jailer_bin: &d.cfg.jailer_bin,
    };
    Ok(Json(Doctor {
        checks: crate::doctor::run(&facts),
    }))
}
