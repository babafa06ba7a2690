//! Hostile layers: nothing may be written, linked or removed outside the root.

use super::super::layer::{apply, FakeDb};
use super::{tar_bytes, E};
use std::path::Path;

struct Arena {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
    canary: std::path::PathBuf,
}

fn arena() -> Arena {
    let tmp = banger_testkit::tmp();
    let base = tmp.path().canonicalize().unwrap();
    let root = base.join("rootfs");
    let outside = base.join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let canary = outside.join("canary");
    std::fs::write(&canary, b"canary").unwrap();
    Arena {
        _tmp: tmp,
        root,
        outside,
        canary,
    }
}

fn outside_untouched(a: &Arena) {
    let names: Vec<_> = std::fs::read_dir(&a.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("canary")]);
    assert_eq!(std::fs::read(&a.canary).unwrap(), b"canary");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&a.canary).unwrap().nlink(), 1);
    assert!(!Path::new("/bgtest-escape").exists());
}

fn run(a: &Arena, entries: &[E]) -> Result<(), super::super::layer::LayerError> {
    let bytes = tar_bytes(entries);
    apply(&a.root, &bytes[..], &mut FakeDb::default())
}

#[test]
fn dotdot_entries_are_refused() {
    let a = arena();
    let rel = "../outside/bgtest-escape";
    assert!(run(&a, &[E::File(rel, b"x", 0o644, 0, 0)]).is_err());
    assert!(run(
        &a,
        &[E::File("a/../../outside/bgtest-escape", b"x", 0o644, 0, 0)]
    )
    .is_err());
    assert!(run(&a, &[E::File("../outside/.wh.canary", b"", 0o644, 0, 0)]).is_err());
    assert!(run(&a, &[E::File("x/.wh...", b"", 0o644, 0, 0)]).is_err());
    outside_untouched(&a);
}

#[test]
fn absolute_entries_land_inside_the_root() {
    let a = arena();
    let abs = format!("{}/bgtest-escape", a.outside.display());
    run(
        &a,
        &[
            E::File(&abs, b"x", 0o644, 0, 0),
            E::File("/bgtest-escape", b"y", 0o644, 0, 0),
        ],
    )
    .unwrap();
    assert_eq!(
        std::fs::read(a.root.join(abs.trim_start_matches('/'))).unwrap(),
        b"x"
    );
    assert_eq!(std::fs::read(a.root.join("bgtest-escape")).unwrap(), b"y");
    outside_untouched(&a);
}

#[test]
fn symlink_escapes_resolve_inside_the_root() {
    let a = arena();
    let out = a.outside.to_str().unwrap();
    run(
        &a,
        &[
            E::Sym("up", "../../../../../.."),
            E::Sym("abs", out),
            E::Sym("slash", "/"),
            E::File("up/bgtest-escape", b"1", 0o644, 0, 0),
            E::File("abs/bgtest-escape", b"2", 0o644, 0, 0),
            E::File("slash/bgtest-escape2", b"3", 0o644, 0, 0),
            E::Dir("abs/newdir/", 0o755, 0, 0),
            E::File("abs/.wh.canary", b"", 0o644, 0, 0),
        ],
    )
    .unwrap();
    assert_eq!(std::fs::read(a.root.join("bgtest-escape")).unwrap(), b"1");
    assert_eq!(
        std::fs::read(
            a.root
                .join(out.trim_start_matches('/'))
                .join("bgtest-escape")
        )
        .unwrap(),
        b"2"
    );
    outside_untouched(&a);
}

#[test]
fn a_file_over_a_symlink_replaces_the_link_not_its_target() {
    let a = arena();
    let canary = a.canary.to_str().unwrap();
    // First layer: a symlink to the host canary; second: a file with that name.
    run(&a, &[E::Sym("etc-passwd", canary)]).unwrap();
    run(&a, &[E::File("etc-passwd", b"pwned", 0o644, 0, 0)]).unwrap();
    assert_eq!(std::fs::read(a.root.join("etc-passwd")).unwrap(), b"pwned");
    // A directory entry over a symlinked dir, then a file in it.
    run(&a, &[E::Sym("d", a.outside.to_str().unwrap())]).unwrap();
    run(
        &a,
        &[
            E::Dir("d/", 0o755, 0, 0),
            E::File("d/canary", b"pwned", 0o644, 0, 0),
        ],
    )
    .unwrap();
    outside_untouched(&a);
}

#[test]
fn hardlink_escapes_are_refused_or_stay_inside() {
    let a = arena();
    let canary = a.canary.to_str().unwrap();
    assert!(run(&a, &[E::Hard("hl", "../outside/canary")]).is_err());
    // An absolute target means the root's own path: absent there → error.
    assert!(run(&a, &[E::Hard("hl", canary)]).is_err());
    // Through a symlinked directory: still resolved inside the root.
    assert!(run(
        &a,
        &[
            E::Sym("o", a.outside.to_str().unwrap()),
            E::Hard("hl2", "o/canary")
        ]
    )
    .is_err());
    outside_untouched(&a);
}
