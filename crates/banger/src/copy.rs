//! `banger vm cp SRC DST` (either side `NAME:/path`): files and directories
//! as a tar stream between the host's `tar` and the guest's over SSH, modes
//! kept, streamed through banger (never whole in memory) with a progress
//! bar on a terminal. As `cp -r`: into DST when it is a directory, else as
//! DST.

use crate::client::Client;
use crate::guest;
use anyhow::{bail, Context, Result};
use banger_core::shellword;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    Host(PathBuf),
    Guest { vm: String, path: String },
}

/// `NAME:/abs/path` is a guest path; anything else (including `./a:b`) a
/// host path.
pub fn parse_side(s: &str) -> Result<Side> {
    if let Some((vm, path)) = s.split_once(':') {
        if !vm.is_empty() && !vm.contains('/') {
            if !path.starts_with('/') {
                bail!("guest path {path:?} in {s:?} must be absolute");
            }
            return Ok(Side::Guest {
                vm: vm.into(),
                path: path.into(),
            });
        }
    }
    Ok(Side::Host(PathBuf::from(s)))
}

/// `path`'s parent and last component (`/` and `..` endings refused).
fn split(path: &str) -> Result<(String, String)> {
    let t = path.trim_end_matches('/');
    let (dir, base) = match t.rsplit_once('/') {
        Some(("", b)) => ("/".to_string(), b.to_string()),
        Some((d, b)) => (d.to_string(), b.to_string()),
        None => (".".to_string(), t.to_string()),
    };
    if base.is_empty() || base == "." || base == ".." {
        bail!("{path:?} names no file");
    }
    Ok((dir, base))
}

/// A GNU tar `--transform` renaming the top entry `from` to `to`.
fn rename_expr(from: &str, to: &str) -> String {
    let re: String = from
        .chars()
        .flat_map(|c| {
            let special = "\\^$.*[]|+?(){}".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect();
    let rep: String = to
        .chars()
        .flat_map(|c| ("\\&|".contains(c).then_some('\\')).into_iter().chain([c]))
        .collect();
    format!("s|^{re}\\(/\\|$\\)|{rep}\\1|")
}

/// `tar` arguments to extract into `dest` (a directory that exists: into
/// it; else as `dest` inside its parent) given the source's last component.
fn extract_args(dest_is_dir: bool, dest: &str, src_base: &str) -> Result<Vec<String>> {
    let mut a = vec!["-x".into(), "-p".into(), "-f".into(), "-".into()];
    if dest_is_dir {
        a.extend(["-C".into(), dest.into()]);
    } else {
        let (dir, base) = split(dest)?;
        a.extend(["-C".into(), dir]);
        if base != src_base {
            a.push(format!("--transform={}", rename_expr(src_base, &base)));
        }
    }
    Ok(a)
}

/// Copy bytes from `r` to `w`, showing progress on a terminal.
fn pump(mut r: impl std::io::Read, mut w: impl std::io::Write, label: &str) -> Result<u64> {
    use std::io::IsTerminal;
    let bar = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .expect("template parses"),
        );
        pb.set_message(label.to_string());
        pb
    });
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the tar stream"),
        };
        w.write_all(&buf[..k]).context("writing the tar stream")?;
        n += k as u64;
        if let Some(b) = &bar {
            b.set_position(n);
        }
    }
    w.flush().context("writing the tar stream")?;
    if let Some(b) = bar {
        b.finish();
    }
    Ok(n)
}

fn wait(c: &mut std::process::Child, what: &str) -> Result<()> {
    let s = c.wait().with_context(|| format!("waiting for {what}"))?;
    if !s.success() {
        bail!("{what} failed ({s})");
    }
    Ok(())
}

/// `banger vm cp SRC DST`.
pub async fn copy(client: &Client, src: &str, dst: &str) -> Result<()> {
    match (parse_side(src)?, parse_side(dst)?) {
        (Side::Host(s), Side::Guest { vm, path }) => upload(client, &s, &vm, &path).await,
        (Side::Guest { vm, path }, Side::Host(d)) => download(client, &vm, &path, &d).await,
        (Side::Host(_), Side::Host(_)) => bail!("neither side names a VM (NAME:/path)"),
        (Side::Guest { .. }, Side::Guest { .. }) => {
            bail!("both sides are VMs: copy through the host")
        }
    }
}

async fn upload(client: &Client, src: &Path, vm: &str, dest: &str) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).with_context(|| format!("{}", src.display()))?;
    if !(meta.is_file() || meta.is_dir()) {
        bail!("{} is neither a file nor a directory", src.display());
    }
    let src_s = src.to_str().context("source path is not UTF-8")?;
    let (dir, base) = split(src_s)?;
    let (ip, state_dir) = guest::target(client, vm).await?;
    let probe = guest::ssh(&state_dir, ip)
        .args(["-T", "-o", "BatchMode=yes", "--"])
        .arg(shellword::line(&["test".into(), "-d".into(), dest.into()]))
        .stdin(Stdio::null())
        .status()
        .context("running ssh")?;
    let mut remote = vec!["tar".to_string()];
    remote.extend(extract_args(probe.success(), dest, &base)?);
    let mut tar = Command::new("tar")
        .args(["-c", "-f", "-", "-C", &dir, "--", &base])
        .stdout(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let mut ssh = guest::ssh(&state_dir, ip)
        .args(["-T", "-o", "BatchMode=yes", "--"])
        .arg(shellword::line(&remote))
        .stdin(Stdio::piped())
        .spawn()
        .context("running ssh")?;
    let r = tar.stdout.take().expect("piped");
    let w = ssh.stdin.take().expect("piped");
    let pumped = pump(r, w, &format!("{base} → {vm}:{dest}"));
    wait(&mut tar, "tar on the host")?;
    wait(&mut ssh, &format!("tar in VM {vm}"))?;
    pumped.map(|_| ())
}

async fn download(client: &Client, vm: &str, src: &str, dest: &Path) -> Result<()> {
    let (dir, base) = split(src)?;
    let (ip, state_dir) = guest::target(client, vm).await?;
    let dest_s = dest.to_str().context("destination path is not UTF-8")?;
    let args = extract_args(dest.is_dir(), dest_s, &base)?;
    let remote = shellword::line(&[
        "tar".into(),
        "-c".into(),
        "-f".into(),
        "-".into(),
        "-C".into(),
        dir,
        "--".into(),
        base.clone(),
    ]);
    let mut ssh = guest::ssh(&state_dir, ip)
        .args(["-T", "-o", "BatchMode=yes", "--"])
        .arg(remote)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("running ssh")?;
    let mut tar = Command::new("tar")
        .args(&args)
        .stdin(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let r = ssh.stdout.take().expect("piped");
    let w = tar.stdin.take().expect("piped");
    let pumped = pump(r, w, &format!("{vm}:{src} → {}", dest.display()));
    wait(&mut ssh, &format!("tar in VM {vm}"))?;
    wait(&mut tar, "tar on the host")?;
    pumped.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_and_splits() {
        assert_eq!(
            parse_side("web:/etc/x").unwrap(),
            Side::Guest {
                vm: "web".into(),
                path: "/etc/x".into()
            }
        );
        assert_eq!(parse_side("./a:b").unwrap(), Side::Host("./a:b".into()));
        assert!(parse_side("web:rel").is_err());
        assert_eq!(split("/a/b/").unwrap(), ("/a".into(), "b".into()));
        assert_eq!(split("/b").unwrap(), ("/".into(), "b".into()));
        assert_eq!(split("b").unwrap(), (".".into(), "b".into()));
        assert!(split("/").is_err() && split("/a/..").is_err());
    }

    #[test]
    fn rename_is_applied_by_gnu_tar_to_the_top_entry_only() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("s");
        std::fs::create_dir_all(src.join("a.b")).unwrap();
        std::fs::write(src.join("a.b/a.b"), "x").unwrap();
        let out = t.path().join("o");
        std::fs::create_dir(&out).unwrap();
        let tarball = Command::new("tar")
            .args(["-c", "-f", "-", "-C"])
            .arg(&src)
            .arg("a.b")
            .output()
            .unwrap();
        let mut x = Command::new("tar")
            .args(extract_args(false, out.join("n&|ew").to_str().unwrap(), "a.b").unwrap())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(x.stdin.as_mut().unwrap(), &tarball.stdout).unwrap();
        drop(x.stdin.take());
        assert!(x.wait().unwrap().success());
        assert_eq!(std::fs::read(out.join("n&|ew/a.b")).unwrap(), b"x");
    }
}
