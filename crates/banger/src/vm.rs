//! `banger vm …`: create, list, inspect and control VMs, and `vm ssh`.

use crate::client::{body, Client};
use crate::{copy, detail, exec, guest, or_dash, out, output, ports, print};
use anyhow::Result;
use banger_proto::api::{Logs, PhaseTiming, Vm, VmCreate};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub(crate) struct Name {
    /// VM name (or id).
    name: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum VmCmd {
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

/// `--disk-size`: `8G`, `512M`, … (checked here, before anything is made).
fn disk_size(s: &str) -> Result<u64, String> {
    let n = banger_core::size::parse(s).map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("a disk size must be more than 0".into());
    }
    Ok(n)
}

/// Run one `banger vm` subcommand.
pub(crate) async fn run(client: &Client, j: bool, cmd: VmCmd) -> Result<()> {
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
                        crate::closed_pipe();
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
    let v = client.call_with_progress(method, &path, body).await?;
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

#[cfg(test)]
mod vmm_flag_tests {
    use super::*;
    use crate::{Cli, Cmd};
    use banger_proto::api::VmmChoice;
    use clap::Parser;

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
