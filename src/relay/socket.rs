//! The relay's three sockets: a packet socket capturing what pods send on
//! the bridge, a UDP socket to and from the peers, and a packet socket that
//! puts received packets on the bridge.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::kernel::mmsg::{self, RecvBatch};
use crate::kernel::packet::{self, attach_filter, bind_packet, packet_socket};

/// Captured frames read at once, each with its link-layer address.
pub type Frames = RecvBatch<libc::sockaddr_ll>;

/// Captures IPv4 frames arriving on one interface (the bridge: what pods
/// send), filtered to UDP to the relayed groups, outgoing frames excluded
/// (what the node routes or the relay injects into the bridge).
pub struct Capture {
    fd: OwnedFd,
    ifindex: u32,
}

impl Capture {
    pub fn open(ifindex: u32, groups: &[Ipv4Addr]) -> io::Result<Capture> {
        let fd = packet_socket(libc::SOCK_RAW)?;
        let c = Capture { fd, ifindex: 0 };
        c.set_filter(groups)?;
        let mut c = c;
        c.bind(ifindex)?;
        // a burst of announcements waits here, not lost (best effort, as
        // before: the default buffer still works)
        let _ = packet::set_receive_buffer(&c.fd, 4 << 20);
        Ok(c)
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// (Re)binds to `ifindex` (the bridge was re-created).
    pub fn bind(&mut self, ifindex: u32) -> io::Result<()> {
        bind_packet(self.fd.as_raw_fd(), ifindex)?;
        self.ifindex = ifindex;
        Ok(())
    }

    pub fn set_filter(&self, groups: &[Ipv4Addr]) -> io::Result<()> {
        attach_filter(self.fd.as_raw_fd(), groups)
    }

    /// Reads the pending frames into `frames` (one system call, as many as
    /// it has slots): how many (0: nothing pending). See [`Capture::packet`].
    pub fn recv_batch(&self, frames: &mut Frames) -> io::Result<usize> {
        frames.recv(self.fd.as_raw_fd())
    }

    /// Frame `i` of the last [`Capture::recv_batch`] as its IPv4 packet
    /// (Ethernet header stripped), to change in place; None for what is
    /// skipped (outgoing, truncated, short).
    pub fn packet(frames: &mut Frames, i: usize) -> Option<&mut [u8]> {
        let (len, outgoing) = (
            frames.len(i),
            frames.name(i).sll_pkttype == libc::PACKET_OUTGOING,
        );
        if outgoing || len > frames.cap() || len < 14 {
            return None;
        }
        Some(&mut frames.data_mut(i)[14..])
    }
}

impl AsRawFd for Capture {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Puts IPv4 packets on an interface (the bridge) as Ethernet multicast:
/// the bridge floods them to its ports (the pods) and does not hand them
/// to the node's own IP stack, so they are neither routed to the uplink
/// nor captured again.
pub struct Inject {
    fd: OwnedFd,
}

impl Inject {
    pub fn open() -> io::Result<Inject> {
        Ok(Inject {
            fd: packet_socket(libc::SOCK_DGRAM)?,
        })
    }

    /// Sends several packets in one system call: see [`mmsg::send`] (each
    /// message's name a [`packet::sockaddr_ll`] with the interface and the
    /// destination MAC).
    pub fn send_batch(&self, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
        mmsg::send(self.fd.as_raw_fd(), msgs)
    }
}

/// The UDP socket to and from the peers, non-blocking: a peer that is down
/// (no ARP answer, a full queue) never holds up the others.
pub fn udp(port: u16) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
    s.set_nonblocking(true)?;
    Ok(s)
}
