//! Packet sockets (AF_PACKET) for IPv4 frames: opening one, binding it to an
//! interface, and the classic BPF filter that keeps only UDP to the RTPS
//! groups. Used by the agent's discovery capture and pressure sampler and by
//! the relay; nothing here knows RTPS beyond the group addresses.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// `sll_pkttype` of a frame this host sends.
pub const PACKET_OUTGOING: u8 = 4;

/// A classic BPF program: accept IPv4 UDP to one of `groups`, drop the rest.
pub fn bpf_filter(groups: &[Ipv4Addr]) -> Vec<libc::sock_filter> {
    let f = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LDH_ABS: u16 = 0x28;
    const LDB_ABS: u16 = 0x30;
    const LD_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    // ancillary data: the packet type (SKF_AD_OFF + SKF_AD_PKTTYPE)
    const AD_PKTTYPE: u32 = 0xffff_f000 + 4;
    const PRE: usize = 7;
    let groups: Vec<Ipv4Addr> = groups.iter().take(200).copied().collect();
    // layout: 0 ld pkttype, 1 jeq outgoing -> drop, 2 ldh ethertype, 3 jeq ipv4,
    // 4 ldb proto, 5 jeq udp, 6 ld dst, 7.. one jeq per group, accept, drop
    let accept = PRE + groups.len();
    let drop = accept + 1;
    let to_drop = |at: usize| (drop - at - 1) as u8;
    let mut p = vec![
        f(LDB_ABS, 0, 0, AD_PKTTYPE),
        f(JEQ_K, to_drop(1), 0, PACKET_OUTGOING as u32),
        f(LDH_ABS, 0, 0, 12),
        f(JEQ_K, 0, to_drop(3), 0x0800),
        f(LDB_ABS, 0, 0, 23),
        f(JEQ_K, 0, to_drop(5), 17),
        f(LD_ABS, 0, 0, 30),
    ];
    for (i, g) in groups.iter().enumerate() {
        let at = PRE + i;
        let jf = if i + 1 == groups.len() {
            to_drop(at)
        } else {
            0
        };
        p.push(f(JEQ_K, (accept - at - 1) as u8, jf, u32::from(*g)));
    }
    p.push(f(RET_K, 0, 0, 0x0004_0000));
    p.push(f(RET_K, 0, 0, 0));
    p
}

/// A non-blocking AF_PACKET socket for IPv4 frames: `kind` is SOCK_RAW
/// (with the Ethernet header) or SOCK_DGRAM (the IPv4 packet alone). Used
/// by the discovery capture, the relay and the pressure sampler.
pub fn packet_socket(kind: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from((libc::ETH_P_IP as u16).to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The link-layer address of `ifindex` for IPv4 (and `mac`, to send to).
pub fn sockaddr_ll(ifindex: u32, mac: Option<[u8; 6]>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    a.sll_family = libc::AF_PACKET as u16;
    a.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    a.sll_ifindex = ifindex as i32;
    if let Some(m) = mac {
        a.sll_halen = 6;
        a.sll_addr[..6].copy_from_slice(&m);
    }
    a
}

/// Binds a packet socket to one interface.
pub fn bind_packet(fd: RawFd, ifindex: u32) -> io::Result<()> {
    let a = sockaddr_ll(ifindex, None);
    // SAFETY: bind with a sockaddr_ll of the right size.
    let rc = unsafe {
        libc::bind(
            fd,
            &a as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One frame read from a packet socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The frame's whole length; more than the buffer when it was cut.
    pub len: usize,
    /// The interface it was seen on.
    pub ifindex: u32,
    /// Sent by this host (PACKET_OUTGOING), not received.
    pub outgoing: bool,
}

impl Received {
    /// The part of the frame that fit into `buf`.
    pub fn data<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[..self.len.min(buf.len())]
    }

    /// The frame did not fit into a buffer of `cap` bytes.
    pub fn truncated(&self, cap: usize) -> bool {
        self.len > cap
    }
}

/// Reads one pending frame into `buf`; `None` when nothing is pending
/// (the sockets are non-blocking). An interrupted call is retried.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    loop {
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: recvfrom into `buf` (its length given) with a sockaddr_ll
        // out-parameter of the size passed.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_TRUNC,
                &mut from as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        return Ok(Some(Received {
            len: n as usize,
            ifindex: from.sll_ifindex as u32,
            outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
        }));
    }
}

/// Sends `data` (an IPv4 packet, on a SOCK_DGRAM socket) out of `ifindex`
/// to the link-layer address `mac`, without blocking.
pub fn send(fd: RawFd, ifindex: u32, mac: [u8; 6], data: &[u8]) -> io::Result<()> {
    let a = sockaddr_ll(ifindex, Some(mac));
    // SAFETY: sendto with `data` (its length given) and a sockaddr_ll of the
    // size passed.
    let n = unsafe {
        libc::sendto(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            libc::MSG_DONTWAIT,
            &a as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets the socket's receive buffer (SO_RCVBUF), so that a burst waits
/// rather than being lost.
pub fn set_receive_buffer(fd: &OwnedFd, bytes: usize) -> io::Result<()> {
    nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::RcvBuf, &bytes)
        .map_err(io::Error::from)
}

/// Attaches (or replaces) [`bpf_filter`] for `groups` on a packet socket.
pub fn attach_filter(fd: RawFd, groups: &[Ipv4Addr]) -> io::Result<()> {
    let prog = bpf_filter(groups);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: SO_ATTACH_FILTER with a sock_fprog pointing at `prog`, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // moved here from agent::observe::tests with the filter
    #[test]
    fn bpf_jumps_land_on_accept_or_drop() {
        for n in 1..5 {
            let groups: Vec<Ipv4Addr> = (0..n).map(|i| Ipv4Addr::new(239, 255, 0, i + 1)).collect();
            let p = bpf_filter(&groups);
            let accept = p.len() - 2;
            let drop = p.len() - 1;
            for (i, ins) in p.iter().enumerate() {
                if ins.code == 0x15 {
                    let t = i + 1 + ins.jt as usize;
                    let f = i + 1 + ins.jf as usize;
                    assert!(t <= drop && f <= drop, "jump out of the program at {i}");
                    if i >= 7 {
                        assert_eq!(t, accept, "a matching group is accepted");
                    }
                }
            }
            // outgoing frames drop; the last group's mismatch drops
            assert_eq!(2 + p[1].jt as usize, drop);
            assert_eq!(7 + n as usize + p[6 + n as usize].jf as usize, drop);
        }
    }
}
