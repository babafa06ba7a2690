//! Reaching a running guest over SSH as `vm ssh` and `vm exec` do: banger's
//! pinned known_hosts, strict host-key checking, banger's own key and the
//! owner's default keys.

use anyhow::Result;
use banger_core::vm::VmState;
use banger_proto::api::{Health, Vm};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::client::Client;

/// The running VM `name`'s address and the daemon's StateDir.
pub async fn target(client: &Client, name: &str) -> Result<(IpAddr, PathBuf)> {
    let vm = client.get::<Vm>(&format!("/v1/vms/{name}")).await?.body;
    let Some(ip) = vm.ip else {
        anyhow::bail!("VM {name} has no address");
    };
    if vm.state.parse::<VmState>().ok() != Some(VmState::Running) {
        anyhow::bail!(
            "VM {name} is {}; start it with `banger vm start {name}`",
            vm.state
        );
    }
    let health = client.get::<Health>("/v1/health").await?.body;
    Ok((ip.parse()?, PathBuf::from(health.state_dir)))
}

/// `ssh` to `root@ip` trusting only banger's known_hosts; banger's own key
/// first, then the owner's default identities that exist (an explicit `-i`
/// turns ssh's own defaults off).
pub fn ssh(state_dir: &Path, ip: IpAddr) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            state_dir.join("known_hosts").display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes"]);
    let banger_key = state_dir.join("ssh/id_ed25519");
    if banger_key.exists() {
        c.arg("-i").arg(banger_key);
        if let Some(home) = std::env::var_os("HOME") {
            for k in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let p = Path::new(&home).join(".ssh").join(k);
                if p.exists() {
                    c.arg("-i").arg(p);
                }
            }
        }
    }
    c.arg(format!("root@{ip}"));
    c
}
