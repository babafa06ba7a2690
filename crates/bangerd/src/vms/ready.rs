//! Guest readiness: the first `SSH-` banner on the guest's port 22, found
//! by a fast poll (short connect timeout, 20 ms between tries) so it is
//! seen within a few milliseconds of sshd listening, bounded by a deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How readiness is polled.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    /// One connect attempt's limit: a guest whose kernel is not up yet
    /// answers nothing (no RST), so a try is cut short and made again
    /// rather than waiting out the kernel's 1 s SYN retransmit.
    pub connect: Duration,
    /// How long an accepted connection may take to send its banner: a
    /// slow (TCG, loaded host) guest's sshd may take many seconds per
    /// connection, and a probe given up early leaves it forking children
    /// for probes nobody waits for — it would never answer. One try at a
    /// time, so this is generous.
    pub banner: Duration,
    /// The pause after a refused or failed try.
    pub pause: Duration,
}

impl Default for Poll {
    fn default() -> Self {
        Poll {
            connect: Duration::from_millis(100),
            banner: Duration::from_secs(30),
            pause: Duration::from_millis(20),
        }
    }
}

/// How one try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Try {
    /// An `SSH-` banner: ready.
    Banner,
    /// Nothing listening (refused, unreachable, or no answer in time).
    NoConnect,
    /// Connected, but no banner (closed, something else, or too slow).
    NoBanner,
}

/// One try: connect to `addr` within `connect`, then read four bytes
/// within `banner`.
pub async fn try_banner(addr: SocketAddr, connect: Duration, banner: Duration) -> Try {
    let Ok(Ok(mut s)) = tokio::time::timeout(connect, TcpStream::connect(addr)).await else {
        return Try::NoConnect;
    };
    let mut buf = [0u8; 4];
    match tokio::time::timeout(banner, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) if &buf == b"SSH-" => Try::Banner,
        _ => Try::NoBanner,
    }
}

/// Why the wait ended without a banner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// `exited` said the VMM is gone.
    Exited,
    /// The deadline passed.
    Deadline,
}

/// Poll `addr` until it answers with an SSH banner, `exited()` says the
/// VMM died, or `deadline` passes (every try is cut to the time left).
/// `tick` is called after every failed try with the time waited so far.
pub async fn wait_for_banner(
    addr: SocketAddr,
    deadline: Instant,
    poll: Poll,
    exited: impl Fn() -> bool,
    mut tick: impl FnMut(Duration),
) -> Result<(), NotReady> {
    let t = Instant::now();
    loop {
        if exited() {
            return Err(NotReady::Exited);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NotReady::Deadline);
        }
        let r = try_banner(addr, poll.connect.min(left), poll.banner.min(left)).await;
        if r == Try::Banner {
            return Ok(());
        }
        tick(t.elapsed());
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(poll.pause.min(left)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A port nothing listens on (bound, read, released).
    async fn free_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn one_try_tells_banner_from_refusal_and_from_another_greeting() {
        let addr = free_port().await;
        let (c, b) = (Duration::from_millis(200), Duration::from_secs(2));
        assert_eq!(try_banner(addr, c, b).await, Try::NoConnect);
        let l = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            for greeting in [&b"HTTP/1.1 400\r\n"[..], b"SSH-2.0-bgtest\r\n"] {
                let (mut s, _) = l.accept().await.unwrap();
                s.write_all(greeting).await.unwrap();
            }
        });
        assert_eq!(try_banner(addr, c, b).await, Try::NoBanner);
        assert_eq!(try_banner(addr, c, b).await, Try::Banner);
    }

    /// The port is closed, then accepts and hangs up with no banner (as a
    /// forwarding proxy does before the guest is up), then sends the
    /// banner: readiness is found, and never before the banner was sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readiness_is_found_once_the_banner_starts_after_a_closed_port_and_hang_ups() {
        let addr = free_port().await;
        let sending = Arc::new(AtomicBool::new(false));
        let s2 = sending.clone();
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let l = TcpListener::bind(addr).await.unwrap();
            let start = Instant::now();
            let mut hung_up = 0;
            loop {
                let (mut c, _) = l.accept().await.unwrap();
                if start.elapsed() < Duration::from_millis(150) {
                    hung_up += 1;
                    drop(c);
                    continue;
                }
                s2.store(true, Ordering::SeqCst);
                c.write_all(b"SSH-2.0-bgtest\r\n").await.unwrap();
                return hung_up;
            }
        });
        let mut ticks = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        let r = wait_for_banner(addr, deadline, Poll::default(), || false, |_| ticks += 1).await;
        assert_eq!(r, Ok(()));
        assert!(
            sending.load(Ordering::SeqCst),
            "ready only once the banner was sent"
        );
        let hung_up = server.await.unwrap();
        assert!(hung_up > 0, "the hang-ups were polled through");
        assert!(ticks > hung_up, "refused tries and hang-ups each ticked");
    }

    #[tokio::test]
    async fn a_silent_listener_runs_into_the_deadline_and_a_dead_vmm_ends_the_wait() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // Accepts (the backlog does) and never says anything.
        let deadline = Instant::now() + Duration::from_millis(300);
        let r = wait_for_banner(addr, deadline, Poll::default(), || false, |_| {}).await;
        assert_eq!(r, Err(NotReady::Deadline));
        assert!(Instant::now() >= deadline);
        let far = Instant::now() + Duration::from_secs(60);
        let r = wait_for_banner(addr, far, Poll::default(), || true, |_| {}).await;
        assert_eq!(r, Err(NotReady::Exited));
        drop(l);
    }
}
