//! Subordinate uid/gid ranges (`/etc/subuid`, `/etc/subgid`): the owner
//! needs one to build images without root in a user namespace.

/// Size of the range banger gives an owner that has none.
pub const RANGE: u32 = 65536;

/// Does `text` (an `/etc/subuid`-format file) give `name` or `uid` a range?
pub fn has_range(text: &str, name: &str, uid: u32) -> bool {
    let uid = uid.to_string();
    text.lines().any(|l| {
        let mut f = l.split(':');
        matches!((f.next(), f.next(), f.next()), (Some(who), Some(_), Some(n))
            if (who == name || who == uid) && n.trim().parse::<u32>().is_ok_and(|n| n > 0))
    })
}

/// The first [`RANGE`]-sized start at or above 100000, aligned to 65536,
/// that overlaps no range in any of `texts`.
pub fn free_range(texts: &[&str]) -> Option<(u32, u32)> {
    let mut used: Vec<(u64, u64)> = texts
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| {
            let mut f = l.split(':').skip(1);
            let start: u64 = f.next()?.trim().parse().ok()?;
            let count: u64 = f.next()?.trim().parse().ok()?;
            Some((start, start + count))
        })
        .collect();
    used.sort();
    let mut start: u64 = 100_000u64.div_ceil(65536) * 65536;
    loop {
        let end = start + RANGE as u64;
        if end > u32::MAX as u64 {
            return None;
        }
        match used.iter().find(|(s, e)| *s < end && start < *e) {
            Some((_, e)) => start = e.div_ceil(65536) * 65536,
            None => return Some((start as u32, (end - 1) as u32)),
        }
    }
}

/// The name under which `banger system install` reserves the jail uid/gid
/// range in `/etc/subuid` and `/etc/subgid`, so no later subordinate range
/// (useradd, usermod) is given ids a jailed Firecracker runs as.
pub const JAIL_RESERVATION: &str = "banger-jail";

/// Size of the jail uid/gid range `banger system install` reserves.
pub const JAIL_RANGE: u32 = 1024;

/// `text` with the line `<name>:<start>:<count>` added (once).
pub fn with_line(text: &str, name: &str, start: u32, count: u32) -> String {
    let line = format!("{name}:{start}:{count}");
    if text.lines().any(|l| l.trim() == line) {
        return text.to_string();
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// `text` without the line `<name>:<start>:<count>`; every other line kept.
pub fn without_line(text: &str, name: &str, start: u32, count: u32) -> String {
    let line = format!("{name}:{start}:{count}");
    text.lines()
        .filter(|l| l.trim() != line)
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_existing_ranges_by_name_or_uid() {
        let t = "alice:100000:65536\n1001:165536:65536\n";
        assert!(has_range(t, "alice", 1000));
        assert!(has_range(t, "bob", 1001));
        assert!(!has_range(t, "carol", 1002));
        assert!(!has_range("dave:1:0\n", "dave", 5));
    }

    #[test]
    fn free_range_skips_used_ones_and_aligns() {
        assert_eq!(free_range(&[""]), Some((131072, 196607)));
        let t = "a:100000:65536\nb:165536:65536\n";
        assert_eq!(free_range(&[t, ""]), Some((262144, 327679)));
        let g = "c:262144:1\n";
        assert_eq!(free_range(&[t, g]), Some((327680, 393215)));
    }

    #[test]
    fn reservation_lines_are_added_once_and_removed_exactly() {
        let t = "alice:100000:65536";
        let added = with_line(t, JAIL_RESERVATION, 131072, 1024);
        assert_eq!(added, "alice:100000:65536\nbanger-jail:131072:1024\n");
        assert_eq!(with_line(&added, JAIL_RESERVATION, 131072, 1024), added);
        assert_eq!(
            without_line(&added, JAIL_RESERVATION, 131072, 1024),
            "alice:100000:65536\n"
        );
        // Another range under the same name is not ours to remove.
        assert_eq!(without_line(&added, JAIL_RESERVATION, 1, 1), added);
        assert_eq!(free_range(&[&added]), Some((196608, 262143)));
    }
}
