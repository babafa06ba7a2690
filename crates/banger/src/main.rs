//! `banger`: the command-line client of bangerd.

mod client;
mod copy;
mod exec;
mod guest;
mod image;
mod manpages;
mod output;
mod ports;
mod system;
mod vm;

use anyhow::{Context, Result};
use banger_core::paths::{self, PathEnv};
use banger_proto::api::{Doctor, VersionInfo};
use banger_proto::install::{InstallConfig, SYSTEM_CONFIG_PATH};
use clap::{CommandFactory, Parser, Subcommand};
use client::{CallError, Client};
use serde_json::Value;
use std::path::PathBuf;

/// banger: fresh Firecracker microVMs with a copy-on-write disk, a private
/// network with NAT and a DNS name, and SSH — in one command.
///
/// The CLI talks to `bangerd` over its Unix socket. Exit status: 0 on
/// success, 1 on failure (one line on stderr), 2 for what is not
/// implemented yet.
#[derive(Parser, Debug)]
#[command(name = "banger", version = banger_proto::VERSION, propagate_version = true)]
struct Cli {
    /// The daemon socket (default: from /etc/banger/install.toml, else the
    /// development RuntimeDir).
    #[arg(long, global = true, env = "BANGER_SOCKET")]
    socket: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create, list and control VMs.
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// Import, build, pull, list and remove images.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Install, inspect, restart or remove the system services (root).
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Say what this host can do: VMM backend, disk driver, DNS routing,
    /// privileges — and why.
    Doctor,
    /// Show the CLI, daemon and helper versions.
    Version,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (banger.1 and one per subcommand) into DIR.
    ///
    /// `banger system install` installs them itself; this is for packagers.
    #[command(hide = true)]
    Man {
        /// Directory to write `*.1` files into (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
}

fn default_socket() -> PathBuf {
    let uid = rustix::process::getuid().as_raw();
    let env = PathEnv::from_process(uid);
    let install = std::fs::read_to_string(SYSTEM_CONFIG_PATH)
        .ok()
        .and_then(|t| InstallConfig::parse(&t).ok());
    match paths::resolve(install.as_ref(), &env) {
        Ok(p) => p.daemon_socket(),
        Err(_) => PathBuf::from("/run/banger").join(banger_proto::DAEMON_SOCKET),
    }
}

/// The status a Unix tool killed by SIGPIPE reports (128 + 13).
const CLOSED_PIPE: i32 = 141;

/// Stdout's reader went away (`banger … | head`): stop quietly, as Unix
/// tools do, with the status a SIGPIPE death reports.
pub(crate) fn closed_pipe() -> ! {
    std::process::exit(CLOSED_PIPE)
}

/// `println!` panics on a closed stdout ("failed printing to stdout:
/// Broken pipe"); that one panic becomes a quiet exit, others keep the
/// default report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            closed_pipe();
        }
        default(info);
    }));
}

/// Write `text` and a newline to stdout; a closed pipe ends the process
/// quietly.
pub(crate) fn out(text: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{text}").and_then(|()| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            closed_pipe();
        }
        eprintln!("banger: writing to stdout: {e}");
        std::process::exit(1);
    }
}

fn main() {
    quiet_on_closed_stdout();
    let cli = Cli::try_parse().unwrap_or_else(|e| exit_on_bad_args(e));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => {}
        Err(e) => {
            // 501: the daemon does not implement it yet.
            let code = if e
                .downcast_ref::<CallError>()
                .is_some_and(|c| c.status == 501)
            {
                2
            } else {
                1
            };
            eprintln!("banger: {e:#}");
            std::process::exit(code);
        }
    }
}

/// A value clap refused is one line (`error: invalid value …: why`), not
/// clap's paragraph with its `--help` hint; every other case as clap has it.
fn exit_on_bad_args(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        let text = e.render().to_string();
        eprintln!("{}", text.lines().next().unwrap_or_default());
        std::process::exit(2);
    }
    e.exit()
}

pub(crate) fn print(json_mode: bool, v: &Value, text: impl FnOnce() -> String) {
    if json_mode {
        out(&serde_json::to_string_pretty(v).expect("JSON prints"));
    } else {
        out(&text());
    }
}

/// An optional field as display text (`-` when absent).
pub(crate) fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub(crate) fn detail(v: &Value) -> String {
    match v.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, _)| format!("{k}: {}", output::field(v, k)))
            .collect::<Vec<_>>()
            .join("\n"),
        None => v.to_string(),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let client = Client::new(cli.socket.clone().unwrap_or_else(default_socket));
    let j = cli.json;
    match cli.cmd {
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "banger", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, text) in manpages::render(Cli::command())? {
                let p = dir.join(name);
                std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            }
            Ok(())
        }
        Cmd::Version => version(&client, j).await,
        Cmd::Doctor => {
            let a = client.get::<Doctor>("/v1/doctor").await?;
            print(j, &a.raw, || {
                let rows: Vec<Vec<String>> = a
                    .body
                    .checks
                    .iter()
                    .map(|c| vec![c.status.clone(), c.name.clone(), c.detail.clone()])
                    .collect();
                output::table(&["STATUS", "CHECK", "DETAIL"], &rows)
            });
            Ok(())
        }
        Cmd::Vm(cmd) => vm::run(&client, j, cmd).await,
        Cmd::Image(cmd) => image::run(&client, j, cmd).await,
        Cmd::System(cmd) => match cmd {
            system::SystemCmd::Install {
                owner,
                no_start,
                firecracker,
                jailer,
            } => system::install(
                system::InstallOpts {
                    owner,
                    no_start,
                    firecracker,
                    jailer,
                    man_pages: manpages::render(Cli::command())?,
                },
                j,
            ),
            system::SystemCmd::Status => system::status(j).await,
            system::SystemCmd::Restart => system::restart(),
            system::SystemCmd::Uninstall { purge } => {
                let pages = manpages::render(Cli::command())?;
                let names: Vec<String> = pages.into_iter().map(|(n, _)| n).collect();
                system::uninstall(purge, &names, j)
            }
        },
    }
}

async fn version(client: &Client, j: bool) -> Result<()> {
    let daemon = client.get::<VersionInfo>("/v1/version").await;
    /// What `banger version --json` prints.
    #[derive(serde::Serialize)]
    struct Versions<'a> {
        cli: &'a str,
        /// The daemon's answer as it sent it; `null` when it did not answer.
        daemon: Option<&'a serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }
    let v = serde_json::to_value(Versions {
        cli: banger_proto::VERSION,
        daemon: daemon.as_ref().ok().map(|d| &d.raw),
        error: daemon.as_ref().err().map(|e| format!("{e:#}")),
    })?;
    print(j, &v, || {
        let mut s = format!("banger (cli)   {}", banger_proto::VERSION);
        if let Ok(a) = &daemon {
            let d = &a.body;
            s.push_str(&format!("\nbangerd        {}", d.daemon));
            let helper = match (&d.helper, &d.helper_error) {
                (Some(h), _) => format!("{h} (via {})", d.privileges),
                (_, Some(e)) => format!("unavailable: {e}"),
                _ => "-".into(),
            };
            s.push_str(&format!("\nbanger-helper  {helper}"));
        }
        s
    });
    daemon.map(|_| ())
}

#[cfg(test)]
mod help_tests {
    use super::*;

    /// Every option (`--x`) of `cmd` and its subcommands without help text.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if long != "help" && long != "version" && a.get_help().is_none() {
                out.push(format!("{path} --{long}"));
            }
        }
        for sub in cmd.get_subcommands() {
            undocumented(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_has_help_text() {
        use clap::CommandFactory;
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "banger", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:?}");
        // The walk sees what it must: image import's options, --disk-size.
        let mut all = Vec::new();
        let mut cmd = Cli::command();
        cmd = cmd.mut_subcommand("image", |c| {
            c.mut_subcommand("import", |i| i.mut_arg("initrd", |a| a.help(None::<&str>)))
        });
        undocumented(&cmd, "banger", &mut all);
        assert_eq!(all, ["banger image import --initrd"]);
    }
}
