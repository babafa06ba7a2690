//! `banger system install --no-start` into the real paths, then the two
//! services run the way the units would (helper as root, bangerd as the
//! owner with the unit's config), `status`, and `uninstall --purge` leaving
//! nothing of banger on the host.

use banger_testkit::{require_root, wait_until, KillOnDrop, SystemUser};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const CLI: &str = env!("CARGO_BIN_EXE_banger");

fn banger(args: &[&str]) -> Output {
    Command::new(CLI).args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What banger could leave on a host: links, nft tables, loops, mounts,
/// files (other tests' `bgtest` objects left out).
fn host_snapshot() -> Vec<String> {
    let mut s = Vec::new();
    let run = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    s.push(format!(
        "links: {}",
        run("ip", &["-o", "link", "show"])
            .lines()
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            .filter(|l| !l.starts_with("bgtest-"))
            .collect::<Vec<_>>()
            .join(",")
    ));
    // Other tests' objects (marked `bgtest`) come and go meanwhile.
    let not_tests = |l: &&str| !l.contains("bgtest");
    let nft = run("nft", &["list", "tables"]);
    s.push(format!(
        "nft: {:?}",
        nft.lines().filter(not_tests).collect::<Vec<_>>()
    ));
    let loops = run("losetup", &["-a"]);
    s.push(format!(
        "loops: {:?}",
        loops.lines().filter(not_tests).collect::<Vec<_>>()
    ));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    s.push(format!(
        "mounts: {}",
        mounts
            .lines()
            .filter(|l| l.contains("banger") && !l.contains("bgtest"))
            .collect::<Vec<_>>()
            .join("\n")
    ));
    for f in ["/etc/subuid", "/etc/subgid"] {
        s.push(format!(
            "{f}: {}",
            std::fs::read_to_string(f).unwrap_or_default()
        ));
    }
    for p in [
        "/etc/banger",
        "/etc/systemd/system/bangerd.service",
        "/etc/systemd/system/banger-helper.service",
        "/etc/tmpfiles.d/banger.conf",
        "/var/lib/banger",
        "/run/banger",
        "/srv/jailer",
        "/usr/local/bin/banger",
        "/usr/local/bin/bangerd",
        "/usr/local/bin/banger-helper",
    ] {
        s.push(format!("{p}: {}", Path::new(p).exists()));
    }
    s
}

/// Whatever the test installed is uninstalled (`--purge`) when it drops,
/// also when an assertion fails half-way.
struct UninstallOnDrop;

impl Drop for UninstallOnDrop {
    fn drop(&mut self) {
        if Path::new("/etc/banger/install.toml").exists() {
            let _ = banger(&["system", "uninstall", "--purge"]);
        }
    }
}

fn helper_call(method: &str, params: &str) -> serde_json::Value {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect("/run/banger/helper.sock").unwrap();
    writeln!(
        s,
        r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn root_system_install_no_start_status_and_uninstall_purge() {
    if !require_root("root_system_install_no_start_status_and_uninstall_purge") {
        return;
    }
    if Path::new("/etc/banger/install.toml").exists() {
        eprintln!("skipped: a real banger install exists on this host; not touching it");
        return;
    }
    let owner = SystemUser::create("sysown");
    let before = host_snapshot();
    let _uninstall = UninstallOnDrop;

    // Refusals: no owner; systemd not PID 1 without --no-start.
    let out = banger(&["system", "install", "--owner", "bgtest-no-such-user"]);
    assert!(!out.status.success());
    if !Path::new("/run/systemd/system").is_dir() {
        let out = banger(&["system", "install", "--owner", &owner.name]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--no-start"), "{err}");
        assert!(
            !Path::new("/etc/banger/install.toml").exists(),
            "refusal left no files"
        );
    }

    let text = ok(banger(&[
        "system",
        "install",
        "--owner",
        &owner.name,
        "--no-start",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["owner"]["uid"], owner.uid);
    assert_eq!(v["started"], false);

    // The files laid down.
    let cfg = std::fs::read_to_string("/etc/banger/install.toml").unwrap();
    assert!(cfg.contains(&format!("owner_uid = {}", owner.uid)), "{cfg}");
    // The owner got subordinate ids for rootless image builds.
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    assert!(
        subuid
            .lines()
            .any(|l| l.starts_with(&format!("{}:", owner.name))),
        "{subuid}"
    );
    assert!(cfg.contains("owner_subids = "), "{cfg}");
    // A jail uid range for jailed Firecracker processes: recorded, clear of
    // root and the owner, and reserved in /etc/subuid and /etc/subgid.
    let parsed = banger_proto::install::InstallConfig::parse(&cfg).unwrap();
    let jr = parsed.jail_range().unwrap().expect("a jail uid range");
    assert!(!jr.contains(0) && !jr.contains(owner.uid) && !jr.contains(owner.gid));
    for f in ["/etc/subuid", "/etc/subgid"] {
        let line = format!("banger-jail:{}:{}", jr.base, jr.count);
        let text = std::fs::read_to_string(f).unwrap();
        assert_eq!(
            text.lines().filter(|l| *l == line).count(),
            1,
            "{f}: {text}"
        );
    }
    let meta = std::fs::metadata("/etc/banger/install.toml").unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644));
    let unit = std::fs::read_to_string("/etc/systemd/system/bangerd.service").unwrap();
    assert!(unit.contains(&format!("User={}", owner.uid)));
    assert!(unit.contains("CapabilityBoundingSet=\n"));
    let helper_unit = std::fs::read_to_string("/etc/systemd/system/banger-helper.service").unwrap();
    assert!(helper_unit.contains("DevicePolicy=closed"));
    let state = std::fs::metadata("/var/lib/banger").unwrap();
    assert_eq!((state.uid(), state.mode() & 0o7777), (owner.uid, 0o700));
    let run = std::fs::metadata("/run/banger").unwrap();
    assert_eq!(
        (run.uid(), run.gid(), run.mode() & 0o7777),
        (0, owner.gid, 0o1770)
    );
    for b in ["banger", "bangerd", "banger-helper"] {
        let m = std::fs::metadata(Path::new("/usr/local/bin").join(b)).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o755), "{b}");
    }

    // Idempotent: a second run changes nothing.
    let text = ok(banger(&[
        "system",
        "install",
        "--owner",
        &owner.name,
        "--no-start",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["changed"], serde_json::json!([]), "{v}");

    // Run the services the way the units would.
    let helper = KillOnDrop(
        Command::new("/usr/local/bin/banger-helper")
            .args(["--config", "/etc/banger/install.toml"])
            .env_clear()
            .env("BANGER_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(20), || Path::new(
        "/run/banger/helper.sock"
    )
    .exists()));
    let daemon = KillOnDrop(
        Command::new("/usr/local/bin/bangerd")
            .args(["--config", "/etc/banger/install.toml"])
            .env_clear()
            .env("BANGER_LOG", "warn")
            .uid(owner.uid)
            .gid(owner.gid)
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(20), || Path::new(
        "/run/banger/bangerd.sock"
    )
    .exists()));
    let sock = std::fs::metadata("/run/banger/bangerd.sock").unwrap();
    assert_eq!((sock.uid(), sock.mode() & 0o777), (owner.uid, 0o600));
    let hsock = std::fs::metadata("/run/banger/helper.sock").unwrap();
    assert_eq!(
        (hsock.uid(), hsock.gid(), hsock.mode() & 0o777),
        (0, owner.gid, 0o660)
    );

    // Give uninstall something to remove: a bridge, a tap and NAT rules,
    // made by the real helper over its socket.
    for (method, params) in [
        (
            "priv.ensure_bridge",
            r#"{"name":"banger0","address":"172.30.0.1/24"}"#,
        ),
        (
            "priv.create_tap",
            r#"{"name":"banger-e1e2e3e4","bridge":"banger0"}"#,
        ),
        (
            "priv.ensure_nat",
            r#"{"guest_ip":"172.30.0.2","tap":"banger-e1e2e3e4"}"#,
        ),
    ] {
        let v = helper_call(method, params);
        assert!(v["result"].is_object(), "{method}: {v}");
    }
    assert!(Path::new("/sys/class/net/banger-e1e2e3e4").exists());

    let text = ok(banger(&["system", "status", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["owner"]["uid"], owner.uid);
    assert_eq!(v["versions"]["daemon"], banger_proto::VERSION, "{v}");
    assert_eq!(v["versions"]["helper"], banger_proto::VERSION, "{v}");
    assert_eq!(v["sockets"]["/run/banger/helper.sock"], "present");
    assert!(v["disk_driver"].is_string(), "{v}");
    // The owner can ask too.
    let out = Command::new(CLI)
        .args(["system", "status"])
        .uid(owner.uid)
        .gid(owner.gid)
        .env_clear()
        .output()
        .unwrap();
    let text = ok(out);
    assert!(text.contains("banger-helper.service"), "{text}");
    drop(daemon);
    drop(helper);

    // Uninstall as a normal user is refused; as root with --purge, nothing stays.
    let out = Command::new(CLI)
        .args(["system", "uninstall"])
        .uid(owner.uid)
        .gid(owner.gid)
        .output()
        .unwrap();
    assert!(!out.status.success());
    ok(banger(&["system", "uninstall", "--purge"]));
    let after = host_snapshot();
    assert_eq!(before, after, "uninstall --purge left something behind");
}
