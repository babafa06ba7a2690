//! priv.ensure_socket_access / priv.cleanup_jailer_chroot through
//! `Helper::dispatch` and `banger_sys::mounts`, with real sockets, real
//! bind/tmpfs mounts and real `renameat2(RENAME_EXCHANGE)` races.
//!
//! Mount tests run in a private mount namespace of their own test thread
//! (`unshare(CLONE_NEWNS)`), so nothing they mount is visible to the host.

use banger_helper::error::RpcError;
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_proto::helper as m;
use banger_proto::install::InstallConfig;
use banger_sys::mountinfo;
use rustix::fs::{RenameFlags, CWD};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const OWNER: (u32, u32) = (4242, 4243);
const MOUNTINFO: &str = "/proc/thread-self/mountinfo";

use banger_testkit::tmp;

fn helper(dir: &Path) -> Helper {
    let mut cfg = InstallConfig::for_owner(OWNER.0, OWNER.1, dir.join("home"));
    cfg.state_dir = dir.join("state");
    cfg.runtime_dir = dir.join("run");
    cfg.jailer_base = dir.join("jail");
    for d in [&cfg.state_dir, &cfg.runtime_dir, &cfg.jailer_base] {
        std::fs::create_dir_all(d).unwrap();
    }
    Helper {
        cfg,
        host: Host::real(),
    }
}

fn root_only() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    println!("skipped: needs root (chown, mounts, mount namespaces)");
    false
}

fn gate_text(r: Result<serde_json::Value, RpcError>) -> String {
    match r {
        Err(e @ RpcError::Gate { .. }) => e.to_string(),
        other => panic!("expected a gate refusal, got {other:?}"),
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Owner, group, mode and (for files) content of a canary.
type Snapshot = (u32, u32, u32, Vec<u8>);

fn snapshot(p: &Path) -> Snapshot {
    let md = std::fs::symlink_metadata(p).unwrap();
    let content = if md.is_file() {
        std::fs::read(p).unwrap()
    } else {
        Vec::new()
    };
    (md.uid(), md.gid(), md.mode(), content)
}

/// This test thread gets its own mount namespace with private propagation.
fn private_mount_ns() {
    rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNS).unwrap();
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .unwrap();
}

fn tmpfs(at: &Path) {
    rustix::mount::mount("bgtest-tmpfs", at, "tmpfs", MountFlags::empty(), "size=16m").unwrap();
}

fn bind(from: &Path, to: &Path) {
    rustix::mount::mount_bind(from, to).unwrap();
}

fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let all = banger_sys::mounts::read_mountinfo(Path::new(MOUNTINFO)).unwrap();
    mountinfo::at_or_below(&all, dir)
        .into_iter()
        .map(|m| m.mount_point.clone())
        .collect()
}

/// Detaches every mount left below `dir` (deepest first) before the
/// TempDir is removed, so a failed test never deletes through a bind mount.
struct Unmounter(PathBuf);
impl Drop for Unmounter {
    fn drop(&mut self) {
        for mp in mounts_below(&self.0) {
            let _ = rustix::mount::unmount(&mp, UnmountFlags::DETACH);
        }
    }
}

#[test]
fn gate_refusals_name_the_rule() {
    let d = tmp();
    let h = helper(d.path());
    let rt = h.cfg.runtime_dir.clone();
    std::fs::write(rt.join("file"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", rt.join("link")).unwrap();
    let esa = |p: String| gate_text(h.dispatch(m::ENSURE_SOCKET_ACCESS, json!({ "path": p })));
    assert!(esa("/etc/shadow".into())
        .starts_with("priv.ensure_socket_access: socket path must be below RuntimeDir"));
    assert_eq!(
        esa(s(&rt.join("link"))),
        "priv.ensure_socket_access: socket path must not be a symlink"
    );
    assert_eq!(
        esa(s(&rt.join("file"))),
        "priv.ensure_socket_access: socket path must be a socket"
    );
    assert!(esa(format!("{}/../etc/shadow", rt.display())).contains("lexically clean"));
    assert!(esa("relative".into()).contains("absolute"));
    // The owner is never the caller's to choose.
    assert!(matches!(
        h.dispatch(
            m::ENSURE_SOCKET_ACCESS,
            json!({ "path": s(&rt.join("x")), "uid": 0 })
        ),
        Err(RpcError::Params(_))
    ));

    let base = h.cfg.jailer_base.clone();
    std::fs::create_dir_all(d.path().join("outside/root")).unwrap();
    std::os::unix::fs::symlink(d.path().join("outside"), base.join("vmlink")).unwrap();
    std::os::unix::fs::symlink(d.path().join("outside/root"), base.join("rootlink")).unwrap();
    let cjc = |p: String| gate_text(h.dispatch(m::CLEANUP_JAILER_CHROOT, json!({ "path": p })));
    assert!(cjc("/".into()).contains("lexically clean"));
    assert!(cjc(s(&base)).contains("chroot path must be below the jailer base"));
    assert!(cjc(s(d.path())).contains("below the jailer base"));
    assert_eq!(
        cjc(s(&base.join("rootlink"))),
        "priv.cleanup_jailer_chroot: chroot path must not be a symlink"
    );
    assert!(cjc(s(&base.join("vmlink/root"))).contains("must not pass through a symlink"));
    assert!(d.path().join("outside/root").is_dir());
    // Absent: already clean.
    h.dispatch(
        m::CLEANUP_JAILER_CHROOT,
        json!({ "path": s(&base.join("firecracker/gone/root")) }),
    )
    .unwrap();
}

#[test]
fn root_ensure_socket_access_hands_the_socket_to_the_registered_owner() {
    if !root_only() {
        return;
    }
    let d = tmp();
    let h = helper(d.path());
    let sock = h.cfg.runtime_dir.join("vm-1.sock");
    let _l = UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.dispatch(m::ENSURE_SOCKET_ACCESS, json!({ "path": s(&sock) }))
        .unwrap();
    let md = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (OWNER.0, OWNER.1, 0o600)
    );
}

/// Lets the test stop the swapper while it rebuilds its fixture.
#[derive(Default)]
struct Pause {
    wanted: AtomicBool,
    lock: Mutex<()>,
}

/// Swap `a` and `b` with `renameat2(RENAME_EXCHANGE)` until stopped, except
/// while the test holds `pause` (fixture rebuilds are not part of the race).
fn swapper(
    a: PathBuf,
    b: PathBuf,
    stop: Arc<AtomicBool>,
    pause: Arc<Pause>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if pause.wanted.load(Ordering::Acquire) {
                std::thread::yield_now();
                continue;
            }
            let _g = pause.lock.lock().unwrap();
            if rustix::fs::renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).is_ok() {
                n += 1;
            }
        }
        n
    })
}

/// Race tests run one at a time: each has a busy swapper thread, and the
/// machine may have only two cores.
static RACE_SERIAL: Mutex<()> = Mutex::new(());
const RACE_BUDGET: Duration = Duration::from_secs(4);
const RACE_ROUNDS: usize = 3000;

/// Run `round` until the budget or round count is reached, with `a`/`b`
/// being exchanged all the while. Returns (ok, refused, failed, swaps).
fn race(
    a: &Path,
    b: &Path,
    mut setup: impl FnMut(),
    mut round: impl FnMut() -> Result<serde_json::Value, RpcError>,
) -> (usize, usize, usize, u64) {
    let _serial = RACE_SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Arc::new(Pause::default());
    let t = swapper(
        a.to_path_buf(),
        b.to_path_buf(),
        stop.clone(),
        pause.clone(),
    );
    let (mut ok, mut refused, mut failed) = (0, 0, 0);
    let t0 = Instant::now();
    for _ in 0..RACE_ROUNDS {
        if t0.elapsed() > RACE_BUDGET {
            break;
        }
        {
            pause.wanted.store(true, Ordering::Release);
            // Spin rather than sleep on the lock: the swapper releases it
            // within one exchange, and a futex wake-up costs milliseconds
            // on a loaded machine.
            let _g = loop {
                if let Ok(g) = pause.lock.try_lock() {
                    break g;
                }
                std::hint::spin_loop();
            };
            setup();
            pause.wanted.store(false, Ordering::Release);
        }
        match round() {
            Ok(_) => ok += 1,
            Err(RpcError::Gate { .. }) => refused += 1,
            Err(RpcError::Failed(_)) => failed += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = t.join().unwrap();
    (ok, refused, failed, swaps)
}

#[test]
fn root_race_socket_leaf_swapped_for_symlink() {
    if !root_only() {
        return;
    }
    let d = tmp();
    let h = helper(d.path());
    let rt = h.cfg.runtime_dir.clone();
    std::fs::create_dir(d.path().join("canary")).unwrap();
    let canary = d.path().join("canary/fc.sock");
    let _c = UnixListener::bind(&canary).unwrap();
    std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let canary_file = d.path().join("canary/secret");
    std::fs::write(&canary_file, b"canary").unwrap();
    let before = (snapshot(&canary), snapshot(&canary_file));
    let sock = rt.join("fc.sock");
    let _l = UnixListener::bind(&sock).unwrap();
    std::os::unix::fs::symlink(&canary, rt.join("swap")).unwrap();
    std::os::unix::fs::symlink(&canary_file, rt.join("swap2")).unwrap();
    let (ok, refused, failed, swaps) = race(
        &sock,
        &rt.join("swap"),
        || {},
        || h.dispatch(m::ENSURE_SOCKET_ACCESS, json!({ "path": s(&sock) })),
    );
    println!("leaf race: ok={ok} refused={refused} failed={failed} swaps={swaps}");
    let (ok2, refused2, failed2, _) = race(
        &rt.join("swap"),
        &rt.join("swap2"),
        || {},
        || {
            h.dispatch(
                m::ENSURE_SOCKET_ACCESS,
                json!({ "path": s(&rt.join("swap")) }),
            )
        },
    );
    println!("file-leaf race: ok={ok2} refused={refused2} failed={failed2}");
    assert_eq!((snapshot(&canary), snapshot(&canary_file)), before);
    assert!(ok > 0 && swaps > 0, "the race never let a call through");
}

#[test]
fn root_race_socket_parent_dir_swapped_for_symlink() {
    if !root_only() {
        return;
    }
    let d = tmp();
    let h = helper(d.path());
    let rt = h.cfg.runtime_dir.clone();
    // The canary is a socket with the very name the caller asks for.
    std::fs::create_dir(d.path().join("canary")).unwrap();
    let canary = d.path().join("canary/fc.sock");
    let _c = UnixListener::bind(&canary).unwrap();
    std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&canary);
    std::fs::create_dir(rt.join("vm")).unwrap();
    let _l = UnixListener::bind(rt.join("vm/fc.sock")).unwrap();
    std::os::unix::fs::symlink(d.path().join("canary"), rt.join("swap")).unwrap();
    let target = rt.join("vm/fc.sock");
    let (ok, refused, failed, swaps) = race(
        &rt.join("vm"),
        &rt.join("swap"),
        || {},
        || h.dispatch(m::ENSURE_SOCKET_ACCESS, json!({ "path": s(&target) })),
    );
    println!("dir race: ok={ok} refused={refused} failed={failed} swaps={swaps}");
    assert_eq!(snapshot(&canary), before);
    assert!(ok > 0 && swaps > 0, "the race never let a call through");
}

/// A fresh jail root at `<real_vm>/root`: a file, and (every 8th round —
/// mounts are the slow part) a tmpfs at `mnt`.
fn build_root(real_vm: &Path, round: &mut usize) {
    *round += 1;
    let root = real_vm.join("root");
    for mp in mounts_below(&root) {
        rustix::mount::unmount(&mp, UnmountFlags::DETACH).unwrap();
    }
    if root.exists() {
        std::fs::remove_dir_all(&root).unwrap();
    }
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::write(root.join("a/file"), b"jail").unwrap();
    std::fs::create_dir(root.join("mnt")).unwrap();
    if *round % 8 == 1 {
        tmpfs(&root.join("mnt"));
    }
    std::fs::write(root.join("mnt/inside"), b"jail").unwrap();
}

/// A canary tree shaped like a jail root, with its own tmpfs at `mnt`.
fn build_canary(dir: &Path) -> Vec<(PathBuf, Snapshot)> {
    std::fs::create_dir_all(dir.join("root/a")).unwrap();
    std::fs::write(dir.join("root/a/file"), b"canary").unwrap();
    std::fs::create_dir(dir.join("root/mnt")).unwrap();
    tmpfs(&dir.join("root/mnt"));
    std::fs::write(dir.join("root/mnt/inside"), b"canary-mount").unwrap();
    [
        "root",
        "root/a",
        "root/a/file",
        "root/mnt",
        "root/mnt/inside",
    ]
    .iter()
    .map(|r| (dir.join(r), snapshot(&dir.join(r))))
    .collect()
}

fn assert_canary(dir: &Path, before: &[(PathBuf, Snapshot)]) {
    for (p, snap) in before {
        assert_eq!(&snapshot(p), snap, "{}", p.display());
    }
    assert_eq!(
        mounts_below(&dir.join("root")),
        vec![dir.join("root/mnt")],
        "canary mount lost"
    );
}

fn real_dir_of(a: &Path, b: &Path) -> PathBuf {
    let a_is_dir = std::fs::symlink_metadata(a)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    if a_is_dir {
        a.to_path_buf()
    } else {
        b.to_path_buf()
    }
}

#[test]
fn root_race_jail_dir_swapped_for_symlink_during_cleanup() {
    if !root_only() {
        return;
    }
    private_mount_ns();
    let d = tmp();
    let _u = Unmounter(d.path().to_path_buf());
    // The whole fixture on a tmpfs of this namespace: rounds cost no disk I/O.
    tmpfs(d.path());
    let h = helper(d.path());
    let fc = h.cfg.jailer_base.join("firecracker");
    std::fs::create_dir_all(fc.join("vm")).unwrap();
    let canary = d.path().join("canary");
    let before = build_canary(&canary);
    std::os::unix::fs::symlink(&canary, fc.join("swap")).unwrap();
    let (a, b) = (fc.join("vm"), fc.join("swap"));
    let chroot = fc.join("vm/root");
    let mut n = 0;
    let (ok, refused, failed, swaps) = race(
        &a,
        &b,
        || build_root(&real_dir_of(&a, &b), &mut n),
        || h.dispatch(m::CLEANUP_JAILER_CHROOT, json!({ "path": s(&chroot) })),
    );
    println!("jail dir race: ok={ok} refused={refused} failed={failed} swaps={swaps}");
    assert_canary(&canary, &before);
    assert!(ok > 0 && swaps > 0, "the race never let a call through");
}

#[test]
fn root_race_chroot_leaf_swapped_for_symlink_during_cleanup() {
    if !root_only() {
        return;
    }
    private_mount_ns();
    let d = tmp();
    let _u = Unmounter(d.path().to_path_buf());
    // The whole fixture on a tmpfs of this namespace: rounds cost no disk I/O.
    tmpfs(d.path());
    let h = helper(d.path());
    let vm = h.cfg.jailer_base.join("firecracker/vm");
    std::fs::create_dir_all(&vm).unwrap();
    let canary = d.path().join("canary");
    let before = build_canary(&canary);
    std::os::unix::fs::symlink(canary.join("root"), vm.join("swap")).unwrap();
    let (a, b) = (vm.join("root"), vm.join("swap"));
    let mut n = 0;
    let (ok, refused, failed, swaps) = race(
        &a,
        &b,
        || {
            // Put the real root back under its name, then rebuild it.
            if std::fs::symlink_metadata(&a)
                .map(|m| m.is_symlink())
                .unwrap_or(false)
            {
                rustix::fs::renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).unwrap();
            }
            if std::fs::symlink_metadata(&b).is_err() {
                std::os::unix::fs::symlink(canary.join("root"), &b).unwrap();
            }
            build_root(&vm, &mut n);
        },
        || h.dispatch(m::CLEANUP_JAILER_CHROOT, json!({ "path": s(&a) })),
    );
    println!("chroot leaf race: ok={ok} refused={refused} failed={failed} swaps={swaps}");
    assert_canary(&canary, &before);
    assert!(ok > 0 && swaps > 0, "the race never let a call through");
}

#[test]
fn root_cleanup_unmounts_nested_mounts_deepest_first_and_spares_the_canary() {
    if !root_only() {
        return;
    }
    private_mount_ns();
    let d = tmp();
    let _u = Unmounter(d.path().to_path_buf());
    // The whole fixture on a tmpfs of this namespace: rounds cost no disk I/O.
    tmpfs(d.path());
    let h = helper(d.path());
    let canary = d.path().join("canary");
    std::fs::create_dir_all(canary.join("sub")).unwrap();
    std::fs::write(canary.join("sub/keep"), b"canary").unwrap();
    std::fs::write(d.path().join("canary-file"), b"canary-file").unwrap();
    let chroot = h.cfg.jailer_base.join("firecracker/vm1/root");
    std::fs::create_dir_all(chroot.join("dev")).unwrap();
    tmpfs(&chroot.join("dev"));
    std::fs::create_dir_all(chroot.join("dev/net")).unwrap();
    tmpfs(&chroot.join("dev/net"));
    std::fs::write(chroot.join("dev/net/tun"), b"").unwrap();
    std::fs::create_dir_all(chroot.join("a/b")).unwrap();
    bind(&canary, &chroot.join("a/b"));
    std::fs::write(chroot.join("disk"), b"").unwrap();
    bind(&d.path().join("canary-file"), &chroot.join("disk"));
    assert_eq!(mounts_below(&chroot).len(), 4);

    let report =
        banger_sys::mounts::cleanup_chroot(&h.cfg.jailer_base, &chroot, Path::new(MOUNTINFO))
            .unwrap();
    let depth = |p: &PathBuf| p.components().count();
    assert!(
        report
            .unmounted
            .windows(2)
            .all(|w| depth(&w[0]) >= depth(&w[1])),
        "{:?}",
        report.unmounted
    );
    let pos = |r: &str| {
        report
            .unmounted
            .iter()
            .position(|p| *p == chroot.join(r))
            .unwrap()
    };
    assert!(pos("dev/net") < pos("dev"));
    let mut got = report.unmounted.clone();
    got.sort();
    let mut want: Vec<PathBuf> = ["a/b", "dev", "dev/net", "disk"]
        .iter()
        .map(|r| chroot.join(r))
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert!(!chroot.exists());
    assert!(mounts_below(&h.cfg.jailer_base).is_empty());
    assert_eq!(std::fs::read(canary.join("sub/keep")).unwrap(), b"canary");
    assert_eq!(
        std::fs::read(d.path().join("canary-file")).unwrap(),
        b"canary-file"
    );

    // The same through the method.
    std::fs::create_dir_all(chroot.join("a/b")).unwrap();
    bind(&canary, &chroot.join("a/b"));
    h.dispatch(m::CLEANUP_JAILER_CHROOT, json!({ "path": s(&chroot) }))
        .unwrap();
    assert!(!chroot.exists());
    assert_eq!(std::fs::read(canary.join("sub/keep")).unwrap(), b"canary");
}

#[test]
fn root_tree_removal_never_crosses_a_mount() {
    if !root_only() {
        return;
    }
    private_mount_ns();
    let d = tmp();
    let _u = Unmounter(d.path().to_path_buf());
    // The whole fixture on a tmpfs of this namespace: rounds cost no disk I/O.
    tmpfs(d.path());
    let base = d.path().join("jail");
    std::fs::create_dir_all(base.join("vm/root/m")).unwrap();
    tmpfs(&base.join("vm/root/m"));
    std::fs::write(base.join("vm/root/m/keep"), b"mounted").unwrap();
    let r = banger_sys::fsops::remove_tree_beneath(&base, &base.join("vm"));
    assert!(r.is_err(), "{r:?}");
    assert_eq!(
        std::fs::read(base.join("vm/root/m/keep")).unwrap(),
        b"mounted"
    );
    // And a symlink inside the tree is removed, never followed.
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"x").unwrap();
    std::fs::create_dir_all(base.join("vm2/root")).unwrap();
    std::os::unix::fs::symlink(&outside, base.join("vm2/root/link")).unwrap();
    banger_sys::fsops::remove_tree_beneath(&base, &base.join("vm2")).unwrap();
    assert!(!base.join("vm2").exists());
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"x");
}
