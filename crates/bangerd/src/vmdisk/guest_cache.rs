//! Where the real-guest tests keep the one Debian image they share, and
//! its recipe key (also compiled into integration tests through `#[path]`,
//! so every test finds the same cached image).

use std::path::PathBuf;

/// Where built guest images are kept between test runs (outside the clone):
/// `$BANGER_GUEST_CACHE`, else `/var/cache/banger/guest`.
pub fn guest_cache_root() -> PathBuf {
    std::env::var_os("BANGER_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/banger/guest"))
}

/// The Debian image's recipe: the suite, the host kernels it pairs with
/// (`kernels`: their `Debug` rendering), and the source of every step that
/// makes it. Any change to the build code makes a new key, so a stale
/// image is never reused.
pub fn debian_recipe_key(kernels: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"bookworm\0");
    for src in [
        include_str!("../images/debian.rs"),
        include_str!("../images/build.rs"),
        include_str!("../images/kernel.rs"),
        include_str!("../images/cpio.rs"),
        include_str!("../images/layer.rs"),
        include_str!("../images/oci.rs"),
    ] {
        h.update(src.as_bytes());
        h.update(b"\0");
    }
    h.update(kernels.as_bytes());
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The cached image directory for the host's kernels.
pub fn cached_debian(kernels: &str) -> PathBuf {
    guest_cache_root().join(format!("debian-bookworm-{}", debian_recipe_key(kernels)))
}
