//! One NAT set element added or deleted over nfnetlink (`NETLINK_NETFILTER`)
//! in-process: the batch `nft add element` / `nft delete element` send,
//! without a process start. One socket per operation, so it acts in the
//! network namespace of the calling thread (as a forked `nft` would).

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::io;
use std::net::Ipv4Addr;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VALUE: u16 = 1;
/// libnftnl's user-data tag for an element's comment (what `nft` lists).
const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;

/// What to do to one element of an `inet` table's set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Add `ip` with `comment` (adding one already there is a no-op).
    Add {
        ip: Ipv4Addr,
        comment: String,
    },
    Delete {
        ip: Ipv4Addr,
    },
}

/// A netlink attribute: header, payload, padding to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + (len.next_multiple_of(4) - len), 0);
}

fn nested(out: &mut Vec<u8>, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    body(&mut inner);
    attr(out, kind | NLA_F_NESTED, &inner);
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One netlink message: header, nfgenmsg (`family`, version 0, `res_id`
/// big-endian), attributes.
fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    let len = NLMSG_HDRLEN + 4 + attrs.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
}

/// The batch for `op` on `table`'s `set`: BEGIN, the element message
/// (sequence number `seq + 1`, the one the kernel acknowledges), END.
pub fn batch(table: &str, set: &str, op: &Op, seq: u32) -> Vec<u8> {
    let ip = match op {
        Op::Add { ip, .. } | Op::Delete { ip } => ip.octets(),
    };
    let mut attrs = Vec::new();
    attr(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    attr(&mut attrs, NFTA_SET_ELEM_LIST_SET, &cstr(set));
    nested(&mut attrs, NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
        nested(l, NFTA_LIST_ELEM, |e| {
            nested(e, NFTA_SET_ELEM_KEY, |k| attr(k, NFTA_DATA_VALUE, &ip));
            if let Op::Add { comment, .. } = op {
                let c = cstr(comment);
                let mut udata = vec![NFTNL_UDATA_SET_ELEM_COMMENT, c.len() as u8];
                udata.extend_from_slice(&c);
                attr(e, NFTA_SET_ELEM_USERDATA, &udata);
            }
        })
    });
    let (kind, flags) = match op {
        Op::Add { .. } => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
        Op::Delete { .. } => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
    };
    let mut out = Vec::new();
    let batch_res = NFNL_SUBSYS_NFTABLES;
    message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        batch_res,
        &[],
    );
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | kind;
    message(
        &mut out,
        kind,
        flags,
        seq.wrapping_add(1),
        NFPROTO_INET,
        0,
        &attrs,
    );
    message(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq.wrapping_add(2),
        0,
        batch_res,
        &[],
    );
    out
}

/// The kernel's answer to message `seq` in `buf`: `Some(Ok)` for its ACK,
/// `Some(Err)` for its error, `None` if `buf` does not answer it.
pub fn answer(buf: &[u8], seq: u32) -> Option<io::Result<()>> {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let word = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap());
        let len = word(off) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed netlink answer",
            )));
        }
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if kind == NLMSG_ERROR && word(off + 8) == seq && len >= NLMSG_HDRLEN + 4 {
            let code = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-code))
            });
        }
        off += len.next_multiple_of(4);
    }
    None
}

/// Send `op` for `table`'s `set` and wait for the kernel's answer. The
/// kernel's errno comes back as the error (`ENOENT`: no such table, set or
/// element).
pub fn apply(table: &str, set: &str, op: &Op) -> io::Result<()> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let seq = 1;
    sock.send(&batch(table, set, op, seq), 0)?;
    loop {
        let (buf, _) = sock.recv_from_full()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "netlink closed before answering",
            ));
        }
        if let Some(r) = answer(&buf, seq + 1) {
            return r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attributes after a message's headers, as (type, payload).
    fn attrs(mut b: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        while b.len() >= 4 {
            let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
            out.push((u16::from_ne_bytes([b[2], b[3]]), b[4..len].to_vec()));
            b = &b[len.next_multiple_of(4).min(b.len())..];
        }
        out
    }

    #[test]
    fn an_add_is_begin_one_newsetelem_end_with_key_and_comment() {
        let op = Op::Add {
            ip: Ipv4Addr::new(172, 30, 0, 7),
            comment: "banger-0a1b2c3d".into(),
        };
        let b = batch("banger", "nat_guests", &op, 41);
        // Three messages; each length word covers exactly its bytes.
        let mut msgs = Vec::new();
        let mut off = 0;
        while off < b.len() {
            let len = u32::from_ne_bytes(b[off..off + 4].try_into().unwrap()) as usize;
            msgs.push(&b[off..off + len]);
            off += len;
        }
        assert_eq!(off, b.len());
        assert_eq!(msgs.len(), 3);
        let kind = |m: &[u8]| u16::from_ne_bytes([m[4], m[5]]);
        let flags = |m: &[u8]| u16::from_ne_bytes([m[6], m[7]]);
        let seq = |m: &[u8]| u32::from_ne_bytes(m[8..12].try_into().unwrap());
        assert_eq!(kind(msgs[0]), 0x10);
        assert_eq!(kind(msgs[1]), (10 << 8) | 12);
        assert_eq!(kind(msgs[2]), 0x11);
        assert_eq!([seq(msgs[0]), seq(msgs[1]), seq(msgs[2])], [41, 42, 43]);
        assert_eq!(flags(msgs[1]), 0x1 | 0x4 | 0x400);
        // nfgenmsg: batch res_id is the nftables subsystem, big-endian.
        assert_eq!(&msgs[0][16..20], &[0, 0, 0, 10]);
        assert_eq!(&msgs[1][16..20], &[NFPROTO_INET, 0, 0, 0]);
        let top = attrs(&msgs[1][20..]);
        assert_eq!(top[0], (1, b"banger\0".to_vec()));
        assert_eq!(top[1], (2, b"nat_guests\0".to_vec()));
        assert_eq!(top[2].0, 3 | NLA_F_NESTED);
        let list = attrs(&top[2].1);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].0, 1 | NLA_F_NESTED);
        let elem = attrs(&list[0].1);
        assert_eq!(elem[0].0, 1 | NLA_F_NESTED);
        assert_eq!(attrs(&elem[0].1), [(1, vec![172, 30, 0, 7])]);
        let mut udata = vec![0, 16];
        udata.extend_from_slice(b"banger-0a1b2c3d\0");
        assert_eq!(elem[1], (6, udata));
    }

    #[test]
    fn a_delete_names_only_the_key() {
        let b = batch(
            "t",
            "s",
            &Op::Delete {
                ip: Ipv4Addr::new(10, 0, 0, 2),
            },
            1,
        );
        let len0 = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
        let m = &b[len0..];
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), (10 << 8) | 14);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x1 | 0x4);
        let top = attrs(&m[20..u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize]);
        let elem = attrs(&attrs(&top[2].1)[0].1);
        assert_eq!(elem.len(), 1, "no comment on a delete");
    }

    fn error_msg(seq: u32, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0; 16]); // the echoed request header
        m
    }

    #[test]
    fn answers_are_matched_by_sequence_number() {
        assert!(answer(&error_msg(5, 0), 5).unwrap().is_ok());
        let e = answer(&error_msg(5, -libc::ENOENT), 5)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(answer(&error_msg(4, -libc::EPERM), 5).is_none());
        let mut two = error_msg(4, 0);
        two.extend(error_msg(5, -libc::EEXIST));
        let e = answer(&two, 5).unwrap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert!(answer(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 1)
            .unwrap()
            .is_err());
    }
}
