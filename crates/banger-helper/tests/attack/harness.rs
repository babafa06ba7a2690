//! Shared by the file-attack tests: a helper over temporary
//! StateDir/RuntimeDir/jailer base with the real host code, calls on a
//! thread with a timeout, refusal and snapshot helpers, a loop fake that
//! runs the attacker's move.

use banger_helper::error::RpcError;
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_proto::install::InstallConfig;
use banger_sys::loopdev::{LoopError, LoopInfo, LoopOps};
use banger_sys::runner::{Cmd, HostRunner, Runner};
use serde_json::{json, Value};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const OWNER: (u32, u32) = (4242, 4243);

pub fn root_only() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    println!("skipped: needs root");
    false
}

pub struct T {
    pub _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub helper: Arc<Helper>,
}

pub fn setup(loops: Arc<dyn LoopOps>) -> T {
    let tmp = tempfile::Builder::new()
        .prefix("bgtest-fa-")
        .tempdir()
        .unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let mut cfg = InstallConfig::for_owner(OWNER.0, OWNER.1, root.join("home"));
    cfg.state_dir = root.join("state");
    cfg.runtime_dir = root.join("run");
    cfg.jailer_base = root.join("jail");
    cfg.firecracker_bin = "/usr/bin/true".into();
    for d in [&cfg.state_dir, &cfg.runtime_dir, &cfg.jailer_base] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::create_dir_all(cfg.state_dir.join("vms/a")).unwrap();
    std::fs::create_dir_all(cfg.state_dir.join("images")).unwrap();
    let state = cfg.state_dir.clone();
    let helper = Arc::new(Helper {
        cfg,
        host: Host {
            loops,
            ..Host::real()
        },
    });
    T {
        _tmp: tmp,
        root,
        state,
        helper,
    }
}

pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Run one call on its own thread: a call that blocks (a FIFO opened
/// without O_NONBLOCK) fails the test instead of hanging it.
pub fn call(t: &T, method: &'static str, params: Value) -> Result<Value, RpcError> {
    let h = t.helper.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(h.dispatch(method, params));
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{method} did not answer within 30 s: a helper thread is stuck"))
}

/// The refusal text (`-32602`), or a panic naming what came instead.
pub fn refused(r: Result<Value, RpcError>) -> String {
    match r {
        Err(e @ RpcError::Gate { .. }) => {
            assert_eq!(e.to_object().code, -32602);
            e.to_string()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Owner, mode, link count, inode and content of a file.
pub fn snap(p: &Path) -> (u32, u32, u64, u64, Vec<u8>) {
    let md = std::fs::symlink_metadata(p).unwrap();
    let content = if md.is_file() {
        std::fs::read(p).unwrap()
    } else {
        Vec::new()
    };
    (md.uid(), md.mode(), md.nlink(), md.ino(), content)
}

pub fn mkfs(path: &Path, owner: Option<(u32, u32)>) {
    File::create(path).unwrap().set_len(16 << 20).unwrap();
    HostRunner
        .run(&Cmd::new("mkfs.ext4").args(["-q", "-F"]).arg(path))
        .unwrap();
    if let Some((u, g)) = owner {
        std::os::unix::fs::chown(path, Some(u), Some(g)).unwrap();
    }
}

/// Loops whose first attach runs an attacker's move and then fails, so
/// the snapshot's undo runs right after the swap.
pub struct SwapThenFail {
    swap: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl LoopOps for SwapThenFail {
    fn attach(&self, _f: &File, backing: &Path, _ro: bool) -> Result<PathBuf, LoopError> {
        if let Some(swap) = self.swap.lock().unwrap().take() {
            swap();
        }
        Err(LoopError::Attach(
            "/dev/loop-bgtest".into(),
            backing.into(),
            std::io::Error::from_raw_os_error(libc::EBUSY),
        ))
    }
    fn detach(&self, _d: &Path) -> Result<(), LoopError> {
        Ok(())
    }
    fn backing_file(&self, _d: &Path) -> Result<Option<PathBuf>, LoopError> {
        Ok(None)
    }
    fn list(&self) -> Result<Vec<LoopInfo>, LoopError> {
        Ok(Vec::new())
    }
}

impl SwapThenFail {
    pub fn arm(&self, swap: impl FnOnce() + Send + 'static) {
        *self.swap.lock().unwrap() = Some(Box::new(swap));
    }
}

/// A helper whose loops fail their first attach after running the armed swap.
pub fn setup_swapping() -> (T, Arc<SwapThenFail>) {
    let st = Arc::new(SwapThenFail {
        swap: Mutex::new(None),
    });
    (setup(st.clone()), st)
}

pub fn base_image(t: &T) -> PathBuf {
    let b = t.state.join("images/base.ext4");
    std::fs::write(&b, vec![1u8; 1 << 20]).unwrap();
    b
}

pub fn snapshot_params(base: &Path, cow: &Path, size: u64) -> Value {
    json!({"name": "fc-rootfs-bgtest", "base_image": s(base), "cow_file": s(cow), "cow_size_bytes": size})
}
