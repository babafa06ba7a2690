//! `banger vm create`: row, address, disk and customisation, undone
//! entirely on failure; then started unless asked not to.

use super::record::{find, VmRow};
use super::{run, VmError};
use crate::blocking::leaf;
use crate::daemon::Daemon;
use crate::images::catalog::{self, CatalogError, Stored};
use crate::network::{self, NetPlan};
use crate::progress::Progress;
use crate::store::{vms as table, StoreError};
use crate::vmdisk;
use crate::vmdisk::custom::{self, Customisation};
use crate::vmm::registry::Claim;
use banger_core::guest::{GuestIdentity, GuestNet};
use banger_core::limits;
use std::net::Ipv4Addr;

/// `POST /v1/vms` body, checked.
#[derive(Debug, Clone)]
pub struct CreateReq {
    pub name: String,
    pub image: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub start: bool,
    /// Its VMM; `None`: the daemon config's `vmm`.
    pub vmm: Option<banger_proto::api::VmmChoice>,
    /// Its root disk's size in bytes; `None`: the owner's `disk_size`,
    /// else the image's.
    pub disk_size: Option<u64>,
}

/// Undoes a half-made create unless disarmed: disk and runtime directory
/// destroyed, row deleted (which frees the IP). The VM's claim is released only after that, so a
/// `vm rm --force` waiting on it finds everything undone.
struct CreateUndo<'a> {
    d: &'a Daemon,
    id: Option<String>,
    claim: Claim<'a>,
}

impl Drop for CreateUndo<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            if let Err(e) = leaf(|| vmdisk::destroy(self.d, &id)) {
                tracing::error!(vm = %id, error = %crate::render_chain(&e), "undoing create: disk");
            }
            // A start that got as far as launching made the runtime dir.
            let rt = self.d.paths.vm_runtime_dir(&id);
            match leaf(|| std::fs::remove_dir_all(&rt)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::error!(vm = %id, error = %e, "undoing create: {}", rt.display());
                }
                _ => {}
            }
            let _ = network::release_ip(&self.d.store, &id);
            let r: Result<usize, StoreError> = self.d.store.write(|tx| Ok(table::delete(tx, &id)?));
            if let Err(e) = r {
                tracing::error!(vm = %id, error = %crate::render_chain(&e), "undoing create: row");
            }
        }
    }
}

impl CreateUndo<'_> {
    /// A cancellation point: `vm rm --force` asked this create to give up.
    fn check_cancel(&self, name: &str) -> Result<(), VmError> {
        if self.claim.cancelled() {
            tracing::info!(vm = %name, "create cancelled; undoing it");
            return Err(VmError::Cancelled(name.to_string()));
        }
        Ok(())
    }
}

/// The guest identity of VM `row` on `plan`.
pub fn identity(plan: &NetPlan, row: &VmRow, ip: Ipv4Addr) -> GuestIdentity {
    GuestIdentity {
        hostname: row.name.clone(),
        domain: plan.domain.clone(),
        net: GuestNet {
            ip,
            prefix: plan.subnet.prefix(),
            gateway: plan.gateway(),
            dns: vec![plan.gateway()],
            mac: banger_core::net::mac_for(&row.id),
            iface: "eth0".into(),
        },
    }
}

impl CreateReq {
    /// The API body with its defaults applied (1 vCPU, 512 MiB, started).
    pub fn from_api(req: banger_proto::api::VmCreate) -> Self {
        CreateReq {
            name: req.name,
            image: req.image.unwrap_or_default(),
            vcpus: req.vcpus.unwrap_or(1),
            memory_mib: req.memory_mib.unwrap_or(512),
            start: req.start.unwrap_or(true),
            vmm: req.vmm,
            disk_size: req.disk_size_bytes,
        }
    }

    /// The size to grow the VM's disk to (`None`: the image's), with
    /// `default` the owner's `disk_size`: a disk only grows, within the
    /// install's per-VM cap.
    pub fn root_disk(
        &self,
        d: &Daemon,
        image: &Stored,
        default: Option<u64>,
    ) -> Result<Option<u64>, VmError> {
        let base = image.rootfs();
        let len = std::fs::metadata(&base)
            .map_err(|e| VmError::Disk(vmdisk::VmDiskError::Stat(base.clone(), e)))?
            .len();
        Ok(banger_core::size::root_disk(
            len,
            self.disk_size,
            default,
            d.cfg.max_cow_bytes,
        )?)
    }

    /// The checks a create makes before anything is made (the API runs
    /// them before answering): a valid name not taken, vCPUs and memory in
    /// range, a known image, a disk size it can have.
    pub fn check(&self, d: &Daemon) -> Result<Stored, VmError> {
        banger_core::names::validate_vm_name(&self.name).map_err(VmError::BadName)?;
        limits::check_vcpus(u64::from(self.vcpus)).map_err(VmError::OutOfRange)?;
        limits::check_memory_mib(u64::from(self.memory_mib)).map_err(VmError::OutOfRange)?;
        if find(d, &self.name).is_ok() {
            return Err(VmError::Exists(self.name.clone()));
        }
        let image = catalog::find(&d.store, &self.image)?
            .ok_or_else(|| CatalogError::NotFound(self.image.clone()))?;
        self.root_disk(d, &image, None)?;
        Ok(image)
    }
}

/// Create a VM: row (`created`), IP, disk, customisation; then start it
/// unless `req.start` is false. Any failure undoes everything.
pub async fn create(d: &Daemon, req: &CreateReq, p: &Progress) -> Result<VmRow, VmError> {
    let validate = p.phase("validate", &req.name);
    let image = req.check(d)?;
    let owner = crate::userconfig::load(&d.cfg.owner_home)
        .map_err(super::file_sync::FileSyncError::from)?;
    let disk_size = req.root_disk(d, &image, owner.disk_size)?;
    let file_sync = super::file_sync::plan(&d.cfg.owner_home, &owner)?;
    let plan = NetPlan::from_config(&d.cfg)?;
    let id = catalog::new_id()?;
    // No other operation on the VM until it is made (and started); taken
    // before the row exists, so a `vm rm --force` that finds the row finds
    // the create busy and cancels it.
    let claim = d.vmms.claim(&id, &req.name)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs() as i64);
    validate.done();
    // The row, its VMM choice and its address: one commit.
    let phase = p.phase("ip", &id);
    let ip = d.store.write(|tx| {
        if table::id_named(tx, &req.name)?.is_some() {
            return Err(VmError::Exists(req.name.clone()));
        }
        table::insert(
            tx,
            &table::NewVm {
                id: &id,
                name: &req.name,
                image_id: &image.image.id,
                vcpus: req.vcpus,
                memory_mib: req.memory_mib,
                created_at: now,
            },
        )?;
        table::set_vmm(tx, &id, req.vmm.unwrap_or(d.cfg.vmm))?;
        Ok::<_, VmError>(network::allocate_ip_in(tx, &plan.subnet, &id)?)
    })?;
    let mut undo = CreateUndo {
        d,
        id: Some(id.clone()),
        claim,
    };
    phase.done();
    p.log(format!("VM {} ({id}) recorded, address {ip}", req.name));
    undo.check_cancel(&req.name)?;
    p.step("disk", 0, Some(1));
    if let Some(n) = disk_size {
        p.log(format!(
            "disk: grown to {} (a copy of the image, its filesystem resized)",
            banger_core::size::human(n)
        ));
    }
    let phase = p.phase("disk_clone", &id);
    leaf(|| {
        phase
            .span()
            .in_scope(|| vmdisk::create(d, &id, &image, disk_size))
    })?;
    phase.done();
    undo.check_cancel(&req.name)?;
    let phase = p.phase("customise", &id);
    let row = find(d, &id)?;
    let c = Customisation {
        identity: identity(&plan, &row, ip),
        ssh_public_key: None,
        file_sync,
    };
    leaf(|| {
        phase.span().in_scope(|| {
            custom::customise(d, &id, &c)?;
            // A dm snapshot is re-activated by start.
            vmdisk::deactivate(d, &id)
        })
    })?;
    phase.done();
    p.step("disk", 1, Some(1));
    undo.check_cancel(&req.name)?;
    if req.start {
        // Cancelled while it waits for the guest: torn down, then undone here.
        run::start_claimed(d, &find(d, &id)?, p).await?;
    }
    undo.id = None;
    find(d, &id)
}
