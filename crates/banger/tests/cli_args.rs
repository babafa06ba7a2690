//! A value the CLI refuses (vCPUs, memory out of range) is one line on
//! stderr and exit code 2, before any daemon is asked.

use std::process::Command;

/// `banger vm create web ARGS…` against a socket nobody serves.
fn create(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(["--socket", "/nonexistent/bgtest-cli-args.sock"])
        .args(["vm", "create", "web", "--image", "base"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sizes_out_of_range_are_one_line_errors() {
    for (args, want) in [
        (
            &["--memory", "64"][..],
            "memory 64 MiB is out of range: use 128..=1048576 MiB",
        ),
        (
            &["--memory", "99999999"],
            "memory 99999999 MiB is out of range",
        ),
        (&["--vcpus", "0"], "vcpus 0 is out of range: use 1..=32"),
        (&["--vcpus", "255"], "vcpus 255 is out of range"),
        (&["--vcpus", "1000"], "vcpus 1000 is out of range"),
        (&["--vcpus", "two"], "vcpus \"two\" is not a whole number"),
    ] {
        let (code, err) = create(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err:?}");
        assert!(err.contains(want), "{args:?}: {err:?}");
        assert!(err.starts_with("error: invalid value"), "{args:?}: {err:?}");
    }
}

#[test]
fn other_usage_errors_keep_clap_s_help_hint() {
    let (code, err) = create(&["--no-such-flag"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--help"), "{err}");
}
