//! Development mode's sudo fallbacks for real, as root: `SudoOps` with a
//! runner that, being root already, runs each `sudo -n …` argv without the
//! `sudo -n` prefix (and the helper's oneshot in-process, as the binary
//! would). Real nested mounts under a jail chroot are lazily unmounted
//! deepest first and the tree removed; a bind-mounted canary outside
//! survives; a real socket is handed to the owner without following links.

use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_proto::helper as m;
use banger_proto::install::InstallConfig;
use banger_sys::runner::{Cmd, CmdOutput, HostRunner, RunError, Runner};
use banger_testkit::require_root;
use bangerd::privops::{PrivOps, SudoOps};
use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

const HELPER_BIN: &str = "/nonexistent/banger-helper";

/// Root already: strips `sudo -n [--]`, runs the rest on the host, except
/// the helper's oneshot, which runs in-process on the same config.
struct AsRoot {
    helper: Arc<Helper>,
    seen: Mutex<Vec<Vec<String>>>,
}

impl Runner for AsRoot {
    fn output(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        self.seen.lock().unwrap().push(cmd.argv());
        let mut argv = cmd.argv();
        if argv.first().map(String::as_str) == Some("sudo") {
            assert_eq!(argv[1], "-n", "sudo must never prompt: {argv:?}");
            argv.drain(..2);
            if argv[0] == "--" {
                argv.remove(0);
            }
        }
        if argv[0] == HELPER_BIN {
            assert_eq!(argv.last().map(String::as_str), Some("oneshot"));
            let input = cmd.stdin.clone().unwrap_or_default();
            let resp = banger_helper::server::oneshot(self.helper.clone(), &input);
            return Ok(CmdOutput {
                status: 0,
                stdout: serde_json::to_vec(&resp).unwrap(),
                stderr: vec![],
            });
        }
        HostRunner.output(&Cmd::new(&argv[0]).args(argv[1..].iter().cloned()))
    }
}

use banger_testkit::MountGuard as Mounts;

fn mount(mounts: &mut Mounts, args: &[&str], target: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    mounts.0.push(target.to_path_buf());
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cfg: InstallConfig,
    runner: Arc<AsRoot>,
    ops: SudoOps,
}

fn setup() -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("bgtest-sudofb-")
        .tempdir()
        .unwrap();
    let root = dir.path().canonicalize().unwrap();
    for d in ["state", "run", "jail"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    let mut cfg = InstallConfig::for_owner(4242, 4243, root.clone());
    cfg.state_dir = root.join("state");
    cfg.runtime_dir = root.join("run");
    cfg.jailer_base = root.join("jail");
    let config = root.join("state/dev-install.toml");
    std::fs::write(&config, cfg.render()).unwrap();
    let runner = Arc::new(AsRoot {
        helper: Arc::new(Helper {
            cfg: cfg.clone(),
            host: Host::real(),
        }),
        seen: Mutex::new(Vec::new()),
    });
    let ops = SudoOps::new(runner.clone(), HELPER_BIN.into(), config);
    Setup {
        _dir: dir,
        root,
        cfg,
        runner,
        ops,
    }
}

#[test]
fn root_sudo_fallback_unmounts_real_nested_mounts_deepest_first_then_removes() {
    if !require_root("root_sudo_fallback_unmounts_real_nested_mounts_deepest_first_then_removes") {
        return;
    }
    let s = setup();
    let outside = s.root.join("state/canary-dir");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("canary"), b"keep me").unwrap();
    let chroot = s.cfg.jailer_base.join("firecracker/vm1/root");
    let (dev, net, mnt) = (
        chroot.join("dev"),
        chroot.join("dev/net"),
        chroot.join("mnt"),
    );
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let mut mounts = Mounts(Vec::new());
    mount(&mut mounts, &["-t", "tmpfs", "bgtest-tmpfs"], &dev);
    std::fs::create_dir(&net).unwrap();
    mount(&mut mounts, &["-t", "tmpfs", "bgtest-tmpfs"], &net);
    mount(&mut mounts, &["--bind", outside.to_str().unwrap()], &mnt);

    s.ops
        .call_value(m::CLEANUP_JAILER_CHROOT, json!({"path": chroot}))
        .unwrap();

    let seen = s.runner.seen.lock().unwrap().clone();
    let umounts: Vec<&str> = seen
        .iter()
        .filter(|a| a.get(2).map(String::as_str) == Some("umount"))
        .map(|a| {
            assert_eq!(a[..5], ["sudo", "-n", "umount", "--lazy", "--"], "{a:?}");
            a[5].as_str()
        })
        .collect();
    assert_eq!(umounts.len(), 3, "{seen:?}");
    assert_eq!(
        umounts[0],
        net.to_str().unwrap(),
        "deepest first: {umounts:?}"
    );
    assert_eq!(seen.len(), 4, "three unmounts, then the removal: {seen:?}");
    assert_eq!(seen[3].last().map(String::as_str), Some("oneshot"));
    assert!(!chroot.exists(), "the chroot was not removed");
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(chroot.to_str().unwrap()),
        "still mounted:\n{mi}"
    );
    assert_eq!(
        std::fs::read(outside.join("canary")).unwrap(),
        b"keep me",
        "the bind-mounted canary outside was touched"
    );
}

#[test]
fn root_sudo_fallback_hands_a_real_socket_to_the_owner_and_never_a_link_target() {
    if !require_root("root_sudo_fallback_hands_a_real_socket_to_the_owner_and_never_a_link_target")
    {
        return;
    }
    let s = setup();
    let sock = s.cfg.runtime_dir.join("fc-vm1.sock");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    s.ops
        .call_value(m::ENSURE_SOCKET_ACCESS, json!({"path": sock}))
        .unwrap();
    let md = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (4242, 4243, 0o600)
    );

    let canary = s.root.join("state/canary");
    std::fs::write(&canary, b"x").unwrap();
    std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = s.cfg.runtime_dir.join("fc-vm2.sock");
    std::os::unix::fs::symlink(&canary, &link).unwrap();
    let before = s.runner.seen.lock().unwrap().len();
    let err = s
        .ops
        .call_value(m::ENSURE_SOCKET_ACCESS, json!({"path": link}))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("socket path must not be a symlink"),
        "{err}"
    );
    assert_eq!(s.runner.seen.lock().unwrap().len(), before, "a command ran");
    let md = std::fs::metadata(&canary).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (0, 0, 0o644));
}
