//! IPv4 multicast routing for RTPS: which packets go where.
//!
//! The kernel forwards multicast by (source, group) entries (MFC) that say on
//! which virtual interface (VIF) a packet must arrive and on which VIFs it
//! leaves. We have two kinds of VIF: the uplink (the robot LAN) and the node
//! bridge (all pods). When a packet of a group without an entry arrives, the
//! kernel asks us (an upcall); [`Router`] decides:
//! - an RTPS group from the LAN goes to the pods, from the pods to the LAN —
//!   never back where it came from, so nothing loops or repeats however many
//!   nodes share the LAN, and the source address is kept;
//! - any other group gets an entry with no outgoing VIF: the kernel then drops
//!   it quietly (and counts it) instead of asking again.
//!
//! Everything that talks to the kernel sits behind the [`Mroute`] trait, so
//! this logic is tested without root.

pub mod socket;

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

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

/// What a VIF connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The robot LAN.
    Uplink,
    /// The node bridge: every pod.
    Pods,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vif {
    pub name: String,
    pub ifindex: u32,
    pub role: Role,
}

/// Which way a forwarded packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    LanToPods,
    PodsToLan,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::LanToPods => "lan_to_pods",
            Direction::PodsToLan => "pods_to_lan",
        }
    }
}

/// What the router did with an upcall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Installed a forwarding entry.
    Forward { parent: u16, oifs: Vec<u16> },
    /// Installed an entry that drops (not an RTPS group).
    Drop,
    /// Did nothing (unknown VIF, other upcall kind, table full, known entry).
    Ignore(&'static str),
}

#[derive(Debug, Clone)]
struct Entry {
    parent: u16,
    forwards: bool,
    seen_packets: u64,
    last_active: Instant,
}

/// One multicast route as reported in status and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteInfo {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub iif: String,
    pub oifs: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
    pub wrong_if: u64,
}

/// The RTPS multicast router for one node.
pub struct Router<M: Mroute> {
    kernel: M,
    groups: Vec<Ipv4Addr>,
    vifs: Vec<Vif>,
    entries: BTreeMap<(Ipv4Addr, Ipv4Addr), Entry>,
    /// Counts of forwarding entries already removed, per (group, direction).
    retired: BTreeMap<(Ipv4Addr, Direction), (u64, u64)>,
    /// Packets dropped by removed non-RTPS entries.
    retired_drops: u64,
    max_entries: usize,
}

/// Packets must have a TTL above this to leave on a VIF. With the TTL rule
/// raising RTPS TTL 1 to 2, Fast DDS / Connext discovery passes, and forwarded
/// packets arrive with TTL 1 — they die at the next router, never looping.
pub const TTL_THRESHOLD: u8 = 1;

impl<M: Mroute> Router<M> {
    pub fn new(kernel: M, groups: Vec<Ipv4Addr>) -> Self {
        Router {
            kernel,
            groups,
            vifs: vec![],
            entries: BTreeMap::new(),
            retired: BTreeMap::new(),
            retired_drops: 0,
            max_entries: 4096,
        }
    }

    pub fn with_max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    pub fn kernel(&self) -> &M {
        &self.kernel
    }

    pub fn vifs(&self) -> &[Vif] {
        &self.vifs
    }

    pub fn groups(&self) -> &[Ipv4Addr] {
        &self.groups
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes the VIF table `want` (index = VIF number). Unchanged VIFs stay;
    /// any change flushes all entries (their VIF numbers may mean something else).
    pub fn set_vifs(&mut self, want: Vec<Vif>) -> io::Result<bool> {
        if want == self.vifs {
            return Ok(false);
        }
        self.flush();
        for i in (0..self.vifs.len()).rev() {
            let _ = self.kernel.del_vif(i as u16);
        }
        self.vifs.clear();
        for (i, v) in want.iter().enumerate() {
            self.kernel.add_vif(i as u16, v.ifindex, TTL_THRESHOLD)?;
            self.vifs.push(v.clone());
        }
        Ok(true)
    }

    /// Changes the routed groups; entries of groups no longer routed go.
    pub fn set_groups(&mut self, groups: Vec<Ipv4Addr>) {
        let stale: Vec<_> = self
            .entries
            .keys()
            .filter(|(_, g)| self.groups.contains(g) != groups.contains(g))
            .copied()
            .collect();
        self.groups = groups;
        for k in stale {
            self.remove(k);
        }
    }

    /// The VIFs a packet arriving on `parent` leaves on: every VIF of the
    /// other role (pods -> uplink, uplink -> pods), never its own.
    fn oifs_for(&self, parent: u16) -> Vec<u16> {
        let Some(role) = self.vifs.get(parent as usize).map(|v| v.role) else {
            return vec![];
        };
        (0..self.vifs.len() as u16)
            .filter(|v| *v != parent && self.vifs[*v as usize].role != role)
            .collect()
    }

    fn direction(&self, parent: u16) -> Direction {
        match self.vifs.get(parent as usize).map(|v| v.role) {
            Some(Role::Uplink) => Direction::LanToPods,
            _ => Direction::PodsToLan,
        }
    }

    /// Decides what to do with an upcall and tells the kernel.
    pub fn handle(&mut self, up: Upcall, now: Instant) -> io::Result<Decision> {
        if up.kind != UpcallKind::NoCache {
            return Ok(Decision::Ignore("not a missing-route upcall"));
        }
        if up.vif as usize >= self.vifs.len() {
            return Ok(Decision::Ignore("unknown VIF"));
        }
        if self.entries.contains_key(&(up.src, up.group)) {
            return Ok(Decision::Ignore("entry exists"));
        }
        if self.entries.len() >= self.max_entries {
            return Ok(Decision::Ignore("route table full"));
        }
        let forwards = self.groups.contains(&up.group);
        let oifs: Vec<u16> = if forwards {
            self.oifs_for(up.vif)
        } else {
            vec![]
        };
        let ttls: Vec<(u16, u8)> = oifs.iter().map(|v| (*v, TTL_THRESHOLD)).collect();
        self.kernel.add_mfc(up.src, up.group, up.vif, &ttls)?;
        self.entries.insert(
            (up.src, up.group),
            Entry {
                parent: up.vif,
                forwards,
                seen_packets: 0,
                last_active: now,
            },
        );
        Ok(if forwards {
            Decision::Forward {
                parent: up.vif,
                oifs,
            }
        } else {
            Decision::Drop
        })
    }

    fn remove(&mut self, key: (Ipv4Addr, Ipv4Addr)) {
        let Some(e) = self.entries.remove(&key) else {
            return;
        };
        let c = self.kernel.sg_count(key.0, key.1).unwrap_or_default();
        if e.forwards {
            let d = self.direction(e.parent);
            let t = self.retired.entry((key.1, d)).or_default();
            t.0 += c.packets;
            t.1 += c.bytes;
        } else {
            self.retired_drops += c.packets;
        }
        let _ = self.kernel.del_mfc(key.0, key.1, e.parent);
    }

    /// Removes entries that carried no packet for `idle`; returns how many.
    pub fn expire(&mut self, now: Instant, idle: Duration) -> usize {
        let mut stale = vec![];
        for (k, e) in self.entries.iter_mut() {
            let c = self.kernel.sg_count(k.0, k.1).unwrap_or_default();
            if c.packets != e.seen_packets {
                e.seen_packets = c.packets;
                e.last_active = now;
            } else if now.duration_since(e.last_active) >= idle {
                stale.push(*k);
            }
        }
        let n = stale.len();
        for k in stale {
            self.remove(k);
        }
        n
    }

    /// Removes every entry (the VIFs stay).
    pub fn flush(&mut self) {
        let keys: Vec<_> = self.entries.keys().copied().collect();
        for k in keys {
            self.remove(k);
        }
    }

    /// The installed entries with their kernel counters.
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.entries
            .iter()
            .map(|((src, grp), e)| {
                let c = self.kernel.sg_count(*src, *grp).unwrap_or_default();
                let name = |v: u16| {
                    self.vifs
                        .get(v as usize)
                        .map(|v| v.name.clone())
                        .unwrap_or_default()
                };
                let oifs = if e.forwards {
                    self.oifs_for(e.parent).into_iter().map(name).collect()
                } else {
                    vec![]
                };
                RouteInfo {
                    source: *src,
                    group: *grp,
                    iif: name(e.parent),
                    oifs,
                    packets: c.packets,
                    bytes: c.bytes,
                    wrong_if: c.wrong_if,
                }
            })
            .collect()
    }

    /// Packets and bytes forwarded so far per (group, direction), including
    /// entries already expired.
    pub fn forwarded(&self) -> BTreeMap<(Ipv4Addr, Direction), (u64, u64)> {
        let mut out = self.retired.clone();
        for ((src, grp), e) in &self.entries {
            if !e.forwards {
                continue;
            }
            let c = self.kernel.sg_count(*src, *grp).unwrap_or_default();
            let t = out.entry((*grp, self.direction(e.parent))).or_default();
            t.0 += c.packets;
            t.1 += c.bytes;
        }
        out
    }

    /// Packets dropped: to groups we do not route, and arriving on the wrong VIF.
    pub fn dropped(&self) -> (u64, u64) {
        let mut not_rtps = self.retired_drops;
        let mut wrong_if = 0;
        for ((src, grp), e) in &self.entries {
            let c = self.kernel.sg_count(*src, *grp).unwrap_or_default();
            wrong_if += c.wrong_if;
            if !e.forwards {
                not_rtps += c.packets;
            }
        }
        (not_rtps, wrong_if)
    }
}

#[cfg(test)]
pub mod fake {
    //! A kernel stand-in that records what it was told.
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// (source, group) -> (parent VIF, [(out VIF, TTL threshold)])
    pub type MfcTable = BTreeMap<(Ipv4Addr, Ipv4Addr), (u16, Vec<(u16, u8)>)>;

    #[derive(Default)]
    pub struct FakeMroute {
        pub vifs: BTreeMap<u16, u32>,
        pub mfc: MfcTable,
        pub counts: RefCell<HashMap<(Ipv4Addr, Ipv4Addr), SgCount>>,
        pub fail_add_mfc: bool,
    }

    impl Mroute for FakeMroute {
        fn add_vif(&mut self, vif: u16, ifindex: u32, _t: u8) -> io::Result<()> {
            if self.vifs.insert(vif, ifindex).is_some() {
                return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
            }
            Ok(())
        }
        fn del_vif(&mut self, vif: u16) -> io::Result<()> {
            self.vifs.remove(&vif);
            self.mfc.retain(|_, (p, _)| *p != vif);
            Ok(())
        }
        fn add_mfc(
            &mut self,
            src: Ipv4Addr,
            group: Ipv4Addr,
            parent: u16,
            oifs: &[(u16, u8)],
        ) -> io::Result<()> {
            if self.fail_add_mfc {
                return Err(io::Error::from_raw_os_error(libc::ENFILE));
            }
            self.mfc.insert((src, group), (parent, oifs.to_vec()));
            Ok(())
        }
        fn del_mfc(&mut self, src: Ipv4Addr, group: Ipv4Addr, _parent: u16) -> io::Result<()> {
            self.mfc.remove(&(src, group));
            self.counts.borrow_mut().remove(&(src, group));
            Ok(())
        }
        fn sg_count(&self, src: Ipv4Addr, group: Ipv4Addr) -> io::Result<SgCount> {
            Ok(self
                .counts
                .borrow()
                .get(&(src, group))
                .copied()
                .unwrap_or_default())
        }
        fn vif_count(&self, _vif: u16) -> io::Result<VifCount> {
            Ok(VifCount::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeMroute;
    use super::*;

    const SPDP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
    const SSDP: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
    const POD: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 160);
    const LAPTOP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);

    fn two_vifs() -> Vec<Vif> {
        vec![
            Vif {
                name: "eth0".into(),
                ifindex: 2,
                role: Role::Uplink,
            },
            Vif {
                name: "ros2br0".into(),
                ifindex: 5,
                role: Role::Pods,
            },
        ]
    }

    fn router() -> Router<FakeMroute> {
        let mut r = Router::new(FakeMroute::default(), vec![SPDP]);
        r.set_vifs(two_vifs()).unwrap();
        r
    }

    fn nocache(vif: u16, src: Ipv4Addr, group: Ipv4Addr) -> Upcall {
        Upcall {
            kind: UpcallKind::NoCache,
            vif,
            src,
            group,
        }
    }

    #[test]
    fn rtps_from_pods_goes_to_the_lan_only() {
        let mut r = router();
        let d = r.handle(nocache(1, POD, SPDP), Instant::now()).unwrap();
        assert_eq!(
            d,
            Decision::Forward {
                parent: 1,
                oifs: vec![0]
            }
        );
        assert_eq!(r.kernel().mfc[&(POD, SPDP)], (1, vec![(0, TTL_THRESHOLD)]));
    }

    #[test]
    fn rtps_from_the_lan_goes_to_pods_never_back_to_the_lan() {
        let mut r = router();
        let d = r.handle(nocache(0, LAPTOP, SPDP), Instant::now()).unwrap();
        assert_eq!(
            d,
            Decision::Forward {
                parent: 0,
                oifs: vec![1]
            }
        );
        let (_, oifs) = &r.kernel().mfc[&(LAPTOP, SPDP)];
        assert!(
            !oifs.iter().any(|(v, _)| *v == 0),
            "LAN -> LAN would duplicate on every node"
        );
    }

    #[test]
    fn other_groups_are_dropped_quietly() {
        let mut r = router();
        assert_eq!(
            r.handle(nocache(0, LAPTOP, SSDP), Instant::now()).unwrap(),
            Decision::Drop
        );
        assert_eq!(r.kernel().mfc[&(LAPTOP, SSDP)], (0, vec![]));
        r.kernel().counts.borrow_mut().insert(
            (LAPTOP, SSDP),
            SgCount {
                packets: 7,
                bytes: 700,
                wrong_if: 0,
            },
        );
        assert_eq!(r.dropped().0, 7);
        assert!(r.forwarded().is_empty());
    }

    #[test]
    fn ignores_what_it_cannot_place() {
        let mut r = router();
        assert_eq!(
            r.handle(nocache(9, POD, SPDP), Instant::now()).unwrap(),
            Decision::Ignore("unknown VIF")
        );
        let wrong = Upcall {
            kind: UpcallKind::WrongVif,
            ..nocache(0, POD, SPDP)
        };
        assert!(matches!(
            r.handle(wrong, Instant::now()).unwrap(),
            Decision::Ignore(_)
        ));
        r.handle(nocache(1, POD, SPDP), Instant::now()).unwrap();
        assert_eq!(
            r.handle(nocache(1, POD, SPDP), Instant::now()).unwrap(),
            Decision::Ignore("entry exists")
        );
        assert!(r.kernel().mfc.len() == 1);
    }

    #[test]
    fn table_is_bounded() {
        let mut r = router().with_max_entries(2);
        for i in 0..5u8 {
            let _ = r
                .handle(
                    nocache(0, Ipv4Addr::new(192, 168, 1, i), SPDP),
                    Instant::now(),
                )
                .unwrap();
        }
        assert_eq!(r.len(), 2);
        assert_eq!(r.kernel().mfc.len(), 2);
    }

    #[test]
    fn idle_entries_expire_and_keep_their_counts() {
        let mut r = router();
        let t0 = Instant::now();
        r.handle(nocache(1, POD, SPDP), t0).unwrap();
        r.handle(nocache(0, LAPTOP, SPDP), t0).unwrap();
        r.kernel().counts.borrow_mut().insert(
            (POD, SPDP),
            SgCount {
                packets: 3,
                bytes: 300,
                wrong_if: 0,
            },
        );
        // POD's entry saw traffic at t0+10, LAPTOP's never
        assert_eq!(
            r.expire(t0 + Duration::from_secs(10), Duration::from_secs(60)),
            0
        );
        assert_eq!(
            r.expire(t0 + Duration::from_secs(61), Duration::from_secs(60)),
            1
        );
        assert!(r.kernel().mfc.contains_key(&(POD, SPDP)));
        assert!(!r.kernel().mfc.contains_key(&(LAPTOP, SPDP)));
        assert_eq!(
            r.expire(t0 + Duration::from_secs(75), Duration::from_secs(60)),
            1
        );
        assert!(r.is_empty());
        // the 3 packets forwarded pods -> LAN are still counted
        assert_eq!(r.forwarded()[&(SPDP, Direction::PodsToLan)], (3, 300));
    }

    #[test]
    fn vif_change_flushes_entries() {
        let mut r = router();
        r.handle(nocache(1, POD, SPDP), Instant::now()).unwrap();
        let same = r.vifs().to_vec();
        assert!(!r.set_vifs(same).unwrap(), "no change, no flush");
        assert_eq!(r.len(), 1);
        // the bridge was re-created with a new ifindex
        r.set_vifs(vec![
            Vif {
                name: "eth0".into(),
                ifindex: 2,
                role: Role::Uplink,
            },
            Vif {
                name: "ros2br0".into(),
                ifindex: 9,
                role: Role::Pods,
            },
        ])
        .unwrap();
        assert!(r.is_empty() && r.kernel().mfc.is_empty());
        assert_eq!(r.kernel().vifs[&1], 9);
    }

    #[test]
    fn group_reload_drops_entries_of_removed_groups() {
        let mut r = router();
        r.handle(nocache(1, POD, SPDP), Instant::now()).unwrap();
        r.handle(nocache(0, LAPTOP, SSDP), Instant::now()).unwrap();
        r.set_groups(vec![SSDP]);
        // both entries changed meaning: SPDP no longer routed, SSDP now routed
        assert!(r.is_empty());
        assert_eq!(
            r.handle(nocache(0, LAPTOP, SSDP), Instant::now()).unwrap(),
            Decision::Forward {
                parent: 0,
                oifs: vec![1]
            }
        );
    }

    #[test]
    fn kernel_errors_are_reported_not_recorded() {
        let mut r = router();
        r.kernel = FakeMroute {
            fail_add_mfc: true,
            ..Default::default()
        };
        r.vifs = two_vifs();
        assert!(r.handle(nocache(1, POD, SPDP), Instant::now()).is_err());
        assert!(r.is_empty());
    }
}
