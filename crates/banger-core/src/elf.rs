//! Just enough ELF to tell a static executable from a dynamically linked
//! one (a `PT_INTERP` program header): the jailer runs Firecracker inside
//! an empty chroot, where a dynamically linked binary cannot start.

/// Why the bytes could not be read as a 64-bit little-endian ELF file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("not a 64-bit little-endian ELF file")]
    Unsupported,
    #[error("the ELF program headers run past the end of the file")]
    Truncated,
}

const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], at: usize) -> Result<u16, ElfError> {
    let s = b.get(at..at + 2).ok_or(ElfError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ElfError> {
    let s = b.get(at..at + 4).ok_or(ElfError::Truncated)?;
    Ok(u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, ElfError> {
    let s = b.get(at..at + 8).ok_or(ElfError::Truncated)?;
    Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

fn offset(v: u64) -> Result<usize, ElfError> {
    usize::try_from(v).map_err(|_| ElfError::Truncated)
}

/// The program interpreter an executable asks for (e.g.
/// `/lib64/ld-linux-x86-64.so.2`), or `None` for a static executable.
pub fn interpreter(b: &[u8]) -> Result<Option<String>, ElfError> {
    if b.get(..4) != Some(b"\x7fELF") {
        return Err(ElfError::NotElf);
    }
    // EI_CLASS = ELFCLASS64, EI_DATA = ELFDATA2LSB.
    if b.get(4..6) != Some(&[2, 1]) {
        return Err(ElfError::Unsupported);
    }
    let phoff = offset(u64_at(b, 0x20)?)?;
    let phentsize = usize::from(u16_at(b, 0x36)?);
    let phnum = usize::from(u16_at(b, 0x38)?);
    if phnum > 0 && phentsize < 0x38 {
        return Err(ElfError::Truncated);
    }
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i.checked_mul(phentsize).ok_or(ElfError::Truncated)?)
            .ok_or(ElfError::Truncated)?;
        if u32_at(b, ph)? != PT_INTERP {
            continue;
        }
        let at = offset(u64_at(b, ph + 0x08)?)?;
        let len = offset(u64_at(b, ph + 0x20)?)?;
        let raw = b
            .get(at..at.checked_add(len).ok_or(ElfError::Truncated)?)
            .ok_or(ElfError::Truncated)?;
        let path = raw.split(|c| *c == 0).next().unwrap_or_default();
        return Ok(Some(String::from_utf8_lossy(path).into_owned()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one program header of type `p_type`; a
    /// PT_INTERP points at `interp`.
    fn elf(p_type: u32, interp: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x40 + 0x38];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        b[0x40..0x44].copy_from_slice(&p_type.to_le_bytes());
        let at = b.len() as u64;
        b[0x48..0x50].copy_from_slice(&at.to_le_bytes());
        b[0x60..0x68].copy_from_slice(&(interp.len() as u64).to_le_bytes());
        b.extend_from_slice(interp);
        b
    }

    #[test]
    fn finds_the_interpreter_or_none() {
        assert_eq!(
            interpreter(&elf(PT_INTERP, b"/lib64/ld-linux-x86-64.so.2\0")),
            Ok(Some("/lib64/ld-linux-x86-64.so.2".into()))
        );
        assert_eq!(interpreter(&elf(1, b"")), Ok(None));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(interpreter(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        let mut b32 = elf(1, b"");
        b32[4] = 1;
        assert_eq!(interpreter(&b32), Err(ElfError::Unsupported));
        let mut short = elf(PT_INTERP, b"/lib/ld.so\0");
        short.truncate(short.len() - 4);
        assert_eq!(interpreter(&short), Err(ElfError::Truncated));
        let mut far = elf(PT_INTERP, b"");
        far[0x48..0x50].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(interpreter(&far), Err(ElfError::Truncated));
        assert_eq!(
            interpreter(&elf(PT_INTERP, b"")[..0x50]),
            Err(ElfError::Truncated)
        );
    }

    #[test]
    fn real_binaries_of_this_host() {
        // busybox-static (a test dependency, scripts/deps.sh) is static; ls is not.
        let busybox = std::fs::read("/bin/busybox").unwrap();
        assert_eq!(interpreter(&busybox), Ok(None));
        let ls = std::fs::read("/bin/ls").unwrap();
        assert!(interpreter(&ls).unwrap().unwrap().contains("ld-linux"));
    }
}
