//! `banger vm port add|rm|ls` and `vm create -p`: a host loopback port
//! reaching a VM's port through the daemon's forwarder.

use crate::client::Client;
use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand, Debug)]
pub enum PortCmd {
    /// Forward 127.0.0.1:HOSTPORT to the VM's GUESTPORT.
    Add {
        name: String,
        /// HOSTPORT:GUESTPORT
        spec: String,
    },
    /// Stop forwarding HOSTPORT (or HOSTPORT:GUESTPORT).
    Rm { name: String, spec: String },
    /// List the VM's forwards.
    Ls { name: String },
}

/// `HOSTPORT:GUESTPORT` as the API body.
pub fn parse(spec: &str) -> Result<Value> {
    let p = |x: &str| x.parse::<u16>().ok().filter(|p| *p > 0);
    match spec.split_once(':').map(|(h, g)| (p(h), p(g))) {
        Some((Some(h), Some(g))) => Ok(json!({"host": h, "guest": g})),
        _ => bail!("{spec:?} is not HOSTPORT:GUESTPORT (ports 1-65535)"),
    }
}

fn table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    vec![
                        format!("127.0.0.1:{}", f["host"]),
                        format!("{}", f["guest"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    crate::output::table(&["HOST", "GUEST"], &rows)
}

/// Add each forward of `specs` to VM `name`.
pub async fn add_all(client: &Client, name: &str, specs: &[Value]) -> Result<()> {
    for s in specs {
        client
            .call("POST", &format!("/v1/vms/{name}/ports"), Some(s.clone()))
            .await
            .map_err(|e| {
                e.context(format!(
                    "VM {name} was created, but forwarding {}:{} failed",
                    s["host"], s["guest"]
                ))
            })?;
    }
    Ok(())
}

pub async fn run(client: &Client, j: bool, cmd: PortCmd) -> Result<()> {
    let v = match cmd {
        PortCmd::Add { name, spec } => {
            client
                .call(
                    "POST",
                    &format!("/v1/vms/{name}/ports"),
                    Some(parse(&spec)?),
                )
                .await?
        }
        PortCmd::Rm { name, spec } => {
            let host = spec.split(':').next().unwrap_or("");
            let host: u16 = host
                .parse()
                .map_err(|_| anyhow::anyhow!("{spec:?} is not HOSTPORT[:GUESTPORT]"))?;
            client
                .call("DELETE", &format!("/v1/vms/{name}/ports/{host}"), None)
                .await?
        }
        PortCmd::Ls { name } => {
            client
                .call("GET", &format!("/v1/vms/{name}/ports"), None)
                .await?
        }
    };
    crate::print(j, &v, || table(&v));
    Ok(())
}
