//! A `bgtest-` network namespace with a NATed veth to the host, where a real
//! `bangerd --dev` (root: its bridge, taps and nftables stay inside) builds
//! images from the Debian mirror and boots guests under QEMU; and the
//! `banger` CLI run inside it. Everything goes on drop, even on failure.

use super::dev_daemon::{cli, DAEMON};
use banger_testkit::{http_unix, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Why a real-guest CLI test cannot run here, if it cannot.
pub fn gate() -> Result<(), &'static str> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (network namespaces, debootstrap, taps)");
    }
    if std::env::var_os("BANGER_SKIP_NETWORK_TESTS").is_some() {
        return Err("BANGER_SKIP_NETWORK_TESTS is set (downloads from the Debian mirror)");
    }
    if !Path::new("/usr/bin/qemu-system-x86_64").exists() {
        return Err("qemu-system-x86_64 not installed");
    }
    Ok(())
}

fn run(argv: &[&str]) -> bool {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(argv: &[&str]) {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace, its veth, the host's masquerade table and the daemon.
pub struct GuestNet {
    pub ns: String,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub home: PathBuf,
    veth: String,
    table: String,
    daemon: Option<Child>,
}

impl GuestNet {
    /// Make the namespace and start the daemon in it with `HOME` = an
    /// empty `home` (no `.ssh`) and an empty StateDir.
    pub fn start() -> GuestNet {
        Self::start_env(&[])
    }

    /// [`GuestNet::start`], the daemon given `env` besides.
    pub fn start_env(env: &[(&str, &Path)]) -> GuestNet {
        let s = banger_testkit::unique_suffix();
        let n: u8 = u8::from_str_radix(&s[..2], 16).unwrap() % 250 + 1;
        let ns = format!("bgtest-gn{s}");
        let veth = format!("bgtv{s}");
        let table = format!("bgtest_gn{s}");
        let dir = tempfile::Builder::new()
            .prefix("bgtest-guestcli-")
            .tempdir()
            .unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut g = GuestNet {
            ns: ns.clone(),
            socket: dir.path().join("run/bangerd.sock"),
            home,
            dir,
            veth: veth.clone(),
            table: table.clone(),
            daemon: None,
        };
        let (host_ip, ns_ip, net) = (
            format!("10.251.{n}.1"),
            format!("10.251.{n}.2"),
            format!("10.251.{n}.0/30"),
        );
        must(&["ip", "netns", "add", &ns]);
        must(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        must(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &veth]);
        must(&["ip", "link", "set", &veth, "up"]);
        let inns = |a: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &ns];
            v.extend_from_slice(a);
            must(&v);
        };
        inns(&["ip", "link", "set", "lo", "up"]);
        inns(&["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", "eth0"]);
        inns(&["ip", "link", "set", "eth0", "up"]);
        inns(&["ip", "route", "add", "default", "via", &host_ip]);
        must(&["nft", "add", "table", "ip", &table]);
        must(&[
            "nft",
            "add",
            "chain",
            "ip",
            &table,
            "post",
            "{ type nat hook postrouting priority srcnat; }",
        ]);
        must(&[
            "nft",
            "add",
            "rule",
            "ip",
            &table,
            "post",
            "ip",
            "saddr",
            &net,
            "masquerade",
        ]);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, DAEMON, "--dev"])
            .env("HOME", &g.home)
            .env("BANGER_STATE_DIR", g.dir.path().join("state"))
            .env("BANGER_RUNTIME_DIR", g.dir.path().join("run"))
            .env("BANGER_LOG", "warn")
            .env_remove("BANGER_NO_NETWORK")
            .envs(env.iter().copied())
            .spawn()
            .unwrap();
        g.daemon = Some(child);
        let sock = g.socket.clone();
        assert!(wait_until(Duration::from_secs(30), || matches!(
            http_unix(&sock, "GET", "/v1/health", None),
            Ok((200, _))
        )));
        g
    }

    /// `banger args` inside the namespace, `HOME` the empty home; `stdin`
    /// fed to it.
    pub fn banger_in(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(cli())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env("HOME", &self.home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut i = c.stdin.take().unwrap();
        let data = stdin.to_vec();
        let feed = std::thread::spawn(move || {
            let _ = i.write_all(&data);
        });
        let out = c.wait_with_output().unwrap();
        feed.join().unwrap();
        out
    }

    /// `argv` run inside the namespace.
    pub fn in_ns(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The first line a TCP connect to `127.0.0.1:port` inside the
    /// namespace reads (empty when refused or silent for 15 s).
    pub fn banner(&self, port: u16) -> String {
        use std::io::{BufRead, BufReader};
        let path = PathBuf::from("/run/netns").join(&self.ns);
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let Ok(c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
                return String::new();
            };
            c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let mut line = String::new();
            let _ = BufReader::new(c).read_line(&mut line);
            line
        })
        .join()
        .unwrap()
    }

    pub fn banger(&self, args: &[&str]) -> Output {
        self.banger_in(args, b"")
    }

    /// The VM's console log (for failure messages).
    pub fn consoles(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path().join("state/vms")) {
            for e in rd.flatten() {
                let t = std::fs::read_to_string(e.path().join("console.log")).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                s.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
            }
        }
        s
    }
}

impl Drop for GuestNet {
    fn drop(&mut self) {
        // The daemon, then whatever it launched (QEMU) in the namespace.
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = rustix::process::kill_process(
                        rustix::process::Pid::from_raw(pid).unwrap(),
                        rustix::process::Signal::Kill,
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        run(&["ip", "netns", "del", &self.ns]);
        run(&["ip", "link", "del", &self.veth]);
        run(&["nft", "delete", "table", "ip", &self.table]);
        let _ = Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(self.dir.path())
            .status();
    }
}
