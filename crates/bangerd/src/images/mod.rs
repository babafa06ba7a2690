//! Images: the catalog of stored images and every way one is made (import,
//! OCI build, registry pull, Debian), with their building blocks.

pub mod build;
pub mod catalog;
pub mod cpio;
pub mod debian;
pub mod kernel;
pub mod layer;
pub mod oci;
pub mod pull;
pub mod reference;
pub mod registry;
