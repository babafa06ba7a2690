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
}
