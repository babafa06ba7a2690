//! The sizes a VM may ask for (vCPUs, memory), checked alike by the CLI and the daemon.

use std::ops::RangeInclusive;

/// vCPUs a VM may have (Firecracker's and the helper's jail bound).
pub const VCPUS: RangeInclusive<u32> = 1..=32;
/// Memory a VM may have, in MiB (a kernel and sshd need 128; 1 TiB is the
/// helper's jail bound).
pub const MEMORY_MIB: RangeInclusive<u32> = 128..=1 << 20;

/// `n` vCPUs, or a one-line reason why not.
pub fn check_vcpus(n: u64) -> Result<u8, String> {
    u32::try_from(n)
        .ok()
        .filter(|n| VCPUS.contains(n))
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(|| {
            format!(
                "vcpus {n} is out of range: use {}..={}",
                VCPUS.start(),
                VCPUS.end()
            )
        })
}

/// `n` MiB of memory, or a one-line reason why not.
pub fn check_memory_mib(n: u64) -> Result<u32, String> {
    u32::try_from(n)
        .ok()
        .filter(|n| MEMORY_MIB.contains(n))
        .ok_or_else(|| {
            format!(
                "memory {n} MiB is out of range: use {}..={} MiB",
                MEMORY_MIB.start(),
                MEMORY_MIB.end()
            )
        })
}

/// `--vcpus TEXT` as the CLI parses it.
pub fn parse_vcpus(s: &str) -> Result<u8, String> {
    check_vcpus(parse_count("vcpus", s)?)
}

/// `--memory TEXT` (MiB) as the CLI parses it.
pub fn parse_memory_mib(s: &str) -> Result<u32, String> {
    check_memory_mib(parse_count("memory", s)?)
}

fn parse_count(what: &str, s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("{what} {s:?} is not a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpus_are_bounded_on_both_sides() {
        assert_eq!(parse_vcpus("1"), Ok(1));
        assert_eq!(parse_vcpus("32"), Ok(32));
        assert_eq!(
            parse_vcpus("0"),
            Err("vcpus 0 is out of range: use 1..=32".into())
        );
        assert!(parse_vcpus("33").is_err());
        assert!(parse_vcpus("255").is_err());
        assert!(parse_vcpus("256").is_err());
        assert_eq!(
            parse_vcpus("two"),
            Err("vcpus \"two\" is not a whole number".into())
        );
    }

    #[test]
    fn memory_is_bounded_on_both_sides() {
        assert_eq!(parse_memory_mib("128"), Ok(128));
        assert_eq!(parse_memory_mib("1048576"), Ok(1 << 20));
        assert_eq!(
            parse_memory_mib("64"),
            Err("memory 64 MiB is out of range: use 128..=1048576 MiB".into())
        );
        assert!(parse_memory_mib("1048577").is_err());
        assert!(parse_memory_mib("99999999999").is_err());
        assert!(parse_memory_mib("-1").is_err());
    }

    #[test]
    fn every_reason_is_one_line() {
        for r in [parse_vcpus("0"), parse_vcpus("x\ny")] {
            assert!(!r.unwrap_err().contains('\n'));
        }
        for r in [parse_memory_mib("1"), parse_memory_mib("")] {
            assert!(!r.unwrap_err().contains('\n'));
        }
    }
}
