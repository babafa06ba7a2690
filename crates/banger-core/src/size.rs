//! Disk sizes as a user writes them (`8G`, `512M`, `10737418240`): binary
//! units, parsed strictly, and the checks a VM's root disk size must pass.

/// Why a size does not parse or cannot be a VM's root disk size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error(
        "invalid size {0:?}: a number with an optional unit K, M, G or T (binary), e.g. 8G or 512M"
    )]
    Syntax(String),
    #[error("size {0:?} is too large")]
    Overflow(String),
    #[error("disk size {0} bytes is not a multiple of 512")]
    Unaligned(u64),
    #[error(
        "--disk-size {} is smaller than the image ({}): a disk can only grow",
        human(*.asked),
        human(*.image)
    )]
    Smaller { asked: u64, image: u64 },
    #[error("disk size {} is over the per-VM cap of {} (max_cow_bytes of install.toml)", human(*.asked), human(*.max))]
    OverCap { asked: u64, max: u64 },
}

/// Parse `N`, `NK`, `NM`, `NG` or `NT` (also `KiB`/`KB`-style spellings,
/// any case); units are powers of 1024; a bare number is bytes.
pub fn parse(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(SizeError::Syntax(s.into()));
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| SizeError::Overflow(s.into()))?;
    let unit = t[digits..].to_ascii_lowercase();
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(SizeError::Syntax(s.into())),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| SizeError::Overflow(s.into()))
}

/// `bytes` the short way a user writes it: `8G`, `512M`, else with one
/// decimal in the largest unit (`1.5G`), else bytes.
pub fn human(bytes: u64) -> String {
    for (shift, u) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        let unit = 1u64 << shift;
        if bytes >= unit {
            if bytes.is_multiple_of(unit) {
                return format!("{}{u}", bytes >> shift);
            }
            return format!("{:.1}{u}", bytes as f64 / unit as f64);
        }
    }
    format!("{bytes}B")
}

/// The root disk size a new VM gets from an image of `image` bytes:
/// `asked` (the request's) must be at least the image, aligned, within
/// `max`; `default` (the owner's config) only ever grows. `None`: the
/// image's own size.
pub fn root_disk(
    image: u64,
    asked: Option<u64>,
    default: Option<u64>,
    max: u64,
) -> Result<Option<u64>, SizeError> {
    let want = match (asked, default) {
        (Some(a), _) if a < image => return Err(SizeError::Smaller { asked: a, image }),
        (Some(a), _) => a,
        (None, Some(d)) if d > image => d,
        _ => return Ok(None),
    };
    if !want.is_multiple_of(512) {
        return Err(SizeError::Unaligned(want));
    }
    if want > max {
        return Err(SizeError::OverCap { asked: want, max });
    }
    Ok((want > image).then_some(want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_binary_and_spellings_strict() {
        assert_eq!(parse("8G"), Ok(8 << 30));
        assert_eq!(parse("512M"), Ok(512 << 20));
        assert_eq!(parse("512m"), Ok(512 << 20));
        assert_eq!(parse("2GiB"), Ok(2 << 30));
        assert_eq!(parse("1T"), Ok(1 << 40));
        assert_eq!(parse("4k"), Ok(4096));
        assert_eq!(parse("1048576"), Ok(1 << 20));
        assert_eq!(parse(" 3G "), Ok(3 << 30));
        for bad in ["", "G", "-1G", "1.5G", "8 G", "8X", "8GG", "0x10", "1e9"] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, SizeError::Syntax(_)), "{bad}: {e:?}");
            assert!(e.to_string().contains("e.g. 8G"), "{e}");
        }
        assert!(matches!(
            parse("99999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(parse("17179869184T"), Err(SizeError::Overflow(_))));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(8 << 30), "8G");
        assert_eq!(human(512 << 20), "512M");
        assert_eq!(human(648_491_008), "618.4M");
        assert_eq!(human(100), "100B");
    }

    #[test]
    fn a_disk_only_grows_and_stays_under_the_cap() {
        let img = 600 << 20;
        let max = 256 << 30;
        assert_eq!(root_disk(img, None, None, max), Ok(None));
        assert_eq!(root_disk(img, Some(8 << 30), None, max), Ok(Some(8 << 30)));
        assert_eq!(root_disk(img, Some(img), None, max), Ok(None));
        let e = root_disk(img, Some(512 << 20), None, max).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--disk-size 512M is smaller than the image (600M): a disk can only grow"
        );
        // The request wins over the config default, both ways.
        assert_eq!(
            root_disk(img, Some(1 << 30), Some(4 << 30), max),
            Ok(Some(1 << 30))
        );
        // A default smaller than the image is no error: it only grows.
        assert_eq!(root_disk(img, None, Some(1 << 20), max), Ok(None));
        assert_eq!(root_disk(img, None, Some(2 << 30), max), Ok(Some(2 << 30)));
        assert_eq!(
            root_disk(img, Some(img + 100), None, max),
            Err(SizeError::Unaligned(img + 100))
        );
        let e = root_disk(img, Some(1 << 40), None, max).unwrap_err();
        assert_eq!(
            e.to_string(),
            "disk size 1T is over the per-VM cap of 256G (max_cow_bytes of install.toml)"
        );
    }
}
