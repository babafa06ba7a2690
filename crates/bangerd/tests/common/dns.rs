//! A minimal DNS client for the network tests: one A query over UDP or TCP.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// An A query for `name`, recursion desired.
pub fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new(0x6161, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// The A records of an answer, or its response code when not NoError.
pub fn a_records(bytes: &[u8]) -> Result<Vec<Ipv4Addr>, String> {
    let m = Message::from_vec(bytes).map_err(|e| e.to_string())?;
    if m.metadata.response_code != ResponseCode::NoError {
        return Err(format!("{:?}", m.metadata.response_code));
    }
    Ok(m.answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(A(ip)) => Some(ip),
            _ => None,
        })
        .collect())
}

/// Ask `server` over UDP from the calling thread's namespace.
pub fn resolve_udp(server: SocketAddr, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(&query(name), server).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    let (n, _) = s.recv_from(&mut buf).map_err(|e| format!("{name}: {e}"))?;
    a_records(&buf[..n])
}

/// Ask `server` over TCP (length-prefixed) from the calling thread's namespace.
pub fn resolve_tcp(server: SocketAddr, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut s =
        TcpStream::connect_timeout(&server, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let q = query(name);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).map_err(|e| e.to_string())?;
    a_records(&buf)
}
