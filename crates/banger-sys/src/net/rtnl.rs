//! A synchronous rtnetlink request/response channel (one socket per
//! operation, so it acts in the network namespace of the calling thread).

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR,
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;

/// One open rtnetlink socket.
pub(crate) struct Rtnl {
    sock: Socket,
    seq: u32,
}

impl Rtnl {
    pub(crate) fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { sock, seq: 0 })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Read replies to `seq` until the ACK/error (or DONE for dumps),
    /// handing each other reply to `each` undecoded.
    fn replies(&mut self, seq: u32, mut each: impl FnMut(NetlinkBuffer<&[u8]>)) -> io::Result<()> {
        let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        loop {
            let (buf, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off + 16 <= buf.len() {
                let nl = NetlinkBuffer::new_checked(&buf[off..]).map_err(|e| bad(e.to_string()))?;
                let len = nl.length() as usize;
                if len < 16 {
                    return Err(bad("short netlink message".into()));
                }
                let start = off;
                off += (len + 3) & !3;
                if nl.sequence_number() != seq {
                    continue;
                }
                if !matches!(nl.message_type(), NLMSG_ERROR | NLMSG_DONE) {
                    each(nl);
                    continue;
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[start..])
                    .map_err(|e| bad(e.to_string()))?;
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        }
                    }
                    _ => return Ok(()),
                }
            }
        }
    }

    /// Read replies to `seq` until the ACK/error (or DONE for dumps),
    /// returning the inner messages.
    fn collect(&mut self, seq: u32) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        let mut failed = None;
        self.replies(
            seq,
            |nl| match NetlinkMessage::<RouteNetlinkMessage>::deserialize(nl.into_inner()) {
                Ok(m) => {
                    if let NetlinkPayload::InnerMessage(m) = m.payload {
                        out.push(m);
                    }
                }
                Err(e) => failed = failed.take().or(Some(e.to_string())),
            },
        )?;
        match failed {
            Some(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            None => Ok(out),
        }
    }

    /// A request that changes something: wait for its ACK.
    pub(crate) fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        self.collect(seq).map(drop)
    }

    /// A GET for one object: its reply messages.
    pub(crate) fn get(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_ACK)?;
        self.collect(seq)
    }

    /// A dump: every reply message until DONE.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_DUMP)?;
        self.collect(seq)
    }

    /// A dump whose replies are not decoded: `each` gets the payload (after
    /// the netlink header) of every reply of message type `kind`.
    pub(crate) fn dump_raw(
        &mut self,
        msg: RouteNetlinkMessage,
        kind: u16,
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        let seq = self.send(msg, NLM_F_DUMP)?;
        self.replies(seq, |nl| {
            if nl.message_type() == kind {
                each(nl.payload());
            }
        })
    }
}
