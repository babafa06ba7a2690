//! `banger-helper`: the root helper service, and its one-shot form used by
//! development mode through `sudo -n`.

use anyhow::{bail, Context, Result};
use banger_helper::helper::Helper;
use banger_helper::host::Host;
use banger_helper::server::{self, Limits};
use banger_proto::install::{InstallConfig, SYSTEM_CONFIG_PATH};
use clap::{Parser, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// banger's root helper: performs only the privileged steps the owner
/// daemon asks for, each behind a validation gate.
///
/// Serves JSON-RPC 2.0 (newline framed, 1 MiB per message) on
/// `<runtime_dir>/helper.sock`. Only root and the owner recorded in
/// install.toml may connect. See docs/privileges.md for every method's gate.
#[derive(Parser, Debug)]
#[command(name = "banger-helper", version = banger_proto::VERSION)]
struct Cli {
    /// Install metadata to trust (root-owned).
    #[arg(long, env = "BANGER_CONFIG", default_value = SYSTEM_CONFIG_PATH)]
    config: PathBuf,
    /// Override the RuntimeDir (where helper.sock is created).
    #[arg(long, env = "BANGER_RUNTIME_DIR")]
    runtime_dir: Option<PathBuf>,
    /// Override the StateDir.
    #[arg(long, env = "BANGER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Where launch records are kept (root-owned, 0700).
    #[arg(long, env = "BANGER_LAUNCH_RECORDS", default_value = banger_helper::host::LAUNCH_RECORDS)]
    launch_records: PathBuf,
    /// Seconds one request may take before it is answered with a timeout.
    #[arg(long, default_value_t = 120)]
    request_timeout: u64,
    /// Requests executing at once across all connections.
    #[arg(long, default_value_t = 16)]
    max_concurrent: usize,
    /// Connections open at once; one more is closed as soon as it arrives.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Seconds a connection may wait between requests before it is closed.
    #[arg(long, default_value_t = 60)]
    idle_timeout: u64,
    /// Seconds a request line may take from its first byte to its newline.
    #[arg(long, default_value_t = 10)]
    read_timeout: u64,
    #[command(subcommand)]
    cmd: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve on the helper socket until SIGTERM/SIGINT (the default).
    Serve,
    /// Read one JSON-RPC request from stdin, answer on stdout, exit.
    /// Development mode runs this through `sudo -n`.
    Oneshot,
    /// Remove every host object banger made (taps, bridge, nft table,
    /// snapshots, loops, resolver routing); one line per object removed.
    /// `banger system uninstall` runs this.
    Sweep,
}

fn load_config(cli: &Cli) -> Result<InstallConfig> {
    let text = std::fs::read_to_string(&cli.config)
        .with_context(|| format!("reading {}", cli.config.display()))?;
    let mut cfg =
        InstallConfig::parse(&text).with_context(|| format!("parsing {}", cli.config.display()))?;
    if let Some(r) = &cli.runtime_dir {
        cfg.runtime_dir = r.clone();
    }
    if let Some(s) = &cli.state_dir {
        cfg.state_dir = s.clone();
    }
    Ok(cfg)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("banger-helper: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    banger_sys::service::init_logging();
    let cfg = load_config(&cli)?;
    let cmd = cli.cmd.as_ref().unwrap_or(&Command::Serve);
    // The launch policy follows the mode: the system helper (`serve`)
    // launches Firecracker only under the jailer; `oneshot` (development
    // mode through sudo) may also launch it unjailed.
    let host = match cmd {
        Command::Serve => Host::system(),
        Command::Oneshot | Command::Sweep => Host::real(),
    };
    let host = Host {
        launch_records: cli.launch_records.clone(),
        ..host
    };
    let helper = Arc::new(Helper { cfg, host });
    match cmd {
        Command::Oneshot => {
            let mut input = Vec::new();
            std::io::stdin()
                .take(banger_proto::jsonrpc::MAX_MESSAGE_BYTES as u64 + 2)
                .read_to_end(&mut input)
                .context("reading the request from stdin")?;
            let resp = server::oneshot(helper, &input);
            println!("{}", serde_json::to_string(&resp)?);
            Ok(())
        }
        Command::Sweep => {
            if !rustix::process::geteuid().is_root() {
                bail!("sweep must run as root");
            }
            let swept = banger_helper::sweep::sweep(
                &helper,
                std::path::Path::new("/sys"),
                std::path::Path::new("/"),
            );
            for r in &swept.removed {
                println!("{r}");
            }
            for e in &swept.errors {
                eprintln!("banger-helper: sweep: {e}");
            }
            if swept.errors.is_empty() {
                Ok(())
            } else {
                bail!("{} object(s) could not be removed", swept.errors.len())
            }
        }
        Command::Serve => {
            let limits = Limits {
                max_concurrent: cli.max_concurrent.max(1),
                request_timeout: Duration::from_secs(cli.request_timeout.max(1)),
                max_connections: cli.max_connections.max(1),
                idle_timeout: Duration::from_secs(cli.idle_timeout.max(1)),
                read_timeout: Duration::from_secs(cli.read_timeout.max(1)),
                ..Limits::default()
            };
            serve(helper, limits)
        }
    }
}

fn serve(helper: Arc<Helper>, limits: Limits) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("the helper must run as root (development mode needs no helper: bangerd --dev)");
    }
    let cfg = helper.cfg.clone();
    let adopted = banger_helper::launched::adopt(&helper);
    tracing::info!(adopted, "re-derived the processes this helper launched");
    std::fs::create_dir_all(&cfg.runtime_dir)
        .with_context(|| format!("creating {}", cfg.runtime_dir.display()))?;
    let path = cfg.helper_socket();
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async move {
        remove_stale_socket(&cfg.runtime_dir, &path)?;
        let listener = tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("binding {}", path.display()))?;
        // root:owner-group 0660 — the owner reaches it, nobody else. Through
        // an fd opened beneath RuntimeDir with no symlink (the owner's group
        // may write RuntimeDir: a path-based chown could follow a symlink
        // swapped in after the bind).
        banger_sys::fsops::chown_chmod_socket(
            &cfg.runtime_dir,
            &path,
            0,
            cfg.owner_gid,
            0o660,
            &helper.host.proc_root,
        )
        .with_context(|| format!("hand {} to the owner's group", path.display()))?;
        tracing::info!(socket = %path.display(), owner_uid = cfg.owner_uid, "helper listening");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        server::serve(
            listener,
            helper.clone(),
            limits,
            banger_sys::service::shutdown_signal(),
        )
        .await?;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let _ = banger_sys::fsops::unlink_socket_beneath(&cfg.runtime_dir, &path);
        tracing::info!("helper stopped");
        Ok(())
    })
}

/// Remove a socket left by a previous run (through RuntimeDir's fd, never
/// following a symlink); refuse to remove anything that is not a socket.
fn remove_stale_socket(runtime_dir: &std::path::Path, path: &std::path::Path) -> Result<()> {
    banger_sys::fsops::unlink_socket_beneath(runtime_dir, path)
        .with_context(|| format!("removing stale socket {}", path.display()))
}
