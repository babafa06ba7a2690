//! The first-VM path and `vm exec` through the `banger` CLI against a real
//! Debian guest (QEMU): from an empty StateDir and a `HOME` with no `.ssh`,
//! `banger vm create NAME` (no `--image`) makes the default image once and
//! boots a VM reachable with banger's own key, its disk grown by
//! `--disk-size`; `vm exec` keeps stdout and stderr apart, passes stdin,
//! propagates exit statuses, prints `--json`, honours `--timeout`. One
//! image and one VM serve every assertion.
//!
//! The default image comes from the real-guest tests' recipe-keyed cache
//! (`BANGER_DEFAULT_IMAGE_SEED`: the dev daemon imports it instead of
//! debootstrapping); when the cache has none, the daemon builds it for real
//! and the test keeps it there for every later real-guest test.

mod common;

use banger_testkit::http_unix;
use base64::Engine;
use common::guest_cache;
use common::guest_net::{gate, GuestNet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sha256(p: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Every entry under `root`: relative path, mode, content digest.
fn listing(root: &std::path::Path) -> Vec<(String, u32, String)> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let sum = if m.is_file() { sha256(&p) } else { "-".into() };
            v.push((rel, m.permissions().mode() & 0o7777, sum));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    v.sort();
    v
}

#[test]
fn first_vm_with_no_preparation_then_exec() {
    if let Err(why) = gate() {
        println!("skipped: {why}");
        return;
    }
    // Whoever finds the cache empty builds while the others wait.
    let kernels =
        bangerd::images::kernel::host_kernels(Path::new("/boot"), Path::new("/lib/modules"));
    let cached = guest_cache::debian_dir(&format!("{kernels:?}"));
    let lock = guest_cache::lock();
    let seeded = guest_cache::is_cached(&cached);
    let g = if seeded {
        GuestNet::start_env(&[("BANGER_DEFAULT_IMAGE_SEED", &cached)])
    } else {
        GuestNet::start()
    };
    assert!(!g.home.join(".ssh").exists());

    // file_sync from the owner's config: a symlink out of the home is
    // refused, named (after the default image is built, once).
    let cfgdir = g.home.join(".config/banger");
    std::fs::create_dir_all(&cfgdir).unwrap();
    std::fs::write(g.dir.path().join("outside"), "host secret").unwrap();
    std::os::unix::fs::symlink(g.dir.path().join("outside"), g.home.join("escape")).unwrap();
    std::fs::write(g.home.join("notes.txt"), "synced note\n").unwrap();
    std::fs::create_dir_all(g.home.join("proj/sub")).unwrap();
    std::fs::write(g.home.join("proj/sub/deep.txt"), "deep\n").unwrap();
    let entries = "[[file_sync]]\nhost = \"~/notes.txt\"\nguest = \"/root/notes.txt\"\n\
                   [[file_sync]]\nhost = \"proj\"\nguest = \"/srv/proj\"\n";
    std::fs::write(
        cfgdir.join("config.toml"),
        format!("{entries}[[file_sync]]\nhost = \"~/escape\"\nguest = \"/root/leak\"\n"),
    )
    .unwrap();

    // No --image, nothing in the StateDir, no owner key.
    let t = Instant::now();
    let out = g.banger(&["vm", "create", "first", "--vcpus", "1", "--memory", "512"]);
    println!("default image made (create refused) in {:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("default image debian-bookworm does not exist yet"),
        "{err}"
    );
    assert!(
        err.contains("file_sync refused: ~/escape:") && err.contains("outside the owner's home"),
        "{err}"
    );
    assert!(!err.contains("host secret"));
    let images = g.banger(&["image", "ls", "--json"]);
    let images: serde_json::Value = serde_json::from_slice(&images.stdout).unwrap();
    assert_eq!(images[0]["name"], "debian-bookworm");
    if seeded {
        assert!(err.contains("importing it from"), "{err}");
    } else {
        assert!(err.contains("building it once (Debian bookworm)"), "{err}");
        let id = images[0]["id"].as_str().unwrap();
        let dir = bangerd::images::catalog::images_dir(&g.dir.path().join("state")).join(id);
        guest_cache::keep(&dir, &cached);
    }
    drop(lock);
    std::fs::write(cfgdir.join("config.toml"), entries).unwrap();
    // A disk smaller than the image: refused in one line, nothing made.
    let out = g.banger(&["vm", "create", "first", "--disk-size", "64M"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("--disk-size 64M is smaller than the image")
            && err.trim().lines().count() == 1,
        "{err}"
    );
    let t = Instant::now();
    let out = g.banger(&[
        "vm",
        "create",
        "first",
        "--vcpus",
        "1",
        "--memory",
        "512",
        "--disk-size",
        "3G",
    ]);
    println!("create (disk grown to 3G) in {:?}", t.elapsed());
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        g.consoles()
    );
    // The guest's root filesystem fills the grown disk (the image is ~620M).
    let out = g.banger(&["vm", "exec", "first", "lsblk", "-bdno", "SIZE", "/dev/vda"]);
    assert_eq!(
        text(&out.stdout).trim(),
        (3u64 << 30).to_string(),
        "{}",
        text(&out.stderr)
    );
    let out = g.banger(&["vm", "exec", "first", "df", "-B1", "--output=size", "/"]);
    let fs: u64 = text(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        fs > (29u64 << 30) / 10 && fs <= 3 << 30,
        "root fs {fs} bytes"
    );
    let out = g.banger(&[
        "vm",
        "exec",
        "first",
        "cat",
        "/root/notes.txt",
        "/srv/proj/sub/deep.txt",
    ]);
    assert_eq!(
        text(&out.stdout),
        "synced note\ndeep\n",
        "{}",
        text(&out.stderr)
    );
    let out = g.banger(&["vm", "exec", "first", "test", "-e", "/root/leak"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(g.dir.path().join("state/ssh/id_ed25519").exists());
    assert!(
        !g.home.join(".ssh").exists(),
        "banger wrote nothing in HOME"
    );

    // Reached with banger's own key (HOME has none).
    let out = g.banger(&["vm", "ssh", "first", "--", "cat", "/etc/hostname"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "first");

    // exec: streams apart, status propagated.
    let out = g.banger(&[
        "vm",
        "exec",
        "first",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    let out = g.banger(&["vm", "exec", "first", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    // Arguments arrive as they were given.
    let out = g.banger(&[
        "vm", "exec", "first", "printf", "%s|", "a b", "it's", "$HOME",
    ]);
    assert_eq!(
        text(&out.stdout),
        "a b|it's|$HOME|",
        "{}",
        text(&out.stderr)
    );
    // stdin passed through.
    let out = g.banger_in(&["vm", "exec", "first", "--", "wc", "-c"], &[7u8; 100_000]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "100000");
    // --json.
    let out = g.banger(&[
        "vm",
        "exec",
        "first",
        "--json",
        "--",
        "sh",
        "-c",
        "echo o; echo e >&2; exit 42",
    ]);
    assert_eq!(out.status.code(), Some(42));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"exit_code": 42, "stdout": "o\n", "stderr": "e\n"})
    );
    // --timeout.
    let t = Instant::now();
    let out = g.banger(&["vm", "exec", "first", "--timeout", "2", "--", "sleep", "60"]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(t.elapsed().as_secs() < 30);
    assert!(text(&out.stderr).contains("timed out after 2s"));

    // cp: a 100 MiB file and a tree, there and back, identical.
    let h = g.dir.path().join("cp");
    std::fs::create_dir_all(&h).unwrap();
    let big = h.join("big.bin");
    {
        use std::io::{Read, Write};
        let mut r = std::fs::File::open("/dev/urandom").unwrap().take(100 << 20);
        let mut w = std::fs::File::create(&big).unwrap();
        std::io::copy(&mut r, &mut w).unwrap();
        w.flush().unwrap();
    }
    let host_sum = sha256(&big);
    let t = Instant::now();
    let out = g.banger(&["vm", "cp", big.to_str().unwrap(), "first:/root/big.bin"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    println!("100 MiB up in {:?}", t.elapsed());
    let out = g.banger(&["vm", "exec", "first", "sha256sum", "/root/big.bin"]);
    assert_eq!(
        text(&out.stdout).split_whitespace().next(),
        Some(host_sum.as_str())
    );
    let back = h.join("back.bin");
    let t = Instant::now();
    let out = g.banger(&["vm", "cp", "first:/root/big.bin", back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    println!("100 MiB down in {:?}", t.elapsed());
    assert_eq!(sha256(&back), host_sum);

    let tree = h.join("tree");
    for (p, mode, body) in [
        ("run.sh", 0o755, "#!/bin/sh\necho hi\n"),
        ("sub/secret", 0o600, "s3cret"),
        ("sub/deep/x.txt", 0o644, "x"),
    ] {
        let f = tree.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, body).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::create_dir_all(tree.join("empty")).unwrap();
    // Into an existing directory, then back under a new name.
    let out = g.banger(&["vm", "cp", tree.to_str().unwrap(), "first:/root"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = g.banger(&[
        "vm",
        "exec",
        "first",
        "stat",
        "-c",
        "%a",
        "/root/tree/sub/secret",
        "/root/tree/run.sh",
    ]);
    assert_eq!(text(&out.stdout), "600\n755\n", "{}", text(&out.stderr));
    let tree2 = h.join("tree2");
    let out = g.banger(&["vm", "cp", "first:/root/tree", tree2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(listing(&tree), listing(&tree2));
    assert_eq!(listing(&tree).len(), 6, "{:?}", listing(&tree));

    // The same through the API's tar archive: PUT a tree, GET it back.
    let tarball = std::process::Command::new("tar")
        .args(["-c", "-f", "-", "-C"])
        .arg(&h)
        .arg("tree")
        .output()
        .unwrap();
    assert!(tarball.status.success());
    let tar_text = String::from_utf8(tarball.stdout).unwrap();
    assert!(g
        .banger(&["vm", "exec", "first", "mkdir", "/root/api"])
        .status
        .success());
    let (status, answer) = http_unix(
        &g.socket,
        "PUT",
        "/v1/vms/first/archive?path=/root/api",
        Some(&tar_text),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let out = g.banger(&[
        "vm",
        "exec",
        "first",
        "stat",
        "-c",
        "%a",
        "/root/api/tree/sub/secret",
    ]);
    assert_eq!(text(&out.stdout), "600\n");
    let (status, tar_back) = http_unix(
        &g.socket,
        "GET",
        "/v1/vms/first/archive?path=/root/api/tree",
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
    let tree3 = h.join("tree3");
    std::fs::create_dir_all(&tree3).unwrap();
    let mut x = std::process::Command::new("tar")
        .args(["-x", "-p", "-f", "-", "-C"])
        .arg(&tree3)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(x.stdin.as_mut().unwrap(), tar_back.as_bytes()).unwrap();
    drop(x.stdin.take());
    assert!(x.wait().unwrap().success());
    assert_eq!(listing(&tree), listing(&tree3.join("tree")));

    // The API: frames, stdin, status; a timeout.
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({
        "argv": ["sh", "-c", "cat; echo e >&2; exit 5"],
        "stdin_b64": b64.encode("from the api"),
    });
    let (status, answer) = http_unix(
        &g.socket,
        "POST",
        "/v1/vms/first/exec",
        Some(&body.to_string()),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let (mut o, mut e, mut last) = (Vec::new(), Vec::new(), serde_json::Value::Null);
    for line in answer.lines() {
        let f: serde_json::Value = serde_json::from_str(line).unwrap();
        match f["type"].as_str().unwrap() {
            "stdout" => o.extend(b64.decode(f["data_b64"].as_str().unwrap()).unwrap()),
            "stderr" => e.extend(b64.decode(f["data_b64"].as_str().unwrap()).unwrap()),
            _ => last = f,
        }
    }
    assert_eq!(text(&o), "from the api");
    assert_eq!(text(&e), "e\n");
    assert_eq!(last, serde_json::json!({"type": "exit", "exit_code": 5}));
    let body = serde_json::json!({"argv": ["sleep", "60"], "timeout_secs": 1});
    let (status, answer) = http_unix(
        &g.socket,
        "POST",
        "/v1/vms/first/exec",
        Some(&body.to_string()),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");

    // Ports: the daemon's loopback (in the namespace) reaches sshd.
    let banner = |port: &str| g.banner(port.parse().unwrap());
    let out = g.banger(&["vm", "port", "add", "first", "80:22"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("below 1024"),
        "{}",
        text(&out.stderr)
    );
    let out = g.banger(&["vm", "port", "add", "first", "2222:22"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let b = banner("2222");
    assert!(b.contains("SSH-2.0-OpenSSH"), "{b}");
    let ls = g.banger(&["--json", "vm", "port", "ls", "first"]);
    let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(ls, serde_json::json!([{"host": 2222, "guest": 22}]));
    // A second VM cannot take the port: a clear error.
    std::fs::write(
        cfgdir.join("config.toml"),
        format!("disk_size = \"2G\"\n{entries}"),
    )
    .unwrap();
    let out = g.banger(&["vm", "create", "second", "--no-start", "-p", "2222:22"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("host port 2222 is forwarded to VM first already"),
        "{err}"
    );
    // It was made, though: its disk grown to the owner's `disk_size`.
    let v = g.banger(&["--json", "vm", "inspect", "second"]);
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let disk = g
        .dir
        .path()
        .join("state/vms")
        .join(v["id"].as_str().unwrap())
        .join("rootfs.ext4");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 2 << 30);
    assert!(g.banger(&["vm", "rm", "second"]).status.success());
    // rm of the forward, then the VM's removal takes its forwards.
    assert!(g
        .banger(&["vm", "port", "rm", "first", "2222"])
        .status
        .success());
    assert!(!banner("2222").contains("SSH-2.0"));
    assert!(g
        .banger(&["vm", "port", "add", "first", "2223:22"])
        .status
        .success());
    assert!(banner("2223").contains("SSH-2.0-OpenSSH"));

    let out = g.banger(&["vm", "rm", "--force", "first"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ss = g.in_ns(&["ss", "-ltnH"]);
    assert!(!text(&ss.stdout).contains(":2223"), "{}", text(&ss.stdout));
}
