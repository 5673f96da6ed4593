//! The one netlink transport: a blocking socket of one protocol and one
//! network namespace, and the request/answer rules every netlink family
//! shares.
//!
//! Framing is netlink-packet-core's (`NetlinkHeader`, `NetlinkMessage`,
//! `NetlinkBuffer` and its `NLM_F_*` constants); the messages are the
//! caller's: `RouteNetlinkMessage` for rtnetlink, nf_tables' own message type
//! for nfnetlink. Every socket gets a receive timeout ([`RECV_TIMEOUT`]), so a
//! kernel that never answers costs an error, never a hung plugin or agent.
//!
//! The exchange rules:
//! - a request with `NLM_F_DUMP` collects answers until `NLMSG_DONE` (whose
//!   error code, if any, is the dump's error);
//! - a request with `NLM_F_ACK` collects answers until its ack (an
//!   `NLMSG_ERROR` with code 0) or its error;
//! - any other request ends with its first answer or its error;
//! - a batch (nfnetlink transactions) goes out in one datagram, and every
//!   message sent with `NLM_F_ACK` is waited for; the first error is
//!   returned after all answers are read, so the socket stays in step.
//!
//! Answers carrying another sequence number (a late answer to an earlier
//! request) are skipped without being decoded.

use super::netns::Netns;
use super::{Error, Result};
use netlink_packet_core::{
    NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, NlasIterator, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};
use std::io;
use std::time::Duration;

/// How long a socket waits for the kernel's next answer. The kernel handles
/// a request inside `send` and produces each part of a dump inside the
/// `recv` that asks for it, so an answer that is not queued by then is not
/// coming.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// The size of the receive buffer: larger than any datagram the kernel
/// sends (dump parts are at most 32 KiB); a larger one is reported as
/// truncated, never silently cut. The buffer is never zeroed: the socket
/// writes into its spare capacity (zeroing 64 KiB per socket was most of the
/// transport's user-space instructions on a pod's ADD).
const RECV_BUF: usize = 64 * 1024;

/// What a connection sends and receives datagrams through: the netlink
/// socket, or a fake in unit tests.
pub trait Wire {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()>;
    /// Reads one datagram into the spare capacity of `buf` (empty) and
    /// returns its full length, which exceeds `buf.len()` if the datagram
    /// did not fit.
    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
}

impl Wire for Socket {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        let n = Socket::send(self, datagram, 0)?;
        if n != datagram.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {n} of {} bytes", datagram.len()),
            ));
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        // MSG_TRUNC: the kernel returns the datagram's real length; the
        // bytes go into the spare capacity (no reallocation: it is not full)
        Socket::recv(self, buf, libc::MSG_TRUNC)
    }
}

/// Until when the answers to one sent message are collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    Done,
    Ack,
    First,
}

impl Until {
    fn of(flags: u16) -> Until {
        if flags & NLM_F_DUMP == NLM_F_DUMP {
            Until::Done
        } else if flags & NLM_F_ACK != 0 {
            Until::Ack
        } else {
            Until::First
        }
    }
}

/// A netlink connection: one socket (or fake wire) and its sequence numbers.
pub struct Conn<W = Socket> {
    wire: W,
    seq: u32,
    buf: Vec<u8>,
}

impl Conn<Socket> {
    /// A socket of `protocol` (e.g. `NETLINK_ROUTE`) in the calling thread's
    /// network namespace, with the receive timeout set.
    pub fn open(protocol: isize) -> Result<Conn<Socket>> {
        let op = format!("open netlink socket (protocol {protocol})");
        let err = |source| Error::Socket {
            op: op.clone(),
            source,
        };
        let mut sock = Socket::new(protocol).map_err(err)?;
        sock.bind_auto().map_err(err)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(err)?;
        let tv = nix::sys::time::TimeVal::new(
            RECV_TIMEOUT.as_secs() as _,
            RECV_TIMEOUT.subsec_micros() as _,
        );
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| err(e.into()))?;
        // extended error messages, errors that echo only the request's
        // header (not a whole batch message) and strict dump filtering: all
        // optional, older kernels answer without them
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        if protocol == netlink_sys::protocols::NETLINK_ROUTE {
            let _ = sock.set_netlink_get_strict_chk(true);
        }
        Ok(Conn::with_wire(sock))
    }

    /// A socket of `protocol` in `ns`, opened on a thread of its own that
    /// entered `ns`; the socket stays bound to `ns` wherever it is used.
    pub fn open_in(protocol: isize, ns: &Netns) -> Result<Conn<Socket>> {
        ns.run(|| Conn::open(protocol))?
    }
}

impl<W: Wire> Conn<W> {
    pub fn with_wire(wire: W) -> Conn<W> {
        Conn {
            wire,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        }
    }

    /// The wire, for tests that look at what was sent.
    #[cfg(test)]
    pub fn wire(&mut self) -> &mut W {
        &mut self.wire
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Frames `msg` with the next sequence number and `NLM_F_REQUEST | flags`
    /// onto `out`; returns the sequence number.
    fn frame<M: NetlinkSerializable>(&mut self, msg: M, flags: u16, out: &mut Vec<u8>) -> u32 {
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | flags;
        hdr.sequence_number = self.next_seq();
        let mut m = NetlinkMessage::new(hdr, NetlinkPayload::InnerMessage(msg));
        m.finalize();
        let start = out.len();
        out.resize(start + m.buffer_len(), 0);
        m.serialize(&mut out[start..]);
        // the next message starts aligned
        out.resize(align(out.len()), 0);
        hdr.sequence_number
    }

    fn send(&mut self, op: &str, datagram: &[u8]) -> Result<()> {
        self.wire.send(datagram).map_err(|source| Error::Socket {
            op: op.to_owned(),
            source,
        })
    }

    /// Sends one request and returns its answers (see the module's rules).
    pub fn request<M>(&mut self, op: &str, msg: M, flags: u16) -> Result<Vec<M>>
    where
        M: NetlinkSerializable + NetlinkDeserializable,
    {
        let mut out = Vec::new();
        let seq = self.frame(msg, flags, &mut out);
        self.send(op, &out)?;
        let mut answers = Vec::new();
        self.collect(op, vec![(seq, Until::of(flags))], &mut answers)?;
        Ok(answers)
    }

    /// Sends `msgs` (each with its flags) in one datagram and waits for the
    /// answer of each one sent with `NLM_F_ACK`; data answers are dropped.
    /// Returns the first error the kernel reported.
    pub fn batch<M>(&mut self, op: &str, msgs: impl IntoIterator<Item = (M, u16)>) -> Result<()>
    where
        M: NetlinkSerializable + NetlinkDeserializable,
    {
        let mut out = Vec::with_capacity(1024);
        let mut waiting = vec![];
        for (m, flags) in msgs {
            let seq = self.frame(m, flags, &mut out);
            if flags & NLM_F_ACK != 0 {
                waiting.push((seq, Until::Ack));
            }
        }
        self.send(op, &out)?;
        self.collect::<M>(op, waiting, &mut vec![])
    }

    /// Receives until every sequence number in `waiting` is answered in
    /// full; collects data answers into `out`. Returns the first error.
    fn collect<M: NetlinkDeserializable>(
        &mut self,
        op: &str,
        mut waiting: Vec<(u32, Until)>,
        out: &mut Vec<M>,
    ) -> Result<()> {
        let mut first_err = None;
        while !waiting.is_empty() {
            let n = self.recv(op)?;
            let mut off = 0;
            while off < n {
                let (len, answer) = parse_one::<M>(op, &self.buf[off..n], &waiting)?;
                off += align(len);
                let Some((seq, answer)) = answer else {
                    continue;
                };
                let i = waiting
                    .iter()
                    .position(|w| w.0 == seq)
                    .expect("parse_one answers only waited-for sequence numbers");
                let err = match answer {
                    Answer::Data(m) => {
                        out.push(m);
                        if waiting[i].1 == Until::First {
                            waiting.swap_remove(i);
                        }
                        continue;
                    }
                    Answer::End(None) => None,
                    Answer::End(Some((errno, said))) => Some(Error::kernel(op, errno, said)),
                };
                waiting.swap_remove(i);
                if first_err.is_none() {
                    first_err = err;
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// One datagram into the buffer; its length.
    fn recv(&mut self, op: &str) -> Result<usize> {
        self.buf.clear();
        let n = self.wire.recv(&mut self.buf).map_err(|source| {
            if matches!(
                source.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                Error::Timeout {
                    op: op.to_owned(),
                    timeout: RECV_TIMEOUT,
                }
            } else {
                Error::Socket {
                    op: op.to_owned(),
                    source,
                }
            }
        })?;
        if n > self.buf.len() {
            return Err(Error::Decode {
                op: op.to_owned(),
                msg: format!(
                    "a datagram of {n} bytes exceeds the {} byte buffer",
                    self.buf.capacity()
                ),
            });
        }
        Ok(n)
    }
}

/// What one received message means for the request it answers.
enum Answer<M> {
    /// A data message (a dump part, the answer to a GET).
    Data(M),
    /// The request's end: its ack or `NLMSG_DONE` (None), or its errno
    /// and the kernel's extended-ack message.
    End(Option<(i32, Option<String>)>),
}

/// Parses the message at the start of `b`: its length, and unless its
/// sequence number is not in `waiting` (then it is not decoded), the
/// sequence number and what it says.
#[allow(clippy::type_complexity)]
fn parse_one<M: NetlinkDeserializable>(
    op: &str,
    b: &[u8],
    waiting: &[(u32, Until)],
) -> Result<(usize, Option<(u32, Answer<M>)>)> {
    let decode = |e: netlink_packet_core::DecodeError| Error::Decode {
        op: op.to_owned(),
        msg: e.to_string(),
    };
    let buf = NetlinkBuffer::new_checked(b).map_err(decode)?;
    let len = buf.length() as usize;
    let seq = buf.sequence_number();
    if !waiting.iter().any(|w| w.0 == seq) {
        return Ok((len, None));
    }
    let msg = NetlinkMessage::<M>::deserialize(&b[..len]).map_err(decode)?;
    let answer = match msg.payload {
        NetlinkPayload::InnerMessage(m) => Answer::Data(m),
        NetlinkPayload::Error(e) => Answer::End(
            e.code
                .map(|c| (-c.get(), ext_ack_message(msg.header.flags, &e.header))),
        ),
        NetlinkPayload::Done(d) => Answer::End((d.code < 0).then_some((-d.code, None))),
        // NOOP, OVERRUN: nothing for the request
        _ => return Ok((len, None)),
    };
    Ok((len, Some((seq, answer))))
}

/// NLMSGERR_ATTR_MSG: the extended ack's text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// The text of an error's extended ack (`NETLINK_EXT_ACK`), if it has one.
/// `payload` follows the error code: the echoed request (only its header
/// when `NLM_F_CAPPED`), then, with `NLM_F_ACK_TLVS`, the attributes.
fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 16 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        align(u32::from_ne_bytes(payload[..4].try_into().ok()?) as usize)
    };
    NlasIterator::new(payload.get(echoed..)?)
        .filter_map(std::result::Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let v = nla.value();
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        })
        .filter(|m| !m.is_empty())
}

/// NLMSG_ALIGN.
fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A fake wire for unit tests of everything on the transport.
#[cfg(test)]
pub mod fake {
    use super::{align, Wire};
    use netlink_packet_core::NLM_F_MULTIPART;
    use std::collections::VecDeque;
    use std::io;

    /// Records what is sent; answers from a queue of datagrams.
    #[derive(Default)]
    pub struct Fake {
        pub sent: Vec<Vec<u8>>,
        pub answers: VecDeque<Vec<u8>>,
    }

    impl Wire for Fake {
        fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
            self.sent.push(datagram.to_vec());
            Ok(())
        }
        fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
            let Some(d) = self.answers.pop_front() else {
                // what a socket with SO_RCVTIMEO reports when it expires
                return Err(io::Error::from_raw_os_error(libc::EAGAIN));
            };
            let n = d.len().min(buf.capacity() - buf.len());
            buf.extend_from_slice(&d[..n]);
            Ok(d.len())
        }
    }

    /// One kernel message: header, then payload.
    pub fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len();
        let mut v = Vec::with_capacity(align(len));
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align(len), 0);
        v
    }

    /// NLMSG_ERROR with `code` (0: an ack) and the request's header.
    pub fn ack(seq: u32, code: i32) -> Vec<u8> {
        let mut p = code.to_ne_bytes().to_vec();
        p.extend_from_slice(&[0; 16]);
        nlmsg(2, 0, seq, &p)
    }

    pub fn done(seq: u32, code: i32) -> Vec<u8> {
        nlmsg(3, NLM_F_MULTIPART, seq, &code.to_ne_bytes())
    }

    /// RTM_NEWLINK answering `seq` (with `flags`) for link `index` `name`.
    pub fn new_link(seq: u32, flags: u16, index: u32, name: &str) -> Vec<u8> {
        use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
        use netlink_packet_route::link::{LinkAttribute, LinkMessage};
        use netlink_packet_route::RouteNetlinkMessage;
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        let mut hdr = NetlinkHeader::default();
        hdr.sequence_number = seq;
        hdr.flags = flags;
        let mut msg = NetlinkMessage::new(
            hdr,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)),
        );
        msg.finalize();
        let mut v = vec![0; msg.buffer_len()];
        msg.serialize(&mut v);
        v.resize(align(v.len()), 0);
        v
    }

    /// The messages of one sent datagram as (type, flags, seq, payload).
    pub fn split(datagram: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let mut out = vec![];
        let mut b = datagram;
        while b.len() >= 16 {
            let len = u32::from_ne_bytes(b[..4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes([b[4], b[5]]);
            let flags = u16::from_ne_bytes([b[6], b[7]]);
            let seq = u32::from_ne_bytes(b[8..12].try_into().unwrap());
            out.push((ty, flags, seq, b[16..len].to_vec()));
            b = &b[align(len).min(b.len())..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    //! The transport against a fake wire: requests as the kernel would see
    //! them, answers as the kernel would send them.
    use super::fake::{ack, done, new_link, nlmsg, Fake};
    use super::*;
    use netlink_packet_core::{NLM_F_CREATE, NLM_F_MULTIPART};
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_packet_route::RouteNetlinkMessage;

    fn names(v: &[RouteNetlinkMessage]) -> Vec<String> {
        v.iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .collect()
    }

    fn get_link() -> RouteNetlinkMessage {
        RouteNetlinkMessage::GetLink(LinkMessage::default())
    }

    #[test]
    fn a_request_is_framed_with_request_flag_and_a_fresh_sequence_number() {
        let mut c = Conn::with_wire(Fake::default());
        c.wire.answers.push_back(ack(1, 0));
        c.wire.answers.push_back(ack(2, 0));
        c.request("a", get_link(), NLM_F_ACK | NLM_F_CREATE)
            .unwrap();
        c.request("b", get_link(), NLM_F_ACK).unwrap();
        let b = NetlinkBuffer::new_checked(&c.wire.sent[0][..]).unwrap();
        assert_eq!(b.length() as usize, c.wire.sent[0].len());
        assert_eq!(b.message_type(), 18); // RTM_GETLINK
        assert_eq!(b.flags(), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(b.sequence_number(), 1);
        let b = NetlinkBuffer::new_checked(&c.wire.sent[1][..]).unwrap();
        assert_eq!(b.sequence_number(), 2);
    }

    #[test]
    fn an_ack_ends_a_request_and_an_error_keeps_op_and_errno() {
        let mut c = Conn::with_wire(Fake::default());
        c.wire.answers.push_back(ack(1, 0));
        assert!(c.request("x", get_link(), NLM_F_ACK).unwrap().is_empty());
        c.wire.answers.push_back(ack(2, -libc::EEXIST));
        let e = c
            .request("create bridge ros2br0", get_link(), NLM_F_ACK)
            .unwrap_err();
        assert!(e.is_exists());
        assert_eq!(e.op(), Some("create bridge ros2br0"));
        assert!(c.wire.answers.is_empty());
    }

    /// NLMSG_ERROR `code` with `flags`, echoing `echoed`, then a
    /// NLMSGERR_ATTR_MSG attribute carrying `text` (NUL-terminated).
    fn ext_ack(seq: u32, code: i32, flags: u16, echoed: &[u8], text: &str) -> Vec<u8> {
        let mut p = code.to_ne_bytes().to_vec();
        p.extend_from_slice(echoed);
        let value = [text.as_bytes(), &[0]].concat();
        p.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(&value);
        p.resize(align(p.len()), 0);
        nlmsg(2, flags, seq, &p)
    }

    #[test]
    fn the_kernels_extended_ack_message_is_kept_with_the_errno() {
        let mut c = Conn::with_wire(Fake::default());
        let text = "Device for nexthop is not up";
        // capped: only the request's header is echoed
        let capped = ext_ack(
            1,
            -libc::ENETDOWN,
            NLM_F_ACK_TLVS | NLM_F_CAPPED,
            &[0; 16],
            text,
        );
        c.wire.answers.push_back(capped);
        let e = c.request("add route", get_link(), NLM_F_ACK).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENETDOWN));
        assert_eq!(e.detail(), Some(text));
        assert!(
            e.to_string()
                .ends_with("; the kernel says: Device for nexthop is not up"),
            "{e}"
        );
        // not capped: the whole request (here 24 bytes) is echoed first
        let mut echoed = 24u32.to_ne_bytes().to_vec();
        echoed.resize(24, 0);
        c.wire
            .answers
            .push_back(ext_ack(2, -libc::EINVAL, NLM_F_ACK_TLVS, &echoed, text));
        let e = c.request("add route", get_link(), NLM_F_ACK).unwrap_err();
        assert_eq!(e.detail(), Some(text));
        // without NLM_F_ACK_TLVS the bytes are not read as attributes
        c.wire
            .answers
            .push_back(ext_ack(3, -libc::EINVAL, NLM_F_CAPPED, &[0; 16], text));
        let e = c.request("add route", get_link(), NLM_F_ACK).unwrap_err();
        assert_eq!((e.errno(), e.detail()), (Some(libc::EINVAL), None));
        assert!(e.to_string().ends_with("(os error 22)"), "{e}");
        // a truncated attribute area is no message, and no panic
        let mut cut = ext_ack(
            4,
            -libc::EINVAL,
            NLM_F_ACK_TLVS | NLM_F_CAPPED,
            &[0; 16],
            text,
        );
        cut.truncate(16 + 4 + 16 + 6);
        let len = cut.len() as u32;
        cut[..4].copy_from_slice(&len.to_ne_bytes());
        c.wire.answers.push_back(cut);
        let e = c.request("add route", get_link(), NLM_F_ACK).unwrap_err();
        assert_eq!((e.errno(), e.detail()), (Some(libc::EINVAL), None));
    }

    #[test]
    fn a_dump_collects_every_part_across_datagrams_until_done() {
        let mut c = Conn::with_wire(Fake::default());
        let mut first = new_link(1, NLM_F_MULTIPART, 0, "lo");
        first.extend(new_link(1, NLM_F_MULTIPART, 0, "eth0"));
        c.wire.answers.push_back(first);
        let mut second = new_link(1, NLM_F_MULTIPART, 0, "ros2br0");
        second.extend(done(1, 0));
        c.wire.answers.push_back(second);
        let got = c.request("dump links", get_link(), NLM_F_DUMP).unwrap();
        assert_eq!(names(&got), ["lo", "eth0", "ros2br0"]);
    }

    #[test]
    fn an_error_code_in_done_fails_the_dump() {
        let mut c = Conn::with_wire(Fake::default());
        let mut d = new_link(1, NLM_F_MULTIPART, 0, "lo");
        d.extend(done(1, -libc::EINVAL));
        c.wire.answers.push_back(d);
        let e = c.request("dump", get_link(), NLM_F_DUMP).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL));
    }

    #[test]
    fn a_get_without_ack_ends_with_its_one_answer() {
        let mut c = Conn::with_wire(Fake::default());
        c.wire.answers.push_back(new_link(1, 0, 0, "ros2br0"));
        let got = c.request("get link", get_link(), 0).unwrap();
        assert_eq!(names(&got), ["ros2br0"]);
        c.wire.answers.push_back(ack(2, -libc::ENODEV));
        let e = c.request("get link", get_link(), 0).unwrap_err();
        assert!(e.is_not_found());
    }

    #[test]
    fn answers_to_other_requests_are_skipped_undecoded() {
        let mut c = Conn::with_wire(Fake::default());
        // a late answer of seq 7 whose payload would not decode as a link
        let mut d = nlmsg(16, 0, 7, &[0xff; 3]);
        d.extend(ack(1, 0));
        c.wire.answers.push_back(d);
        c.request("x", get_link(), NLM_F_ACK).unwrap();
    }

    #[test]
    fn a_batch_waits_for_every_acked_message_and_reports_the_first_error() {
        let mut c = Conn::with_wire(Fake::default());
        // seq 1 (begin) and 4 (end) are not acked; 2 and 3 are
        c.wire.answers.push_back(ack(2, -libc::ENOENT));
        c.wire.answers.push_back(ack(3, -libc::EBUSY));
        let msgs = vec![
            (get_link(), 0),
            (get_link(), NLM_F_ACK),
            (get_link(), NLM_F_ACK),
            (get_link(), 0),
        ];
        let e = c.batch("edit table ros2_cni", msgs).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT));
        // one datagram with four aligned messages
        assert_eq!(c.wire.sent.len(), 1);
        let mut b = &c.wire.sent[0][..];
        let mut seqs = vec![];
        while !b.is_empty() {
            let nb = NetlinkBuffer::new_checked(b).unwrap();
            seqs.push(nb.sequence_number());
            b = &b[align(nb.length() as usize)..];
        }
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert!(c.wire.answers.is_empty(), "both answers were read");
    }

    #[test]
    fn no_answer_is_a_timeout_and_a_truncated_datagram_an_error() {
        let mut c = Conn::with_wire(Fake::default());
        let e = c.request("add route", get_link(), NLM_F_ACK).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        c.wire.answers.push_back(vec![0; RECV_BUF + 1]);
        let e = c.request("dump", get_link(), NLM_F_DUMP).unwrap_err();
        assert!(matches!(e, Error::Decode { .. }), "{e}");
    }

    #[test]
    fn every_real_socket_has_the_receive_timeout() {
        // read-only: opens sockets in the test's namespace and changes nothing
        use netlink_sys::protocols::{NETLINK_NETFILTER, NETLINK_ROUTE};
        use nix::sys::socket::{getsockopt, sockopt::ReceiveTimeout};
        for proto in [NETLINK_ROUTE, NETLINK_NETFILTER] {
            let c = Conn::open(proto).unwrap();
            let tv = getsockopt(&c.wire, ReceiveTimeout).unwrap();
            assert_eq!(
                Duration::from_micros(tv.tv_sec() as u64 * 1_000_000 + tv.tv_usec() as u64),
                RECV_TIMEOUT
            );
        }
        // and a real dump goes through it
        let mut c = Conn::open(NETLINK_ROUTE).unwrap();
        let links = c.request("dump links", get_link(), NLM_F_DUMP).unwrap();
        assert!(names(&links).iter().any(|n| n == "lo"));
    }

    #[test]
    fn garbage_is_a_decode_error_never_a_panic() {
        for cut in 0..40 {
            let mut c = Conn::with_wire(Fake::default());
            let mut d = new_link(1, 0, 0, "ros2br0");
            d.truncate(cut);
            c.wire.answers.push_back(d);
            let _ = c.request("get link", get_link(), 0);
        }
    }
}
