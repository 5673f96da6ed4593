//! The kernel's IPv4 multicast routing API (linux/mroute.h), by hand: no crate
//! wraps it and libc lacks the MRT_* options.
//!
//! One raw IGMP socket owns the routing table of its network namespace for as
//! long as it is open; closing it (also on kill -9) flushes every VIF and MFC
//! entry, which is what makes the agent restart-safe.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpcallKind {
    NoCache,
    WrongVif,
    WholePacket,
    WrongVifWholePacket,
}

/// A message from the kernel's multicast router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upcall {
    pub kind: UpcallKind,
    pub vif: u16,
    pub src: Ipv4Addr,
    pub group: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SgCount {
    pub packets: u64,
    pub bytes: u64,
    pub wrong_if: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VifCount {
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// The kernel side: MRT_* socket options and SIOCGET*CNT ioctls.
pub trait Mroute {
    fn add_vif(&mut self, vif: u16, ifindex: u32, threshold: u8) -> io::Result<()>;
    fn del_vif(&mut self, vif: u16) -> io::Result<()>;
    /// `oifs`: (vif, TTL threshold) pairs; a packet leaves on a VIF when its TTL exceeds the threshold.
    fn add_mfc(
        &mut self,
        src: Ipv4Addr,
        group: Ipv4Addr,
        parent: u16,
        oifs: &[(u16, u8)],
    ) -> io::Result<()>;
    fn del_mfc(&mut self, src: Ipv4Addr, group: Ipv4Addr, parent: u16) -> io::Result<()>;
    fn sg_count(&self, src: Ipv4Addr, group: Ipv4Addr) -> io::Result<SgCount>;
    fn vif_count(&self, vif: u16) -> io::Result<VifCount>;
}

const MRT_INIT: libc::c_int = 200;
const MRT_DONE: libc::c_int = 201;
const MRT_ADD_VIF: libc::c_int = 202;
const MRT_DEL_VIF: libc::c_int = 203;
const MRT_ADD_MFC: libc::c_int = 204;
const MRT_DEL_MFC: libc::c_int = 205;
const VIFF_USE_IFINDEX: u8 = 0x8;
pub const MAXVIFS: usize = 32;
const SIOCGETVIFCNT: libc::c_ulong = 0x89E0;
const SIOCGETSGCNT: libc::c_ulong = 0x89E1;

#[repr(C)]
struct VifCtl {
    vifi: u16,
    flags: u8,
    threshold: u8,
    rate_limit: u32,
    lcl_ifindex: i32,
    rmt_addr: u32,
}

#[repr(C)]
struct MfcCtl {
    origin: u32,
    group: u32,
    parent: u16,
    ttls: [u8; MAXVIFS],
    pkt_cnt: u32,
    byte_cnt: u32,
    wrong_if: u32,
    expire: i32,
}

#[repr(C)]
struct SiocSgReq {
    src: u32,
    grp: u32,
    pktcnt: libc::c_ulong,
    bytecnt: libc::c_ulong,
    wrong_if: libc::c_ulong,
}

#[repr(C)]
struct SiocVifReq {
    vifi: u16,
    icount: libc::c_ulong,
    ocount: libc::c_ulong,
    ibytes: libc::c_ulong,
    obytes: libc::c_ulong,
}

const _: () = assert!(std::mem::size_of::<VifCtl>() == 16);
const _: () = assert!(std::mem::size_of::<MfcCtl>() == 60);

fn be(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// A raw IGMP socket: the owner of the namespace's multicast routing table
/// ([`MrouteSocket::open`]), or only the agent's IGMP voice and ears
/// ([`MrouteSocket::open_igmp`]: membership reports and queries, no routing).
pub struct MrouteSocket {
    fd: OwnedFd,
    /// MRT_INIT succeeded on it.
    router: bool,
}

impl MrouteSocket {
    /// One of the multicast router's counter ioctls, filling `req` in place.
    ///
    /// # Safety
    /// `req` must be laid out as the structure `request` takes.
    unsafe fn counter_ioctl<T>(&self, request: libc::c_ulong, req: &mut T) -> io::Result<()> {
        // SAFETY: the caller vouches for the layout; `req` is alive and
        // writable for the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request as _, req as *mut T) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Opens the raw IGMP socket and becomes the multicast router. Fails with
    /// EADDRINUSE when another router (smcroute, pimd, a second agent) owns
    /// it, and with ENOPROTOOPT when the kernel has no multicast routing
    /// (`CONFIG_IP_MROUTE` not set).
    pub fn open() -> io::Result<MrouteSocket> {
        let mut s = Self::open_igmp()?;
        s.setsockopt(MRT_INIT, &1i32)?;
        s.router = true;
        Ok(s)
    }

    /// Whether the kernel would let this namespace route multicast: Err
    /// with ENOPROTOOPT when it has no multicast routing. Ok also when
    /// another router holds it (EADDRINUSE: the kernel has it).
    pub fn probe() -> io::Result<()> {
        match Self::open() {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Opens the raw IGMP socket without becoming the multicast router: for
    /// membership reports and queries on a node whose forwarder is not the
    /// kernel's.
    pub fn open_igmp() -> io::Result<MrouteSocket> {
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::IPPROTO_IGMP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        let s = MrouteSocket {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            router: false,
        };
        // to know where IGMP queries arrive; reports leave with TTL 1, a Router
        // Alert option, and are not looped back to us
        s.setsockopt(libc::IP_PKTINFO, &1i32)?;
        s.setsockopt(libc::IP_MULTICAST_TTL, &1i32)?;
        s.setsockopt(libc::IP_MULTICAST_LOOP, &0i32)?;
        s.setsockopt(libc::IP_OPTIONS, &[0x94u8, 0x04, 0x00, 0x00])?;
        Ok(s)
    }

    fn setsockopt<T>(&self, opt: libc::c_int, val: &T) -> io::Result<()> {
        // SAFETY: `val` points to a properly sized, initialised value of T.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::IPPROTO_IP,
                opt,
                val as *const T as *const libc::c_void,
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads the next message: an upcall, an IGMP query, or None when nothing
    /// is pending (the socket is non-blocking). Other IGMP traffic (pods'
    /// reports, other routers) is skipped.
    pub fn read(&self) -> io::Result<Option<Incoming>> {
        let mut buf = [0u8; 2048];
        let mut cbuf = [0u8; 128];
        loop {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            // SAFETY: msghdr points at live stack buffers of the given sizes.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = cbuf.len() as _;
            // SAFETY: recvmsg on our fd with the msghdr above.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            let data = &buf[..n as usize];
            if let Some(u) = parse_upcall(data) {
                return Ok(Some(Incoming::Upcall(u)));
            }
            // SAFETY: walking the control messages recvmsg filled in.
            let ifindex = unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                let mut found = 0u32;
                while !c.is_null() {
                    if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                        let pi = libc::CMSG_DATA(c) as *const libc::in_pktinfo;
                        found = std::ptr::read_unaligned(pi).ipi_ifindex as u32;
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
                found
            };
            if let Some(group) = parse_igmp_query(data) {
                return Ok(Some(Incoming::Query { ifindex, group }));
            }
        }
    }

    /// Sends an IGMPv2 membership report for `group` out of `ifindex`, the
    /// way a host that joined would, without making this node a member (a
    /// member would get a looped-back copy of every packet it forwards).
    pub fn send_report(&self, ifindex: u32, group: Ipv4Addr) -> io::Result<()> {
        self.send_igmp(ifindex, 0x16, group, group)
    }

    /// Sends an IGMPv2 leave for `group` out of `ifindex`.
    pub fn send_leave(&self, ifindex: u32, group: Ipv4Addr) -> io::Result<()> {
        self.send_igmp(ifindex, 0x17, group, Ipv4Addr::new(224, 0, 0, 2))
    }

    fn send_igmp(&self, ifindex: u32, kind: u8, group: Ipv4Addr, dst: Ipv4Addr) -> io::Result<()> {
        let mreq = libc::ip_mreqn {
            imr_multiaddr: libc::in_addr { s_addr: 0 },
            imr_address: libc::in_addr { s_addr: 0 },
            imr_ifindex: ifindex as i32,
        };
        self.setsockopt(libc::IP_MULTICAST_IF, &mreq)?;
        let msg = igmp_v2(kind, group);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: be(dst) },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto with a valid buffer and sockaddr_in.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// What the routing socket delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    Upcall(Upcall),
    /// An IGMP membership query arrived on `ifindex`; `group` is 0.0.0.0 for a general query.
    Query {
        ifindex: u32,
        group: Ipv4Addr,
    },
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            (c[0] as u16) << 8
        };
        sum += w as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An 8-byte IGMPv2 message (RFC 2236).
pub fn igmp_v2(kind: u8, group: Ipv4Addr) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[0] = kind;
    m[4..8].copy_from_slice(&group.octets());
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// The group of an IGMP membership query (an IP packet as raw sockets
/// deliver it), or None for anything else.
pub fn parse_igmp_query(ip: &[u8]) -> Option<Ipv4Addr> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 2 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let igmp = ip.get(ihl..ihl + 8)?;
    (igmp[0] == 0x11).then(|| Ipv4Addr::new(igmp[4], igmp[5], igmp[6], igmp[7]))
}

/// Decodes a `struct igmpmsg`; None for anything else (a real IGMP packet
/// has its IP protocol, 2, where an upcall has `im_mbz`, 0).
pub fn parse_upcall(b: &[u8]) -> Option<Upcall> {
    if b.len() < 20 || b[9] != 0 {
        return None;
    }
    let kind = match b[8] {
        1 => UpcallKind::NoCache,
        2 => UpcallKind::WrongVif,
        3 => UpcallKind::WholePacket,
        4 => UpcallKind::WrongVifWholePacket,
        _ => return None,
    };
    let vif = b[10] as u16 | (b[11] as u16) << 8;
    let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
    let group = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    Some(Upcall {
        kind,
        vif,
        src,
        group,
    })
}

impl Drop for MrouteSocket {
    fn drop(&mut self) {
        // closing would flush too; MRT_DONE says so explicitly
        if self.router {
            let _ = self.setsockopt(MRT_DONE, &0i32);
        }
    }
}

impl Mroute for MrouteSocket {
    fn add_vif(&mut self, vif: u16, ifindex: u32, threshold: u8) -> io::Result<()> {
        let v = VifCtl {
            vifi: vif,
            flags: VIFF_USE_IFINDEX,
            threshold,
            rate_limit: 0,
            lcl_ifindex: ifindex as i32,
            rmt_addr: 0,
        };
        self.setsockopt(MRT_ADD_VIF, &v)
    }

    fn del_vif(&mut self, vif: u16) -> io::Result<()> {
        let v = VifCtl {
            vifi: vif,
            flags: 0,
            threshold: 0,
            rate_limit: 0,
            lcl_ifindex: 0,
            rmt_addr: 0,
        };
        self.setsockopt(MRT_DEL_VIF, &v)
    }

    fn add_mfc(
        &mut self,
        src: Ipv4Addr,
        group: Ipv4Addr,
        parent: u16,
        oifs: &[(u16, u8)],
    ) -> io::Result<()> {
        let mut ttls = [0u8; MAXVIFS];
        for (vif, ttl) in oifs {
            if (*vif as usize) < MAXVIFS {
                ttls[*vif as usize] = *ttl;
            }
        }
        let m = MfcCtl {
            origin: be(src),
            group: be(group),
            parent,
            ttls,
            pkt_cnt: 0,
            byte_cnt: 0,
            wrong_if: 0,
            expire: 0,
        };
        self.setsockopt(MRT_ADD_MFC, &m)
    }

    fn del_mfc(&mut self, src: Ipv4Addr, group: Ipv4Addr, parent: u16) -> io::Result<()> {
        let m = MfcCtl {
            origin: be(src),
            group: be(group),
            parent,
            ttls: [0; MAXVIFS],
            pkt_cnt: 0,
            byte_cnt: 0,
            wrong_if: 0,
            expire: 0,
        };
        self.setsockopt(MRT_DEL_MFC, &m)
    }

    fn sg_count(&self, src: Ipv4Addr, group: Ipv4Addr) -> io::Result<SgCount> {
        let mut r = SiocSgReq {
            src: be(src),
            grp: be(group),
            pktcnt: 0,
            bytecnt: 0,
            wrong_if: 0,
        };
        // SAFETY: SIOCGETSGCNT takes a struct sioc_sg_req, which SiocSgReq lays out.
        unsafe { self.counter_ioctl(SIOCGETSGCNT, &mut r)? };
        Ok(SgCount {
            packets: r.pktcnt as _,
            bytes: r.bytecnt as _,
            wrong_if: r.wrong_if as _,
        })
    }

    fn vif_count(&self, vif: u16) -> io::Result<VifCount> {
        let mut r = SiocVifReq {
            vifi: vif,
            icount: 0,
            ocount: 0,
            ibytes: 0,
            obytes: 0,
        };
        // SAFETY: SIOCGETVIFCNT takes a struct sioc_vif_req, which SiocVifReq lays out.
        unsafe { self.counter_ioctl(SIOCGETVIFCNT, &mut r)? };
        Ok(VifCount {
            in_packets: r.icount as _,
            out_packets: r.ocount as _,
            in_bytes: r.ibytes as _,
            out_bytes: r.obytes as _,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upcall_decoding() {
        let mut b = [0u8; 20];
        b[8] = 1;
        b[10] = 1;
        b[12..16].copy_from_slice(&[192, 168, 1, 160]);
        b[16..20].copy_from_slice(&[239, 255, 0, 1]);
        let u = parse_upcall(&b).unwrap();
        assert_eq!(u.kind, UpcallKind::NoCache);
        assert_eq!(u.vif, 1);
        assert_eq!(u.src, Ipv4Addr::new(192, 168, 1, 160));
        assert_eq!(u.group, Ipv4Addr::new(239, 255, 0, 1));
        b[9] = 2; // a real IGMP packet
        assert!(parse_upcall(&b).is_none());
        assert!(parse_upcall(&b[..10]).is_none());
    }

    #[test]
    fn igmp_messages() {
        // report for 239.255.0.1: checksum verifies to zero
        let r = igmp_v2(0x16, Ipv4Addr::new(239, 255, 0, 1));
        assert_eq!(r[0], 0x16);
        assert_eq!(checksum(&r), 0);
        // a general query wrapped in an IP header with a Router Alert option (ihl 6)
        let mut ip = vec![
            0x46, 0, 0, 32, 0, 0, 0, 0, 1, 2, 0, 0, 192, 168, 1, 1, 224, 0, 0, 1, 0x94, 4, 0, 0,
        ];
        ip.extend_from_slice(&[0x11, 100, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_igmp_query(&ip), Some(Ipv4Addr::UNSPECIFIED));
        ip[24] = 0x16;
        assert_eq!(parse_igmp_query(&ip), None);
        assert_eq!(parse_igmp_query(&ip[..22]), None);
    }
}
