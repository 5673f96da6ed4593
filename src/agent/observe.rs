//! Watching discovery: the agent reads SPDP announcements on every interface
//! of the node and keeps a table of DDS participants — who, which vendor and
//! domain, which locators they advertise, and where they were seen (a pod's
//! port, the uplink, a primary-network veth) — and of the Zenoh sessions
//! that scout by multicast (by source: zenoh 1.x sends no ID in a SCOUT).
//! `doctor` reasons over both.
//!
//! A packet socket (AF_PACKET for IPv4, all interfaces) with a classic BPF
//! filter takes only UDP to the watched groups ([`watched_groups`]: the RTPS
//! groups, `extraMulticast`'s and Zenoh's scouting group, carried or not, so
//! that doctor can say when Zenoh scouts are not carried); frames the node sends out are
//! skipped (each forwarded packet would otherwise be counted where it leaves
//! too). Bound to IPv4 rather than all protocols, it sees a pod's frames once,
//! on the node bridge (bridge ports hand frames to the bridge before IPv4
//! taps run), and the pod is named from its address. Each sender is parsed at
//! most twice a second; the table and the per-source records are bounded.

use crate::api::unix_now;
use crate::config::{Config, ZENOH_SCOUTING};
use crate::kernel::mmsg::RecvBatch;
use crate::kernel::packet::{attach_filter, packet_socket};
use crate::rtps::{self, spdp, GuidPrefix};
use crate::zenoh::scout;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

const MAX_PARTICIPANTS: usize = 4096;
const MAX_SOURCES: usize = 8192;
const MAX_ZENOH_SCOUTS: usize = 1024;
/// A Zenoh session scouts at least every 8 s (zenoh 1.x backs off from 1 s
/// to 8 s); one silent for a minute is gone.
const ZENOH_SCOUT_GONE: Duration = Duration::from_secs(60);
const PARSE_EVERY: Duration = Duration::from_millis(500);
/// The agent reads captured frames at most this often: one wake-up per batch
/// instead of one per packet (what is missed between batches waits in the
/// socket buffer; announcements are periodic anyway).
pub const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// One advertised locator, as reported.
pub use crate::api::Locator as LocatorInfo;
/// A DDS participant seen on this node, as reported.
pub use crate::api::Participant;
/// A sender of RTPS multicast, by source address and group, as reported.
pub use crate::api::Source;
/// A Zenoh session seen scouting, as reported.
pub use crate::api::ZenohScout;

/// The groups the capture takes: the RTPS `groups`, those of
/// `extraMulticast`, and Zenoh's scouting group.
pub fn watched_groups(cfg: &Config) -> Vec<Ipv4Addr> {
    let mut g = cfg.discovery_groups();
    if !g.contains(&ZENOH_SCOUTING.0) {
        g.push(ZENOH_SCOUTING.0);
    }
    g
}

/// A participant and when it was last heard.
#[derive(Debug, Clone)]
struct Heard {
    p: Participant,
    last_seen_at: Instant,
}

/// A sender and when it was last heard and parsed.
#[derive(Debug, Clone)]
struct Sender {
    s: Source,
    last_parsed: Option<Instant>,
    last_seen_at: Instant,
}

/// The participant table.
#[derive(Debug, Default)]
pub struct Table {
    participants: HashMap<GuidPrefix, Heard>,
    sources: HashMap<(Ipv4Addr, u16, Ipv4Addr), Sender>,
    /// Zenoh sessions scouting, by source address and port.
    zenoh: HashMap<SocketAddrV4, (ZenohScout, Instant)>,
    /// Pod of an address (ros0 or primary), refreshed by the agent.
    pub pods_by_ip: HashMap<Ipv4Addr, String>,
    /// Pod of a host-side port name (routed mode).
    pub pods_by_port: HashMap<String, String>,
    pub malformed: u64,
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
    /// Records one captured datagram to a watched group (`payload` is the
    /// UDP payload): RTPS, or a Zenoh SCOUT.
    pub fn record(&mut self, seen: &Seen, payload: &[u8], now: Instant) {
        let key = (*seen.src.ip(), seen.src.port(), *seen.dst.ip());
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SOURCES {
            return;
        }
        let s = self.sources.entry(key).or_insert_with(|| Sender {
            s: Source {
                source: *seen.src.ip(),
                group: *seen.dst.ip(),
                interface: seen.ifname.to_owned(),
                ttl: seen.ttl,
                packets: 0,
                last_seen: 0,
            },
            last_parsed: None,
            last_seen_at: now,
        });
        s.s.packets += 1;
        s.s.ttl = seen.ttl;
        if s.s.interface != seen.ifname {
            s.s.interface = seen.ifname.to_owned();
        }
        s.last_seen_at = now;
        if s.last_parsed
            .is_some_and(|t| now.duration_since(t) < PARSE_EVERY)
        {
            return;
        }
        s.last_parsed = Some(now);
        // wall-clock time only when parsing (at most twice a second per sender)
        s.s.last_seen = unix_now();
        let pod = self.pod_of(seen.ifname, *seen.src.ip());
        if !payload.starts_with(b"RTPS") {
            match scout::parse_scout(payload) {
                Ok(sc) => self.record_scout(seen, &sc, pod, now),
                Err(_) => self.malformed += 1,
            }
            return;
        }
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
                    kind: locator_kind(pid).to_owned(),
                    transport: match l.kind {
                        rtps::LocatorKind::UdpV4 => "udpv4".into(),
                        rtps::LocatorKind::UdpV6 => "udpv6".into(),
                        rtps::LocatorKind::Other(k) => k.to_string(),
                    },
                    address: l.ip().map(|a| a.to_string()),
                    port: l.port,
                })
                .collect();
            let wall = unix_now();
            let first = self
                .participants
                .get(&p.guid_prefix)
                .map_or(wall, |o| o.p.first_seen);
            self.participants.insert(
                p.guid_prefix,
                Heard {
                    p: Participant {
                        guid_prefix: p.guid_prefix.to_string(),
                        vendor: p.vendor_id.name().to_owned(),
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
                    },
                    last_seen_at: now,
                },
            );
        }
    }

    /// The pod of a datagram: by the host-side port it came in on, else by
    /// its source address.
    fn pod_of(&self, ifname: &str, src: Ipv4Addr) -> Option<String> {
        self.pods_by_port
            .get(ifname)
            .or_else(|| self.pods_by_ip.get(&src))
            .cloned()
    }

    fn record_scout(&mut self, seen: &Seen, sc: &scout::Scout, pod: Option<String>, now: Instant) {
        if !self.zenoh.contains_key(&seen.src) && self.zenoh.len() >= MAX_ZENOH_SCOUTS {
            return;
        }
        let wall = unix_now();
        let first = self
            .zenoh
            .get(&seen.src)
            .map_or(wall, |(z, _)| z.first_seen);
        let z = ZenohScout {
            source: seen.src.to_string(),
            group: seen.dst.to_string(),
            seen_on: seen.ifname.to_owned(),
            pod,
            version: sc.version,
            looks_for: sc.looks_for().into_iter().map(str::to_owned).collect(),
            zid: sc.zid_hex(),
            ttl: seen.ttl,
            first_seen: first,
            last_seen: wall,
        };
        self.zenoh.insert(seen.src, (z, now));
    }

    /// Forgets participants not heard from for twice their lease (at least a
    /// minute), Zenoh sessions silent for a minute, and senders silent for
    /// five minutes.
    pub fn expire(&mut self, now: Instant) {
        self.zenoh
            .retain(|_, (_, at)| now.duration_since(*at) < ZENOH_SCOUT_GONE);
        self.participants.retain(|_, p| {
            let lease = p.p.lease_seconds.unwrap_or(30.0).clamp(1.0, 3600.0);
            let keep = Duration::from_secs_f64((2.0 * lease).max(60.0));
            now.duration_since(p.last_seen_at) < keep
        });
        self.sources
            .retain(|_, s| now.duration_since(s.last_seen_at) < Duration::from_secs(300));
    }

    pub fn participants(&self) -> Vec<&Participant> {
        let mut v: Vec<_> = self.participants.values().map(|h| &h.p).collect();
        v.sort_by(|a, b| (a.domain, &a.guid_prefix).cmp(&(b.domain, &b.guid_prefix)));
        v
    }

    pub fn sources(&self) -> Vec<&Source> {
        let mut v: Vec<_> = self.sources.values().map(|s| &s.s).collect();
        v.sort_by_key(|s| (s.group, s.source));
        v
    }

    /// The Zenoh sessions seen scouting, by source. The pod is looked up
    /// again here: a session that scouts once as it starts (and finds its
    /// peer) may do so before the agent has read the pod's record.
    pub fn zenoh_scouts(&self) -> Vec<ZenohScout> {
        let mut v: Vec<ZenohScout> = self
            .zenoh
            .iter()
            .map(|(src, (z, _))| {
                let mut z = z.clone();
                if z.pod.is_none() {
                    z.pod = self.pod_of(&z.seen_on, *src.ip());
                }
                z
            })
            .collect();
        v.sort_by(|a, b| (&a.pod, &a.source).cmp(&(&b.pod, &b.source)));
        v
    }

    pub fn len(&self) -> usize {
        self.participants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }
}

/// The capture socket, and the slots it is drained into.
pub struct Capture {
    fd: OwnedFd,
    frames: RecvBatch<libc::sockaddr_ll>,
}

/// Frames read per system call (recvmmsg).
const SLOTS: usize = 32;

impl Capture {
    /// A packet socket on every interface of this namespace, filtered to the RTPS groups.
    pub fn open(groups: &[Ipv4Addr]) -> io::Result<Capture> {
        let c = Capture {
            fd: packet_socket(libc::SOCK_RAW)?,
            frames: RecvBatch::new(SLOTS, 9216),
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

    /// Reads every pending frame into `table`, up to 32 a system call;
    /// `ifname` names interface indexes. A frame longer than 9216 bytes is
    /// parsed from what fit (its UDP header, if any, says more).
    pub fn drain(&mut self, table: &mut Table, ifname: &mut dyn FnMut(u32) -> Option<String>) {
        let now = Instant::now();
        let b = &mut self.frames;
        // an error ends the batch like an empty queue: the next one retries
        while let Ok(n @ 1..) = b.recv(self.fd.as_raw_fd()) {
            for i in 0..n {
                let from = b.name(i);
                if from.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                let Some(name) = ifname(from.sll_ifindex as u32) else {
                    continue;
                };
                if let Some((seen_src, seen_dst, ttl, payload)) = udp_of(b.data(i)) {
                    let seen = Seen {
                        ifname: &name,
                        src: seen_src,
                        dst: seen_dst,
                        ttl,
                    };
                    table.record(&seen, payload, now);
                }
            }
            if n < SLOTS {
                break; // the queue is empty: what arrives now wakes us again
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
    fn zenoh_scouts_land_in_their_own_table_by_source_and_expire() {
        let mut t = Table::default();
        t.pods_by_ip
            .insert(Ipv4Addr::new(10, 1, 1, 5), "robots/zenoh".into());
        let scout = [0x01, 0x09, 0x07];
        let f = frame(
            Ipv4Addr::new(10, 1, 1, 5),
            Ipv4Addr::new(224, 0, 0, 224),
            1,
            &scout,
        );
        let (s, mut d, ttl, payload) = udp_of(&f).unwrap();
        d.set_port(7446);
        let now = Instant::now();
        let seen = Seen {
            ifname: "ros2br0",
            src: s,
            dst: d,
            ttl,
        };
        t.record(&seen, payload, now);
        // not a participant, not malformed
        assert!(t.is_empty());
        assert_eq!(t.malformed, 0);
        let z = t.zenoh_scouts();
        assert_eq!(z.len(), 1);
        assert_eq!(z[0].pod.as_deref(), Some("robots/zenoh"));
        assert_eq!(z[0].source, "10.1.1.5:7400");
        assert_eq!(z[0].group, "224.0.0.224:7446");
        assert_eq!(z[0].looks_for, ["router", "peer", "client"]);
        assert_eq!((z[0].version, z[0].ttl), (9, 1));
        // a pod the agent learns of after its scout is named all the same
        t.pods_by_ip.clear();
        t.record(
            &Seen {
                src: SocketAddrV4::new(Ipv4Addr::new(10, 1, 1, 6), 41000),
                ..seen.clone()
            },
            payload,
            now,
        );
        t.pods_by_ip
            .insert(Ipv4Addr::new(10, 1, 1, 6), "robots/late".into());
        assert!(t
            .zenoh_scouts()
            .iter()
            .any(|z| z.pod.as_deref() == Some("robots/late")));
        t.pods_by_ip
            .insert(Ipv4Addr::new(10, 1, 1, 5), "robots/zenoh".into());
        // a second session of the same pod (another port) is another entry
        let other = Seen {
            src: SocketAddrV4::new(*s.ip(), 40000),
            ..seen.clone()
        };
        t.record(&other, payload, now);
        assert_eq!(t.zenoh_scouts().len(), 3);
        // neither RTPS nor a SCOUT: malformed
        let third = Seen {
            src: SocketAddrV4::new(*s.ip(), 40001),
            ..seen.clone()
        };
        t.record(&third, b"\x02\x09\x01", now);
        assert_eq!(t.malformed, 1);
        t.expire(now + Duration::from_secs(59));
        assert_eq!(t.zenoh_scouts().len(), 3);
        t.expire(now + Duration::from_secs(61));
        assert!(t.zenoh_scouts().is_empty(), "silent for a minute: gone");
    }

    #[test]
    fn the_capture_watches_zenoh_scouting_even_when_not_carried() {
        let mut cfg = crate::config::Config::from_value(
            &serde_json::json!({"cniVersion": "0.3.1", "name": "k8s-pod-network", "type": "ros2-cni",
                                "subnet": "192.168.1.0/24", "podRange": "192.168.1.160/28"}),
            true,
            None,
        )
        .unwrap();
        let g = watched_groups(&cfg);
        assert!(g.contains(&Ipv4Addr::new(239, 255, 0, 1)));
        assert!(g.contains(&ZENOH_SCOUTING.0));
        cfg.extra_multicast.clear();
        assert_eq!(
            watched_groups(&cfg)
                .iter()
                .filter(|x| **x == ZENOH_SCOUTING.0)
                .count(),
            1
        );
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
}
