//! `docs/privileges.md` must have a Validation gate row for every method the
//! helper serves (and no row for a method that does not exist).

use banger_proto::helper::METHODS;
use std::collections::BTreeMap;

/// Cells of a Markdown table row, splitting on `|` but not on `\|`.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut prev = '\0';
    for c in inner.chars() {
        if c == '|' && prev != '\\' {
            out.push(String::new());
        } else {
            out.last_mut().unwrap().push(c);
        }
        prev = c;
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// Method → gate cell, from the table whose header has a "Validation gate" column.
fn gate_rows(doc: &str) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    let mut gate_col = None;
    for line in doc.lines() {
        if !line.trim_start().starts_with('|') {
            gate_col = None;
            continue;
        }
        let c = cells(line);
        if let Some(i) = c.iter().position(|h| h == "Validation gate") {
            gate_col = Some(i);
            continue;
        }
        let Some(gi) = gate_col else { continue };
        if c.iter().all(|x| x.chars().all(|ch| ch == '-' || ch == ':')) {
            continue;
        }
        let name = c[0].trim_matches('`').to_string();
        rows.insert(name, c.get(gi).cloned().unwrap_or_default());
    }
    rows
}

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/privileges.md");
    std::fs::read_to_string(path).expect("docs/privileges.md exists")
}

#[test]
fn every_method_has_a_validation_gate_row() {
    let rows = gate_rows(&doc());
    for m in METHODS {
        let gate = rows
            .get(*m)
            .unwrap_or_else(|| panic!("docs/privileges.md has no Validation gate row for {m}"));
        assert!(!gate.is_empty(), "empty Validation gate cell for {m}");
    }
    for name in rows.keys() {
        assert!(
            METHODS.contains(&name.as_str()),
            "docs/privileges.md has a row for unknown method {name}"
        );
    }
}

#[test]
fn required_sections_exist() {
    let d = doc();
    for h in [
        "## Trust list",
        "## Running outside the system install",
        "## Every request",
    ] {
        assert!(d.contains(h), "missing section {h}");
    }
}

#[test]
fn the_parser_sees_a_missing_row() {
    let doc = "| Method | Validation gate | Host operation |\n|---|---|---|\n| `priv.a` | x \\| y | z |\n";
    let rows = gate_rows(doc);
    assert_eq!(rows.get("priv.a").map(String::as_str), Some("x \\| y"));
    assert!(!rows.contains_key("priv.kill_process"));
}
