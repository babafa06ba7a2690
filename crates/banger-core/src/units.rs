//! The two systemd units of the system install, rendered from install
//! metadata: the root helper (narrow capabilities) and the owner daemon
//! (no capabilities at all), plus the tmpfiles line for the RuntimeDir.

use banger_proto::install::InstallConfig;
use std::path::Path;

/// Unit file names.
pub const HELPER_UNIT: &str = "banger-helper.service";
pub const DAEMON_UNIT: &str = "bangerd.service";

/// Where the installed binaries live.
pub struct Binaries<'a> {
    pub helper: &'a Path,
    pub daemon: &'a Path,
}

fn rw_paths(cfg: &InstallConfig, with_jailer: bool) -> String {
    let mut paths = vec![
        cfg.state_dir.display().to_string(),
        cfg.runtime_dir.display().to_string(),
    ];
    if with_jailer {
        paths.push(format!("-{}", cfg.jailer_base.display()));
    }
    paths.join(" ")
}

/// The root helper's unit: only what dm/loop/netlink/nft/chown/kill and
/// launching the jailer need.
pub fn helper_unit(cfg: &InstallConfig, bins: &Binaries, config_path: &Path) -> String {
    format!(
        r#"[Unit]
Description=banger root helper (privileged steps for bangerd)
Documentation=man:banger(1)
Before={daemon_unit}

[Service]
Type=notify
ExecStart={helper} --config {config}
Restart=on-failure
UMask=0077
# Capabilities: net admin (bridge, tap, nft), sys admin (loop, dm, umount),
# chown/fowner (socket access), kill (firecracker), the jailer's set-up
# (setuid/setgid, chroot, mknod), dac override for StateDir files, and
# setpcap to clear the bounding set of the tools it runs (e2fsck/debugfs run
# with no capability at all).
CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_KILL CAP_SETUID CAP_SETGID CAP_SETPCAP CAP_SYS_CHROOT CAP_MKNOD
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={rw}
# Kernel tunables are read-only except the two the helper sets: IPv4
# forwarding for NAT, IPv6 off (no router advertisements) on its links.
ProtectKernelTunables=yes
ReadWritePaths=/proc/sys/net/ipv4/ip_forward -/proc/sys/net/ipv6/conf
# The helper reads nothing in homes.
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
# The jailer makes each VM's cgroups (memory, pids, cpu) under the cgroup
# root, so the cgroup file system stays writable for the helper.
ProtectControlGroups=no
ProtectClock=yes
ProtectHostname=yes
# Launch records (which pid is a Firecracker this helper started) survive a
# helper restart: /run/banger-helper, kept across restarts.
RuntimeDirectory=banger-helper
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
# The jailer's own mount namespace for Firecracker (no --new-pid-ns/--netns).
RestrictNamespaces=mnt
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# Neither the helper, its tools, the jailer nor Firecracker needs W+X memory.
MemoryDenyWriteExecute=yes
# A runaway helper cannot take the host's memory or pids with it.
MemoryMax=512M
TasksMax=256
# Netlink for links and nftables, Unix for the sockets and resolved's D-Bus;
# the helper never speaks IP itself.
RestrictAddressFamilies=AF_UNIX AF_NETLINK
IPAddressDeny=any
SystemCallArchitectures=native
SystemCallFilter=@system-service @mount mknod mknodat
SystemCallErrorNumber=EPERM
DevicePolicy=closed
DeviceAllow=/dev/mapper/control rw
DeviceAllow=/dev/loop-control rw
DeviceAllow=block-loop rw
# m: the jail gets its own nodes of these (mknod in the chroot).
DeviceAllow=block-device-mapper rwm
DeviceAllow=/dev/kvm rwm
DeviceAllow=/dev/net/tun rwm
DeviceAllow=/dev/urandom rwm
DeviceAllow=/dev/userfaultfd rwm

[Install]
WantedBy=multi-user.target
"#,
        daemon_unit = DAEMON_UNIT,
        helper = bins.helper.display(),
        config = config_path.display(),
        rw = rw_paths(cfg, true),
    )
}

/// The owner daemon's unit: runs as the owner with no capabilities.
pub fn daemon_unit(cfg: &InstallConfig, bins: &Binaries, config_path: &Path) -> String {
    format!(
        r#"[Unit]
Description=banger daemon (VMs, images, network, DNS) for uid {uid}
Documentation=man:banger(1)
Wants={helper_unit}
After={helper_unit} network-online.target

[Service]
Type=notify
User={uid}
Group={gid}
ExecStart={daemon} --config {config}
Restart=on-failure
# Stopping or restarting the daemon stops only the daemon: the VMMs it
# started (QEMU, in their own process groups) keep running and the next
# daemon re-adopts them.
KillMode=process
UMask=0077
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
RemoveIPC=yes
# Only root and the owner are mapped; every other uid reads as nobody.
PrivateUsers=yes
ProtectSystem=strict
ReadWritePaths={rw}
# Homes are an empty tmpfs except the owner's (SSH keys, file_sync), read-only.
ProtectHome=tmpfs
BindReadOnlyPaths=-{home}
PrivateTmp=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
# No namespaces at all. Rootless Debian builds (mmdebstrap --mode=unshare)
# would need the setuid newuidmap, which NoNewPrivileges disarms, so a user
# namespace could serve nothing here.
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
# seccomp: QEMU installs its own, narrower filter (-sandbox on).
SystemCallFilter=@system-service seccomp
SystemCallFilter=~@resources
SystemCallErrorNumber=EPERM
# A private /dev with only the two nodes QEMU needs bound in.
PrivateDevices=yes
BindPaths=-/dev/kvm -/dev/net/tun
DevicePolicy=closed
DeviceAllow=/dev/kvm rw
DeviceAllow=/dev/net/tun rw

[Install]
WantedBy=multi-user.target
"#,
        uid = cfg.owner_uid,
        gid = cfg.owner_gid,
        home = cfg.owner_home.display(),
        helper_unit = HELPER_UNIT,
        daemon = bins.daemon.display(),
        config = config_path.display(),
        rw = rw_paths(cfg, false),
    )
}

/// tmpfiles.d line: the RuntimeDir, root-owned, the owner's group, sticky
/// so the owner can create `bangerd.sock` but never replace `helper.sock`.
pub fn tmpfiles(cfg: &InstallConfig) -> String {
    format!(
        "# banger RuntimeDir: sockets of the root helper and the owner daemon\nd {} 01770 root {} -\n",
        cfg.runtime_dir.display(),
        cfg.owner_gid
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> InstallConfig {
        InstallConfig::for_owner(1000, 1001, "/home/al".into())
    }

    fn bins() -> Binaries<'static> {
        Binaries {
            helper: Path::new("/usr/local/bin/banger-helper"),
            daemon: Path::new("/usr/local/bin/bangerd"),
        }
    }

    #[test]
    fn daemon_runs_as_owner_with_no_capabilities() {
        let u = daemon_unit(&cfg(), &bins(), Path::new("/etc/banger/install.toml"));
        assert!(u.contains("\nUser=1000\nGroup=1001\n"));
        assert!(u.contains("\nCapabilityBoundingSet=\n"));
        assert!(u.contains("ExecStart=/usr/local/bin/bangerd --config /etc/banger/install.toml"));
        assert!(u.contains("ReadWritePaths=/var/lib/banger /run/banger\n"));
        // Of all homes only the owner's is visible, read-only.
        assert!(u.contains("\nProtectHome=tmpfs\nBindReadOnlyPaths=-/home/al\n"));
        assert!(u.contains("\nPrivateDevices=yes\nBindPaths=-/dev/kvm -/dev/net/tun\n"));
        assert!(u.contains("\nRestrictNamespaces=yes\n"));
    }

    #[test]
    fn helper_runs_as_root_with_a_closed_device_policy() {
        let u = helper_unit(&cfg(), &bins(), Path::new("/etc/banger/install.toml"));
        assert!(!u.contains("\nUser="));
        assert!(u.contains("DevicePolicy=closed"));
        assert!(u.contains("ReadWritePaths=/var/lib/banger /run/banger -/srv/jailer"));
        assert!(!u.contains("CAP_SYS_PTRACE") && !u.contains("CAP_SYS_MODULE"));
        assert!(u.contains("\nMemoryMax=512M\nTasksMax=256\n"));
        assert!(u.contains("\nRestrictNamespaces=mnt\n"));
        // The jailed launch: cgroups written, records kept, nodes made.
        assert!(u.contains("\nProtectControlGroups=no\n"));
        assert!(u.contains("\nProtectKernelTunables=yes\nReadWritePaths=/proc/sys/net/ipv4/ip_forward -/proc/sys/net/ipv6/conf\n"));
        assert!(u.contains("\nRuntimeDirectory=banger-helper\n"));
        assert!(u.contains("\nRuntimeDirectoryPreserve=yes\n"));
        assert!(u.contains("\nDeviceAllow=block-device-mapper rwm\n"));
    }

    #[test]
    fn runtime_dir_is_sticky_and_group_owned() {
        assert_eq!(
            tmpfiles(&cfg()),
            "# banger RuntimeDir: sockets of the root helper and the owner daemon\nd /run/banger 01770 root 1001 -\n"
        );
    }
}
