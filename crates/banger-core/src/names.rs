//! Names users give to VMs and images: what is accepted, and ids.

/// A VM name: a DNS label (it becomes `<name>.<domain>`): 1–63 chars of
/// `a-z 0-9 -`, not starting or ending with `-`.
pub fn validate_vm_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid VM name {name:?}: use 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

/// An image name: 1–64 chars of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn validate_image_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid image name {name:?}: use 1-64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        ))
    }
}

/// A short id (lowercase hex) from random bytes.
pub fn id_from_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vm_names() {
        for ok in ["dev", "a", "web-1", &"x".repeat(63)] {
            assert!(validate_vm_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Dev",
            "a.b",
            "a b",
            "a/b",
            &"x".repeat(64),
            "é",
        ] {
            assert!(validate_vm_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_names() {
        for ok in ["debian-12", "alpine_3.19", "a"] {
            assert!(validate_image_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "../x", "a/b", "A", "a b", &"x".repeat(65)] {
            assert!(validate_image_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_hex() {
        assert_eq!(id_from_bytes(&[0, 0xab, 0x10]), "00ab10");
    }

    proptest! {
        #[test]
        fn accepted_names_are_path_safe(s in "\\PC{0,70}") {
            if validate_image_name(&s).is_ok() || validate_vm_name(&s).is_ok() {
                prop_assert!(!s.contains('/') && !s.contains("..") && !s.contains('\0'));
                prop_assert!(s.is_ascii() && !s.chars().any(char::is_whitespace));
            }
        }
    }
}
