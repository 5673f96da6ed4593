//! Watching discovery: the agent reads SPDP announcements on every interface
//! of the node and keeps a table of DDS participants — who, which vendor and
//! domain, which locators they advertise, and where they were seen (a pod's
//! port, the uplink, a primary-network veth). `doctor` reasons over it.
//!
//! A packet socket (AF_PACKET for IPv4, all interfaces) with a classic BPF
//! filter takes only UDP to the RTPS groups; frames the node sends out are
//! skipped (each forwarded packet would otherwise be counted where it leaves
//! too). Bound to IPv4 rather than all protocols, it sees a pod's frames once,
//! on the node bridge (bridge ports hand frames to the bridge before IPv4
//! taps run), and the pod is named from its address. Each sender is parsed at
//! most twice a second; the table and the per-source records are bounded.

use crate::rtps::{self, spdp, GuidPrefix};
use serde::Serialize;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_PARTICIPANTS: usize = 4096;
const MAX_SOURCES: usize = 8192;
const PARSE_EVERY: Duration = Duration::from_millis(500);
const PACKET_OUTGOING: u8 = 4;
/// The agent reads captured frames at most this often: one wake-up per batch
/// instead of one per packet (what is missed between batches waits in the
/// socket buffer; announcements are periodic anyway).
pub const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// One advertised locator, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocatorInfo {
    /// metatraffic_unicast, metatraffic_multicast, default_unicast, default_multicast
    pub kind: &'static str,
    /// udpv4, udpv6 or the numeric kind
    pub transport: String,
    pub address: Option<String>,
    pub port: u32,
}

/// A DDS participant seen on this node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub guid_prefix: String,
    pub vendor: &'static str,
    pub vendor_id: String,
    pub domain: Option<u32>,
    pub name: Option<String>,
    pub locators: Vec<LocatorInfo>,
    /// The interface it was seen on.
    pub seen_on: String,
    /// Where its announcements come from.
    pub source: String,
    /// The pod it belongs to, when the source is one of this node's pods.
    pub pod: Option<String>,
    /// IP TTL of its last announcement on arrival.
    pub ttl: u8,
    pub lease_seconds: Option<f64>,
    pub first_seen: u64,
    pub last_seen: u64,
    #[serde(skip)]
    last_seen_at: Instant,
}

/// A sender of RTPS multicast, by source address and group.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub interface: String,
    pub ttl: u8,
    pub packets: u64,
    pub last_seen: u64,
    #[serde(skip)]
    last_parsed: Option<Instant>,
    #[serde(skip)]
    last_seen_at: Instant,
}

/// The participant table.
#[derive(Debug, Default)]
pub struct Table {
    participants: HashMap<GuidPrefix, Participant>,
    sources: HashMap<(Ipv4Addr, u16, Ipv4Addr), Source>,
    /// Pod of an address (ros0 or primary), refreshed by the agent.
    pub pods_by_ip: HashMap<Ipv4Addr, String>,
    /// Pod of a host-side port name (routed mode).
    pub pods_by_port: HashMap<String, String>,
    pub malformed: u64,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn locator_kind(pid: u16) -> &'static str {
    match pid {
        0x0032 => "metatraffic_unicast",
        0x0033 => "metatraffic_multicast",
        0x0031 => "default_unicast",
        0x0048 => "default_multicast",
        _ => "other",
    }
}

/// Where an RTPS datagram was captured.
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    pub ifname: &'a str,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub ttl: u8,
}

impl Table {
    /// Records one captured RTPS datagram (`payload` is the UDP payload).
    pub fn record(&mut self, seen: &Seen, payload: &[u8], now: Instant) {
        let key = (*seen.src.ip(), seen.src.port(), *seen.dst.ip());
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SOURCES {
            return;
        }
        let s = self.sources.entry(key).or_insert_with(|| Source {
            source: *seen.src.ip(),
            group: *seen.dst.ip(),
            interface: seen.ifname.to_owned(),
            ttl: seen.ttl,
            packets: 0,
            last_seen: 0,
            last_parsed: None,
            last_seen_at: now,
        });
        s.packets += 1;
        s.ttl = seen.ttl;
        if s.interface != seen.ifname {
            s.interface = seen.ifname.to_owned();
        }
        s.last_seen_at = now;
        if s.last_parsed
            .is_some_and(|t| now.duration_since(t) < PARSE_EVERY)
        {
            return;
        }
        s.last_parsed = Some(now);
        // wall-clock time only when parsing (at most twice a second per sender)
        s.last_seen = unix_secs(SystemTime::now());
        let msg = match rtps::parse_message(payload) {
            Ok(m) => m,
            Err(_) => {
                self.malformed += 1;
                return;
            }
        };
        for gone in spdp::departed(&msg) {
            self.participants.remove(&gone);
        }
        let pod = self
            .pods_by_port
            .get(seen.ifname)
            .or_else(|| self.pods_by_ip.get(seen.src.ip()))
            .cloned();
        for p in spdp::participants(&msg) {
            let Ok(p) = p else {
                self.malformed += 1;
                continue;
            };
            if !self.participants.contains_key(&p.guid_prefix)
                && self.participants.len() >= MAX_PARTICIPANTS
            {
                continue;
            }
            let locators = p
                .locators()
                .map(|(pid, l)| LocatorInfo {
                    kind: locator_kind(pid),
                    transport: match l.kind {
                        rtps::LocatorKind::UdpV4 => "udpv4".into(),
                        rtps::LocatorKind::UdpV6 => "udpv6".into(),
                        rtps::LocatorKind::Other(k) => k.to_string(),
                    },
                    address: l.ip().map(|a| a.to_string()),
                    port: l.port,
                })
                .collect();
            let wall = unix_secs(SystemTime::now());
            let first = self
                .participants
                .get(&p.guid_prefix)
                .map_or(wall, |o| o.first_seen);
            self.participants.insert(
                p.guid_prefix,
                Participant {
                    guid_prefix: p.guid_prefix.to_string(),
                    vendor: p.vendor_id.name(),
                    vendor_id: format!("{:04x}", p.vendor_id.0),
                    domain: p.domain(SocketAddr::V4(seen.dst)),
                    name: p.entity_name.clone().filter(|n| !n.is_empty()),
                    locators,
                    seen_on: seen.ifname.to_owned(),
                    source: seen.src.to_string(),
                    pod: pod.clone(),
                    ttl: seen.ttl,
                    lease_seconds: p
                        .lease_duration
                        .map(|t| t.seconds as f64 + t.fraction as f64 / 4294967296.0),
                    first_seen: first,
                    last_seen: wall,
                    last_seen_at: now,
                },
            );
        }
    }

    /// Forgets participants not heard from for twice their lease (at least a
    /// minute), and senders silent for five minutes.
    pub fn expire(&mut self, now: Instant) {
        self.participants.retain(|_, p| {
            let lease = p.lease_seconds.unwrap_or(30.0).clamp(1.0, 3600.0);
            let keep = Duration::from_secs_f64((2.0 * lease).max(60.0));
            now.duration_since(p.last_seen_at) < keep
        });
        self.sources
            .retain(|_, s| now.duration_since(s.last_seen_at) < Duration::from_secs(300));
    }

    pub fn participants(&self) -> Vec<&Participant> {
        let mut v: Vec<_> = self.participants.values().collect();
        v.sort_by(|a, b| (a.domain, &a.guid_prefix).cmp(&(b.domain, &b.guid_prefix)));
        v
    }

    pub fn sources(&self) -> Vec<&Source> {
        let mut v: Vec<_> = self.sources.values().collect();
        v.sort_by_key(|s| (s.group, s.source));
        v
    }

    pub fn len(&self) -> usize {
        self.participants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }
}

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

/// The capture socket.
pub struct Capture {
    fd: OwnedFd,
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

impl Capture {
    /// A packet socket on every interface of this namespace, filtered to the RTPS groups.
    pub fn open(groups: &[Ipv4Addr]) -> io::Result<Capture> {
        let c = Capture {
            fd: packet_socket(libc::SOCK_RAW)?,
        };
        c.set_filter(groups)?;
        Ok(c)
    }

    /// Replaces the filter (config reload).
    pub fn set_filter(&self, groups: &[Ipv4Addr]) -> io::Result<()> {
        attach_filter(self.fd.as_raw_fd(), groups)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads every pending frame into `table`; `ifname` names interface indexes.
    pub fn drain(&self, table: &mut Table, ifname: &mut dyn FnMut(u32) -> Option<String>) {
        let mut buf = [0u8; 9216];
        let now = Instant::now();
        loop {
            // SAFETY: recvfrom into a stack buffer with a sockaddr_ll out-parameter.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut sll as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n <= 0 {
                return;
            }
            if sll.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            let Some(name) = ifname(sll.sll_ifindex as u32) else {
                continue;
            };
            if let Some((seen_src, seen_dst, ttl, payload)) = udp_of(&buf[..n as usize]) {
                let seen = Seen {
                    ifname: &name,
                    src: seen_src,
                    dst: seen_dst,
                    ttl,
                };
                table.record(&seen, payload, now);
            }
        }
    }
}

/// (source, destination, TTL, UDP payload) of an Ethernet frame with IPv4/UDP.
pub fn udp_of(frame: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4, u8, &[u8])> {
    let ip = frame.get(14..)?;
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    // fragments other than the first carry no UDP header
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let total = (u16::from_be_bytes([ip[2], ip[3]]) as usize).min(ip.len());
    let udp = ip.get(ihl..total)?;
    if udp.len() < 8 {
        return None;
    }
    let src = SocketAddrV4::new(
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        u16::from_be_bytes([udp[0], udp[1]]),
    );
    let dst = SocketAddrV4::new(
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        u16::from_be_bytes([udp[2], udp[3]]),
    );
    Some((src, dst, ip[8], &udp[8..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtps::{spdp::ParticipantData, Endian, Locator, VendorId};

    fn frame(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let total = 20 + 8 + payload.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            ttl,
            17,
            0,
            0,
        ];
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        f.extend(ip);
        let ul = 8 + payload.len();
        f.extend_from_slice(&[0x1c, 0xe8, 0x1c, 0xe8, (ul >> 8) as u8, ul as u8, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn announcement(tag: u8, ip: Ipv4Addr, domain: Option<u32>) -> Vec<u8> {
        let mut p = ParticipantData::new(GuidPrefix([tag; 12]), VendorId::CYCLONE);
        p.domain_id = domain;
        p.entity_name = Some(format!("p{tag}"));
        p.metatraffic_unicast_locators
            .push(Locator::udp_v4(ip, 7410));
        spdp::announce(&p, Endian::Little)
    }

    #[test]
    fn frames_parse_and_participants_land_in_the_table() {
        let mut t = Table::default();
        t.pods_by_ip
            .insert(Ipv4Addr::new(10, 1, 1, 5), "robots/talker".into());
        let src = Ipv4Addr::new(10, 1, 1, 5);
        let f = frame(
            src,
            Ipv4Addr::new(239, 255, 0, 1),
            1,
            &announcement(7, src, None),
        );
        let (s, d, ttl, payload) = udp_of(&f).unwrap();
        assert_eq!((s.port(), d.port(), ttl), (7400, 7400, 1));
        t.record(
            &Seen {
                ifname: "veth1",
                src: s,
                dst: d,
                ttl,
            },
            payload,
            Instant::now(),
        );
        let ps = t.participants();
        assert_eq!(ps.len(), 1);
        let p = ps[0];
        assert_eq!(p.vendor, VendorId::CYCLONE.name());
        assert_eq!(p.domain, Some(0), "derived from port 7400");
        assert_eq!(p.pod.as_deref(), Some("robots/talker"));
        assert_eq!(p.locators[0].address.as_deref(), Some("10.1.1.5"));
        assert_eq!(p.locators[0].kind, "metatraffic_unicast");
        assert_eq!(t.sources()[0].ttl, 1);
    }

    #[test]
    fn garbage_is_counted_not_fatal_and_parsing_is_rate_limited() {
        let mut t = Table::default();
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 9), 7400);
        let dst = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 7400);
        let seen = Seen {
            ifname: "eth0",
            src,
            dst,
            ttl: 32,
        };
        let now = Instant::now();
        t.record(&seen, b"RTPSgarbage", now);
        assert_eq!(t.malformed, 1);
        // within PARSE_EVERY the same sender is only counted
        t.record(&seen, b"RTPSgarbage", now + Duration::from_millis(10));
        assert_eq!(t.malformed, 1);
        assert_eq!(t.sources()[0].packets, 2);
        assert!(t.is_empty());
    }

    #[test]
    fn idle_participants_expire() {
        let mut t = Table::default();
        let src = Ipv4Addr::new(192, 168, 1, 9);
        let f = frame(
            src,
            Ipv4Addr::new(239, 255, 0, 1),
            32,
            &announcement(1, src, Some(0)),
        );
        let (s, d, ttl, payload) = udp_of(&f).unwrap();
        let now = Instant::now();
        t.record(
            &Seen {
                ifname: "eth0",
                src: s,
                dst: d,
                ttl,
            },
            payload,
            now,
        );
        assert_eq!(t.len(), 1);
        t.expire(now + Duration::from_secs(30));
        assert_eq!(t.len(), 1);
        t.expire(now + Duration::from_secs(61));
        assert_eq!(t.len(), 0, "20 s lease: gone after a minute");
    }

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
