//! An argv as one POSIX shell line (what `ssh` hands the remote shell), so
//! each argument arrives as it was given.

/// Each word single-quoted unless plainly safe; `'` as `'\''`.
pub fn line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(v: &[&str]) -> String {
        line(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn argv_survives_the_shell() {
        assert_eq!(l(&["ls", "-l", "/tmp"]), "ls -l /tmp");
        assert_eq!(l(&["echo", "a b", ""]), "echo 'a b' ''");
        assert_eq!(l(&["echo", "it's", "$HOME;x"]), r"echo 'it'\''s' '$HOME;x'");
        let out = std::process::Command::new("sh")
            .args(["-c", &l(&["printf", "%s|", "it's", "a b", "$X", "*", "\n"])])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's|a b|$X|*|\n|");
    }
}
