//! `bangerd`: banger's owner daemon.

use anyhow::{bail, Context, Result};
use banger_core::paths::{self, Mode, PathEnv};
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_proto::install::{InstallConfig, SYSTEM_CONFIG_PATH};
use banger_sys::runner::HostRunner;
use bangerd::daemon::Daemon;
use bangerd::http;
use bangerd::privops::{DirectOps, HelperClient, PrivOps, SudoOps};
use bangerd::store::Store;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

/// banger's owner daemon: images, VMs, network, DNS and the HTTP API on
/// `<runtime_dir>/bangerd.sock` (mode 0600; only root and the owner may talk).
///
/// In the system install it runs as the owner user under systemd and asks
/// the root helper for privileged steps. With `--dev` it runs without the
/// helper: privileged steps go through `sudo -n` (or run directly when
/// already root) — that bypasses the helper's hardening; not for shared hosts.
#[derive(Parser, Debug)]
#[command(name = "bangerd", version = banger_proto::VERSION)]
struct Cli {
    /// Install metadata (system install).
    #[arg(long, env = "BANGER_CONFIG", default_value = SYSTEM_CONFIG_PATH)]
    config: PathBuf,
    /// Development mode: no helper, no install metadata needed.
    #[arg(long)]
    dev: bool,
    /// Override the StateDir.
    #[arg(long, env = "BANGER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Override the RuntimeDir (where bangerd.sock is created).
    #[arg(long, env = "BANGER_RUNTIME_DIR")]
    runtime_dir: Option<PathBuf>,
    /// The helper binary `sudo -n` runs in development mode
    /// (default: `banger-helper` next to this binary).
    #[arg(long, env = "BANGER_HELPER_BIN")]
    helper_bin: Option<PathBuf>,
    /// How long a start waits for the guest's SSH, in seconds (default
    /// 300; slow or heavily shared TCG hosts need more).
    #[arg(long, env = "BANGER_READY_TIMEOUT", value_name = "SECS")]
    ready_timeout: Option<u64>,
}

fn main() {
    // First thing: every file this process and its children create is private.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    if let Err(e) = run(Cli::parse()) {
        eprintln!("bangerd: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    banger_sys::service::init_logging();
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let mut env = PathEnv::from_process(uid);
    env.banger_state_dir = cli.state_dir.clone().or(env.banger_state_dir);
    env.banger_runtime_dir = cli.runtime_dir.clone().or(env.banger_runtime_dir);

    let (mode, install) = if cli.dev {
        (Mode::Dev, None)
    } else {
        let text = std::fs::read_to_string(&cli.config).with_context(|| {
            format!(
                "reading install metadata {} (run `banger system install`, or start with --dev)",
                cli.config.display()
            )
        })?;
        let cfg = InstallConfig::parse(&text)
            .with_context(|| format!("parsing {}", cli.config.display()))?;
        (Mode::System, Some(cfg))
    };
    let paths = paths::resolve(install.as_ref(), &env)?;
    let mut cfg = match install {
        Some(cfg) => cfg,
        None => {
            let home = env.home.clone().unwrap_or_else(|| "/".into());
            InstallConfig::for_owner(uid, gid, home)
        }
    };
    cfg.state_dir = paths.state_dir.clone();
    cfg.runtime_dir = paths.runtime_dir.clone();
    if mode == Mode::System && uid != cfg.owner_uid && uid != 0 {
        bail!(
            "bangerd runs as uid {uid} but install metadata names owner uid {}",
            cfg.owner_uid
        );
    }

    let privops: Arc<dyn PrivOps> = match mode {
        Mode::System => Arc::new(HelperClient::new(paths.helper_socket())),
        Mode::Dev if uid == 0 => Arc::new(DirectOps::new(Helper {
            cfg: cfg.clone(),
            host: Host::real(),
        })),
        Mode::Dev => {
            let dev_cfg = paths.state_dir.join("dev-install.toml");
            std::fs::create_dir_all(&paths.state_dir)
                .with_context(|| format!("creating {}", paths.state_dir.display()))?;
            std::fs::write(&dev_cfg, cfg.render())
                .with_context(|| format!("writing {}", dev_cfg.display()))?;
            let helper_bin = match cli.helper_bin {
                Some(p) => p,
                None => std::env::current_exe()
                    .context("locating bangerd")?
                    .with_file_name("banger-helper"),
            };
            Arc::new(SudoOps::new(Arc::new(HostRunner), helper_bin, dev_cfg))
        }
    };

    let mut registry = bangerd::vmm::registry::Registry::default();
    if let Some(secs) = cli.ready_timeout {
        registry.ready_timeout = std::time::Duration::from_secs(secs);
    }
    let store = Store::open(&paths.database())?;
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let _dns = bangerd::network::start(rt.handle(), &cfg, privops.as_ref(), &paths.database())?;
    rt.block_on(async move {
        let socket = paths.daemon_socket();
        let listener = http::bind_socket(&socket, cfg.owner_uid, cfg.owner_gid)?;
        tracing::info!(
            socket = %socket.display(),
            mode = ?mode,
            privileges = privops.kind(),
            state_dir = %paths.state_dir.display(),
            "bangerd listening"
        );
        let d = Arc::new(Daemon {
            cfg,
            paths,
            mode,
            store,
            privops,
            host_paths: Default::default(),
            vmms: registry,
        });
        bangerd::vms::reconcile::run(&d, std::path::Path::new("/proc")).await;
        bangerd::vms::sweep::at_start(&d);
        bangerd::vmdisk::reconcile::at_start(&d);
        bangerd::vms::ports::restore(&d);
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        http::serve(d, listener, banger_sys::service::shutdown_signal()).await?;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        tracing::info!("bangerd stopped");
        Ok(())
    })
}
