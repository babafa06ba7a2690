//! How a helper method fails, and which JSON-RPC code each failure gets.

use crate::gates::Refused;
use banger_proto::jsonrpc::{self, ErrorObject};

/// A failed method call.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No such method.
    #[error("method not found: {0}")]
    NotFound(String),
    /// Params did not decode (unknown field, wrong type, missing field).
    #[error("invalid params: {0}")]
    Params(String),
    /// A validation gate refused the params. The message names the gate.
    #[error("{method}: {refused}")]
    Gate {
        method: &'static str,
        refused: Refused,
    },
    /// The gate passed but the host operation failed; the message is the
    /// rendered error chain.
    #[error("{0}")]
    Failed(String),
}

impl RpcError {
    /// Wrap a host error, rendering its whole `source()` chain once.
    pub fn failed(err: &(dyn std::error::Error + 'static)) -> Self {
        RpcError::Failed(banger_sys::service::render_chain(err))
    }

    /// The JSON-RPC error object for this failure.
    pub fn to_object(&self) -> ErrorObject {
        let code = match self {
            RpcError::NotFound(_) => jsonrpc::METHOD_NOT_FOUND,
            RpcError::Params(_) | RpcError::Gate { .. } => jsonrpc::INVALID_PARAMS,
            RpcError::Failed(_) => jsonrpc::OPERATION_FAILED,
        };
        ErrorObject::new(code, self.to_string())
    }
}

/// Map a gate result into an [`RpcError::Gate`] naming `method`.
pub fn gate<T>(method: &'static str, r: Result<T, Refused>) -> Result<T, RpcError> {
    r.map_err(|refused| RpcError::Gate { method, refused })
}
