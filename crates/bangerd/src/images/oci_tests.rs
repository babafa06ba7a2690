use super::*;
use banger_sys::runner::HostRunner;
use std::io::Write;

pub(crate) enum E<'a> {
    Dir(&'a str, u32, u64, u64),
    File(&'a str, &'a [u8], u32, u64, u64),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str, u32, u32),
}

fn set_raw(field: &mut [u8], s: &str) {
    field.iter_mut().for_each(|b| *b = 0);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

/// A layer tar with raw (unvalidated) names, so hostile entries are possible.
pub(crate) fn tar_bytes(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        let (name, data): (&str, &[u8]) = match e {
            E::Dir(n, m, u, g) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*m);
                h.set_uid(*u);
                h.set_gid(*g);
                (n, &[])
            }
            E::File(n, d, m, u, g) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                h.set_uid(*u);
                h.set_gid(*g);
                (n, d)
            }
            E::Sym(n, t) | E::Hard(n, t) => {
                h.set_entry_type(if matches!(e, E::Sym(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                h.set_uid(0);
                h.set_gid(0);
                set_raw(&mut h.as_old_mut().linkname, t);
                (n, &[])
            }
            E::Char(n, ma, mi) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_uid(0);
                h.set_gid(0);
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                (n, &[])
            }
        };
        set_raw(&mut h.as_old_mut().name, name);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    let out = HostRunner
        .run(&Cmd::new("zstd").args(["-c", "-q"]).stdin(data.to_vec()))
        .unwrap();
    assert_eq!(&out.stdout[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    out.stdout
}

fn put_blob(layout: &Path, data: &[u8]) -> String {
    let hex = format!("{:x}", Sha256::digest(data));
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    format!("sha256:{hex}")
}

/// An OCI image layout with these (already encoded) layer blobs.
pub(crate) fn oci_layout(dir: &Path, layers: &[Vec<u8>]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let config_bytes =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config = put_blob(dir, config_bytes);
    let ls: Vec<_> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put_blob(dir, l), "size": l.len()}))
        .collect();
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_bytes.len()}, "layers": ls});
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let md = put_blob(dir, &mbytes);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mbytes.len(), "platform": {"os": "linux", "architecture": "amd64"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A `docker save` tarball with these uncompressed layers.
fn docker_save(tarball: &Path, layers: &[Vec<u8>]) {
    let mut b = tar::Builder::new(File::create(tarball).unwrap());
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("{i:064x}/layer.tar");
        let mut h = tar::Header::new_gnu();
        h.set_size(l.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, &name, &l[..]).unwrap();
        names.push(name);
    }
    let m = serde_json::to_vec(&serde_json::json!([{"Config": "config.json", "RepoTags": ["bgtest:latest"], "Layers": names}])).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(m.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest.json", &m[..]).unwrap();
    b.finish().unwrap();
}

fn cat(img: &Path, path: &str) -> String {
    let out = HostRunner
        .run(
            &Cmd::new("debugfs")
                .arg("-R")
                .arg(format!("cat {path}"))
                .arg(img),
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn debugfs(img: &Path, req: &str) -> String {
    let out = HostRunner
        .run(&Cmd::new("debugfs").arg("-R").arg(req).arg(img))
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn layer1() -> Vec<u8> {
    tar_bytes(&[
        E::Dir("./", 0o755, 0, 0),
        E::Dir("etc/", 0o755, 0, 0),
        E::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644, 0, 0),
        E::File("etc/old", b"old", 0o644, 0, 0),
        E::File("etc/shadow", b"root:*:1::::::\n", 0o640, 0, 42),
        E::Dir("usr/bin/", 0o755, 0, 0),
        E::File("usr/bin/sudo", b"\x7fELF-sudo", 0o4755, 0, 0),
        E::Hard("usr/bin/sudoedit", "usr/bin/sudo"),
        E::Sym("bin", "usr/bin"),
        E::Dir("home/alice/", 0o750, 1000, 1000),
        E::File("home/alice/.profile", b"export A=1\n", 0o600, 1000, 1000),
        E::Dir("dev/", 0o755, 0, 0),
        E::Char("dev/null", 1, 3),
        E::Dir("opt/x/", 0o755, 0, 0),
        E::File("opt/x/a", b"a", 0o644, 0, 0),
        E::Dir("var/gone/", 0o755, 0, 0),
        E::File("var/gone/f", b"f", 0o644, 0, 0),
    ])
}

fn layer2() -> Vec<u8> {
    tar_bytes(&[
        E::File("etc/.wh.old", b"", 0o644, 0, 0),
        E::File("var/.wh.gone", b"", 0o644, 0, 0),
        E::Dir("opt/x/", 0o755, 0, 0),
        E::File("opt/x/.wh..wh..opq", b"", 0o644, 0, 0),
        E::File("opt/x/b", b"b", 0o644, 0, 0),
        // Through the `bin -> usr/bin` symlink, inside the root.
        E::File("bin/tool", b"tool", 0o755, 0, 0),
        E::File("etc/passwd", b"root:x:0:0::/root:/bin/bash\n", 0o644, 0, 0),
    ])
}

fn check_image(img: &Path) {
    let s = debugfs(img, "stat /usr/bin/sudo");
    assert!(
        s.contains("Mode:  04755") && s.contains("User:     0") && s.contains("Links: 2"),
        "{s}"
    );
    let s = debugfs(img, "stat /home/alice");
    assert!(
        s.contains("Type: directory")
            && s.contains("Mode:  0750")
            && s.contains("User:  1000   Group:  1000"),
        "{s}"
    );
    let s = debugfs(img, "stat /home/alice/.profile");
    assert!(
        s.contains("Mode:  0600") && s.contains("User:  1000"),
        "{s}"
    );
    let s = debugfs(img, "stat /etc/shadow");
    assert!(
        s.contains("Mode:  0640") && s.contains("Group:    42"),
        "{s}"
    );
    let s = debugfs(img, "stat /dev/null");
    assert!(
        s.contains("Type: character special") && s.contains("Device major/minor number: 01:03"),
        "{s}"
    );
    assert!(debugfs(img, "stat /bin").contains("Type: symlink"));
    assert_eq!(cat(img, "/usr/bin/tool"), "tool");
    assert_eq!(cat(img, "/etc/passwd"), "root:x:0:0::/root:/bin/bash\n");
    assert_eq!(cat(img, "/opt/x/b"), "b");
    for gone in ["/etc/old", "/opt/x/a", "/var/gone"] {
        assert!(
            debugfs(img, &format!("stat {gone}")).contains("File not found"),
            "{gone}"
        );
    }
    let s = debugfs(img, "stat /");
    assert!(s.contains("User:     0   Group:     0"), "{s}");
    assert_eq!(
        HostRunner
            .output(&Cmd::new("e2fsck").arg("-fn").arg(img))
            .unwrap()
            .status,
        0
    );
}

#[test]
fn builds_from_an_oci_layout_with_whiteouts_owners_and_links() {
    let tmp = banger_testkit::tmp();
    let layout = tmp.path().join("layout");
    oci_layout(&layout, &[gz(&layer1()), zstd(&layer2())]);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let img = tmp.path().join("root.ext4");
    let mut steps = Vec::new();
    let built = build_with_progress(
        &HostRunner,
        &layout,
        &scratch,
        &img,
        Sizing::default(),
        Blobs::Verify,
        &mut |s| steps.push(s),
    )
    .unwrap();
    assert_eq!(built.layers, 2);
    assert!(
        matches!(
            steps[..],
            [
                Step::Layer {
                    index: 1,
                    total: 2,
                    ..
                },
                Step::Layer {
                    index: 2,
                    total: 2,
                    ..
                },
                Step::Mkfs { .. }
            ]
        ),
        "{steps:?}"
    );
    assert_eq!(std::fs::metadata(&img).unwrap().len(), built.size_bytes);
    assert_eq!(built.size_bytes, 128 << 20, "small content → minimum size");
    check_image(&img);
}

#[test]
fn builds_from_a_docker_save_tarball() {
    let tmp = banger_testkit::tmp();
    let tarball = tmp.path().join("image.tar");
    docker_save(&tarball, &[layer1(), layer2()]);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let img = tmp.path().join("root.ext4");
    build(&HostRunner, &tarball, &scratch, &img, Sizing::default()).unwrap();
    check_image(&img);
}

#[test]
fn size_follows_content_plus_headroom() {
    let tmp = banger_testkit::tmp();
    let big = vec![7u8; 40 << 20];
    let layout = tmp.path().join("layout");
    oci_layout(&layout, &[tar_bytes(&[E::File("big", &big, 0o644, 0, 0)])]);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let img = tmp.path().join("root.ext4");
    let sizing = Sizing {
        headroom_percent: 50,
        extra_bytes: 16 << 20,
        min_bytes: 1 << 20,
    };
    let b = build(&HostRunner, &layout, &scratch, &img, sizing).unwrap();
    assert!(b.content_bytes >= 40 << 20);
    assert!(
        b.size_bytes >= (60 << 20) + (16 << 20) && b.size_bytes <= 80 << 20,
        "{}",
        b.size_bytes
    );
    assert!(debugfs(&img, "stat /big").contains("Size: 41943040"));
}

#[test]
fn tampered_blobs_and_unsafe_manifests_are_refused() {
    let tmp = banger_testkit::tmp();
    let layout = tmp.path().join("layout");
    oci_layout(&layout, &[layer1()]);
    let blobs: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let layer_blob = blobs
        .iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 4096)
        .unwrap();
    std::fs::write(layer_blob, b"tampered").unwrap();
    assert!(matches!(layers(&layout), Err(OciError::DigestMismatch(_))));
    // A layout banger verified as it wrote it is not hashed again (the
    // tampering is not seen); its manifests still are.
    assert_eq!(
        layers_of(&layout, Blobs::Verified).unwrap(),
        vec![layer_blob.clone()]
    );
    assert!(matches!(
        blob_path(&layout, "sha256:../../../etc/passwd"),
        Err(OciError::BadDigest(_))
    ));
    let d = tmp.path().join("docker");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(
        d.join("manifest.json"),
        r#"[{"Layers":["../../etc/passwd"]}]"#,
    )
    .unwrap();
    assert!(matches!(layers(&d), Err(OciError::UnsafePath(_))));
    std::fs::write(d.join("manifest.json"), r#"[{"Layers":["/etc/passwd"]}]"#).unwrap();
    assert!(matches!(layers(&d), Err(OciError::UnsafePath(_))));
}

#[test]
fn a_truncated_zstd_layer_fails_the_build() {
    let tmp = banger_testkit::tmp();
    let z = zstd(&layer1());
    let layout = tmp.path().join("layout");
    oci_layout(&layout, &[z[..z.len() / 2].to_vec()]);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let img = tmp.path().join("root.ext4");
    assert!(matches!(
        build(&HostRunner, &layout, &scratch, &img, Sizing::default()),
        Err(OciError::Layer(..))
    ));
    assert!(!img.exists());
}

/// The child half of `root_build_as_an_unprivileged_user_keeps_ownership`:
/// does nothing unless that test runs it (as `nobody`) with the env var set.
#[test]
fn unprivileged_build_child() {
    let Some(dir) = std::env::var_os("BANGER_TEST_UNPRIV_BUILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    assert!(
        !rustix::process::geteuid().is_root(),
        "must run unprivileged"
    );
    let scratch = dir.join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    build(
        &HostRunner,
        &dir.join("layout"),
        &scratch,
        &dir.join("root.ext4"),
        Sizing::default(),
    )
    .unwrap();
}

#[test]
fn root_build_as_an_unprivileged_user_keeps_ownership() {
    if !banger_testkit::require_root("root_build_as_an_unprivileged_user_keeps_ownership") {
        return;
    }
    let tmp = banger_testkit::tmp();
    let dir = tmp.path().join("w");
    std::fs::create_dir(&dir).unwrap();
    oci_layout(&dir.join("layout"), &[gz(&layer1()), layer2()]);
    HostRunner
        .run(
            &Cmd::new("chown")
                .args(["-R", "65534:65534"])
                .arg(tmp.path()),
        )
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = HostRunner
        .output(
            &Cmd::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--",
                    "env",
                ])
                .arg(format!("BANGER_TEST_UNPRIV_BUILD={}", dir.display()))
                .arg(exe)
                .args([
                    "--exact",
                    "images::oci::tests::unprivileged_build_child",
                    "--test-threads=1",
                ]),
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status == 0 && text.contains("1 passed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(dir.join("root.ext4")).unwrap().uid(),
        65534,
        "built by nobody"
    );
    check_image(&dir.join("root.ext4"));
}

#[path = "oci_hostile_tests.rs"]
mod hostile;

#[test]
fn user_xattrs_are_kept_where_possible() {
    let tmp = banger_testkit::tmp();
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.user.bgtest", &b"kept"[..])])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(1);
    b.append_data(&mut h, "withattr", &b"x"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let layout = tmp.path().join("layout");
    oci_layout(&layout, &[layer]);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let img = tmp.path().join("root.ext4");
    let b = build(&HostRunner, &layout, &scratch, &img, Sizing::default()).unwrap();
    assert_eq!(b.xattrs, 1);
    let ea = debugfs(&img, "ea_list /withattr");
    assert!(ea.contains("user.bgtest") && ea.contains("kept"), "{ea}");
}

#[test]
fn xattr_paths_and_names_outside_the_charset_are_skipped() {
    for ok in ["/usr/bin/ping", "security.capability", "/a@b+c-d_e.f:g"] {
        assert!(debugfs_safe(ok), "{ok}");
    }
    for bad in ["", "/a b", "/x\nrm /etc/passwd", "/\"q\"", "/é", "user.a;b"] {
        assert!(!debugfs_safe(bad), "{bad:?}");
    }
}
