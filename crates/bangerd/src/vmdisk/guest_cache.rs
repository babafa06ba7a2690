//! Where the real-guest tests keep the Debian image they build, shared by
//! the unit tests (`guest_fixture`) and the integration tests (included by
//! path): one directory per recipe, one flock for whoever builds it.

use std::fs::File;
use std::path::{Path, PathBuf};

/// The files of a stored image, as the catalog names them.
const FILES: [&str; 3] = ["rootfs.ext4", "vmlinux", "initrd.img"];

/// `$BANGER_GUEST_CACHE`, else `/var/cache/banger/guest` (outside the clone).
pub fn root() -> PathBuf {
    std::env::var_os("BANGER_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/banger/guest"))
}

/// The Debian image's recipe: the suite, the host kernels it pairs with
/// (`kernels`: their `{:?}`), and the source of every step that makes it.
/// Any change to the build code makes a new key, so a stale image is
/// never reused.
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

/// The cached Debian bookworm image of this recipe (it may not exist yet).
pub fn debian_dir(kernels: &str) -> PathBuf {
    root().join(format!("debian-bookworm-{}", debian_recipe_key(kernels)))
}

/// Whether `dir` holds a cached image.
pub fn is_cached(dir: &Path) -> bool {
    dir.join(FILES[0]).is_file()
}

/// The cache's one lock, held (exclusive) until the returned file drops:
/// whoever finds the image missing builds it while the others wait.
pub fn lock() -> File {
    let root = root();
    std::fs::create_dir_all(&root).unwrap();
    let f = File::create(root.join("build.lock")).unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).unwrap();
    f
}

/// Keep the stored image in `image_dir` as `cached`: copied into a scratch
/// dir, then renamed into place so a half-copied image is never seen.
/// Call with [`lock`] held.
pub fn keep(image_dir: &Path, cached: &Path) {
    let name = cached.file_name().unwrap().to_string_lossy();
    let scratch = cached.with_file_name(format!(".tmp-{name}"));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    for f in FILES {
        if image_dir.join(f).is_file() {
            std::fs::copy(image_dir.join(f), scratch.join(f)).unwrap();
        }
    }
    std::fs::rename(&scratch, cached).unwrap();
}
