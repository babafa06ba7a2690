//! The module tour stays true: every module of `bangerd/src/lib.rs` has a
//! line in its layout section and a row in docs/architecture.md, and every
//! file module of a directory module is named in that row.

use std::path::Path;

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
const ARCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/architecture.md");

fn read(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// `pub mod x;` / `mod x;` names declared in `text`, except `#[cfg(test)]` ones.
fn declared(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut test_only = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("#[cfg(test)]") {
            test_only = true;
            continue;
        }
        let decl = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub(crate) mod "))
            .or_else(|| line.strip_prefix("mod "))
            .and_then(|r| r.strip_suffix(';'));
        if let Some(name) = decl {
            if !test_only {
                out.push(name.to_string());
            }
        }
        if !line.starts_with("#[") {
            test_only = false;
        }
    }
    out
}

/// The row of the module table in architecture.md for `m` (or `m/`).
fn row<'a>(arch: &'a str, m: &str) -> Option<&'a str> {
    arch.lines()
        .find(|l| l.starts_with(&format!("| `{m}` |")) || l.starts_with(&format!("| `{m}/` |")))
}

#[test]
fn lib_layout_and_architecture_name_every_module() {
    let lib = read(&format!("{SRC}/lib.rs"));
    let arch = read(ARCH);
    let layout: String = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let mods = declared(&lib);
    assert!(mods.len() > 10, "{mods:?}");
    let mut missing = Vec::new();
    for m in &mods {
        if !layout.contains(&format!("//! - [`{m}`]")) {
            missing.push(format!("lib.rs layout: {m}"));
        }
        let Some(r) = row(&arch, m) else {
            missing.push(format!("architecture.md row: {m}"));
            continue;
        };
        let dir = Path::new(SRC).join(m);
        if dir.is_dir() {
            let parent = read(&format!("{SRC}/{m}/mod.rs"));
            for sub in declared(&parent) {
                if !r.contains(&format!("`{sub}`")) && !r.contains(&format!("::{sub}`")) {
                    missing.push(format!("architecture.md row {m}/: {sub}"));
                }
            }
        }
    }
    // Nothing documented that is not there.
    for l in layout.lines() {
        if let Some(name) = l
            .strip_prefix("//! - [`")
            .and_then(|r| r.split_once('`'))
            .map(|(n, _)| n)
        {
            if !mods.iter().any(|m| m == name) {
                missing.push(format!(
                    "lib.rs layout names a module that is not there: {name}"
                ));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}
