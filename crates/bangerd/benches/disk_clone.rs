//! Disk clone time vs image size: banger's fallback driver vs
//! `cp --reflink=auto --sparse=always`, on sparse images of 64 MiB, 1 GiB
//! and 4 GiB (1 MiB of data every 8 MiB). `BANGER_BENCH_DIR` picks the
//! filesystem (default `/var/tmp`); `BANGER_BENCH_SIZES=64M,1G` trims.
//!
//! Run: `cargo bench -p bangerd --bench disk_clone`

use bangerd::vmdisk::clone::clone_file;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;

fn make_base(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join(format!("bgtest-bench-base-{size}"));
    let f = File::create(&p).expect("create base");
    f.set_len(size).expect("size base");
    let chunk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8 | 1).collect();
    let mut off = 0;
    while off < size {
        let n = chunk.len().min((size - off) as usize);
        f.write_all_at(&chunk[..n], off).expect("write base");
        off += 8 << 20;
    }
    f.sync_all().expect("sync base");
    p
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn parse_size(s: &str) -> u64 {
    let (n, unit) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().expect("size number");
    match unit {
        "M" => n << 20,
        "G" => n << 30,
        _ => panic!("size must end in M or G: {s}"),
    }
}

fn main() {
    let dir =
        PathBuf::from(std::env::var("BANGER_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()));
    let sizes: Vec<u64> = std::env::var("BANGER_BENCH_SIZES")
        .unwrap_or_else(|_| "64M,1G,4G".into())
        .split(',')
        .map(parse_size)
        .collect();
    let work = tempfile::Builder::new()
        .prefix("bgtest-bench-")
        .tempdir_in(&dir)
        .expect("bench dir");
    println!(
        "disk clone bench in {} ({} rounds, median)",
        dir.display(),
        ROUNDS
    );
    println!(
        "{:>8} {:>10} {:>14} {:>14} {:>7}  method",
        "size", "data", "banger", "cp", "ratio"
    );
    for size in sizes {
        let base = make_base(work.path(), size);
        let mut ours = Vec::new();
        let mut cps = Vec::new();
        let mut method = None;
        for r in 0..ROUNDS {
            let dst = work.path().join(format!("ours-{r}"));
            let t = Instant::now();
            method = Some(clone_file(&base, &dst, &mut |_, _| {}).expect("clone"));
            ours.push(t.elapsed());
            std::fs::remove_file(&dst).expect("rm clone");
            let dst = work.path().join(format!("cp-{r}"));
            let t = Instant::now();
            let st = std::process::Command::new("cp")
                .args(["--reflink=auto", "--sparse=always"])
                .arg(&base)
                .arg(&dst)
                .status()
                .expect("run cp");
            cps.push(t.elapsed());
            assert!(st.success(), "cp failed");
            std::fs::remove_file(&dst).expect("rm cp");
        }
        let (o, c) = (median(ours), median(cps));
        println!(
            "{:>7}M {:>9}M {:>12.1}ms {:>12.1}ms {:>6.2}x  {:?}",
            size >> 20,
            size.div_ceil(8 << 20),
            o.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e3,
            o.as_secs_f64() / c.as_secs_f64(),
            method.expect("ran")
        );
        std::fs::remove_file(&base).expect("rm base");
    }
}
