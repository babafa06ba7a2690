//! Method name → gate + handler. The only place that knows every method.

use crate::error::RpcError;
use crate::host::Host;
use banger_proto::helper as m;
use banger_proto::install::InstallConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The helper's state: trusted install metadata and the host.
pub struct Helper {
    /// Root-owned install metadata: the only source of the owner uid,
    /// StateDir, RuntimeDir, binary paths and the jailer base.
    pub cfg: InstallConfig,
    pub host: Host,
}

fn call<P, R>(
    h: &Helper,
    params: Value,
    f: impl FnOnce(&Helper, P) -> Result<R, RpcError>,
) -> Result<Value, RpcError>
where
    P: DeserializeOwned,
    R: Serialize,
{
    // A missing params member is the same as `{}` for methods without params.
    let params = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params
    };
    let p: P = serde_json::from_value(params).map_err(|e| RpcError::Params(e.to_string()))?;
    let r = f(h, p)?;
    Ok(serde_json::to_value(r).expect("results always serialise"))
}

impl Helper {
    /// Run one method: decode params strictly, gate, act.
    pub fn dispatch(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        match method {
            m::VERSION => call(self, params, |_, _: m::NoParams| {
                Ok(m::VersionResult {
                    version: banger_proto::VERSION.to_string(),
                    protocol: banger_proto::HELPER_PROTOCOL,
                })
            }),
            m::ENSURE_SOCKET_ACCESS => {
                call(self, params, crate::methods::files::ensure_socket_access)
            }
            m::CLEANUP_JAILER_CHROOT => {
                call(self, params, crate::methods::files::cleanup_jailer_chroot)
            }
            m::KILL_PROCESS => call(self, params, crate::methods::process::kill_process),
            m::SIGNAL_PROCESS => call(self, params, crate::methods::process::signal_process),
            m::LAUNCH_FIRECRACKER => {
                call(self, params, crate::methods::process::launch_firecracker)
            }
            other if m::METHODS.contains(&other) => {
                Err(RpcError::NotImplemented(m::METHODS.iter().find(|x| **x == other).unwrap()))
            }
            other => Err(RpcError::NotFound(other.to_string())),
        }
    }
}
