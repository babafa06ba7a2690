//! The one place domain errors become HTTP statuses and the stable error
//! body (`code`, `message`); the domain modules never see HTTP.

use crate::images::catalog::CatalogError;
use crate::vms::VmError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use banger_proto::api::ApiError;

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

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiFailure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<CatalogError> for ApiFailure {
    fn from(e: CatalogError) -> Self {
        let (status, code) = catalog_status(&e);
        ApiFailure::new(status, code, crate::render_chain(&e))
    }
}

type Status = (StatusCode, &'static str);

const INVALID: Status = (StatusCode::BAD_REQUEST, "invalid");
const INTERNAL: Status = (StatusCode::INTERNAL_SERVER_ERROR, "internal");
const CONFLICT: Status = (StatusCode::CONFLICT, "conflict");
const NOT_FOUND: Status = (StatusCode::NOT_FOUND, "not_found");
const UPSTREAM: Status = (StatusCode::BAD_GATEWAY, "upstream");
const UPSTREAM_TIMEOUT: Status = (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout");

/// The HTTP status and error code of a catalog failure: the caller's
/// mistakes are 400, the registry's 502 (504 when it timed out), the
/// daemon's own (mkfs, initramfs, disk) 500.
fn catalog_status(e: &CatalogError) -> Status {
    use crate::images::debian::DebianError;
    use crate::images::oci::OciError;
    use crate::images::registry::RegistryError as R;
    match e {
        CatalogError::Invalid(_) => INVALID,
        CatalogError::Exists(_) | CatalogError::InUse { .. } => CONFLICT,
        CatalogError::NotFound(_) => NOT_FOUND,
        CatalogError::Debian(DebianError::Suite(_) | DebianError::Mirror(_)) => INVALID,
        CatalogError::Rootfs(
            OciError::UnknownFormat(_)
            | OciError::NoManifest(_)
            | OciError::BadDigest(_)
            | OciError::DigestMismatch(_)
            | OciError::UnsafePath(_)
            | OciError::Layer(..)
            | OciError::Json(..),
        ) => INVALID,
        CatalogError::Pull(r) => match r {
            R::BadReference(_) | R::NoPlatform(_) => INVALID,
            R::Roots(_) | R::Write(..) | R::Layout(_) | R::Task(_) => INTERNAL,
            R::Http(..) if timed_out(r) => UPSTREAM_TIMEOUT,
            R::Status(_, 504) => UPSTREAM_TIMEOUT,
            R::Status(_, 404) => NOT_FOUND,
            _ => UPSTREAM,
        },
        _ => INTERNAL,
    }
}

/// Whether an I/O timeout is somewhere in `e`'s source chain.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

impl From<VmError> for ApiFailure {
    fn from(e: VmError) -> Self {
        let (status, code) = match &e {
            VmError::BadName(_) | VmError::DiskSize(_) | VmError::OutOfRange(_) => INVALID,
            VmError::NotFound(_) => NOT_FOUND,
            VmError::Exists(_)
            | VmError::Refused(..)
            | VmError::Busy(_)
            | VmError::IsRunning(..)
            | VmError::Cancelled(_) => CONFLICT,
            VmError::Image(c) => catalog_status(c),
            _ => INTERNAL,
        };
        ApiFailure::new(status, code, crate::render_chain(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::registry::RegistryError;

    fn status(e: CatalogError) -> u16 {
        ApiFailure::from(e).0.as_u16()
    }

    #[test]
    fn each_failure_keeps_its_kind() {
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        assert_eq!(
            status(CatalogError::Pull(RegistryError::Http(
                "https://r/v2/".into(),
                Box::new(timeout)
            ))),
            504
        );
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            status(CatalogError::Pull(RegistryError::Http(
                "https://r/v2/".into(),
                Box::new(refused)
            ))),
            502
        );
        assert_eq!(
            status(CatalogError::Pull(RegistryError::Status("u".into(), 500))),
            502
        );
        // The pull's own deadlines (response head, each body read) are 504.
        assert_eq!(
            status(CatalogError::Pull(crate::images::registry::timeout_error(
                "https://r/v2/",
                "a read",
                std::time::Duration::from_secs(60)
            ))),
            504
        );
        // A registry that serves a blob unlike its descriptor is at fault.
        let e = CatalogError::Pull(RegistryError::SizeMismatch {
            digest: "sha256:x".into(),
            expected: 1,
            got: 2,
        });
        assert_eq!(status(e), 502);
        assert_eq!(
            status(CatalogError::Pull(RegistryError::DigestMismatch(
                "d".into()
            ))),
            502
        );
        let disk = std::io::Error::new(std::io::ErrorKind::StorageFull, "full");
        assert_eq!(
            status(CatalogError::Pull(RegistryError::Write("/s".into(), disk))),
            500
        );
        assert_eq!(
            status(CatalogError::Pull(RegistryError::BadReference(
                crate::images::reference::BadReference("x".into())
            ))),
            400
        );
        let mkfs = crate::images::oci::OciError::Mkfs(
            "/s/rootfs.ext4".into(),
            banger_sys::runner::RunError::Failed {
                program: "mkfs.ext4".into(),
                status: 1,
                stderr: "no space left on device".into(),
            },
        );
        assert_eq!(status(CatalogError::Rootfs(mkfs)), 500);
        let initramfs = crate::images::kernel::KernelError::NoModule("virtio_blk".into());
        assert_eq!(status(CatalogError::Initramfs(initramfs)), 500);
        assert_eq!(status(CatalogError::Invalid("no kernel".into())), 400);
        let e = ApiFailure::from(CatalogError::Exists("base".into()));
        assert_eq!((e.0.as_u16(), e.1.code.as_str()), (409, "conflict"));
    }
}
