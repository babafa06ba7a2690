//! VM verbs through the `banger` CLI against a real `bangerd --dev` (no
//! network set-up, VMs recorded directly in its database): `--json` of
//! ls/inspect, a refused `rm` of a running VM, `rm` of a created one,
//! logs, and errors for unknown VMs.

use banger_testkit::http_unix;

mod common;

use common::dev_daemon::{start as start_daemon, DevDaemon};

fn start() -> DevDaemon {
    start_daemon("bgtest-vmcli-")
}

#[test]
fn vm_ls_inspect_json_refused_rm_of_a_running_vm_and_rm() {
    let env = start();
    let db = bangerd::store::Store::open(&env.dir.path().join("state/state.db")).unwrap();
    db.write(|tx| {
        tx.execute_batch(
            "INSERT INTO images VALUES ('img1','base','/nonexistent','k',NULL,'s','k',1,'import',0);
             INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_driver, created_at)
               VALUES ('v1', 'web', 'img1', 'running', 2, 1024, 'copy', 5);
             INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_driver, created_at)
               VALUES ('v2', 'db', 'img1', 'created', 1, 512, 'copy', 6);
             INSERT INTO ip_allocations VALUES ('172.30.0.2', 'v1');
             INSERT INTO ip_allocations VALUES ('172.30.0.3', 'v2');",
        )
    })
    .unwrap();

    let ls = env.ok_json(&["vm", "ls", "--json"]);
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "web"]);
    let web = env.ok_json(&["vm", "inspect", "web", "--json"]);
    assert_eq!(web["state"], "running");
    assert_eq!(web["ip"], "172.30.0.2");
    assert_eq!(web["image"], "base");
    assert_eq!(web["vcpus"], 2);
    assert_eq!(web["memory_mib"], 1024);
    // Inspect adds the VMM choice and why; the rest is the listing's row.
    assert_eq!(web["vmm"], "auto");
    assert!(
        web["vmm_reason"]
            .as_str()
            .is_some_and(|r| r.contains("vmm = auto")),
        "{web}"
    );
    let mut row = web.clone();
    let obj = row.as_object_mut().unwrap();
    obj.remove("vmm");
    obj.remove("vmm_reason");
    assert_eq!(row, ls[1]);

    // A running VM is not removed without --force.
    let out = env.banger(&["vm", "rm", "web"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("VM web is running; stop it first or use `banger vm rm --force`"),
        "{err}"
    );
    assert_eq!(
        env.ok_json(&["vm", "inspect", "web", "--json"])["state"],
        "running"
    );

    // Starting a running VM is refused with the state machine's wording.
    let out = env.banger(&["vm", "start", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("VM web is already running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // In text, rm of a VM that is not running says one line, all told.
    db.write(|tx| {
        tx.execute_batch(
            "INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_driver, created_at)
               VALUES ('v3', 'old', 'img1', 'stopped', 1, 512, 'copy', 7);",
        )
    })
    .unwrap();
    let out = env.banger(&["vm", "rm", "old"]);
    assert!(out.status.success(), "{out:?}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(all, "removed VM old\n");

    // A created VM goes; its address is freed.
    let gone = env.ok_json(&["vm", "rm", "db", "--json"]);
    assert_eq!(gone["name"], "db");
    let ls = env.ok_json(&["vm", "ls", "--json"]);
    assert_eq!(ls.as_array().unwrap().len(), 1);
    let n: i64 = db
        .read(|c| c.query_row("SELECT count(*) FROM ip_allocations", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(n, 1);

    // No console yet: empty logs.
    let logs = env.ok_json(&["vm", "logs", "web", "--json"]);
    assert_eq!(logs["text"], "");
    assert_eq!(logs["offset"], 0);
    // The console file, whole and from an offset (what --follow asks).
    let console = env.dir.path().join("state/vms/v1/console.log");
    std::fs::create_dir_all(console.parent().unwrap()).unwrap();
    std::fs::write(&console, "boot 1\nlogin: ").unwrap();
    let out = env.banger(&["vm", "logs", "web"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "boot 1\nlogin: \n");
    let (status, text) = http_unix(&env.socket, "GET", "/v1/vms/web/logs?offset=7", None).unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v, serde_json::json!({"text": "login: ", "offset": 14}));

    // Unknown VMs: one-line errors.
    for verb in ["inspect", "rm", "start", "stop", "logs", "ssh"] {
        let out = env.banger(&["vm", verb, "nope"]);
        assert_eq!(out.status.code(), Some(1), "{verb}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no VM \"nope\""), "{verb}: {err}");
    }
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    let env = start();
    for args in [
        &["vm", "ls", "--json"][..],
        &["version", "--json"],
        &["doctor"],
    ] {
        // The reader is gone before banger writes a byte (`| head -c0`).
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let out = std::process::Command::new(common::dev_daemon::cli())
            .arg("--socket")
            .arg(&env.socket)
            .args(args)
            .stdout(std::process::Stdio::from(w))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(141), "{args:?}");
    }
}

#[test]
fn port_forwards_splice_to_the_vm_address_are_exclusive_and_go_with_the_vm() {
    use std::io::{Read, Write};
    let env = start();
    // A stand-in guest service on the VM's "address" (loopback here).
    let svc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let guest_port = svc.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in svc.incoming().flatten() {
            let mut c = c;
            let _ = c.write_all(b"SSH-2.0-standin\r\n");
        }
    });
    let db = bangerd::store::Store::open(&env.dir.path().join("state/state.db")).unwrap();
    db.write(|tx| {
        tx.execute_batch(
            "INSERT INTO images VALUES ('img1','base','/nonexistent','k',NULL,'s','k',1,'import',0);
             INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_driver, created_at)
               VALUES ('v1', 'web', 'img1', 'stopped', 2, 1024, 'copy', 5);
             INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_driver, created_at)
               VALUES ('v2', 'db', 'img1', 'stopped', 1, 512, 'copy', 6);
             INSERT INTO ip_allocations VALUES ('127.0.0.1', 'v1');",
        )
    })
    .unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = free.local_addr().unwrap().port();
    drop(free);
    let spec = format!("{host}:{guest_port}");
    let out = env.banger(&["vm", "port", "add", "web", &spec]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = std::net::TcpStream::connect(("127.0.0.1", host)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut banner = [0u8; 17];
    c.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-standin\r\n");
    let ls = env.ok_json(&["vm", "port", "ls", "web", "--json"]);
    assert_eq!(ls, serde_json::json!([{"host": host, "guest": guest_port}]));
    // Low ports refused; another VM cannot take the port.
    let out = env.banger(&["vm", "port", "add", "db", "80:22"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("below 1024"));
    let out = env.banger(&["vm", "port", "add", "db", &spec]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("host port {host} is forwarded to VM web already")),
        "{err}"
    );
    // The VM's removal takes its forward: the port is free again.
    let out = env.banger(&["vm", "rm", "--force", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::net::TcpListener::bind(("127.0.0.1", host)).is_ok());
}
