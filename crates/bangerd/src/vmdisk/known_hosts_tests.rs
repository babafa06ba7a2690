use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJhbmdlcmJhbmdlcmJhbmdlcmJhbmdlcmJhbmdlcmJh";

fn dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::Builder::new()
        .prefix("bgtest-kh-")
        .tempdir()
        .unwrap();
    let p = d.path().join("known_hosts");
    (d, p)
}

fn names(vm: &str, ip: &str) -> Vec<String> {
    vec![format!("{vm}.vm"), ip.to_string()]
}

fn line(vm: &str, ip: &str, k: char) -> String {
    format!("{vm}.vm,{ip} {KEY}{k}\n")
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn a_new_vm_is_appended_in_place_and_the_file_stays_private() {
    let (_d, p) = dir();
    pin_at(
        &p,
        &names("a", "10.0.0.2"),
        Some(&line("a", "10.0.0.2", 'A')),
    )
    .unwrap();
    assert_eq!(mode(&p), 0o600);
    let first = ino(&p);
    // 200 more VMs: every one an append to the same file, none a rewrite.
    let mut want = line("a", "10.0.0.2", 'A');
    for i in 0..200 {
        let (vm, ip) = (format!("v{i}"), format!("10.0.1.{i}"));
        pin_at(&p, &names(&vm, &ip), Some(&line(&vm, &ip, 'B'))).unwrap();
        want.push_str(&line(&vm, &ip, 'B'));
    }
    assert_eq!(ino(&p), first, "appended, not renamed over");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), want);
    assert_eq!(mode(&p), 0o600);
}

#[test]
fn a_vm_already_pinned_is_replaced_keeping_every_other_entry() {
    let (_d, p) = dir();
    let other = "# the owner's note\nhost.example ssh-ed25519 AAAAother\n";
    std::fs::write(&p, other).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    pin_at(
        &p,
        &names("a", "10.0.0.2"),
        Some(&line("a", "10.0.0.2", 'A')),
    )
    .unwrap();
    pin_at(
        &p,
        &names("b", "10.0.0.3"),
        Some(&line("b", "10.0.0.3", 'A')),
    )
    .unwrap();
    // A stale line for b's address (a VM before it): replaced, not duplicated.
    pin_at(
        &p,
        &names("c", "10.0.0.3"),
        Some(&line("c", "10.0.0.3", 'C')),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        format!(
            "{other}{}{}",
            line("a", "10.0.0.2", 'A'),
            line("c", "10.0.0.3", 'C')
        )
    );
    assert_eq!(mode(&p), 0o600);
    // Re-customising a: its old line goes, the new one is last.
    pin_at(
        &p,
        &names("a", "10.0.0.2"),
        Some(&line("a", "10.0.0.2", 'Z')),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        format!(
            "{other}{}{}",
            line("c", "10.0.0.3", 'C'),
            line("a", "10.0.0.2", 'Z')
        )
    );
    // Destroy drops only that VM's line.
    pin_at(&p, &names("c", "10.0.0.3"), None).unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        format!("{other}{}", line("a", "10.0.0.2", 'Z'))
    );
}

#[test]
fn an_odd_file_is_rewritten_whole_not_appended_to() {
    let (d, p) = dir();
    // No final newline: an append would join two lines.
    std::fs::write(&p, "host.example ssh-ed25519 AAAAother").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    pin_at(
        &p,
        &names("a", "10.0.0.2"),
        Some(&line("a", "10.0.0.2", 'A')),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        format!(
            "host.example ssh-ed25519 AAAAother\n{}",
            line("a", "10.0.0.2", 'A')
        )
    );
    // Readable by others: the rewrite makes it private again.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = ino(&p);
    pin_at(
        &p,
        &names("b", "10.0.0.3"),
        Some(&line("b", "10.0.0.3", 'B')),
    )
    .unwrap();
    assert_eq!(mode(&p), 0o600);
    assert_ne!(ino(&p), before);
    // A symlink in its place is never appended through.
    let target = d.path().join("elsewhere");
    std::fs::write(&target, "").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&p).unwrap();
    std::os::unix::fs::symlink(&target, &p).unwrap();
    pin_at(
        &p,
        &names("c", "10.0.0.4"),
        Some(&line("c", "10.0.0.4", 'C')),
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    assert!(!std::fs::symlink_metadata(&p)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&p)
        .unwrap()
        .ends_with(&line("c", "10.0.0.4", 'C')));
}
