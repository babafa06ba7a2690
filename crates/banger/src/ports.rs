//! `banger vm port add|rm|ls` and `vm create -p`: a host loopback port
//! reaching a VM's port through the daemon's forwarder.

use crate::client::{body, Client};
use anyhow::Result;
use banger_proto::api::Forward;
use clap::Subcommand;

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

/// `HOSTPORT:GUESTPORT`, the API body.
pub fn parse(spec: &str) -> Result<Forward> {
    Ok(spec.parse::<Forward>()?)
}

fn table(all: &[Forward]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|f| vec![format!("127.0.0.1:{}", f.host), f.guest.to_string()])
        .collect();
    crate::output::table(&["HOST", "GUEST"], &rows)
}

/// Add each forward of `specs` to VM `name`.
pub async fn add_all(client: &Client, name: &str, specs: &[Forward]) -> Result<()> {
    for s in specs {
        client
            .call("POST", &format!("/v1/vms/{name}/ports"), body(s))
            .await
            .map_err(|e| e.context(format!("VM {name} was created, but forwarding {s} failed")))?;
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
                    body(&parse(&spec)?),
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
    let all: Vec<Forward> = serde_json::from_value(v.clone())
        .map_err(|e| anyhow::anyhow!("bangerd's list of forwards does not parse: {e}"))?;
    crate::print(j, &v, || table(&all));
    Ok(())
}
