//! Real busybox guests under QEMU microvm (TCG): the three ways a stop ends.

use super::*;
use crate::images::kernel::tests::{busybox_guest, host_tsc_khz};
use crate::vmm::Stopped;

const QEMU: &str = "/usr/bin/qemu-system-x86_64";

/// A guest whose `/sbin/init` is `init`, booted with serial to a log file
/// and a QMP socket; `None` (after a skip note) without QEMU or a kernel.
async fn boot(tmp: &Path, init: &str) -> Option<(QemuVm, PathBuf)> {
    if !Path::new(QEMU).exists() {
        println!("skipped: qemu-system-x86_64 not installed");
        return None;
    }
    let Some(g) = busybox_guest(tmp, init) else {
        println!("skipped: no host kernel");
        return None;
    };
    let spec = MachineSpec {
        vcpus: 1,
        memory_mib: 128,
        kernel: g.kernel,
        initrd: Some(g.initrd),
        rootfs: g.rootfs,
        net: None,
        tsc_khz: host_tsc_khz(),
    };
    let console = tmp.join("console.log");
    let io = QemuIo {
        serial_log: Some(console.clone()),
        qmp_socket: Some(tmp.join("qmp.sock")),
    };
    let vm = QemuVm::spawn(Path::new(QEMU), &[], &spec, Backend::QemuTcg, &io).unwrap();
    // Started paused (-S): the daemon places it in its cgroup, then runs it.
    resume(&tmp.join("qmp.sock"), Duration::from_secs(10))
        .await
        .unwrap();
    Some((vm, console))
}

/// Wait until the console shows `mark` (or QEMU exits: then panic with it).
async fn console_shows(vm: &mut QemuVm, console: &Path, mark: &str) {
    let t = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        if text.contains(mark) {
            return;
        }
        if let Some(st) = vm.try_exited().unwrap() {
            panic!("QEMU exited ({st}) before {mark}:\n{text}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "no {mark} after {:?}:\n{text}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bgtest-qemu-")
        .tempdir()
        .unwrap()
}

/// Like systemd and busybox init, the test inits take Ctrl+Alt+Del as SIGINT
/// to PID 1 (`kernel.ctrl-alt-del = 0`) instead of an immediate reboot.
const CAD_TO_INIT: &str = "/bin/busybox mount -t proc proc /proc\n\
    /bin/busybox echo 0 > /proc/sys/kernel/ctrl-alt-del\n";

/// Ctrl+Alt+Del reaches init as SIGINT (as on Firecracker); this init
/// reboots on it and `-no-reboot` turns the reboot into QEMU's exit.
#[tokio::test]
async fn ctrl_alt_del_shuts_a_guest_down_gracefully() {
    let t = tmp();
    let init = format!(
        "#!/bin/busybox sh\n{CAD_TO_INIT}\
        trap '/bin/busybox echo BANGER-CAD; /bin/busybox reboot -f' INT\n\
        /bin/busybox echo BANGER-READY\n\
        while :; do /bin/busybox sleep 1; done\n"
    );
    let Some((mut vm, console)) = boot(t.path(), &init).await else {
        return;
    };
    console_shows(&mut vm, &console, "BANGER-READY").await;
    let how = vm.stop(Duration::from_secs(60)).await.unwrap();
    let text = std::fs::read_to_string(&console).unwrap();
    assert_eq!(how, Stopped::Graceful, "{text}");
    assert!(text.contains("BANGER-CAD"), "the guest saw it:\n{text}");
    assert!(vm.try_exited().unwrap().is_some());
}

/// A guest that ignores Ctrl+Alt+Del is stopped with QMP `quit` after the
/// grace period.
#[tokio::test]
async fn a_guest_that_ignores_ctrl_alt_del_is_quit_after_the_grace() {
    let t = tmp();
    let init = format!(
        "#!/bin/busybox sh\n{CAD_TO_INIT}\
        trap '' INT\n\
        /bin/busybox echo BANGER-READY\n\
        while :; do /bin/busybox sleep 1; done\n"
    );
    let Some((mut vm, console)) = boot(t.path(), &init).await else {
        return;
    };
    console_shows(&mut vm, &console, "BANGER-READY").await;
    let how = vm.stop(Duration::from_millis(1500)).await.unwrap();
    assert_eq!(how, Stopped::Quit);
    assert!(vm.try_exited().unwrap().is_some());
}

/// A guest that powered itself off has nothing left to stop; QMP answers
/// commands while it runs.
#[tokio::test]
async fn a_guest_that_powered_off_is_already_stopped() {
    let t = tmp();
    let init = "#!/bin/busybox sh\n\
        /bin/busybox echo BANGER-READY\n\
        /bin/busybox sleep 3\n\
        /bin/busybox poweroff -f\n";
    let Some((mut vm, console)) = boot(t.path(), init).await else {
        return;
    };
    let mut q = vm.qmp(Duration::from_secs(30)).await.unwrap();
    let status = q.execute("query-status", None).await.unwrap();
    assert_eq!(status["status"], "running", "{status}");
    let err = q.execute("no-such-command", None).await.unwrap_err();
    assert!(
        matches!(&err, QemuError::Command { command, .. } if command == "no-such-command"),
        "{err:?}"
    );
    console_shows(&mut vm, &console, "BANGER-READY").await;
    let t0 = std::time::Instant::now();
    while vm.try_exited().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(120), "never powered off");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        vm.stop(Duration::from_secs(1)).await.unwrap(),
        Stopped::AlreadyExited
    );
}

/// QEMU binds its QMP socket before it listens on it: `resume` waits
/// through the refusals in between (a socket bound 100 ms before it
/// listens, then a minimal QMP server).
#[tokio::test]
async fn resume_waits_for_a_bound_socket_to_listen() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    use std::io::{BufRead, Write};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("qmp.sock");
    let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    rustix::net::bind_unix(&fd, &SocketAddrUnix::new(&path).unwrap()).unwrap();
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        rustix::net::listen(&fd, 1).unwrap();
        let l = std::os::unix::net::UnixListener::from(fd);
        let (c, _) = l.accept().unwrap();
        let mut w = c.try_clone().unwrap();
        let mut r = std::io::BufReader::new(c);
        w.write_all(b"{\"QMP\": {}}\n").unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            got.push(line);
            w.write_all(b"{\"return\": {}}\n").unwrap();
        }
        got
    });
    resume(&path, Duration::from_secs(10)).await.unwrap();
    let got = server.join().unwrap();
    assert!(got[0].contains("qmp_capabilities"), "{got:?}");
    assert!(got[1].contains("\"cont\""), "{got:?}");
}
