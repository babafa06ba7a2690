//! Method name → gate + handler. The only place that knows every method.

use crate::error::RpcError;
use crate::host::Host;
use crate::methods::{files, network, process, storage};
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
            m::ENSURE_BRIDGE => call(self, params, network::ensure_bridge),
            m::CREATE_TAP => call(self, params, network::create_tap),
            m::DELETE_TAP => call(self, params, network::delete_tap),
            m::ENSURE_NAT => call(self, params, network::ensure_nat),
            m::CLEAR_NAT => call(self, params, network::clear_nat),
            m::SYNC_RESOLVER_ROUTING => call(self, params, network::sync_resolver_routing),
            m::CLEAR_RESOLVER_ROUTING => call(self, params, network::clear_resolver_routing),
            m::ENSURE_DNS_REDIRECT => call(self, params, network::ensure_dns_redirect),
            m::CREATE_DM_SNAPSHOT => call(self, params, storage::create_dm_snapshot),
            m::CLEANUP_DM_SNAPSHOT => call(self, params, storage::cleanup_dm_snapshot),
            m::REMOVE_DM_SNAPSHOT => call(self, params, storage::remove_dm_snapshot),
            m::FSCK_SNAPSHOT => call(self, params, storage::fsck_snapshot),
            m::READ_EXT4_FILE => call(self, params, storage::read_ext4_file),
            m::WRITE_EXT4_FILES => call(self, params, storage::write_ext4_files),
            m::ENSURE_SOCKET_ACCESS => call(self, params, files::ensure_socket_access),
            m::CLEANUP_JAILER_CHROOT => call(self, params, files::cleanup_jailer_chroot),
            m::KILL_PROCESS => call(self, params, process::kill_process),
            m::SIGNAL_PROCESS => call(self, params, process::signal_process),
            m::LAUNCH_FIRECRACKER => call(self, params, process::launch_firecracker),
            other => Err(RpcError::NotFound(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_method_is_dispatched() {
        let h = Helper {
            cfg: InstallConfig::for_owner(1000, 1000, "/home/u".into()),
            host: Host::recording(),
        };
        for method in m::METHODS {
            // `{}` fails decoding or a gate for most methods; what matters is
            // that no protocol method falls through to "method not found".
            let r = h.dispatch(method, Value::Object(Default::default()));
            assert!(
                !matches!(r, Err(RpcError::NotFound(_))),
                "{method} is not dispatched"
            );
        }
        assert!(matches!(
            h.dispatch("priv.nope", Value::Null),
            Err(RpcError::NotFound(_))
        ));
    }
}
