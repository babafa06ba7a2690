//! The jailer's host steps, in the real one's order: validate the exec
//! file, create the chroot and copy the exec file in, set resource limits,
//! join the per-VM cgroups, pivot into the chroot, make the device nodes,
//! hand the chroot to the jail ids, drop privileges and exec.

use crate::args::Args;
use rustix::fs::{FileType, Mode};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A failed jailer step; the messages are the real jailer's.
#[derive(Debug, thiserror::Error)]
pub enum JailerError {
    #[error("Failed to canonicalize path {0}: {1}")]
    Canonicalize(PathBuf, io::Error),
    #[error("{0} is not a file")]
    NotAFile(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("Failed to extract filename from path {0}")]
    ExtractFileName(PathBuf),
    #[error("Failed to create directory {0}: {1}")]
    CreateDir(PathBuf, io::Error),
    #[error("Failed to copy {0} to {1}: {2}")]
    Copy(PathBuf, PathBuf, io::Error),
    #[error("Failed to change permissions on {0:?}: {1}")]
    Chmod(PathBuf, io::Error),
    #[error("Failed to change owner for {0:?}: {1}")]
    ChangeFileOwner(PathBuf, io::Error),
    #[error("Failed to write to {0}: {1}")]
    Write(PathBuf, io::Error),
    #[error("{0} configurations not found in /proc/mounts")]
    CgroupLineNotFound(String),
    #[error("Failed to set limit for resource: {0}")]
    Setrlimit(String),
    #[error("Failed to join network namespace: netns: {0}")]
    SetNetNs(io::Error),
    #[error("Failed to unshare into new mount namespace: {0}")]
    UnshareNewNs(io::Error),
    #[error("Failed to change the propagation type to slave: {0}")]
    MountPropagationSlave(io::Error),
    #[error("Failed to bind mount the jail root directory: {0}")]
    MountBind(io::Error),
    #[error("Failed to change current directory: {0}")]
    SetCurrentDir(io::Error),
    #[error("Failed to create the jail root directory before pivoting root: {0}")]
    MkdirOldRoot(io::Error),
    #[error("Failed to pivot root: {0}")]
    PivotRoot(io::Error),
    #[error("Failed to unmount the old jail root: {0}")]
    UmountOldRoot(io::Error),
    #[error("Failed to remove old jail root directory: {0}")]
    RmOldRootDir(io::Error),
    #[error("Failed to create {1} via mknod inside the jail: {0}")]
    MknodDev(io::Error, &'static str),
    #[error("Failed to daemonize: setsid: {0}")]
    SetSid(io::Error),
    #[error("Failed to switch to uid/gid {0}/{1}: {2}")]
    SetIds(u32, u32, io::Error),
    #[error("Failed to exec into Firecracker: {0}")]
    Exec(io::Error),
    #[error("the double does not implement --new-pid-ns")]
    NewPidNs,
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// The device nodes made inside the jail: name, host path for the device
/// number, and the number used when the host has no such node.
const DEVICES: &[(&str, &str, u32, u32)] = &[
    ("/dev/kvm", "/dev/kvm", 10, 232),
    ("/dev/net/tun", "/dev/net/tun", 10, 200),
    ("/dev/userfaultfd", "/dev/userfaultfd", 10, 126),
    ("/dev/urandom", "/dev/urandom", 1, 9),
];

/// The exec file, checked: canonical and a regular file; its name is the
/// canonical path's last component (v1.16.1 does not require it to contain
/// `firecracker`, whatever its docs say).
fn exec_file(a: &Args) -> Result<(PathBuf, String), JailerError> {
    let p = fs::canonicalize(&a.exec_file)
        .map_err(|e| JailerError::Canonicalize(a.exec_file.clone(), e))?;
    if !p.is_file() {
        return Err(JailerError::NotAFile(p));
    }
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| JailerError::ExtractFileName(p.clone()))?;
    Ok((p, name))
}

/// `<canonical chroot base>/<exec name>/<id>/root`; the base must exist.
fn chroot_dir(a: &Args, exec_name: &str) -> Result<PathBuf, JailerError> {
    let base = fs::canonicalize(&a.chroot_base)
        .map_err(|e| JailerError::Canonicalize(a.chroot_base.clone(), e))?;
    if !base.is_dir() {
        return Err(JailerError::NotADirectory(base));
    }
    Ok(base.join(exec_name).join(&a.id).join("root"))
}

/// Where each `--cgroup` file's controller is mounted, from `mounts`
/// (`/proc/mounts` text): v1, the `cgroup` mount whose options name the
/// controller; v2, the `cgroup2` mount.
pub fn cgroup_mount(mounts: &str, version: u8, controller: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (dir, fstype, opts) = (f.get(1)?, f.get(2)?, f.get(3)?);
        let ok = match version {
            2 => *fstype == "cgroup2",
            _ => *fstype == "cgroup" && opts.split(',').any(|o| o == controller),
        };
        ok.then(|| PathBuf::from(dir))
    })
}

fn write_line(path: &Path, value: &str) -> Result<(), JailerError> {
    fs::write(path, format!("{value}\n")).map_err(|e| JailerError::Write(path.into(), e))
}

/// Create the per-VM cgroups, write the `--cgroup` values and move this
/// process in (v1 `tasks`, v2 `cgroup.procs`; v2 also enables each
/// controller in the parents' `cgroup.subtree_control`).
fn join_cgroups(a: &Args, exec_name: &str) -> Result<(), JailerError> {
    if a.cgroups.is_empty() {
        return Ok(());
    }
    let mounts = fs::read_to_string("/proc/mounts")
        .map_err(|e| JailerError::Write("/proc/mounts".into(), e))?;
    let parent = a.parent_cgroup.clone().unwrap_or_else(|| exec_name.into());
    let pid = std::process::id().to_string();
    let mut joined: Vec<PathBuf> = Vec::new();
    for (file, value) in &a.cgroups {
        let controller = file.split('.').next().unwrap_or(file);
        let root = cgroup_mount(&mounts, a.cgroup_version, controller)
            .ok_or_else(|| JailerError::CgroupLineNotFound(controller.into()))?;
        let dir = root.join(&parent).join(&a.id);
        if a.cgroup_version == 2 {
            let mut at = root.clone();
            for comp in Path::new(&parent).components() {
                write_line(
                    &at.join("cgroup.subtree_control"),
                    &format!("+{controller}"),
                )?;
                at = at.join(comp);
                fs::create_dir_all(&at).map_err(|e| JailerError::CreateDir(at.clone(), e))?;
            }
            write_line(
                &at.join("cgroup.subtree_control"),
                &format!("+{controller}"),
            )?;
        }
        fs::create_dir_all(&dir).map_err(|e| JailerError::CreateDir(dir.clone(), e))?;
        write_line(&dir.join(file), value)?;
        if !joined.contains(&dir) {
            let procs = if a.cgroup_version == 2 {
                "cgroup.procs"
            } else {
                "tasks"
            };
            write_line(&dir.join(procs), &pid)?;
            joined.push(dir);
        }
    }
    Ok(())
}

fn setrlimits(a: &Args) -> Result<(), JailerError> {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let mut nofile = 2048;
    for (k, v) in &a.resource_limits {
        match k.as_str() {
            "no-file" => nofile = *v,
            _ => setrlimit(
                Resource::Fsize,
                Rlimit {
                    current: Some(*v),
                    maximum: Some(*v),
                },
            )
            .map_err(|e| JailerError::Setrlimit(e.to_string()))?,
        }
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(nofile),
            maximum: Some(nofile),
        },
    )
    .map_err(|e| JailerError::Setrlimit(e.to_string()))
}

/// New mount namespace, mounts made slaves, the chroot bound on itself
/// (recursively: mounts below it stay), `pivot_root` into it, old root
/// detached and removed.
fn pivot(chroot: &Path) -> Result<(), JailerError> {
    use rustix::mount::{
        mount_change, mount_recursive_bind, unmount, MountPropagationFlags, UnmountFlags,
    };
    rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNS)
        .map_err(|e| JailerError::UnshareNewNs(errno(e)))?;
    mount_change(
        "/",
        MountPropagationFlags::SLAVE | MountPropagationFlags::REC,
    )
    .map_err(|e| JailerError::MountPropagationSlave(errno(e)))?;
    mount_recursive_bind(chroot, chroot).map_err(|e| JailerError::MountBind(errno(e)))?;
    std::env::set_current_dir(chroot).map_err(JailerError::SetCurrentDir)?;
    rustix::fs::mkdir("old_root", Mode::from_raw_mode(0o600))
        .map_err(|e| JailerError::MkdirOldRoot(errno(e)))?;
    rustix::process::pivot_root(".", "old_root").map_err(|e| JailerError::PivotRoot(errno(e)))?;
    rustix::process::chdir("/").map_err(|e| JailerError::SetCurrentDir(errno(e)))?;
    unmount("old_root", UnmountFlags::DETACH).map_err(|e| JailerError::UmountOldRoot(errno(e)))?;
    rustix::fs::rmdir("old_root").map_err(|e| JailerError::RmOldRootDir(errno(e)))?;
    rustix::process::chroot(".").map_err(|e| JailerError::PivotRoot(errno(e)))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), JailerError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| JailerError::ChangeFileOwner(path.into(), e))
}

/// Directories the jailer makes (or keeps) inside the jail, 0700 and owned
/// by the jail ids: `/` itself, `/dev`, `/dev/net`, and `/run` for the
/// default API socket.
const FOLDERS: &[&str] = &["/", "/dev", "/dev/net", "/run"];

/// Set up [`FOLDERS`], then `mknod` each of [`DEVICES`] (0600) and hand it
/// to the jail ids. `host` holds the device numbers read before the pivot.
fn make_devices(a: &Args, host: &[u64]) -> Result<(), JailerError> {
    for d in FOLDERS {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(JailerError::CreateDir(d.into(), e)),
        }
        fs::set_permissions(d, fs::Permissions::from_mode(0o700))
            .map_err(|e| JailerError::Chmod(d.into(), e))?;
        chown(Path::new(d), a.uid, a.gid)?;
    }
    for ((name, _, _, _), rdev) in DEVICES.iter().zip(host) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            *name,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            *rdev,
        )
        .map_err(|e| JailerError::MknodDev(errno(e), name))?;
        chown(Path::new(name), a.uid, a.gid)?;
    }
    Ok(())
}

fn host_device_numbers() -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    DEVICES
        .iter()
        .map(|(_, host, maj, min)| {
            fs::metadata(host)
                .map(|m| m.rdev())
                .unwrap_or_else(|_| rustix::fs::makedev(*maj, *min))
        })
        .collect()
}

fn cstr(s: &[u8]) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Run the jailer: on success this never returns (the exec file replaced
/// the process).
pub fn run(
    a: &Args,
    start_us: u64,
    start_cpu_us: u64,
    cpu_now_us: impl Fn() -> u64,
) -> Result<(), JailerError> {
    if a.new_pid_ns {
        return Err(JailerError::NewPidNs);
    }
    let (exec, name) = exec_file(a)?;
    let chroot = chroot_dir(a, &name)?;
    fs::create_dir_all(&chroot).map_err(|e| JailerError::CreateDir(chroot.clone(), e))?;
    let inside = chroot.join(&name);
    fs::copy(&exec, &inside).map_err(|e| JailerError::Copy(exec.clone(), inside.clone(), e))?;
    chown(&inside, a.uid, a.gid)?;
    setrlimits(a)?;
    join_cgroups(a, &name)?;
    if let Some(ns) = &a.netns {
        let f = fs::File::open(ns).map_err(JailerError::SetNetNs)?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| JailerError::SetNetNs(io::Error::from_raw_os_error(e as i32)))?;
    }
    let devs = host_device_numbers();
    pivot(&chroot)?;
    make_devices(a, &devs)?;
    let pid_file = format!("/{name}.pid");
    write_line(Path::new(&pid_file), &std::process::id().to_string())?;
    if a.daemonize {
        rustix::process::setsid().map_err(|e| JailerError::SetSid(errno(e)))?;
        let null = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null");
        if let Ok(null) = null {
            for fd in 0..3 {
                let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd);
            }
        }
    }
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(a.uid),
        nix::unistd::Gid::from_raw(a.gid),
    );
    let set = || -> nix::Result<()> {
        nix::unistd::setgroups(&[gid])?;
        nix::unistd::setgid(gid)?;
        nix::unistd::setuid(uid)
    };
    set().map_err(|e| JailerError::SetIds(a.uid, a.gid, io::Error::from_raw_os_error(e as i32)))?;
    let path = format!("/{name}");
    let mut argv = vec![
        cstr(path.as_bytes()),
        cstr(b"--id"),
        cstr(a.id.as_bytes()),
        cstr(b"--start-time-us"),
        cstr(start_us.to_string().as_bytes()),
        cstr(b"--start-time-cpu-us"),
        cstr(start_cpu_us.to_string().as_bytes()),
        cstr(b"--parent-cpu-time-us"),
        cstr(
            cpu_now_us()
                .saturating_sub(start_cpu_us)
                .to_string()
                .as_bytes(),
        ),
    ];
    argv.extend(
        a.extra
            .iter()
            .map(|s| cstr(std::ffi::OsStr::new(s).as_bytes())),
    );
    let env: [CString; 0] = [];
    let e = nix::unistd::execve(&cstr(path.as_bytes()), &argv, &env).unwrap_err();
    Err(JailerError::Exec(io::Error::from_raw_os_error(e as i32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mounts_v1_and_v2() {
        let m = "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup_mount(m, 1, "memory"),
            Some("/sys/fs/cgroup/memory".into())
        );
        assert_eq!(cgroup_mount(m, 1, "cpu"), Some("/sys/fs/cgroup/cpu".into()));
        assert_eq!(cgroup_mount(m, 1, "pids"), None);
        assert_eq!(
            cgroup_mount(m, 2, "memory"),
            Some("/sys/fs/cgroup/unified".into())
        );
    }
}
