//! What every handler shares: the state it gets, its result type, strict
//! JSON body decoding.

use super::error::ApiFailure;
use crate::daemon::Daemon;
use axum::http::StatusCode;
use axum::Json;
use std::sync::Arc;

/// The state every handler gets.
pub type AppState = Arc<Daemon>;

/// A handler's JSON answer or its failure.
pub type ApiResult<T> = Result<Json<T>, ApiFailure>;

/// Decode a JSON body strictly, answering 400 `invalid` (never axum's
/// plain-text rejection).
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiFailure> {
    serde_json::from_slice(body).map_err(|e| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("invalid request body: {e}"),
        )
    })
}
