//! `banger vm create --timings` and `--json` against a scripted daemon
//! socket: the phase events of the create stream become a per-phase table
//! (plus the control plane and total), and `timings` in the JSON; the
//! progress view shows none of them as steps.

use banger_proto::api::Event;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const CLI: &str = env!("CARGO_BIN_EXE_banger");

/// Answer every request on `sock` (until the test ends): `POST /v1/vms`
/// with an ndjson stream of a log line, phases and the VM; anything else
/// with 404. The request bodies of the creates are kept.
fn scripted_daemon(sock: &Path) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let l = UnixListener::bind(sock).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap();
                    }
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            let mut c = c;
            // The target as hyper sends it: absolute-form.
            let create = ["POST /v1/vms ", "POST http://banger/v1/vms "];
            if !create.iter().any(|p| head.starts_with(p)) {
                let b = r#"{"code":"not_found","message":"bgtest"}"#;
                let _ = write!(
                    c,
                    "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                    b.len()
                );
                continue;
            }
            let _ = tx.send(serde_json::from_slice(&body).unwrap());
            let us = Duration::from_micros;
            let vm = serde_json::json!({
                "id": "abc", "name": "web", "state": "running", "image": "base",
                "vcpus": 1, "memory_mib": 512, "ip": "172.30.0.2"
            });
            let events = [
                Event::Log {
                    message: "VM web (abc) recorded".into(),
                },
                Event::phase("validate", us(1500)),
                Event::phase("nat", us(2250)),
                Event::phase("boot_to_ssh", us(40_000)),
                Event::Done { result: vm },
            ];
            let mut text = String::new();
            for e in events {
                text.push_str(&serde_json::to_string(&e).unwrap());
                text.push('\n');
            }
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    rx
}

fn banger(sock: &Path, args: &[&str]) -> Output {
    Command::new(CLI)
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn vm_create_timings_prints_each_phase_and_json_carries_them() {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-timings-")
        .tempdir()
        .unwrap();
    let sock = dir.path().join("bangerd.sock");
    let bodies = scripted_daemon(&sock);

    let out = banger(
        &sock,
        &["vm", "create", "web", "--image", "base", "--timings"],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(bodies.recv().unwrap()["name"], "web");
    let table = "PHASE          MS\nvalidate       1.500\nnat            2.250\nboot_to_ssh    40.000\ncontrol plane  3.750\ntotal          43.750";
    assert!(stdout.contains(table), "{stdout}");
    assert!(stdout.contains("name: web"), "the VM as usual: {stdout}");
    assert!(stderr.contains("VM web (abc) recorded"), "{stderr}");
    for phase in ["validate", "boot_to_ssh"] {
        assert!(!stderr.contains(phase), "no phase as a step: {stderr}");
    }

    // Without --timings: no table.
    let out = banger(&sock, &["vm", "create", "web", "--image", "base"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PHASE"));

    // --json: the VM with its timings, in order.
    let out = banger(&sock, &["--json", "vm", "create", "web", "--image", "base"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "web");
    assert_eq!(
        v["timings"],
        serde_json::json!([
            {"phase": "validate", "ms": 1.5},
            {"phase": "nat", "ms": 2.25},
            {"phase": "boot_to_ssh", "ms": 40.0}
        ])
    );
}
