//! Multicast pressure: packets to groups that are not routed.
//!
//! The routes are static (see `mroute`), so no flood of other groups or
//! spoofed sources can exhaust a table; what such a flood still costs is
//! bandwidth on the node and its LAN. The agent measures it from the
//! catch-all route's counter every reconcile pass and, while it lasts,
//! samples the routing interfaces (bridge and uplink) for a moment to name
//! the interface and the sources (the kernel's counters do not say where a
//! packet of an unrouted group arrived) — for status, metrics and doctor's
//! `MULTICAST_PRESSURE`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// From this rate on (packets/s of other groups) the agent reports pressure.
/// A LAN's own service discovery (mDNS is link-local and not counted; SSDP
/// and the like) stays far below it.
pub const PRESSURE_PPS: u64 = 200;

/// How often the sources are sampled again while pressure lasts.
const RESAMPLE: Duration = Duration::from_secs(6);

/// How long one sample listens, at most, and how many packets it reads.
const SAMPLE_TIME: Duration = Duration::from_millis(150);
const SAMPLE_PACKETS: usize = 4000;

/// A source of pressure, as the status reports it.
pub use crate::api::PressureSource as Source;

#[derive(Debug, Default)]
pub struct Pressure {
    last: Option<(Instant, u64)>,
    /// Packets/s of other groups in the last period.
    pub rate: u64,
    /// Whether the rate is at or above [`PRESSURE_PPS`].
    pub active: bool,
    /// Where most of them arrive, once a sample said so.
    pub interface: Option<String>,
    pub sources: Vec<Source>,
    since: Option<SystemTime>,
    sampled_at: Option<Instant>,
}

impl Pressure {
    /// Whether the next pass should sample the interfaces.
    pub fn sample_due(&self) -> bool {
        self.active && self.sampled_at.is_none_or(|t| t.elapsed() >= RESAMPLE)
    }

    /// Takes the catch-all counter (`not_rtps`) and a sample of the
    /// interfaces if one was taken; returns a line to log when pressure
    /// ends or its sources become known.
    pub fn update(
        &mut self,
        now: Instant,
        not_rtps: u64,
        sampled: Option<Vec<Source>>,
    ) -> Option<String> {
        let prev = self.last.replace((now, not_rtps));
        let mut log = None;
        if let Some(s) = sampled.filter(|_| self.active) {
            // the interface that brought most of the sample
            let mut per_if: Vec<(u64, String)> = vec![];
            for src in &s {
                match per_if.iter_mut().find(|(_, n)| *n == src.interface) {
                    Some(e) => e.0 += src.packets,
                    None => per_if.push((src.packets, src.interface.clone())),
                }
            }
            self.interface = per_if.into_iter().max().map(|(_, n)| n);
            self.sources = s;
            self.sampled_at = Some(now);
            log = Some(format!(
                "multicast to groups that are not routed: {} packets/s arriving on {}; top sources: {}. Not forwarded (RTPS discovery is unaffected), but it costs the node and its LAN bandwidth",
                self.rate,
                self.interface.as_deref().unwrap_or("?"),
                describe(&self.sources)
            ));
        }
        let Some((t0, n0)) = prev else {
            return log;
        };
        let secs = now.duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return log;
        }
        self.rate = (not_rtps.saturating_sub(n0) as f64 / secs) as u64;
        if self.rate < PRESSURE_PPS {
            if self.active {
                log = Some("multicast pressure ended".into());
            }
            self.active = false;
            self.interface = None;
            self.sources.clear();
            self.since = None;
            self.sampled_at = None;
            return log;
        }
        self.active = true;
        self.since.get_or_insert_with(SystemTime::now);
        log
    }

    /// `multicastPressure` in the status.
    pub fn to_api(&self) -> crate::api::Pressure {
        crate::api::Pressure {
            not_rtps_per_second: self.rate,
            threshold: PRESSURE_PPS,
            active: self.active,
            interface: self.interface.clone(),
            sources: self.sources.clone(),
            since: self
                .since
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        }
    }
}

fn describe(sources: &[Source]) -> String {
    if sources.is_empty() {
        return "none seen in the sample".into();
    }
    sources
        .iter()
        .map(|s| {
            format!(
                "{} on {} ({} packets to {} groups)",
                s.source, s.interface, s.packets, s.groups
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Samples each interface (ifindex, name) in turn: the five busiest
/// sources of all, busiest first.
pub fn sample_interfaces(ifaces: &[(u32, String)], groups: &[Ipv4Addr]) -> Vec<Source> {
    let mut all: Vec<Source> = ifaces
        .iter()
        .flat_map(|(i, name)| sample_sources(*i, name, groups))
        .collect();
    all.sort_by_key(|s| std::cmp::Reverse(s.packets));
    all.truncate(5);
    all
}

/// Listens on `ifindex` for a moment and counts, per source, the incoming
/// IPv4 multicast to groups other than `groups` (link-local ones aside).
/// The five busiest sources, busiest first; empty if the socket fails.
pub fn sample_sources(ifindex: u32, ifname: &str, groups: &[Ipv4Addr]) -> Vec<Source> {
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::fd::AsRawFd;
    let Ok(fd) = crate::kernel::packet::packet_socket(libc::SOCK_DGRAM) else {
        return vec![];
    };
    if crate::kernel::packet::bind_packet(fd.as_raw_fd(), ifindex).is_err() {
        return vec![];
    }
    let mut per: BTreeMap<Ipv4Addr, (u64, BTreeSet<Ipv4Addr>)> = BTreeMap::new();
    let mut buf = [0u8; 64];
    let start = Instant::now();
    let mut read = 0;
    while start.elapsed() < SAMPLE_TIME && read < SAMPLE_PACKETS {
        let Ok(Some(r)) = crate::kernel::packet::recv(fd.as_raw_fd(), &mut buf) else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        read += 1;
        if r.outgoing || r.len < 20 {
            continue;
        }
        let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        let dst = Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]);
        if buf[0] >> 4 != 4
            || !dst.is_multicast()
            || dst.octets()[..3] == [224, 0, 0]
            || groups.contains(&dst)
        {
            continue;
        }
        let e = per.entry(src).or_default();
        e.0 += 1;
        e.1.insert(dst);
    }
    let mut out: Vec<Source> = per
        .into_iter()
        .map(|(source, (packets, g))| Source {
            source,
            interface: ifname.to_owned(),
            groups: g.len() as u64,
            packets,
        })
        .collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.packets));
    out.truncate(5);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_starts_names_the_interface_and_ends() {
        let mut p = Pressure::default();
        let t0 = Instant::now();
        assert!(p.update(t0, 0, None).is_none());
        assert!(!p.sample_due());
        // 10,000 packets of other groups in 2 s
        p.update(t0 + Duration::from_secs(2), 10_000, None);
        assert_eq!(p.rate, 5000);
        assert!(p.active && p.sample_due());
        let src = |ip: [u8; 4], iface: &str, packets| Source {
            source: Ipv4Addr::from(ip),
            interface: iface.into(),
            groups: 4000,
            packets,
        };
        let sample = vec![
            src([192, 168, 1, 160], "ros2br0", 900),
            src([192, 168, 0, 9], "eth0", 30),
        ];
        let log = p
            .update(t0 + Duration::from_secs(4), 20_000, Some(sample))
            .unwrap();
        assert!(
            log.contains("ros2br0") && log.contains("192.168.1.160"),
            "{log}"
        );
        assert_eq!(p.interface.as_deref(), Some("ros2br0"));
        assert!(!p.sample_due(), "sampled just now");
        assert_eq!(
            serde_json::to_value(p.to_api()).unwrap()["sources"][0]["groups"],
            4000
        );
        // quiet again
        let log = p.update(t0 + Duration::from_secs(6), 20_010, None);
        assert_eq!(log.as_deref(), Some("multicast pressure ended"));
        assert!(p.interface.is_none() && p.sources.is_empty() && !p.active);
    }
}
