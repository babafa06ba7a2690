//! Params and results of every helper method (SPEC §9). Names are fixed.
//!
//! Params structs reject unknown fields: a caller that sends a field the
//! helper does not understand gets `-32602`, never a silently ignored value.

use serde::{Deserialize, Serialize};

/// Every method the helper serves, in the order `docs/privileges.md` lists them.
pub const METHODS: &[&str] = &[
    VERSION,
    ENSURE_BRIDGE,
    CREATE_TAP,
    DELETE_TAP,
    ENSURE_NAT,
    CLEAR_NAT,
    SYNC_RESOLVER_ROUTING,
    CLEAR_RESOLVER_ROUTING,
    ENSURE_DNS_REDIRECT,
    CREATE_DM_SNAPSHOT,
    CLEANUP_DM_SNAPSHOT,
    REMOVE_DM_SNAPSHOT,
    FSCK_SNAPSHOT,
    READ_EXT4_FILE,
    WRITE_EXT4_FILES,
    ENSURE_SOCKET_ACCESS,
    KILL_PROCESS,
    SIGNAL_PROCESS,
    CLEANUP_JAILER_CHROOT,
    LAUNCH_FIRECRACKER,
    PLACE_QEMU_CGROUP,
    REMOVE_QEMU_CGROUP,
];

pub const VERSION: &str = "helper.version";
pub const ENSURE_BRIDGE: &str = "priv.ensure_bridge";
pub const CREATE_TAP: &str = "priv.create_tap";
pub const DELETE_TAP: &str = "priv.delete_tap";
pub const ENSURE_NAT: &str = "priv.ensure_nat";
pub const CLEAR_NAT: &str = "priv.clear_nat";
pub const SYNC_RESOLVER_ROUTING: &str = "priv.sync_resolver_routing";
pub const CLEAR_RESOLVER_ROUTING: &str = "priv.clear_resolver_routing";
pub const ENSURE_DNS_REDIRECT: &str = "priv.ensure_dns_redirect";
pub const CREATE_DM_SNAPSHOT: &str = "priv.create_dm_snapshot";
pub const CLEANUP_DM_SNAPSHOT: &str = "priv.cleanup_dm_snapshot";
pub const REMOVE_DM_SNAPSHOT: &str = "priv.remove_dm_snapshot";
pub const FSCK_SNAPSHOT: &str = "priv.fsck_snapshot";
pub const READ_EXT4_FILE: &str = "priv.read_ext4_file";
pub const WRITE_EXT4_FILES: &str = "priv.write_ext4_files";
pub const ENSURE_SOCKET_ACCESS: &str = "priv.ensure_socket_access";
pub const KILL_PROCESS: &str = "priv.kill_process";
pub const SIGNAL_PROCESS: &str = "priv.signal_process";
pub const CLEANUP_JAILER_CHROOT: &str = "priv.cleanup_jailer_chroot";
pub const LAUNCH_FIRECRACKER: &str = "priv.launch_firecracker";
pub const PLACE_QEMU_CGROUP: &str = "priv.place_qemu_cgroup";
pub const REMOVE_QEMU_CGROUP: &str = "priv.remove_qemu_cgroup";

/// Params of methods that take none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Result of methods that return nothing but success.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `helper.version` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VersionResult {
    pub version: String,
    pub protocol: u32,
}

/// `priv.ensure_bridge`: create (or keep) the bridge with this address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnsureBridge {
    pub name: String,
    /// CIDR, e.g. `172.30.0.1/24`.
    pub address: String,
}

/// `priv.create_tap`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateTap {
    pub name: String,
    pub bridge: String,
    /// Own the tap by this jail uid (= gid) instead of the owner, for a
    /// jailed Firecracker; must lie inside install.toml's jail uid range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail_uid: Option<u32>,
}

/// `priv.delete_tap`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeleteTap {
    pub name: String,
}

/// `priv.ensure_nat` / `priv.clear_nat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Nat {
    pub guest_ip: String,
    pub tap: String,
}

/// `priv.sync_resolver_routing`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyncResolverRouting {
    pub bridge: String,
    /// `ADDR` or `ADDR:PORT`.
    pub resolver: String,
    pub domain: String,
}

/// `priv.clear_resolver_routing`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClearResolverRouting {
    pub bridge: String,
}

/// `priv.ensure_dns_redirect`: send DNS for the bridge address (port 53)
/// to the daemon's unprivileged port on that address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnsureDnsRedirect {
    pub bridge: String,
    /// The daemon's DNS port on the bridge address (1024-65535).
    pub port: u16,
}

/// `priv.create_dm_snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateDmSnapshot {
    pub name: String,
    pub base_image: String,
    pub cow_file: String,
    pub cow_size_bytes: u64,
}

/// What a dm snapshot is made of, recorded so cleanup is exact.
/// Empty fields mean "not created" and are skipped by cleanup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DmHandles {
    #[serde(default)]
    pub dm_name: String,
    #[serde(default)]
    pub dm_device: String,
    #[serde(default)]
    pub base_loop: String,
    #[serde(default)]
    pub cow_loop: String,
}

/// `priv.create_dm_snapshot` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateDmSnapshotResult {
    pub handles: DmHandles,
}

/// `priv.cleanup_dm_snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CleanupDmSnapshot {
    pub handles: DmHandles,
}

/// `priv.remove_dm_snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RemoveDmSnapshot {
    /// `fc-rootfs-*` or `/dev/mapper/fc-rootfs-*`.
    pub target: String,
}

/// `priv.fsck_snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FsckSnapshot {
    pub device: String,
}

/// `priv.fsck_snapshot` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FsckResult {
    /// e2fsck's exit status (0 clean, 1 errors corrected).
    pub exit_code: i32,
}

/// `priv.read_ext4_file`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReadExt4File {
    pub image: String,
    pub path: String,
}

/// `priv.read_ext4_file` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReadExt4FileResult {
    pub content_b64: String,
}

/// One file for `priv.write_ext4_files`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Ext4File {
    pub path: String,
    pub content_b64: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// `priv.write_ext4_files`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WriteExt4Files {
    pub image: String,
    pub files: Vec<Ext4File>,
}

/// `priv.ensure_socket_access`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnsureSocketAccess {
    pub path: String,
}

/// `priv.kill_process`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KillProcess {
    pub pid: i32,
}

/// `priv.signal_process`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignalProcess {
    pub pid: i32,
    /// By name, e.g. `"SIGTERM"`.
    pub signal: String,
}

/// `priv.cleanup_jailer_chroot`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CleanupJailerChroot {
    pub path: String,
}

/// `priv.place_qemu_cgroup`: move the daemon's QEMU `pid` of VM `vm_id`
/// into the VM's own cgroup `banger-<vm_id>`, limited for a guest of
/// `memory_mib` and `vcpus`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlaceQemuCgroup {
    pub vm_id: String,
    pub pid: i32,
    pub memory_mib: u32,
    pub vcpus: u32,
}

/// `priv.remove_qemu_cgroup`: remove VM `vm_id`'s empty cgroup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RemoveQemuCgroup {
    pub vm_id: String,
}

/// `priv.launch_firecracker`: the helper builds the argv from these typed
/// fields; binary paths come from install metadata, never from the caller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LaunchFirecracker {
    /// Short VM id (`[a-z0-9-]`, ≤ 32 chars); names the jail and the sockets.
    pub vm_id: String,
    /// API socket path (under RuntimeDir) when not jailed.
    pub api_socket: String,
    /// Run under the jailer (chroot under `jailer_base`, a per-VM jail
    /// uid/gid); needs `jail` in [`LaunchFirecrackerParams`].
    #[serde(default)]
    pub jailed: bool,
    /// Where Firecracker's stdout/stderr (serial console) goes: a file under
    /// StateDir, created 0600.
    pub log_file: String,
}

/// What a jailed launch makes visible in the chroot, and the VM's size for
/// its cgroup limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JailSpec {
    /// Kernel image: a file below StateDir; copied to [`JAILED_KERNEL`].
    pub kernel: String,
    /// Initrd: a file below StateDir, or empty for none; copied to [`JAILED_INITRD`].
    #[serde(default)]
    pub initrd: String,
    /// Root disk as a dm device (the dm-snapshot driver): a
    /// `/dev/mapper/fc-rootfs-*` device, made as the node
    /// [`JAILED_ROOT_DISK`] in the chroot. Empty when `root_disk_file` is
    /// given; exactly one of the two.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub root_disk: String,
    /// Root disk as a file (the copy/reflink driver): an absolute path
    /// below StateDir, a regular file with one link owned by the owner. The
    /// helper hands it to the jail uid (mode 0600) and binds exactly that
    /// file onto [`JAILED_ROOT_DISK`]; `priv.cleanup_jailer_chroot` gives
    /// it back to the owner with its old mode.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub root_disk_file: String,
    /// Guest memory; the cgroup memory limit is this plus the VMM overhead.
    pub memory_mib: u32,
    /// Guest vCPUs (bounds the pids limit).
    pub vcpus: u32,
    /// Optional CPU cap in percent of one CPU (`200` = two CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
}

/// Where a jailed Firecracker finds its files, as seen inside the chroot.
pub const JAILED_KERNEL: &str = "/vmlinux";
pub const JAILED_INITRD: &str = "/initrd";
pub const JAILED_ROOT_DISK: &str = "/rootfs";
/// The chroot's socket directory, where the API socket (and the daemon's
/// vsock `uds_path`, if it puts it there) live; bound from
/// `<RuntimeDir>/jails/<vm_id>` on the host. Not `/run`: the jailer makes
/// `/run` (like `/` and `/dev`) 0700 and the jail's own group, which would
/// shut the owner out of the directory through the bind.
pub const JAILED_SOCKET_DIR: &str = "/api";
/// The jailed API socket, inside the chroot.
pub const JAILED_API_SOCKET: &str = "/api/firecracker.socket";

/// Every field `priv.launch_firecracker` accepts: [`LaunchFirecracker`]
/// plus `jail`, which a jailed launch requires. A daemon that only
/// launches unjailed may keep sending [`LaunchFirecracker`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LaunchFirecrackerParams {
    pub vm_id: String,
    /// API socket under RuntimeDir when not jailed; empty when jailed.
    pub api_socket: String,
    #[serde(default)]
    pub jailed: bool,
    pub log_file: String,
    /// Required when `jailed`, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<JailSpec>,
}

impl From<LaunchFirecracker> for LaunchFirecrackerParams {
    fn from(p: LaunchFirecracker) -> Self {
        LaunchFirecrackerParams {
            vm_id: p.vm_id,
            api_socket: p.api_socket,
            jailed: p.jailed,
            log_file: p.log_file,
            jail: None,
        }
    }
}

/// `priv.launch_firecracker` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LaunchFirecrackerResult {
    pub pid: i32,
    /// Jailed: where the API socket appears on the host
    /// (`<RuntimeDir>/jails/<vm_id>/firecracker.socket`); hand it to the
    /// owner with `priv.ensure_socket_access` as it appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_socket: Option<String>,
    /// Jailed: the chroot (`priv.cleanup_jailer_chroot` removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chroot: Option<String>,
    /// Jailed: the uid (= gid) the VMM runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail_uid: Option<u32>,
}

/// A helper method: its wire name and the types of its params and result,
/// bound together so a caller cannot send one method's params to another
/// or decode the wrong answer. The daemon calls `privops.call::<M>(&p)`;
/// the helper dispatches `M::NAME` to a handler of `M::Params -> M::Result`.
pub trait Method {
    /// The JSON-RPC method name (one of [`METHODS`]).
    const NAME: &'static str;
    /// What the caller sends.
    type Params: Serialize + serde::de::DeserializeOwned;
    /// What the helper answers.
    type Result: Serialize + serde::de::DeserializeOwned;
}

/// One marker type per helper method, implementing [`Method`].
pub mod method {
    use super::Method;

    macro_rules! methods {
        ($($(#[$doc:meta])* $ty:ident = $name:ident: $params:ident -> $result:ident;)*) => {
            $(
                $(#[$doc])*
                #[derive(Debug, Clone, Copy, PartialEq, Eq)]
                pub enum $ty {}

                impl Method for $ty {
                    const NAME: &'static str = super::$name;
                    type Params = super::$params;
                    type Result = super::$result;
                }
            )*

            /// Every method's name, from the marker types (the same set as
            /// [`super::METHODS`]; a test keeps them equal).
            pub const NAMES: &[&str] = &[$(<$ty as Method>::NAME),*];
        };
    }

    methods! {
        /// `helper.version`.
        Version = VERSION: NoParams -> VersionResult;
        /// `priv.ensure_bridge`.
        EnsureBridge = ENSURE_BRIDGE: EnsureBridge -> Empty;
        /// `priv.create_tap`.
        CreateTap = CREATE_TAP: CreateTap -> Empty;
        /// `priv.delete_tap`.
        DeleteTap = DELETE_TAP: DeleteTap -> Empty;
        /// `priv.ensure_nat`.
        EnsureNat = ENSURE_NAT: Nat -> Empty;
        /// `priv.clear_nat`.
        ClearNat = CLEAR_NAT: Nat -> Empty;
        /// `priv.sync_resolver_routing`.
        SyncResolverRouting = SYNC_RESOLVER_ROUTING: SyncResolverRouting -> Empty;
        /// `priv.clear_resolver_routing`.
        ClearResolverRouting = CLEAR_RESOLVER_ROUTING: ClearResolverRouting -> Empty;
        /// `priv.ensure_dns_redirect`.
        EnsureDnsRedirect = ENSURE_DNS_REDIRECT: EnsureDnsRedirect -> Empty;
        /// `priv.create_dm_snapshot`.
        CreateDmSnapshot = CREATE_DM_SNAPSHOT: CreateDmSnapshot -> CreateDmSnapshotResult;
        /// `priv.cleanup_dm_snapshot`.
        CleanupDmSnapshot = CLEANUP_DM_SNAPSHOT: CleanupDmSnapshot -> Empty;
        /// `priv.remove_dm_snapshot`.
        RemoveDmSnapshot = REMOVE_DM_SNAPSHOT: RemoveDmSnapshot -> Empty;
        /// `priv.fsck_snapshot`.
        FsckSnapshot = FSCK_SNAPSHOT: FsckSnapshot -> FsckResult;
        /// `priv.read_ext4_file`.
        ReadExt4File = READ_EXT4_FILE: ReadExt4File -> ReadExt4FileResult;
        /// `priv.write_ext4_files`.
        WriteExt4Files = WRITE_EXT4_FILES: WriteExt4Files -> Empty;
        /// `priv.ensure_socket_access`.
        EnsureSocketAccess = ENSURE_SOCKET_ACCESS: EnsureSocketAccess -> Empty;
        /// `priv.kill_process`.
        KillProcess = KILL_PROCESS: KillProcess -> Empty;
        /// `priv.signal_process`.
        SignalProcess = SIGNAL_PROCESS: SignalProcess -> Empty;
        /// `priv.cleanup_jailer_chroot`.
        CleanupJailerChroot = CLEANUP_JAILER_CHROOT: CleanupJailerChroot -> Empty;
        /// `priv.launch_firecracker`.
        LaunchFirecracker = LAUNCH_FIRECRACKER: LaunchFirecrackerParams -> LaunchFirecrackerResult;
        /// `priv.place_qemu_cgroup`.
        PlaceQemuCgroup = PLACE_QEMU_CGROUP: PlaceQemuCgroup -> Empty;
        /// `priv.remove_qemu_cgroup`.
        RemoveQemuCgroup = REMOVE_QEMU_CGROUP: RemoveQemuCgroup -> Empty;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_unique_and_namespaced() {
        let mut seen = std::collections::HashSet::new();
        for m in METHODS {
            assert!(seen.insert(*m), "duplicate {m}");
            assert!(m.starts_with("priv.") || m.starts_with("helper."), "{m}");
        }
    }

    #[test]
    fn every_method_has_a_marker_type_and_no_other() {
        assert_eq!(method::NAMES, METHODS);
        assert_eq!(<method::ClearNat as Method>::NAME, "priv.clear_nat");
    }

    #[test]
    fn params_reject_unknown_fields() {
        let r: Result<Nat, _> =
            serde_json::from_str(r#"{"guest_ip":"172.30.0.2","tap":"bgtap1","x":1}"#);
        assert!(r.is_err());
        let r: Result<Nat, _> = serde_json::from_str(r#"{"guest_ip":"172.30.0.2","tap":"t"}"#);
        assert!(r.is_ok());
    }

    #[test]
    fn handles_fields_default_to_empty() {
        let h: CleanupDmSnapshot =
            serde_json::from_str(r#"{"handles":{"dm_name":"fc-rootfs-a"}}"#).unwrap();
        assert_eq!(h.handles.dm_name, "fc-rootfs-a");
        assert_eq!(h.handles.cow_loop, "");
    }
}
