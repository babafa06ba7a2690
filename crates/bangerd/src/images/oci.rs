//! OCI builds (being written).
