//! `banger`: the command-line client of bangerd.

mod client;
mod copy;
mod exec;
mod guest;
mod manpages;
mod output;
mod ports;
mod system;

use anyhow::{Context, Result};
use banger_core::paths::{self, PathEnv};
use banger_proto::api::{
    Doctor, Image, ImageBuild, ImageImport, ImagePull, Logs, PhaseTiming, VersionInfo, Vm, VmCreate,
};
use banger_proto::install::{InstallConfig, SYSTEM_CONFIG_PATH};
use clap::{Args, CommandFactory, Parser, Subcommand};
use client::body;
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
    Vm(VmCmd),
    /// Import, build, pull, list and remove images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Install, inspect, restart or remove the system services (root).
    #[command(subcommand)]
    System(SystemCmd),
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

#[derive(Args, Debug)]
struct Name {
    /// VM name (or id).
    name: String,
}

#[derive(Subcommand, Debug)]
enum VmCmd {
    /// Create and start a VM from an image.
    Create {
        /// Name of the new VM (DNS label: a-z, 0-9, '-').
        name: String,
        /// Image to boot (default: `default_image` from
        /// ~/.config/banger/config.toml, "debian-bookworm", built once
        /// when it does not exist yet).
        #[arg(long)]
        image: Option<String>,
        /// Virtual CPUs.
        #[arg(long, default_value_t = 2, value_parser = banger_core::limits::parse_vcpus)]
        vcpus: u8,
        /// Memory in MiB.
        #[arg(long, default_value_t = 1024, value_parser = banger_core::limits::parse_memory_mib)]
        memory: u32,
        /// Only create it (disk, address, customisation); start it later.
        #[arg(long)]
        no_start: bool,
        /// Forward 127.0.0.1:HOSTPORT to the VM's GUESTPORT (repeatable).
        #[arg(short = 'p', long = "port", value_name = "HOSTPORT:GUESTPORT")]
        ports: Vec<String>,
        /// Its VMM: auto (the host decides, as `banger doctor` shows),
        /// firecracker or qemu (forced). Default: the daemon config's `vmm`.
        #[arg(long)]
        vmm: Option<banger_proto::api::VmmChoice>,
        /// Root disk size (e.g. 8G, 512M; binary units): the image's disk
        /// and its filesystem grown before first boot; never smaller than
        /// the image. Default: `disk_size` from
        /// ~/.config/banger/config.toml, else the image's size.
        #[arg(long, value_name = "SIZE", value_parser = disk_size)]
        disk_size: Option<u64>,
        /// Print how long each phase took (validate, ip, disk_clone, …,
        /// boot_to_ssh); `--json` carries them as `timings` either way.
        #[arg(long)]
        timings: bool,
    },
    /// List VMs.
    Ls,
    /// Show one VM in detail.
    Inspect(Name),
    /// Start a stopped VM.
    Start(Name),
    /// Stop a VM: graceful shutdown, then forced after a timeout.
    Stop {
        name: String,
        /// Skip the graceful shutdown.
        #[arg(long)]
        force: bool,
    },
    /// Stop then start a VM.
    Restart(Name),
    /// Delete a VM with its disk, tap and address (a running VM needs --force).
    Rm {
        name: String,
        /// Stop it first if it runs.
        #[arg(long)]
        force: bool,
    },
    /// Open an SSH session to a VM (pinned host key, no trust-on-first-use).
    Ssh {
        name: String,
        /// Command to run instead of a login shell.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Run one command in a VM (no terminal): stdin passed through, stdout
    /// and stderr kept apart; banger exits with the command's status (124
    /// when --timeout runs out, 255 when SSH itself fails).
    Exec {
        name: String,
        /// Give up (and exit 124) after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// The command and its arguments (after `--` when they start with `-`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Copy files or directories between the host and a VM (either side
    /// `NAME:/path`; modes kept; into DST when it is a directory).
    Cp {
        /// `PATH` on the host or `NAME:/path` in a VM.
        src: String,
        /// `PATH` on the host or `NAME:/path` in a VM.
        dst: String,
    },
    /// Forward host loopback ports to a VM's ports.
    #[command(subcommand)]
    Port(ports::PortCmd),
    /// Print the VM's serial console log.
    Logs {
        name: String,
        /// Keep printing what the console writes (until interrupted).
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Import an image from an ext4 rootfs and an uncompressed kernel.
    Import {
        /// Name of the new image.
        name: String,
        /// ext4 root filesystem image (copied into the StateDir; the guest's
        /// `/`).
        #[arg(long)]
        rootfs: PathBuf,
        /// Uncompressed kernel (vmlinux) the VMs of this image boot.
        #[arg(long)]
        kernel: PathBuf,
        /// Initramfs to boot with the kernel (needed when the kernel's
        /// virtio and ext4 drivers are modules).
        #[arg(long)]
        initrd: Option<PathBuf>,
    },
    /// Build an image from an OCI layout / docker-save tarball, or Debian.
    Build {
        name: String,
        /// OCI image layout directory or `docker save` tarball.
        #[arg(long, conflicts_with = "debian")]
        from: Option<PathBuf>,
        /// Debian suite to debootstrap (e.g. bookworm).
        #[arg(long)]
        debian: Option<String>,
        /// Kernel to pair with the rootfs (vmlinux, or a compressed vmlinuz
        /// that is extracted). Default: the newest Debian kernel installed
        /// on the host, with a generated virtio initramfs.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Free space to add to the ext4 beyond its content, MiB.
        #[arg(long)]
        headroom: Option<u64>,
        /// Debian mirror for --debian (default http://deb.debian.org/debian).
        #[arg(long, requires = "debian")]
        mirror: Option<String>,
    },
    /// Pull an image from an OCI registry.
    Pull {
        /// Reference, e.g. `localhost:5000/debian:bookworm`.
        reference: String,
        /// Local name (default: derived from the reference).
        #[arg(long)]
        name: Option<String>,
        /// Kernel to pair with the rootfs (default: the host's, as for build).
        #[arg(long)]
        kernel: Option<PathBuf>,
    },
    /// List images.
    Ls,
    /// Show one image in detail.
    Inspect { name: String },
    /// Remove an image (refused while a VM uses it).
    Rm { name: String },
}

#[derive(Subcommand, Debug)]
enum SystemCmd {
    /// Install the two services (owner bangerd, root helper) and metadata.
    Install {
        /// The user who will own banger (default: $SUDO_USER).
        #[arg(long)]
        owner: Option<String>,
        /// Only lay down files; do not enable or start units (images,
        /// containers, hosts where systemd is not PID 1).
        #[arg(long)]
        no_start: bool,
        /// Firecracker binary to record (validated: root-owned, not
        /// group/world-writable, no symlink in its path).
        #[arg(long)]
        firecracker: Option<PathBuf>,
        /// Jailer binary to record (validated the same way).
        #[arg(long)]
        jailer: Option<PathBuf>,
    },
    /// Show both services, sockets, versions, owner, backend, disk driver.
    Status,
    /// Restart both services.
    Restart,
    /// Remove units, bridge, taps, firewall table, snapshots, routing.
    Uninstall {
        /// Also remove StateDir (images, VM disks, state).
        #[arg(long)]
        purge: bool,
    },
}

/// `--disk-size`: `8G`, `512M`, … (checked here, before anything is made).
fn disk_size(s: &str) -> Result<u64, String> {
    let n = banger_core::size::parse(s).map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("a disk size must be more than 0".into());
    }
    Ok(n)
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
fn closed_pipe() -> ! {
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
fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn detail(v: &Value) -> String {
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
        Cmd::Vm(cmd) => vm(&client, j, cmd).await,
        Cmd::Image(cmd) => image(&client, j, cmd).await,
        Cmd::System(cmd) => match cmd {
            SystemCmd::Install {
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
            SystemCmd::Status => system::status(j).await,
            SystemCmd::Restart => system::restart(),
            SystemCmd::Uninstall { purge } => {
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

async fn vm(client: &Client, j: bool, cmd: VmCmd) -> Result<()> {
    let (method, path, body) = match cmd {
        VmCmd::Ls => {
            let a = client.get::<Vec<Vm>>("/v1/vms").await?;
            print(j, &a.raw, || {
                let rows: Vec<Vec<String>> = a
                    .body
                    .iter()
                    .map(|vm| {
                        vec![
                            vm.name.clone(),
                            vm.state.clone(),
                            or_dash(vm.ip.as_ref()),
                            vm.image.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "STATE", "IP", "IMAGE"], &rows)
            });
            return Ok(());
        }
        VmCmd::Ssh { name, command } => return ssh(client, &name, &command).await,
        VmCmd::Cp { src, dst } => return copy::copy(client, &src, &dst).await,
        VmCmd::Exec {
            name,
            timeout,
            command,
        } => {
            let code = exec::exec(client, &name, &command, j, timeout).await?;
            if code != 0 {
                std::process::exit(code);
            }
            return Ok(());
        }
        VmCmd::Port(cmd) => return ports::run(client, j, cmd).await,
        VmCmd::Create {
            name,
            image,
            vcpus,
            memory,
            no_start,
            ports: specs,
            vmm,
            disk_size,
            timings,
        } => {
            // Every -p checked before anything is made.
            let specs = specs
                .iter()
                .map(|s| ports::parse(s))
                .collect::<Result<Vec<_>>>()?;
            let mut view = output::ProgressView::new();
            let mut phases = Vec::new();
            let v = client
                .call_stream(
                    "POST",
                    "/v1/vms",
                    body(&VmCreate {
                        name: name.clone(),
                        image,
                        vcpus: Some(vcpus),
                        memory_mib: Some(memory),
                        start: Some(!no_start),
                        vmm,
                        disk_size_bytes: disk_size,
                    }),
                    &mut |e| match e.as_phase() {
                        Some((p, took)) => phases.push(PhaseTiming::new(p, took)),
                        None => view.event(e),
                    },
                )
                .await;
            view.finish();
            let mut v = v?;
            ports::add_all(client, &name, &specs).await?;
            if j {
                if let Some(o) = v.as_object_mut().filter(|_| !phases.is_empty()) {
                    o.insert("timings".into(), serde_json::to_value(&phases)?);
                }
            }
            print(j, &v, || detail(&v));
            if timings && !j {
                out(&output::timings_table(&phases));
            }
            return Ok(());
        }
        VmCmd::Inspect(n) => {
            let v = client
                .call("GET", &format!("/v1/vms/{}", n.name), None)
                .await?;
            print(j, &v, || detail(&v));
            return Ok(());
        }
        VmCmd::Start(n) => ("POST", format!("/v1/vms/{}/start", n.name), None),
        VmCmd::Stop { name, force } => ("POST", format!("/v1/vms/{name}/stop?force={force}"), None),
        VmCmd::Restart(n) => ("POST", format!("/v1/vms/{}/restart", n.name), None),
        VmCmd::Rm { name, force } => ("DELETE", format!("/v1/vms/{name}?force={force}"), None),
        VmCmd::Logs { name, follow } => {
            let a = client.get::<Logs>(&format!("/v1/vms/{name}/logs")).await?;
            if !follow || j {
                print(j, &a.raw, || a.body.text.clone());
                return Ok(());
            }
            use std::io::Write;
            let mut logs = a.body;
            loop {
                let mut o = std::io::stdout().lock();
                if let Err(e) = o.write_all(logs.text.as_bytes()).and_then(|()| o.flush()) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        closed_pipe();
                    }
                    return Err(e.into());
                }
                drop(o);
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let offset = logs.offset;
                logs = client
                    .get::<Logs>(&format!("/v1/vms/{name}/logs?offset={offset}"))
                    .await?
                    .body;
            }
        }
    };
    let mut view = output::ProgressView::new();
    let v = client
        .call_stream(method, &path, body, &mut |e| view.event(e))
        .await;
    view.finish();
    let v = v?;
    if method == "DELETE" {
        // The VM is gone: one line, not the inspect of what was.
        print(j, &v, || {
            format!("removed VM {}", output::field(&v, "name"))
        });
    } else {
        print(j, &v, || detail(&v));
    }
    Ok(())
}

/// `ssh` into the VM with banger's pinned known_hosts and strict checking
/// (the process is replaced by ssh; its exit status is ssh's).
async fn ssh(client: &Client, name: &str, command: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let (ip, state_dir) = guest::target(client, name).await?;
    let err = guest::ssh(&state_dir, ip).args(command).exec();
    Err(anyhow::Error::new(err).context("running ssh"))
}

async fn image(client: &Client, j: bool, cmd: ImageCmd) -> Result<()> {
    let abs = |p: PathBuf| -> Result<String> { Ok(std::path::absolute(&p)?.display().to_string()) };
    let (method, path, body) = match cmd {
        ImageCmd::Ls => {
            let a = client.get::<Vec<Image>>("/v1/images").await?;
            print(j, &a.raw, || {
                let rows: Vec<Vec<String>> = a
                    .body
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            output::size(i.size_bytes),
                            i.source.clone(),
                            i.id.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "SIZE", "SOURCE", "ID"], &rows)
            });
            return Ok(());
        }
        ImageCmd::Import {
            name,
            rootfs,
            kernel,
            initrd,
        } => (
            "POST",
            "/v1/images".to_string(),
            body(&ImageImport {
                name,
                rootfs: abs(rootfs)?,
                kernel: abs(kernel)?,
                initrd: initrd.map(abs).transpose()?,
            }),
        ),
        ImageCmd::Build {
            name,
            from,
            debian,
            kernel,
            headroom,
            mirror,
        } => (
            "POST",
            "/v1/images/build".to_string(),
            body(&ImageBuild {
                name,
                from_oci: from.map(abs).transpose()?,
                debian,
                kernel: kernel.map(abs).transpose()?,
                headroom_mib: headroom,
                mirror,
            }),
        ),
        ImageCmd::Pull {
            reference,
            name,
            kernel,
        } => (
            "POST",
            "/v1/images/pull".to_string(),
            body(&ImagePull {
                reference,
                name,
                kernel: kernel.map(abs).transpose()?,
            }),
        ),
        ImageCmd::Inspect { name } => ("GET", format!("/v1/images/{name}"), None),
        ImageCmd::Rm { name } => ("DELETE", format!("/v1/images/{name}"), None),
    };
    let mut view = output::ProgressView::new();
    let v = client
        .call_stream(method, &path, body, &mut |e| view.event(e))
        .await;
    view.finish();
    let v = v?;
    print(j, &v, || detail(&v));
    Ok(())
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

#[cfg(test)]
mod vmm_flag_tests {
    use super::*;
    use banger_proto::api::VmmChoice;

    fn create_vmm(args: &[&str]) -> Result<Option<VmmChoice>, clap::Error> {
        let mut argv = vec!["banger", "vm", "create", "web", "--image", "base"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.cmd {
            Cmd::Vm(VmCmd::Create { vmm, .. }) => Ok(vmm),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn vm_create_takes_a_vmm_choice() {
        assert_eq!(create_vmm(&[]).unwrap(), None);
        assert_eq!(
            create_vmm(&["--vmm", "auto"]).unwrap(),
            Some(VmmChoice::Auto)
        );
        assert_eq!(
            create_vmm(&["--vmm", "firecracker"]).unwrap(),
            Some(VmmChoice::Firecracker)
        );
        assert_eq!(
            create_vmm(&["--vmm", "qemu"]).unwrap(),
            Some(VmmChoice::Qemu)
        );
        let e = create_vmm(&["--vmm", "kvm"]).unwrap_err().to_string();
        assert!(e.contains("unknown VMM \"kvm\""), "{e}");
    }

    fn create_disk(args: &[&str]) -> Result<Option<u64>, clap::Error> {
        let mut argv = vec!["banger", "vm", "create", "web"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.cmd {
            Cmd::Vm(VmCmd::Create { disk_size, .. }) => Ok(disk_size),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn vm_create_takes_a_disk_size_with_units() {
        assert_eq!(create_disk(&[]).unwrap(), None);
        assert_eq!(create_disk(&["--disk-size", "8G"]).unwrap(), Some(8 << 30));
        assert_eq!(
            create_disk(&["--disk-size", "512M"]).unwrap(),
            Some(512 << 20)
        );
        for bad in ["8 gigs", "1.5G", "-2G", "G"] {
            let arg = format!("--disk-size={bad}");
            let e = create_disk(&[&arg]).unwrap_err().to_string();
            assert!(
                e.contains("invalid size") && e.contains("e.g. 8G or 512M"),
                "{bad}: {e}"
            );
        }
        let e = create_disk(&["--disk-size", "0"]).unwrap_err().to_string();
        assert!(e.contains("more than 0"), "{e}");
    }
}
