//! Method name → gate + handler. The only place that knows every method.

use crate::error::RpcError;
use crate::methods::{files, network, process, qemu, storage};
use banger_proto::helper::{self as m, method, Method};
use serde_json::Value;

use crate::helper::Helper;

/// Decode `M`'s params strictly, run `f`, encode `M`'s result.
fn call<M: Method>(
    h: &Helper,
    params: Value,
    f: impl FnOnce(&Helper, M::Params) -> Result<M::Result, RpcError>,
) -> Result<Value, RpcError> {
    // A missing params member is the same as `{}` for methods without params.
    let params = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params
    };
    let p: M::Params =
        serde_json::from_value(params).map_err(|e| RpcError::Params(e.to_string()))?;
    let r = f(h, p)?;
    Ok(serde_json::to_value(r).expect("results always serialise"))
}

/// `name => handler` for each method type: the name, the params and the
/// result all come from the type (`banger_proto::helper::Method`).
macro_rules! route {
    ($name:expr, $h:expr, $params:expr; $($m:ident => $f:expr,)*) => {
        match $name {
            $(<method::$m as Method>::NAME => call::<method::$m>($h, $params, $f),)*
            other => Err(RpcError::NotFound(other.to_string())),
        }
    };
}

impl Helper {
    /// Run one method: decode params strictly, gate, act.
    pub fn dispatch(&self, name: &str, params: Value) -> Result<Value, RpcError> {
        route! { name, self, params;
            Version => |_, _| {
                Ok(m::VersionResult {
                    version: banger_proto::VERSION.to_string(),
                    protocol: banger_proto::HELPER_PROTOCOL,
                })
            },
            EnsureBridge => network::ensure_bridge,
            CreateTap => network::create_tap,
            DeleteTap => network::delete_tap,
            EnsureNat => network::ensure_nat,
            ClearNat => network::clear_nat,
            SyncResolverRouting => network::sync_resolver_routing,
            ClearResolverRouting => network::clear_resolver_routing,
            EnsureDnsRedirect => network::ensure_dns_redirect,
            CreateDmSnapshot => storage::create_dm_snapshot,
            CleanupDmSnapshot => storage::cleanup_dm_snapshot,
            RemoveDmSnapshot => storage::remove_dm_snapshot,
            FsckSnapshot => storage::fsck_snapshot,
            ReadExt4File => storage::read_ext4_file,
            WriteExt4Files => storage::write_ext4_files,
            EnsureSocketAccess => files::ensure_socket_access,
            CleanupJailerChroot => files::cleanup_jailer_chroot,
            KillProcess => process::kill_process,
            SignalProcess => process::signal_process,
            LaunchFirecracker => process::launch_firecracker,
            PlaceQemuCgroup => qemu::place_qemu_cgroup,
            RemoveQemuCgroup => qemu::remove_qemu_cgroup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;
    use banger_proto::install::InstallConfig;

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
