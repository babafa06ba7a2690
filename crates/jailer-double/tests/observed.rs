//! The jailer double against what the real jailer v1.16.1 was observed to
//! do (shared/firecracker-api/jailer-v1.16.1.md), as root: argv errors and
//! exit codes, the layout and its modes under the helper's umask 077, the
//! copy of the exec file, the device nodes, the uid/gid switch with no
//! capability left, cgroup writes, and "No such file" for a dynamic binary.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The double, or the real jailer when `BANGER_JAILER` names one (so the
/// same assertions check the double against the real thing).
fn jailer_bin() -> PathBuf {
    match std::env::var_os("BANGER_JAILER").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_jailer-double")),
    }
}
const UID: u32 = 3_799_001;

use banger_testkit::tmp;

/// A static program that prints its argv and pauses.
fn static_vmm(dir: &Path) -> PathBuf {
    let out = dir.join("firecracker");
    let mut cc = Command::new("cc")
        .args(["-static", "-O1", "-x", "c", "-o"])
        .arg(&out)
        .arg("-")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    cc.stdin
        .take()
        .unwrap()
        .write_all(
            b"#include <stdio.h>\n#include <unistd.h>\nint main(int c, char **v) { for (int i = 0; i < c; i++) printf(\"%s\\n\", v[i]); fflush(stdout); for (;;) pause(); }\n",
        )
        .unwrap();
    assert!(cc.wait().unwrap().success());
    out
}

fn jailer(args: &[&str]) -> Command {
    let mut c = Command::new(jailer_bin());
    c.args(args).stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    jailer(args).output().unwrap()
}

/// stderr's two lines: the message and `Error: <Debug form>`.
fn err_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn argument_errors_exit_1_with_message_and_debug_on_stderr() {
    let out = run(&["--exec-file", "/x/firecracker", "--uid", "1", "--gid", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        err_lines(&out),
        [
            "Failed to parse arguments: Argument 'id' required, but not found.",
            "Error: ArgumentParsing(MissingArgument(\"id\"))"
        ]
    );
    assert!(out.stdout.is_empty());
    let out = run(&["--id", "a", "--bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        err_lines(&out)[1],
        "Error: ArgumentParsing(UnexpectedArgument(\"bogus\"))"
    );
    let out = run(&[
        "--id",
        "a_b",
        "--exec-file",
        "/f",
        "--uid",
        "5",
        "--gid",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        err_lines(&out),
        [
            "Invalid instance ID: Invalid char (_) at position 1",
            "Error: InvalidInstanceId(InvalidChar('_', 1))"
        ]
    );
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Jailer v1.16.1\n\n");
}

#[test]
fn root_step_errors_exit_1_with_the_real_messages() {
    if !banger_testkit::require_root("root_step_errors_exit_1_with_the_real_messages") {
        return;
    }
    let d = tmp();
    let base = d.path().join("base");
    let base_s = base.to_str().unwrap().to_string();
    let missing = d.path().join("missing-firecracker");
    let dir = d.path().to_path_buf();
    let vmm = static_vmm(d.path());
    let u = UID.to_string();
    for (exec, lines) in [
        (
            &missing,
            [
                format!(
                    "Failed to canonicalize path {}: No such file or directory (os error 2)",
                    missing.display()
                ),
                format!(
                    "Error: Canonicalize({:?}, Os {{ code: 2, kind: NotFound, message: \"No such file or directory\" }})",
                    missing
                ),
            ],
        ),
        (
            &dir,
            [
                format!("{} is not a file", dir.display()),
                format!("Error: NotAFile({dir:?})"),
            ],
        ),
        // The chroot base must exist.
        (
            &vmm,
            [
                format!(
                    "Failed to canonicalize path {base_s}: No such file or directory (os error 2)"
                ),
                format!(
                    "Error: Canonicalize({base:?}, Os {{ code: 2, kind: NotFound, message: \"No such file or directory\" }})"
                ),
            ],
        ),
    ] {
        let out = run(&[
            "--id",
            "a",
            "--exec-file",
            exec.to_str().unwrap(),
            "--uid",
            &u,
            "--gid",
            &u,
            "--chroot-base-dir",
            &base_s,
        ]);
        assert_eq!(out.status.code(), Some(1), "{exec:?}");
        assert_eq!(err_lines(&out), lines);
    }
    assert!(!base.exists(), "a refused run built something");
}

/// Removes an (empty) cgroup directory on drop, retrying while its last
/// task is being reaped.
struct RmdirOnDrop(PathBuf);

impl Drop for RmdirOnDrop {
    fn drop(&mut self) {
        banger_testkit::wait_until(Duration::from_secs(5), || {
            !self.0.exists() || std::fs::remove_dir(&self.0).is_ok()
        });
    }
}

fn mode(p: &Path) -> (char, u32, u32, u32) {
    let md = std::fs::symlink_metadata(p).unwrap();
    let ft = md.file_type();
    let t = if ft.is_dir() {
        'd'
    } else if ft.is_char_device() {
        'c'
    } else {
        'f'
    };
    (t, md.uid(), md.gid(), md.mode() & 0o7777)
}

fn status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap()
}

#[test]
fn root_layout_modes_ids_and_cgroups_as_observed() {
    if !banger_testkit::require_root("root_layout_modes_ids_and_cgroups_as_observed") {
        return;
    }
    let d = tmp();
    let vmm = static_vmm(d.path());
    let base = d.path().join("base");
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = format!("bgtest-jd-{}", std::process::id());
    let u = UID.to_string();
    let log = std::fs::File::create(d.path().join("log")).unwrap();
    let mut cmd = jailer(&[
        "--id",
        &id,
        "--exec-file",
        vmm.to_str().unwrap(),
        "--uid",
        &u,
        "--gid",
        &u,
        "--chroot-base-dir",
        base.to_str().unwrap(),
        "--cgroup-version",
        "1",
        "--cgroup",
        "pids.max=20",
        "--",
        "--api-sock",
        "/run/firecracker.socket",
    ]);
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    // SAFETY: umask(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let cg = Path::new("/sys/fs/cgroup/pids/firecracker").join(&id);
    // Dropped after the child (declared first): the cgroup goes even when
    // an assertion fails.
    let _cg = RmdirOnDrop(cg.clone());
    let mut child = banger_testkit::KillOnDrop(cmd.spawn().unwrap());
    let pid = child.0.id();
    assert!(
        banger_testkit::wait_until(Duration::from_secs(10), || {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .starts_with(b"/firecracker\0")
        }),
        "{}",
        std::fs::read_to_string(d.path().join("log")).unwrap_or_default()
    );
    let ids = format!("{UID}\t{UID}\t{UID}\t{UID}");
    assert_eq!(status(pid, "Uid:"), ids);
    assert_eq!(status(pid, "Gid:"), ids);
    assert_eq!(status(pid, "CapEff:"), "0000000000000000");
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = cmd
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert_eq!(argv[..3], ["/firecracker", "--id", id.as_str()]);
    assert_eq!(argv[3], "--start-time-us");
    assert_eq!(argv[5], "--start-time-cpu-us");
    assert_eq!(argv[7], "--parent-cpu-time-us");
    assert_eq!(argv[9..], ["--api-sock", "/run/firecracker.socket"]);
    assert_eq!(
        std::fs::read_to_string(cg.join("pids.max")).unwrap().trim(),
        "20"
    );
    let procs = std::fs::read_to_string(cg.join("tasks")).unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");

    // The layout: the umask applies to the parents (0700 under the helper).
    let fc = base.join("firecracker");
    let root = fc.join(&id).join("root");
    assert_eq!(mode(&fc), ('d', 0, 0, 0o700));
    assert_eq!(mode(&fc.join(&id)), ('d', 0, 0, 0o700));
    assert_eq!(mode(&root), ('d', UID, UID, 0o700));
    assert_eq!(mode(&root.join("firecracker")).0, 'f');
    assert_eq!(mode(&root.join("firecracker")).1, UID);
    assert_eq!(
        std::fs::read(root.join("firecracker")).unwrap(),
        std::fs::read(&vmm).unwrap(),
        "a copy of the exec file"
    );
    assert_eq!(mode(&root.join("firecracker.pid")).1, 0);
    assert_eq!(mode(&root.join("dev")), ('d', UID, UID, 0o700));
    assert_eq!(mode(&root.join("run")), ('d', UID, UID, 0o700));
    for n in ["dev/kvm", "dev/net/tun", "dev/userfaultfd", "dev/urandom"] {
        assert_eq!(mode(&root.join(n)), ('c', UID, UID, 0o600), "{n}");
    }
    let tun = std::fs::symlink_metadata(root.join("dev/net/tun")).unwrap();
    assert_eq!(tun.rdev(), rustix::fs::makedev(10, 200));
    // The jailer itself leaves no mount visible on the host.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(base.to_str().unwrap()), "{mi}");

    let _ = child.0.kill();
    let _ = child.0.wait();
    assert!(banger_testkit::wait_until(Duration::from_secs(5), || {
        std::fs::remove_dir(&cg).is_ok()
    }));
    // When the VMM exits, the chroot stays: removing it is the caller's job.
    assert!(root.join("firecracker").exists());
}

#[test]
fn root_a_dynamic_exec_file_is_no_such_file() {
    if !banger_testkit::require_root("root_a_dynamic_exec_file_is_no_such_file") {
        return;
    }
    let d = tmp();
    let exec = d.path().join("firecracker");
    std::fs::copy("/usr/bin/sleep", &exec).unwrap();
    let u = UID.to_string();
    let base = d.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let out = run(&[
        "--id",
        "dyn",
        "--exec-file",
        exec.to_str().unwrap(),
        "--uid",
        &u,
        "--gid",
        &u,
        "--chroot-base-dir",
        base.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        err_lines(&out),
        [
            "Failed to exec into Firecracker: No such file or directory (os error 2)",
            "Error: Exec(Os { code: 2, kind: NotFound, message: \"No such file or directory\" })"
        ]
    );
}
