//! The lab's own discovery probe, for machines without Cyclone DDS: an SPDP
//! announcer in the target and a listener in the source, built on the RTPS
//! module, behaving like a DDS participant with default settings.
//!
//! - Both pick their interface as Cyclone DDS does with default settings: the
//!   first interface (by index) that is up, multicast-capable, not loopback
//!   and has an IPv4 address. With ros2-cni that is `ros0` (the primary lost
//!   its MULTICAST flag); in a Multus-style macvlan pod it is `eth0`.
//! - The announcer sends real SPDP announcements (INFO_TS + DATA(p)) every
//!   100 ms to 239.255.0.1:7400+250·domain with TTL 1 — what Fast DDS, ROS 2's
//!   default, does — advertising its interface's address as unicast locator.
//! - The listener joins the group the same way, parses what arrives, and when
//!   it sees the announcer's GUID it answers on the advertised unicast
//!   locator, as SPDP peers do.
//! - "Discovered" means both happened: the announcement arrived (the time
//!   reported) and the unicast answer got back. A participant advertising an
//!   address the source cannot reach is therefore not discovered, as in DDS.

use super::probe::{Outcome, ProbeRequest, Prober};
use super::testbed::{socket_reuse, LabError, Result};
use crate::kernel::netns::Netns;
use crate::rtps::{self, spdp, GuidPrefix, Locator, VendorId};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// The RTPS default SPDP group.
pub const SPDP_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
/// No vendor id is registered for ros2-cni: one from the experimental range.
pub const LAB_VENDOR: VendorId = VendorId(0x01ff);
const ACK: &[u8] = b"ros2-cni-lab-spdp-ack";

#[derive(Debug, Clone, Default)]
pub struct SpdpProber;

fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> std::io::Result<T> + Send) -> Result<T> {
    let n = Netns::open(format!("/var/run/netns/{ns}")).map_err(|e| LabError(e.to_string()))?;
    n.run(f)
        .map_err(|e| LabError(e.to_string()))?
        .map_err(|e| LabError(format!("in {ns}: {e}")))
}

fn guid_for(domain: u32) -> GuidPrefix {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = crate::dataplane::fnv1a(format!("{}-{domain}-{t}", std::process::id()).as_bytes());
    let mut g = [0u8; 12];
    g[..2].copy_from_slice(&LAB_VENDOR.0.to_be_bytes());
    g[2..10].copy_from_slice(&h.to_be_bytes());
    g[10..].copy_from_slice(&(domain as u16).to_be_bytes());
    GuidPrefix(g)
}

/// The address of the interface a DDS with default settings would use (run
/// inside the namespace).
fn default_interface_address() -> std::io::Result<Ipv4Addr> {
    let no = |what: &str| std::io::Error::new(std::io::ErrorKind::NotFound, what.to_owned());
    let mut h = crate::kernel::rtnl::Handle::new().map_err(|e| no(&e.to_string()))?;
    let mut links = h.links().map_err(|e| no(&e.to_string()))?;
    links.sort_by_key(|l| l.index);
    for l in links {
        let loopback = l
            .flags
            .contains(netlink_packet_route::link::LinkFlags::Loopback);
        if !l.is_up() || !l.has_multicast() || loopback {
            continue;
        }
        if let Some((a, _)) = h
            .addresses4(l.index)
            .map_err(|e| no(&e.to_string()))?
            .into_iter()
            .next()
        {
            return Ok(a);
        }
    }
    Err(no("no multicast-capable interface with an IPv4 address"))
}

/// The announcer's sockets: one that sends to the group, one on the same
/// address that receives the unicast answer; and that address.
fn announcer(ns: &str) -> Result<(UdpSocket, UdpSocket, Ipv4Addr)> {
    in_ns(ns, move || {
        let local = default_interface_address()?;
        let tx = UdpSocket::bind((local, 0))?;
        tx.set_multicast_ttl_v4(1)?;
        tx.set_multicast_loop_v4(false)?;
        let rx = UdpSocket::bind((local, 0))?;
        rx.set_nonblocking(true)?;
        Ok((tx, rx, local))
    })
}

fn listener(ns: &str, port: u16) -> Result<UdpSocket> {
    in_ns(ns, move || {
        let local = default_interface_address()?;
        let s = socket_reuse(port)?;
        s.join_multicast_v4(&SPDP_GROUP, &local)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
}

impl Prober for SpdpProber {
    fn name(&self) -> &'static str {
        "spdp"
    }

    fn probe(&self, req: &ProbeRequest) -> Result<Outcome> {
        let port = rtps::ports::spdp_multicast_port(req.domain)
            .ok_or_else(|| LabError(format!("domain {} has no SPDP port", req.domain)))?;
        let rx = listener(&req.from.ns, port)?;
        let (tx, ack_rx, _) = announcer(&req.to.ns)?;
        let locator = ack_rx.local_addr().map_err(|e| LabError(e.to_string()))?;
        let guid = guid_for(req.domain);
        let mut p = spdp::ParticipantData::new(guid, LAB_VENDOR);
        p.domain_id = Some(req.domain);
        p.entity_name = Some(format!("ros2-cni lab probe {}", req.to.label));
        if let SocketAddr::V4(a) = locator {
            p.metatraffic_unicast_locators
                .push(Locator::udp_v4(*a.ip(), a.port()));
            p.default_unicast_locators
                .push(Locator::udp_v4(*a.ip(), a.port()));
        }
        let start = Instant::now();
        let mut seen: Option<f64> = None;
        let mut sn = 1;
        let mut next_send = start;
        let mut buf = [0u8; 2048];
        while start.elapsed() < req.timeout && !req.cancel.is_cancelled() {
            if Instant::now() >= next_send {
                let msg = spdp::announce_with(&p, rtps::Endian::Little, rtps::Time::now(), sn);
                sn += 1;
                // a send can fail while routes settle; the next one may pass
                let _ = tx.send_to(&msg, (SPDP_GROUP, port));
                next_send += Duration::from_millis(100);
            }
            while let Ok((n, _)) = rx.recv_from(&mut buf) {
                let Ok(m) = rtps::parse_message(&buf[..n]) else {
                    continue;
                };
                for part in spdp::participants(&m).flatten() {
                    if part.guid_prefix != guid {
                        continue;
                    }
                    if seen.is_none() {
                        seen = Some(start.elapsed().as_secs_f64());
                    }
                    // answer on the advertised unicast locator, as SPDP peers do
                    if let Some(to) = part
                        .metatraffic_unicast_locators
                        .first()
                        .and_then(|l| l.socket_addr())
                    {
                        let _ = rx.send_to(ACK, to);
                    }
                }
            }
            if seen.is_some() {
                if let Ok((n, _)) = ack_rx.recv_from(&mut buf) {
                    if &buf[..n] == ACK {
                        return Ok(Outcome {
                            discovered: true,
                            seconds: seen,
                            note: None,
                        });
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Outcome {
            discovered: false,
            seconds: None,
            note: seen
                .map(|_| "announcement arrived but its unicast locator did not answer".to_owned()),
        })
    }
}
