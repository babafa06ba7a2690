//! JSON-RPC 2.0 envelopes and error codes used on the helper socket.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest message (one line, without the `\n`) either side may send.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Unparsable JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Valid JSON that is not a JSON-RPC request (or is over the size cap).
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Params did not decode, or a validation gate refused them.
pub const INVALID_PARAMS: i64 = -32602;
/// The helper failed in a way that is its own fault.
pub const INTERNAL_ERROR: i64 = -32603;
/// The gate passed but the host operation failed.
pub const OPERATION_FAILED: i64 = -32000;
/// The operation did not finish within the helper's per-request timeout.
pub const TIMEOUT: i64 = -32001;

/// A request as the client sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub jsonrpc: String,
    pub method: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
}

impl Request {
    /// A request with the given id, method and params.
    pub fn new(id: u64, method: &str, params: Value) -> Self {
        Request {
            jsonrpc: "2.0".into(),
            method: method.into(),
            params,
            id: Some(Value::from(id)),
        }
    }
}

/// The error member of a failed response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }
}

/// A response: exactly one of `result` and `error` is present.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub jsonrpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
    pub id: Value,
}

impl Response {
    pub fn ok(id: Value, result: Value) -> Self {
        Response {
            jsonrpc: "2.0".into(),
            result: Some(result),
            error: None,
            id,
        }
    }

    pub fn err(id: Value, error: ErrorObject) -> Self {
        Response {
            jsonrpc: "2.0".into(),
            result: None,
            error: Some(error),
            id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_rejects_unknown_envelope_fields() {
        let bad = r#"{"jsonrpc":"2.0","method":"x","id":1,"extra":true}"#;
        assert!(serde_json::from_str::<Request>(bad).is_err());
    }

    #[test]
    fn response_serialises_only_one_of_result_and_error() {
        let r = Response::err(Value::from(3), ErrorObject::new(METHOD_NOT_FOUND, "no"));
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"no"},"id":3}"#
        );
    }
}
