//! Starting and stopping a VM on the host: disk, tap and NAT, the VMM the
//! host supports, readiness by SSH banner, and the teardown that leaves no
//! process or tap behind.

use super::{find, ready, transition, Failures, VmError, VmRow};
use crate::blocking::leaf;
use crate::daemon::Daemon;
use crate::network::NetPlan;
use crate::progress::Progress;
use crate::store::vms as table;
use crate::vmdisk;
use crate::vmm::adopted;
use crate::vmm::fc_process::{jail_dir, jailed_api_socket, FcLaunch, FirecrackerVm};
use crate::vmm::plan::{firecracker_plan, FcFiles};
use crate::vmm::qemu::QemuVm;
use crate::vmm::registry::Vmm;
use crate::vmm::socket_access::WaitPolicy;
use banger_core::disk::Driver;
use banger_core::machine::{choose_vmm, Backend, GuestNet, MachineSpec, QemuIo};
use banger_core::vm::{Event, VmState};
use banger_proto::api::VmmChoice;
use banger_proto::helper::{self as m, method, Method};
use banger_sys::runner::{Cmd, HostRunner, Runner};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tracing::Instrument;

fn call<M: Method<Result = m::Empty>>(d: &Daemon, p: &M::Params) -> Result<(), VmError> {
    leaf(|| d.privops.call::<M>(p))
        .map(drop)
        .map_err(|e| VmError::Priv(M::NAME, Box::new(e)))
}

/// VM `id`'s VMM choice (the row's `vmm`; `auto` if unreadable).
pub fn vmm_choice(d: &Daemon, id: &str) -> VmmChoice {
    d.store.read(|c| table::vmm(c, id)).unwrap_or_default()
}

/// The backend VM `id` runs on here, and why: its VMM choice against the
/// host (`banger doctor` shows the same for the config's choice).
pub fn backend_for(d: &Daemon, id: &str) -> (Backend, String) {
    let choice = vmm_choice(d, id);
    if let Some(b) = d.vmms.backend {
        return (b, format!("vmm = {choice}: pinned by the daemon"));
    }
    choose_vmm(
        choice,
        crate::doctor::host_facts(Path::new("/"), &d.cfg.firecracker_bin),
    )
}

/// Whether Firecracker is launched under the jailer: always in the system
/// install, never in `--dev` (unless a test says otherwise).
pub fn jailed(d: &Daemon) -> bool {
    d.vmms
        .jailed
        .unwrap_or(d.mode == banger_core::paths::Mode::System)
}

/// A jailed VM's chroot, removed through `priv.cleanup_jailer_chroot`.
fn clean_jail(d: &Daemon, id: &str) -> Result<(), VmError> {
    let dir = jail_dir(&d.cfg.jailer_base, &d.cfg.firecracker_bin, id);
    call::<method::CleanupJailerChroot>(
        d,
        &m::CleanupJailerChroot {
            path: dir.display().to_string(),
        },
    )
}

/// Whether VM `row` ran (or may run) under the jailer.
pub(crate) fn ran_jailed(d: &Daemon, row: &VmRow) -> bool {
    jailed(d) && row.backend == Some(Backend::Firecracker)
}

/// The host TSC in kHz for `tsc_early_khz` under TCG.
pub(crate) fn host_tsc_khz() -> Option<u64> {
    let dmesg = HostRunner
        .run(&Cmd::new("dmesg"))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    banger_core::machine::tsc_khz(&dmesg, &cpuinfo)
}

fn mkdir(p: &Path) -> Result<(), VmError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(|e| VmError::CreateDir(p.into(), e))
}

/// Start a created or stopped VM and wait until it answers SSH.
pub async fn start(d: &Daemon, name: &str, p: &Progress) -> Result<VmRow, VmError> {
    let row = find(d, name)?;
    let _claim = d.vmms.claim(&row.id, &row.name)?;
    start_claimed(d, &row, p).await?;
    find(d, &row.id)
}

pub(super) async fn start_claimed(d: &Daemon, row: &VmRow, p: &Progress) -> Result<(), VmError> {
    transition(d, row, Event::Start)?;
    let ip = match row.ip {
        Some(ip) => ip,
        None => {
            let _ = transition(d, row, Event::Failed);
            return Err(VmError::NoIp(row.name.clone()));
        }
    };
    match launch(d, row, ip, p).await {
        Ok(()) => {
            transition(d, row, Event::Ready)?;
            p.log(format!("VM {} is running at {ip}", row.name));
            Ok(())
        }
        Err(e) => {
            tracing::warn!(vm = %row.name, error = %crate::render_chain(&e), "start failed; cleaning up");
            // The row as launch left it (its backend names what to clean).
            let now = find(d, &row.id).ok();
            if let Err(t) = tear_down(d, now.as_ref().unwrap_or(row), Duration::ZERO).await {
                tracing::error!(vm = %row.name, error = %crate::render_chain(&t), "cleanup after a failed start");
            }
            let _ = transition(d, row, Event::Failed);
            Err(e)
        }
    }
}

/// Everything between `starting` and `running`. On error the caller tears
/// down what was made.
async fn launch(d: &Daemon, row: &VmRow, ip: Ipv4Addr, p: &Progress) -> Result<(), VmError> {
    let plan = NetPlan::from_config(&d.cfg)?;
    let phase = p.phase("disk_activate", &row.id);
    let disk = leaf(|| phase.span().in_scope(|| vmdisk::activate(d, &row.id)))?;
    phase.done();
    let tap = banger_core::net::tap_for(&row.id);
    let (backend, why) = backend_for(d, &row.id);
    p.log(format!("VMM: {} ({why})", backend.as_str()));
    let jail = backend == Backend::Firecracker && jailed(d);
    let tap_req = m::CreateTap {
        name: tap.clone(),
        bridge: plan.bridge.clone(),
        jail_uid: None,
    };
    p.log(format!("tap {tap} on {}", plan.bridge));
    let phase = p.phase("tap", &row.id);
    if !jail {
        phase
            .span()
            .in_scope(|| call::<method::CreateTap>(d, &tap_req))?;
    }
    phase.done();
    let phase = p.phase("nat", &row.id);
    phase.span().in_scope(|| {
        call::<method::EnsureNat>(
            d,
            &m::Nat {
                guest_ip: ip.to_string(),
                tap: tap.clone(),
            },
        )
    })?;
    phase.done();
    let phase = p.phase("vmm_spawn", &row.id);
    let image = crate::images::catalog::find(&d.store, &row.image_id)?
        .ok_or_else(|| crate::images::catalog::CatalogError::NotFound(row.image_id.clone()))?;
    let spec = MachineSpec {
        vcpus: row.vcpus,
        memory_mib: row.memory_mib,
        kernel: image.kernel(),
        initrd: image.initrd(),
        rootfs: disk.device.clone(),
        net: Some(GuestNet {
            tap,
            mac: banger_core::net::mac_for(&row.id),
            ip,
            subnet: plan.subnet,
        }),
        tsc_khz: if backend == Backend::QemuTcg {
            leaf(host_tsc_khz)
        } else {
            None
        },
    };
    let rt = d.paths.vm_runtime_dir(&row.id);
    mkdir(&rt)?;
    let console = d.paths.console_log(&row.id);
    p.log(format!("launching {backend}"));
    // Recorded first, so a failed start (and a restart's reconcile) knows
    // which VMM's leftovers to clean.
    d.store
        .write(|tx| table::set_backend(tx, &row.id, backend))?;
    let qmp = rt.join("qmp.sock");
    let vmm = match backend {
        Backend::Firecracker => {
            let (api, jail_files, fc_plan) = if jail {
                // The chroot's names; the helper puts the files there.
                let inside = MachineSpec {
                    kernel: m::JAILED_KERNEL.into(),
                    initrd: spec.initrd.as_ref().map(|_| m::JAILED_INITRD.into()),
                    rootfs: m::JAILED_ROOT_DISK.into(),
                    ..spec.clone()
                };
                let j = m::JailSpec {
                    kernel: spec.kernel.display().to_string(),
                    initrd: spec
                        .initrd
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    // A dm device is made as a node in the chroot; a copy
                    // (or reflink) file is handed to the jail and bound in.
                    root_disk: if disk.driver == Driver::DmSnapshot {
                        spec.rootfs.display().to_string()
                    } else {
                        String::new()
                    },
                    root_disk_file: if disk.driver == Driver::DmSnapshot {
                        String::new()
                    } else {
                        spec.rootfs.display().to_string()
                    },
                    memory_mib: spec.memory_mib,
                    vcpus: u32::from(spec.vcpus),
                    cpu_percent: None,
                };
                (
                    jailed_api_socket(&d.paths.runtime_dir, &row.id),
                    Some((j, tap_req)),
                    firecracker_plan(&inside, &FcFiles::default()).map_err(VmError::Plan)?,
                )
            } else {
                let api = rt.join("fc.sock");
                let _ = std::fs::remove_file(&api);
                let plan = firecracker_plan(&spec, &FcFiles::default()).map_err(VmError::Plan)?;
                (api, None, plan)
            };
            let l = FcLaunch {
                vm_id: row.id.clone(),
                api_socket: api,
                log_file: console.clone(),
                jail: jail_files,
            };
            let policy = WaitPolicy {
                deadline: Duration::from_secs(10),
                tick: Duration::from_millis(10),
            };
            let vm = FirecrackerVm::launch(d.privops.clone(), &l, &fc_plan, policy)
                .instrument(phase.span().clone())
                .await
                .map_err(|e| {
                    VmError::Firecracker(row.name.clone(), Box::new(e), log_tail(&console))
                })?;
            Vmm::Firecracker(vm)
        }
        Backend::QemuKvm | Backend::QemuTcg => {
            if !d.vmms.qemu_bin.is_file() {
                return Err(VmError::NoQemu(d.vmms.qemu_bin.clone()));
            }
            let _ = std::fs::remove_file(&qmp);
            let io = QemuIo {
                serial_log: Some(console.clone()),
                qmp_socket: Some(qmp.clone()),
            };
            Vmm::Qemu(phase.span().in_scope(|| {
                QemuVm::spawn(&d.vmms.qemu_bin, &d.vmms.wrapper, &spec, backend, &io)
                    .map_err(|e| VmError::Qemu(row.name.clone(), Box::new(e)))
            })?)
        }
    };
    let pid = vmm.pid();
    let configure = match &vmm {
        Vmm::Firecracker(f) => Some(f.configure_took()),
        _ => None,
    };
    d.vmms.put(&row.id, vmm);
    d.store
        .write(|tx| table::set_process(tx, &row.id, pid, backend))?;
    if backend != Backend::Firecracker {
        confine_qemu(d, row, pid, &spec, p)?;
        crate::vmm::qemu::resume(&qmp, Duration::from_secs(10))
            .await
            .map_err(|e| VmError::Qemu(row.name.clone(), Box::new(e)))?;
    }
    match configure {
        Some(took) => phase.done_split("vmm_configure", took),
        None => {
            phase.done();
        }
    }
    let phase = p.phase("boot_to_ssh", &row.id);
    wait_ready(d, row, ip, p)
        .instrument(phase.span().clone())
        .await?;
    phase.done();
    Ok(())
}

/// Whether a failed cgroup step fails the operation: in the system install
/// (QEMU must run under its VM's limits); in development mode it is logged.
fn cgroup_failure(d: &Daemon, row: &VmRow, e: VmError) -> Result<(), VmError> {
    if d.mode == banger_core::paths::Mode::System {
        return Err(e);
    }
    tracing::warn!(vm = %row.name, error = %crate::render_chain(&e), "QEMU's cgroup (development mode: going on)");
    Ok(())
}

/// Move the (paused) QEMU `pid` into the VM's own cgroup with its memory
/// and pids limits, through `priv.place_qemu_cgroup`.
fn confine_qemu(
    d: &Daemon,
    row: &VmRow,
    pid: i64,
    spec: &MachineSpec,
    p: &Progress,
) -> Result<(), VmError> {
    let req = m::PlaceQemuCgroup {
        vm_id: row.id.clone(),
        pid: pid as i32,
        memory_mib: spec.memory_mib,
        vcpus: u32::from(spec.vcpus),
    };
    match call::<method::PlaceQemuCgroup>(d, &req) {
        Ok(()) => {
            p.log(format!("QEMU in cgroup banger-{}", row.id));
            Ok(())
        }
        Err(e) => cgroup_failure(d, row, e),
    }
}

/// Remove a QEMU VM's cgroup (once its QEMU has exited).
pub(crate) fn release_qemu_cgroup(d: &Daemon, row: &VmRow) -> Result<(), VmError> {
    if !matches!(row.backend, Some(Backend::QemuKvm | Backend::QemuTcg)) {
        return Ok(());
    }
    let req = m::RemoveQemuCgroup {
        vm_id: row.id.clone(),
    };
    call::<method::RemoveQemuCgroup>(d, &req).or_else(|e| cgroup_failure(d, row, e))
}

/// The last few lines (at most 1 KiB) of Firecracker's log, on one line.
fn log_tail(p: &Path) -> String {
    let text = std::fs::read(p).unwrap_or_default();
    let start = text.len().saturating_sub(1024);
    let tail = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Wait for the guest's SSH banner (see [`super::ready`]) within the
/// registry's `ready_timeout`; a VMM that exits, or `vm rm --force`
/// cancelling the operation, ends the wait.
async fn wait_ready(d: &Daemon, row: &VmRow, ip: Ipv4Addr, p: &Progress) -> Result<(), VmError> {
    let limit = d.vmms.ready_timeout;
    let addr = d.vmms.ready_addr.unwrap_or(SocketAddr::from((ip, 22)));
    let deadline = Instant::now() + limit;
    ready::wait_for_banner(
        addr,
        deadline,
        ready::Poll::default(),
        || d.vmms.exited(&row.id) || d.vmms.cancelled(&row.id),
        |waited| p.seconds("waiting for SSH", waited.as_secs()),
    )
    .await
    .map_err(|e| match e {
        ready::NotReady::Exited if d.vmms.cancelled(&row.id) => {
            VmError::Cancelled(row.name.clone())
        }
        ready::NotReady::Exited => VmError::ExitedEarly(row.name.clone()),
        ready::NotReady::Deadline => VmError::NotReady(row.name.clone(), ip, limit.as_secs()),
    })
}

/// Stop the VMM (Ctrl+Alt+Del, `grace`, then forced), then remove NAT, tap
/// and the active disk. Every step is tried; a single failure is returned
/// as it is, several as [`VmError::Teardown`] naming each.
pub(crate) async fn tear_down(d: &Daemon, row: &VmRow, grace: Duration) -> Result<(), VmError> {
    let mut failed: Vec<VmError> = Vec::new();
    if let Some(mut vmm) = d.vmms.take(&row.id) {
        match vmm.stop(grace).await {
            Ok(how) => tracing::info!(vm = %row.name, ?how, "VMM stopped"),
            Err(e) => failed.push(VmError::StopVmm(row.name.clone(), e)),
        }
    } else if let Some(pid) = row.pid {
        // A VMM a previous daemon started (adopted at reconcile): no QMP or
        // API session here, so it is killed.
        let proc_root = Path::new("/proc");
        if adopted::alive(proc_root, pid, &row.id) {
            let jailed = row.backend == Some(Backend::Firecracker);
            if let Err(e) = leaf(|| adopted::kill(d.privops.as_ref(), jailed, pid)) {
                failed.push(VmError::Kill(row.name.clone(), e));
            }
            let t = Instant::now();
            while adopted::alive(proc_root, pid, &row.id) && t.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    if ran_jailed(d, row) {
        if let Err(e) = clean_jail(d, &row.id) {
            failed.push(e);
        }
    }
    if let Err(e) = release_qemu_cgroup(d, row) {
        failed.push(e);
    }
    let tap = banger_core::net::tap_for(&row.id);
    if let Some(ip) = row.ip {
        let nat = m::Nat {
            guest_ip: ip.to_string(),
            tap: tap.clone(),
        };
        if let Err(e) = call::<method::ClearNat>(d, &nat) {
            failed.push(e);
        }
    }
    if let Err(e) = call::<method::DeleteTap>(d, &m::DeleteTap { name: tap }) {
        failed.push(e);
    }
    if let Err(e) = leaf(|| vmdisk::deactivate(d, &row.id)) {
        failed.push(e.into());
    }
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        _ => Err(VmError::Teardown(row.name.clone(), Failures(failed))),
    }
}

/// Stop a VM: graceful within the grace period unless `force`.
pub async fn stop(d: &Daemon, name: &str, force: bool, p: &Progress) -> Result<VmRow, VmError> {
    let row = find(d, name)?;
    let _claim = d.vmms.claim(&row.id, &row.name)?;
    stop_claimed(d, &row, force, p).await?;
    find(d, &row.id)
}

async fn stop_claimed(d: &Daemon, row: &VmRow, force: bool, p: &Progress) -> Result<(), VmError> {
    let t = transition(d, row, Event::Stop)?;
    if !t.changed() {
        return Ok(());
    }
    p.log(format!("stopping {}", row.name));
    let grace = if force { Duration::ZERO } else { d.vmms.grace };
    if let Err(e) = tear_down(d, row, grace).await {
        let _ = transition(d, row, Event::Failed);
        return Err(e);
    }
    transition(d, row, Event::Exited)?;
    p.log(format!("VM {} is stopped", row.name));
    Ok(())
}

/// Stop (if running) then start.
pub async fn restart(d: &Daemon, name: &str, p: &Progress) -> Result<VmRow, VmError> {
    let row = find(d, name)?;
    let _claim = d.vmms.claim(&row.id, &row.name)?;
    if row.state != VmState::Created && row.state != VmState::Stopped {
        stop_claimed(d, &row, false, p).await?;
    }
    let row = find(d, &row.id)?;
    start_claimed(d, &row, p).await?;
    find(d, &row.id)
}
