//! A newc (`070701`) cpio writer, enough for an initramfs: dirs, files,
//! symlinks and device nodes, written without root (no mknod needed).

/// An archive being built in memory.
#[derive(Debug, Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
    }

    /// A directory (`name` without leading `/`), root-owned.
    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, 0o040000 | perm, (0, 0), &[]);
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    /// A symlink to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    /// Close the archive and return its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        while self.buf.len() & 511 != 0 {
            self.buf.push(0);
        }
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_sys::runner::{Cmd, HostRunner, Runner};

    #[test]
    fn the_cpio_tool_reads_it_back() {
        let mut c = Cpio::new();
        c.dir("bin", 0o755);
        c.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        c.symlink("bin/sh", "busybox");
        c.char_dev("dev/console", 0o600, 5, 1);
        c.file("odd", 0o644, b"abc");
        let bytes = c.finish();
        assert_eq!(bytes.len() % 512, 0);
        let out = HostRunner
            .run(
                &Cmd::new("cpio")
                    .args(["-itv", "--quiet"])
                    .stdin(bytes.clone()),
            )
            .unwrap();
        let list = String::from_utf8(out.stdout).unwrap();
        for want in [
            "drwxr-xr-x",
            "bin/hello",
            "bin/sh -> busybox",
            "crw-------",
            "dev/console",
            "odd",
        ] {
            assert!(list.contains(want), "{want} in {list}");
        }
        let tmp = banger_testkit::tmp();
        HostRunner
            .run(
                &Cmd::new("cpio")
                    .args(["-id", "--quiet", "--no-absolute-filenames", "-D"])
                    .arg(tmp.path())
                    .arg("bin/hello")
                    .arg("odd")
                    .stdin(bytes),
            )
            .unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("bin/hello")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(std::fs::read(tmp.path().join("odd")).unwrap(), b"abc");
    }
}
