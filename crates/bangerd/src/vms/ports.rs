//! Port forwards: a host loopback port reaching a VM's port, served by a
//! userspace forwarder in the daemon (no root method). Recorded in
//! `<state>/vms/<id>/ports.json` (so they go with the VM's directory and
//! come back when the daemon restarts); one host port, one VM.

use crate::daemon::Daemon;
use crate::vms::forward::{check_host_port, Forward, PortError};
use crate::vms::record::find;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;

/// A live listener: whose it is and how to stop it.
struct Live {
    vm_id: String,
    vm_name: String,
    guest: u16,
    task: tokio::task::JoinHandle<()>,
}

/// Host port → its listener, for the whole daemon.
static LIVE: Mutex<BTreeMap<u16, Live>> = Mutex::new(BTreeMap::new());

fn live() -> std::sync::MutexGuard<'static, BTreeMap<u16, Live>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn file(d: &Daemon, vm_id: &str) -> PathBuf {
    d.paths.vm_dir(vm_id).join("ports.json")
}

/// VM `vm_id`'s recorded forwards.
pub fn recorded(d: &Daemon, vm_id: &str) -> Result<Vec<Forward>, PortError> {
    let p = file(d, vm_id);
    match std::fs::read(&p) {
        Ok(b) => {
            serde_json::from_slice(&b).map_err(|e| PortError::Read(p, std::io::Error::other(e)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(PortError::Read(p, e)),
    }
}

fn record(d: &Daemon, vm_id: &str, all: &[Forward]) -> Result<(), PortError> {
    let p = file(d, vm_id);
    let dir = p.parent().expect("a file in the VM dir");
    std::fs::create_dir_all(dir).map_err(|e| PortError::Write(dir.into(), e))?;
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(all).expect("forwards serialise"))
        .and_then(|()| std::fs::rename(&tmp, &p))
        .map_err(|e| PortError::Write(p, e))
}

/// Listen on `127.0.0.1:host` and splice each connection to the VM's
/// current address on `guest` (a stopped VM: the connection just closes).
fn listen(
    d: &std::sync::Arc<Daemon>,
    vm_id: &str,
    vm_name: &str,
    f: Forward,
) -> Result<(), PortError> {
    let mut live = live();
    if let Some(l) = live.get(&f.host) {
        return Err(PortError::Taken(f.host, l.vm_name.clone()));
    }
    let std_l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, f.host))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| PortError::Bind(f.host, e))?;
    let listener =
        tokio::net::TcpListener::from_std(std_l).map_err(|e| PortError::Bind(f.host, e))?;
    let d = d.clone();
    let id = vm_id.to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let ip = find(&d, &id).ok().and_then(|r| r.ip);
            tokio::spawn(async move {
                let Some(ip) = ip else { return };
                let addr = SocketAddr::from((ip, f.guest));
                if let Ok(mut out) = tokio::net::TcpStream::connect(addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    live.insert(
        f.host,
        Live {
            vm_id: vm_id.into(),
            vm_name: vm_name.into(),
            guest: f.guest,
            task,
        },
    );
    Ok(())
}

/// Add forward `f` to VM `name`: checked, listening, then recorded.
pub fn add(
    d: &std::sync::Arc<Daemon>,
    name: &str,
    f: Forward,
) -> Result<Vec<Forward>, crate::vms::VmError> {
    let row = find(d, name)?;
    check_host_port(f.host, d.cfg.allow_low_ports).map_err(port_err)?;
    listen(d, &row.id, &row.name, f).map_err(port_err)?;
    let mut all = recorded(d, &row.id).map_err(port_err)?;
    all.retain(|x| x.host != f.host);
    all.push(f);
    all.sort_by_key(|x| x.host);
    if let Err(e) = record(d, &row.id, &all) {
        stop(f.host);
        return Err(port_err(e));
    }
    Ok(all)
}

/// Remove VM `name`'s forward from host port `host`.
pub fn remove(d: &Daemon, name: &str, host: u16) -> Result<Vec<Forward>, crate::vms::VmError> {
    let row = find(d, name)?;
    let mut all = recorded(d, &row.id).map_err(port_err)?;
    if !all.iter().any(|f| f.host == host) {
        return Err(port_err(PortError::NoForward(row.name, host)));
    }
    all.retain(|f| f.host != host);
    record(d, &row.id, &all).map_err(port_err)?;
    stop(host);
    Ok(all)
}

/// VM `name`'s forwards.
pub fn list(d: &Daemon, name: &str) -> Result<Vec<Forward>, crate::vms::VmError> {
    let row = find(d, name)?;
    recorded(d, &row.id).map_err(port_err)
}

fn stop(host: u16) {
    if let Some(l) = live().remove(&host) {
        l.task.abort();
    }
}

/// Stop every listener of VM `vm_id` (its record goes with its directory).
pub fn forget_vm(vm_id: &str) {
    let mut live = live();
    let ports: Vec<u16> = live
        .iter()
        .filter(|(_, l)| l.vm_id == vm_id)
        .map(|(p, _)| *p)
        .collect();
    for p in ports {
        if let Some(l) = live.remove(&p) {
            l.task.abort();
        }
    }
}

/// At daemon start: listen again for every recorded forward (failures
/// logged, the rest still served).
pub fn restore(d: &std::sync::Arc<Daemon>) {
    let Ok(vms) = crate::vms::list(&d.store) else {
        return;
    };
    for vm in vms {
        for f in recorded(d, &vm.id).unwrap_or_default() {
            if let Err(e) = listen(d, &vm.id, &vm.name, f) {
                tracing::error!(vm = %vm.name, error = %crate::render_chain(&e), "restoring a port forward");
            }
        }
    }
}

/// Which host port forwards where (for listings across VMs).
pub fn live_ports() -> Vec<(u16, String, u16)> {
    live()
        .iter()
        .map(|(p, l)| (*p, l.vm_name.clone(), l.guest))
        .collect()
}

fn port_err(e: PortError) -> crate::vms::VmError {
    crate::vms::VmError::Port(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vms::forward::parse_spec;

    #[test]
    fn specs_and_low_ports() {
        assert_eq!(
            parse_spec("8080:80").unwrap(),
            Forward {
                host: 8080,
                guest: 80
            }
        );
        for bad in [
            "8080",
            ":80",
            "0:80",
            "8080:0",
            "70000:80",
            "a:b",
            "8080:80:1",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            check_host_port(80, false),
            Err(PortError::Low(80))
        ));
        check_host_port(80, true).unwrap();
        check_host_port(1024, false).unwrap();
    }
}
