//! Image building blocks: OCI rootfs builds, host kernels and initramfs.

pub mod cpio;
pub mod kernel;
pub mod layer;
pub mod oci;
pub mod registry;
