//! The floor of one create, measured with the plain tools in the same run:
//! `ip tuntap add`, one `nft add element`, `losetup`, one `debugfs`
//! write, a sparse copy of the image, and fork + exec. Root only for the
//! first three; without root they are left out (and the floor says so).

use super::host::{must, quiet, Skip};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One round of the floor: each tool's time.
pub struct Round {
    pub parts: Vec<(&'static str, Duration)>,
}

impl Round {
    pub fn total(&self) -> Duration {
        self.parts.iter().map(|p| p.1).sum()
    }
}

fn timed(tool: &str, args: &[&str]) -> Result<Duration, Skip> {
    let t = Instant::now();
    must(tool, args)?;
    Ok(t.elapsed())
}

/// `n` rounds of the floor in `dir` against image `base`; `root` adds the
/// tap, nft and loop tools (on a `bgtest` table of its own, removed after).
pub fn measure(dir: &Path, base: &Path, n: usize, root: bool) -> Result<Vec<Round>, Skip> {
    let suffix = banger_testkit::unique_suffix();
    let table = format!("bgtest_floor_{suffix}");
    if root {
        must("nft", &["add", "table", "inet", &table])?;
        must(
            "nft",
            &["add", "set", "inet", &table, "vms", "{ type ipv4_addr; }"],
        )?;
    }
    let src = dir.join("bgtest-floor-file");
    std::fs::write(&src, [b'x'; 200]).map_err(|e| Skip(e.to_string()))?;
    let base_s = base.display().to_string();
    let run = || -> Result<Vec<Round>, Skip> {
        let mut rounds = Vec::new();
        for i in 0..n {
            let mut parts = Vec::new();
            let copy = dir.join(format!("bgtest-floor-{i}.ext4"));
            let copy_s = copy.display().to_string();
            parts.push((
                "sparse_copy",
                timed("cp", &["--sparse=always", &base_s, &copy_s])?,
            ));
            let write = format!("write {} /bgtest-floor", src.display());
            parts.push((
                "debugfs_write",
                timed("debugfs", &["-w", "-R", &write, &copy_s])?,
            ));
            let t = Instant::now();
            let st = Command::new("/bin/true")
                .status()
                .map_err(|e| Skip(format!("/bin/true: {e}")))?;
            assert!(st.success());
            parts.push(("fork_exec", t.elapsed()));
            if root {
                let tap = format!("bgtest-f{suffix}");
                parts.push((
                    "ip_tuntap_add",
                    timed("ip", &["tuntap", "add", "dev", &tap, "mode", "tap"])?,
                ));
                quiet("ip", &["link", "del", &tap]);
                let elem = format!("{{ 10.232.{}.{} }}", i / 250, i % 250 + 2);
                parts.push((
                    "nft_add_element",
                    timed("nft", &["add", "element", "inet", &table, "vms", &elem])?,
                ));
                let t = Instant::now();
                let out = Command::new("losetup")
                    .args(["-f", "--show", &copy_s])
                    .stderr(Stdio::null())
                    .output()
                    .map_err(|e| Skip(format!("losetup: {e}")))?;
                parts.push(("losetup", t.elapsed()));
                let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if dev.is_empty() {
                    return Err(Skip("losetup found no free loop device".into()));
                }
                quiet("losetup", &["-d", &dev]);
            }
            let _ = std::fs::remove_file(&copy);
            rounds.push(Round { parts });
        }
        Ok(rounds)
    };
    let r = run();
    if root {
        quiet("nft", &["delete", "table", "inet", &table]);
    }
    r
}
