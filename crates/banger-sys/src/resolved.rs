//! Resolver routing through systemd-resolved: `resolvectl dns|domain|revert`
//! on banger's bridge link, argv only.

use crate::runner::{Cmd, RunError, Runner};
use std::path::Path;

/// The socket a running systemd-resolved listens on.
pub const RESOLVED_SOCKET: &str = "/run/systemd/resolve/io.systemd.Resolve";

/// Why a resolver-routing step failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolvedError {
    #[error("set DNS server {1} on link {0}")]
    SetDns(String, String, #[source] RunError),
    #[error("set routing domain ~{1} on link {0}")]
    SetDomain(String, String, #[source] RunError),
    #[error("revert resolver settings of link {0}")]
    Revert(String, #[source] RunError),
}

/// Whether systemd-resolved is running (its varlink socket exists under `run_root`).
pub fn resolved_running(run_root: &Path) -> bool {
    run_root.join("systemd/resolve/io.systemd.Resolve").exists()
}

/// What `banger doctor` prints where systemd-resolved is absent: the one
/// line that gives the host the same routing through dnsmasq.
pub fn alternative_hint(resolver_ip: &str, domain: &str) -> String {
    format!(
        "systemd-resolved is not running, so *.{domain} does not resolve on the host; with dnsmasq add: server=/{domain}/{resolver_ip}"
    )
}

/// The commands that route `~domain` to `resolver` on `link`.
pub fn sync_cmds(link: &str, resolver: &str, domain: &str) -> [Cmd; 2] {
    [
        Cmd::new("resolvectl").args(["dns", link, resolver]),
        Cmd::new("resolvectl").args(["domain", link, &format!("~{domain}")]),
    ]
}

/// The command that drops banger's settings from `link`.
pub fn revert_cmd(link: &str) -> Cmd {
    Cmd::new("resolvectl").args(["revert", link])
}

/// Route queries for `domain` to `resolver` (`ADDR` or `ADDR:PORT`) on `link`.
/// Inputs must already have passed the helper's gates.
pub fn sync(
    runner: &dyn Runner,
    link: &str,
    resolver: &str,
    domain: &str,
) -> Result<(), ResolvedError> {
    let [dns, dom] = sync_cmds(link, resolver, domain);
    runner
        .run(&dns)
        .map_err(|e| ResolvedError::SetDns(link.into(), resolver.into(), e))?;
    runner
        .run(&dom)
        .map_err(|e| ResolvedError::SetDomain(link.into(), domain.into(), e))?;
    Ok(())
}

/// Drop banger's resolver settings from `link`.
pub fn clear(runner: &dyn Runner, link: &str) -> Result<(), ResolvedError> {
    runner
        .run(&revert_cmd(link))
        .map(drop)
        .map_err(|e| ResolvedError::Revert(link.into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{CmdOutput, HostRunner, RecordingRunner};

    #[test]
    fn sync_runs_exactly_these_argvs() {
        let r = RecordingRunner::new();
        sync(&r, "banger0", "172.30.0.1:53", "vm").unwrap();
        assert_eq!(
            r.calls(),
            vec![
                vec!["resolvectl", "dns", "banger0", "172.30.0.1:53"],
                vec!["resolvectl", "domain", "banger0", "~vm"],
            ]
        );
    }

    #[test]
    fn hint_names_domain_and_resolver() {
        assert_eq!(
            alternative_hint("172.30.0.1", "vm"),
            "systemd-resolved is not running, so *.vm does not resolve on the host; with dnsmasq add: server=/vm/172.30.0.1"
        );
        assert!(!resolved_running(Path::new("/nonexistent")));
    }

    #[test]
    fn clear_runs_revert() {
        let r = RecordingRunner::new();
        clear(&r, "banger0").unwrap();
        assert_eq!(r.calls(), vec![vec!["resolvectl", "revert", "banger0"]]);
    }

    #[test]
    fn a_failing_dns_step_stops_before_domain() {
        let r = RecordingRunner::new();
        r.answer(
            "resolvectl dns",
            CmdOutput {
                status: 1,
                stderr: b"Failed to resolve interface \"banger0\"".to_vec(),
                ..Default::default()
            },
        );
        let e = sync(&r, "banger0", "172.30.0.1", "vm").unwrap_err();
        assert_eq!(e.to_string(), "set DNS server 172.30.0.1 on link banger0");
        assert_eq!(r.calls().len(), 1);
    }

    #[test]
    fn real_resolvectl_on_a_missing_link_fails_cleanly() {
        if !resolved_running(Path::new("/run")) {
            println!("skipped: systemd-resolved is not running ({RESOLVED_SOCKET} absent)");
            return;
        }
        // A link that does not exist: resolved must refuse, and we must
        // surface it as an error, not a panic.
        let e = sync(&HostRunner, "bgtest-nolink", "172.30.0.1", "vm").unwrap_err();
        assert!(matches!(e, ResolvedError::SetDns(..)), "{e:?}");
        assert!(clear(&HostRunner, "bgtest-nolink").is_err());
    }
}
