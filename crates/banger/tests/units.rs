//! The two rendered units pass `systemd-analyze verify` (their
//! `Documentation=man:banger(1)` resolved against the man pages the CLI
//! renders), and their `systemd-analyze security --offline=yes` exposure is
//! printed and never worse than the recorded figure.

use banger_core::units::{self, Binaries};
use banger_proto::install::InstallConfig;
use std::path::Path;
use std::process::Command;

/// Recorded exposure (lower is better). Lower these when hardening improves;
/// the test fails if a change makes either unit worse.
const HELPER_EXPOSURE: f64 = 3.5;
const DAEMON_EXPOSURE: f64 = 1.2;

fn analyze_available() -> bool {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        eprintln!("skipped: systemd-analyze is not installed");
    }
    ok
}

fn render(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_banger")).parent().unwrap();
    let helper = bin_dir.join("banger-helper");
    let daemon = bin_dir.join("bangerd");
    let cfg = InstallConfig::for_owner(1000, 1000, "/home/banger-owner".into());
    let config = dir.join("install.toml");
    std::fs::write(&config, cfg.render()).unwrap();
    let bins = Binaries {
        helper: &helper,
        daemon: &daemon,
    };
    let h = dir.join(units::HELPER_UNIT);
    let d = dir.join(units::DAEMON_UNIT);
    std::fs::write(&h, units::helper_unit(&cfg, &bins, &config)).unwrap();
    std::fs::write(&d, units::daemon_unit(&cfg, &bins, &config)).unwrap();
    (h, d)
}

fn exposure(unit: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines().filter(|l| l.starts_with('✗')) {
        println!(
            "{}: {}",
            unit.file_name().unwrap().to_string_lossy(),
            l.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line in {text}"));
    line.split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

#[test]
fn units_verify_and_exposure_does_not_regress() {
    if !analyze_available() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("bgtest-units-")
        .tempdir()
        .unwrap();
    let (h, d) = render(dir.path());
    // The pages `system install` puts in /usr/local/share/man/man1, here in
    // a private MANPATH so verify's `man` finds banger(1) only through them.
    let man = dir.path().join("man");
    let st = Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(["man", "--dir"])
        .arg(man.join("man1"))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(man.join("man1/banger.1").is_file());
    assert!(man.join("man1/banger-vm-create.1").is_file());
    for unit in [&h, &d] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(unit)
            .env("MANPATH", &man)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "verify {}: {err}", unit.display());
    }
    let (he, de) = (exposure(&h), exposure(&d));
    println!(
        "exposure: {} {he:.1}, {} {de:.1}",
        units::HELPER_UNIT,
        units::DAEMON_UNIT
    );
    assert!(
        he <= HELPER_EXPOSURE,
        "helper exposure {he} worse than recorded {HELPER_EXPOSURE}"
    );
    assert!(
        de <= DAEMON_EXPOSURE,
        "daemon exposure {de} worse than recorded {DAEMON_EXPOSURE}"
    );
}
