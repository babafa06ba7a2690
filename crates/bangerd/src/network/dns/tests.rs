use super::*;
use hickory_proto::op::Query;
use hickory_proto::rr::Name;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Vms(HashMap<String, Ipv4Addr>);

impl Records for Vms {
    fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        self.0.get(name).copied()
    }
}

fn vms() -> Arc<Vms> {
    Arc::new(Vms(HashMap::from([
        ("dev".to_string(), Ipv4Addr::new(172, 30, 0, 2)),
        ("other".to_string(), Ipv4Addr::new(172, 30, 0, 3)),
    ])))
}

fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

fn answer(d: Decision) -> Message {
    match d {
        Decision::Answer(m) => m,
        Decision::Forward => panic!("expected a local answer"),
    }
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(A(ip)) => Some(ip),
            _ => None,
        })
        .collect()
}

#[test]
fn vm_names_are_answered_locally() {
    let r = vms();
    for name in ["dev.vm.", "dev.vm", "DEV.Vm."] {
        let m = answer(decide(&query(name, RecordType::A), "vm", r.as_ref()));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.id, 0x4242);
        assert_eq!(a_records(&m), [Ipv4Addr::new(172, 30, 0, 2)], "{name}");
        assert_eq!(m.answers[0].ttl, LOCAL_TTL);
    }
    let m = answer(decide(
        &query("dev.vm.", RecordType::AAAA),
        "vm",
        r.as_ref(),
    ));
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0),
        "NODATA"
    );
    for name in ["nope.vm.", "a.dev.vm."] {
        let m = answer(decide(&query(name, RecordType::A), "vm", r.as_ref()));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
    let m = answer(decide(&query("vm.", RecordType::A), "vm", r.as_ref()));
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );
}

#[test]
fn other_names_are_forwarded() {
    let r = vms();
    for name in ["example.com.", "devvm.", "vm.example.", "dev.vmx."] {
        assert!(
            matches!(
                decide(&query(name, RecordType::A), "vm", r.as_ref()),
                Decision::Forward
            ),
            "{name}"
        );
    }
    let mut two = query("dev.vm.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("other.vm.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        answer(decide(&two, "vm", r.as_ref()))
            .metadata
            .response_code,
        ResponseCode::FormErr
    );
}

#[test]
fn resolv_conf_upstreams_never_include_ourselves() {
    let text = "# comment\nsearch lan\nnameserver 127.0.0.53\nnameserver 172.30.0.1\nnameserver fe80::1%eth0\nnameserver bogus\noptions edns0\n";
    let own: SocketAddr = "172.30.0.1:53".parse().unwrap();
    assert_eq!(
        parse_resolv_conf(text, &[own]),
        vec![
            "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
            "[fe80::1]:53".parse().unwrap()
        ]
    );
    let any: SocketAddr = "0.0.0.0:53".parse().unwrap();
    assert_eq!(
        parse_resolv_conf(text, &[any]),
        vec!["[fe80::1]:53".parse::<SocketAddr>().unwrap()]
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("resolv.conf");
    std::fs::write(&p, "nameserver 127.0.0.1\n").unwrap();
    assert_eq!(
        upstreams_from(&p, &[]).unwrap(),
        vec!["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
    );
}

/// A fake upstream on loopback: answers every A question with 192.0.2.7
/// and counts what it saw (UDP and TCP).
async fn fake_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let answer_for = |q: &[u8]| {
        let req = Message::from_vec(q).unwrap();
        let mut m = reply(&req, ResponseCode::NoError);
        m.answers.push(Record::from_rdata(
            req.queries[0].name().clone(),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
        ));
        m.to_vec().unwrap()
    };
    let s = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            s.fetch_add(1, Ordering::SeqCst);
            let _ = udp.send_to(&answer_for(&buf[..n]), peer).await;
        }
    });
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = tcp.accept().await {
            s.fetch_add(1, Ordering::SeqCst);
            if let Ok(q) = read_framed(&mut c).await {
                let _ = write_framed(&mut c, &answer_for(&q)).await;
            }
        }
    });
    (addr, seen)
}

async fn ask_udp(server: SocketAddr, q: &[u8]) -> Message {
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.send_to(q, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn ask_tcp(server: SocketAddr, q: &[u8]) -> Message {
    let mut s = TcpStream::connect(server).await.unwrap();
    write_framed(&mut s, q).await.unwrap();
    Message::from_vec(&read_framed(&mut s).await.unwrap()).unwrap()
}

#[tokio::test]
async fn serves_vms_and_forwards_the_rest_on_loopback() {
    let (up, seen) = fake_upstream().await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    // A dead upstream first: the server must move on to the live one.
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = DnsConfig::new("vm", vec![dead.local_addr().unwrap(), up]);
    cfg.upstream_timeout = Duration::from_millis(300);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(udp, Some(tcp), cfg, vms(), async {
        let _ = stopped.await;
    }));

    let m = ask_udp(addr, &query("other.vm.", RecordType::A).to_vec().unwrap()).await;
    assert_eq!(a_records(&m), [Ipv4Addr::new(172, 30, 0, 3)]);
    assert_eq!(seen.load(Ordering::SeqCst), 0, "vm names never leave");

    let m = ask_udp(
        addr,
        &query("upstream.example.", RecordType::A).to_vec().unwrap(),
    )
    .await;
    assert_eq!(a_records(&m), [Ipv4Addr::new(192, 0, 2, 7)]);
    assert_eq!(m.metadata.id, 0x4242);
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    let m = ask_tcp(addr, &query("dev.vm.", RecordType::A).to_vec().unwrap()).await;
    assert_eq!(a_records(&m), [Ipv4Addr::new(172, 30, 0, 2)]);
    let m = ask_tcp(
        addr,
        &query("upstream.example.", RecordType::A).to_vec().unwrap(),
    )
    .await;
    assert_eq!(a_records(&m), [Ipv4Addr::new(192, 0, 2, 7)]);
    assert_eq!(seen.load(Ordering::SeqCst), 2);

    // Garbage with a header gets FORMERR; shorter garbage gets nothing,
    // and the server keeps serving.
    let mut junk = vec![0x12, 0x34];
    junk.extend_from_slice(&[0xff; 20]);
    let m = ask_udp(addr, &junk).await;
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (0x1234, ResponseCode::FormErr)
    );
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.send_to(&[1, 2, 3], addr).await.unwrap();
    let m = ask_udp(addr, &query("dev.vm.", RecordType::A).to_vec().unwrap()).await;
    assert_eq!(a_records(&m), [Ipv4Addr::new(172, 30, 0, 2)]);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn no_live_upstream_is_servfail() {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = DnsConfig::new("vm", vec![dead.local_addr().unwrap()]);
    cfg.upstream_timeout = Duration::from_millis(200);
    let server = tokio::spawn(serve(udp, None, cfg, vms(), std::future::pending()));
    let m = ask_udp(
        addr,
        &query("upstream.example.", RecordType::A).to_vec().unwrap(),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    server.abort();
}
