//! OCI build throughput (MiB/s of layer data): `oci::build` (safe
//! extraction + fakeroot db + `mkfs.ext4 -d`) vs `tar -x` + `mkfs.ext4 -d`
//! on the same uncompressed layer. `BANGER_BENCH_DIR` picks the filesystem
//! (default `/var/tmp`); `BANGER_BENCH_MIB` the layer size (default 256).
//!
//! Run: `cargo bench -p bangerd --bench oci_build`

use banger_sys::runner::{Cmd, HostRunner, Runner};
use bangerd::images::oci::{build, Sizing};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Instant;

fn layer(mib: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut made = 0usize;
    let mut i = 0u32;
    while made < mib << 20 {
        // A mix like a distro: many small files, some large ones.
        let size = match i % 100 {
            0 => 4 << 20,
            1..=9 => 256 << 10,
            _ => 6 << 10,
        };
        let data: Vec<u8> = (0..size as u32)
            .map(|x| (x.wrapping_mul(31).wrapping_add(i)) as u8)
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_uid(u64::from(i % 3));
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("usr/share/d{}/f{i}", i % 64), &data[..])
            .expect("append");
        made += size;
        i += 1;
    }
    b.into_inner().expect("tar")
}

fn layout(dir: &Path, layer: &[u8]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs");
    let put = |d: &[u8]| {
        let hex = format!("{:x}", Sha256::digest(d));
        std::fs::write(blobs.join(&hex), d).expect("blob");
        format!("sha256:{hex}")
    };
    let l = put(layer);
    let c = put(b"{}");
    let m = serde_json::to_vec(&serde_json::json!({"schemaVersion":2,"config":{"digest":c,"size":2},"layers":[{"digest":l,"size":layer.len()}]})).expect("json");
    let md = put(&m);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(
            &serde_json::json!({"schemaVersion":2,"manifests":[{"digest":md,"size":m.len()}]}),
        )
        .expect("json"),
    )
    .expect("index");
}

fn main() {
    let dir = std::env::var("BANGER_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let mib: usize = std::env::var("BANGER_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let work = tempfile::Builder::new()
        .prefix("bgtest-bench-")
        .tempdir_in(&dir)
        .expect("work dir");
    let w = work.path();
    let data = layer(mib);
    layout(&w.join("layout"), &data);
    std::fs::write(w.join("layer.tar"), &data).expect("layer");
    let mb = data.len() as f64 / (1 << 20) as f64;

    std::fs::create_dir(w.join("scratch")).expect("scratch");
    let t = Instant::now();
    let built = build(
        &HostRunner,
        &w.join("layout"),
        &w.join("scratch"),
        &w.join("ours.ext4"),
        Sizing::default(),
    )
    .expect("build");
    let ours = t.elapsed().as_secs_f64();

    std::fs::create_dir(w.join("x")).expect("x");
    let t = Instant::now();
    HostRunner
        .run(
            &Cmd::new("tar")
                .arg("-xf")
                .arg(w.join("layer.tar"))
                .arg("-C")
                .arg(w.join("x")),
        )
        .expect("tar");
    let size = format!("{}k", built.size_bytes >> 10);
    HostRunner
        .run(
            &Cmd::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(w.join("x"))
                .arg(w.join("ref.ext4"))
                .arg(&size),
        )
        .expect("mkfs");
    let reference = t.elapsed().as_secs_f64();
    println!(
        "oci build bench in {dir}: {mb:.0} MiB layer, {} inodes",
        built.inodes
    );
    println!(
        "  banger oci::build      {ours:>7.2}s  {:>7.1} MiB/s",
        mb / ours
    );
    println!(
        "  tar -x + mkfs.ext4 -d  {reference:>7.2}s  {:>7.1} MiB/s",
        mb / reference
    );
    println!("  ratio {:.2}x", ours / reference);
}
