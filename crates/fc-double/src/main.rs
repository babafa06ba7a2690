//! `fc-double`: the Firecracker API double as a process with Firecracker's argv.
//!
//! `fc-double --api-sock PATH [--id ID]` serves until SIGTERM/SIGINT (exit 0)
//! or until the guest powers off after `SendCtrlAltDel` (exit 0), removing
//! its socket either way. Firecracker's other flags are accepted and ignored,
//! except `--config-file` and `--no-api`, which the double cannot honour.
//! `FC_DOUBLE_SYS_ROOT` overrides `/sys` for the tap existence check.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use banger_fc_double::{serve, DoubleConfig, Outcome, DEFAULT_ID};
use tokio::signal::unix::{signal, SignalKind};

/// Firecracker flags that take a value and that the double ignores.
const IGNORED_WITH_VALUE: &[&str] = &[
    "--log-path",
    "--level",
    "--module",
    "--seccomp-filter",
    "--seccomp-level",
    "--start-time-us",
    "--start-time-cpu-us",
    "--parent-cpu-time-us",
    "--http-api-max-payload-size",
    "--mmds-size-limit",
    "--metadata",
    "--metrics-path",
];

/// Firecracker switches the double ignores.
const IGNORED_SWITCHES: &[&str] = &[
    "--no-seccomp",
    "--boot-timer",
    "--show-level",
    "--show-log-origin",
    "--enable-pci",
];

#[derive(Debug, PartialEq)]
struct Args {
    api_sock: PathBuf,
    id: String,
    version: bool,
}

fn parse(argv: impl IntoIterator<Item = String>) -> Result<Args> {
    let mut args = Args {
        api_sock: PathBuf::from("/run/firecracker.socket"),
        id: DEFAULT_ID.to_string(),
        version: false,
    };
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = || -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--api-sock" => args.api_sock = PathBuf::from(value()?),
            "--id" => args.id = value()?,
            "--version" => args.version = true,
            "--config-file" | "--no-api" => {
                bail!("{flag} is not supported by fc-double: configure it through the API socket")
            }
            f if IGNORED_WITH_VALUE.contains(&f) => {
                value()?;
            }
            f if IGNORED_SWITCHES.contains(&f) => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse(std::env::args().skip(1))?;
    if args.version {
        println!("Firecracker v1.16.1 (fc-double)");
        return Ok(());
    }
    let listener = tokio::net::UnixListener::bind(&args.api_sock)
        .with_context(|| format!("binding the API socket {}", args.api_sock.display()))?;
    let mut cfg = DoubleConfig {
        instance_id: args.id,
        ..DoubleConfig::default()
    };
    if let Some(sys) = std::env::var_os("FC_DOUBLE_SYS_ROOT") {
        cfg.sys_root = PathBuf::from(sys);
    }
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let served = serve(listener, cfg, shutdown).await;
    let removed = std::fs::remove_file(&args.api_sock);
    let outcome = served.context("fc-double")?;
    removed.with_context(|| format!("removing the API socket {}", args.api_sock.display()))?;
    if outcome == Outcome::GuestPoweredOff {
        eprintln!("fc-double: guest powered off after Ctrl+Alt+Del");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn firecracker_argv_is_accepted() {
        let a = parse(argv(&[
            "--api-sock",
            "/run/x.sock",
            "--id=vm1",
            "--log-path",
            "/tmp/l",
            "--level",
            "Debug",
            "--no-seccomp",
            "--boot-timer",
            "--seccomp-level",
            "0",
        ]))
        .unwrap();
        assert_eq!(a.api_sock, PathBuf::from("/run/x.sock"));
        assert_eq!(a.id, "vm1");
    }

    #[test]
    fn config_file_and_unknown_flags_are_refused() {
        let e = parse(argv(&["--config-file", "x.json"])).unwrap_err();
        assert!(
            e.to_string().contains("--config-file is not supported"),
            "{e}"
        );
        assert!(parse(argv(&["--bogus"])).is_err());
        assert!(parse(argv(&["--api-sock"])).is_err());
    }
}
