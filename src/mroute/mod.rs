//! IPv4 multicast routing for RTPS: which packets go where.
//!
//! The kernel forwards multicast by entries (MFC) that say on which virtual
//! interfaces (VIFs) a packet arrives and leaves. We have two kinds of VIF:
//! the uplink (the robot LAN) and the node bridge (all pods). The routes are
//! static and their number is fixed by the config, whatever arrives:
//! - one **(*,G) entry per RTPS group** (source 0.0.0.0) listing both VIFs:
//!   the kernel forwards a packet of G to every listed VIF but the one it
//!   arrived on — an RTPS group from the LAN goes to the pods, from the pods
//!   to the LAN, never back where it came from, so nothing loops or repeats
//!   however many nodes share the LAN, and the source address is kept. A new
//!   source needs no upcall and costs no state.
//! - one **(*,*) entry** (group and source 0.0.0.0) whose parent is no VIF:
//!   it makes both VIFs part of the "static tree" (which the (*,G) entries
//!   need to be used from either VIF), and it catches every other group, so
//!   the kernel neither forwards nor asks us about them: no number of other
//!   groups or spoofed sources, from pods or from the LAN, can fill a table or
//!   an upcall queue. Local delivery on the node is not affected.
//!
//! The semantics are the kernel's proxy entries (net/ipv4/ipmr.c:
//! `ipmr_cache_find_any`, `ip_mr_forward`); [`fake::FakeMroute`] models them
//! so that this logic is tested without root, and the integration tests check
//! the same on the real kernel.
//!
//! Everything that talks to the kernel sits behind the [`Mroute`] trait.

use crate::kernel::mroute::{Mroute, Upcall, UpcallKind};

use crate::kernel::mroute::MAXVIFS;
use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
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

/// What the router did with an upcall. With static routes the kernel has
/// no reason to ask: an upcall means some entry is missing (counted, and the
/// routes are re-installed by the next reconcile pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Ignore(&'static str),
}

/// One multicast route as reported in status (the protocol's type).
pub use crate::api::Route as RouteInfo;

/// The VIF index the catch-all (*,*) entry names as its parent: no VIF has
/// it, so the kernel never forwards anything the catch-all matches.
pub const NO_VIF: u16 = (MAXVIFS - 1) as u16;

/// The RTPS multicast router for one node.
pub struct Router<M: Mroute> {
    kernel: M,
    groups: Vec<Ipv4Addr>,
    vifs: Vec<Vif>,
    /// Groups whose (*,G) entry is installed.
    installed: Vec<Ipv4Addr>,
    catch_all: bool,
    /// Counts of (*,G) entries removed (group reload), per group.
    retired: BTreeMap<Ipv4Addr, (u64, u64)>,
    /// Upcalls received: none are expected (see [`Decision`]).
    upcalls: u64,
    /// `lanMulticast`: the (*,G) entries list the uplink as outgoing too.
    /// When false they list only the bridge: pods' RTPS stays off the LAN
    /// (the relay carries it), the LAN's still reaches the pods (the uplink
    /// stays in the static tree through the catch-all).
    lan: bool,
}

/// Packets must have a TTL above this to leave on a VIF. With the TTL rule
/// raising RTPS TTL 1 to 2, Fast DDS / Connext discovery passes, and forwarded
/// packets arrive with TTL 1 — they die at the next router, never looping.
pub const TTL_THRESHOLD: u8 = 1;

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

impl<M: Mroute> Router<M> {
    pub fn new(kernel: M, groups: Vec<Ipv4Addr>) -> Self {
        Router {
            kernel,
            groups,
            vifs: vec![],
            installed: vec![],
            catch_all: false,
            retired: BTreeMap::new(),
            upcalls: 0,
            lan: true,
        }
    }

    /// Sets `lanMulticast`; a change rewrites the (*,G) entries in place.
    pub fn set_lan_multicast(&mut self, on: bool) -> io::Result<()> {
        if on == self.lan {
            return Ok(());
        }
        self.lan = on;
        // MRT_ADD_MFC on an existing entry replaces its oifs, counters kept
        self.installed.clear();
        self.install()
    }

    pub fn lan_multicast(&self) -> bool {
        self.lan
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

    /// Number of installed entries: one per group, plus the catch-all.
    pub fn len(&self) -> usize {
        self.installed.len() + usize::from(self.catch_all)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Upcalls received so far (none expected).
    pub fn upcalls(&self) -> u64 {
        self.upcalls
    }

    /// Makes the VIF table `want` (index = VIF number) and installs the
    /// routes. Unchanged VIFs stay; any change re-installs every entry
    /// (their VIF numbers may mean something else).
    pub fn set_vifs(&mut self, want: Vec<Vif>) -> io::Result<bool> {
        if want == self.vifs {
            self.install()?;
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
        self.install()?;
        Ok(true)
    }

    /// Every VIF with the forwarding threshold: the oif list of each entry.
    fn all_vifs(&self) -> Vec<(u16, u8)> {
        (0..self.vifs.len() as u16)
            .map(|v| (v, TTL_THRESHOLD))
            .collect()
    }

    /// Installs what is missing: the catch-all, then a (*,G) per group.
    /// Idempotent; called on every reconcile pass, so an entry removed
    /// behind our back comes back.
    pub fn install(&mut self) -> io::Result<()> {
        if self.vifs.is_empty() {
            return Ok(());
        }
        let oifs = self.all_vifs();
        if !self.catch_all {
            self.kernel.add_mfc(ANY, ANY, NO_VIF, &oifs)?;
            self.catch_all = true;
        }
        let group_oifs: Vec<(u16, u8)> = if self.lan {
            oifs
        } else {
            oifs.into_iter()
                .filter(|(v, _)| self.vifs[*v as usize].role == Role::Pods)
                .collect()
        };
        for g in self.groups.clone() {
            if !self.installed.contains(&g) {
                self.kernel.add_mfc(ANY, g, 0, &group_oifs)?;
                self.installed.push(g);
            }
        }
        Ok(())
    }

    /// Changes the routed groups: entries of groups no longer routed go,
    /// new groups get theirs.
    pub fn set_groups(&mut self, groups: Vec<Ipv4Addr>) -> io::Result<()> {
        let stale: Vec<_> = self
            .installed
            .iter()
            .filter(|g| !groups.contains(g))
            .copied()
            .collect();
        self.groups = groups;
        for g in stale {
            self.remove(g);
        }
        self.install()
    }

    fn remove(&mut self, g: Ipv4Addr) {
        let c = self.kernel.sg_count(ANY, g).unwrap_or_default();
        let t = self.retired.entry(g).or_default();
        t.0 += c.packets;
        t.1 += c.bytes;
        let _ = self.kernel.del_mfc(ANY, g, 0);
        self.installed.retain(|x| *x != g);
    }

    /// An upcall: none is expected with static routes; counted, and the
    /// routes are checked again.
    pub fn handle(&mut self, up: Upcall, _now: Instant) -> io::Result<Decision> {
        self.upcalls += 1;
        if up.kind != UpcallKind::NoCache {
            return Ok(Decision::Ignore("not a missing-route upcall"));
        }
        // the kernel lost our entries (e.g. another MRT_* user flushed them)
        self.catch_all = false;
        self.installed.clear();
        self.install()?;
        Ok(Decision::Ignore("routes re-installed"))
    }

    /// Kept for the reconcile pass: static routes never expire.
    pub fn expire(&mut self, _now: Instant, _idle: Duration) -> usize {
        0
    }

    /// Removes every entry (the VIFs stay).
    pub fn flush(&mut self) {
        for g in self.installed.clone() {
            self.remove(g);
        }
        if self.catch_all {
            let _ = self.kernel.del_mfc(ANY, ANY, NO_VIF);
            self.catch_all = false;
        }
    }

    /// The installed (*,G) entries with their kernel counters.
    pub fn routes(&self) -> Vec<RouteInfo> {
        let names: Vec<String> = self.vifs.iter().map(|v| v.name.clone()).collect();
        self.installed
            .iter()
            .map(|g| {
                let c = self.kernel.sg_count(ANY, *g).unwrap_or_default();
                RouteInfo {
                    source: ANY,
                    group: *g,
                    iif: names.join(","),
                    oifs: names.clone(),
                    packets: c.packets,
                    bytes: c.bytes,
                    wrong_if: c.wrong_if,
                }
            })
            .collect()
    }

    /// Packets and bytes of each routed group so far (both directions),
    /// including entries already removed.
    pub fn forwarded(&self) -> BTreeMap<Ipv4Addr, (u64, u64)> {
        let mut out = self.retired.clone();
        for g in &self.installed {
            let c = self.kernel.sg_count(ANY, *g).unwrap_or_default();
            let t = out.entry(*g).or_default();
            t.0 += c.packets;
            t.1 += c.bytes;
        }
        out
    }

    /// Packets not forwarded: of other groups (matched by the catch-all),
    /// and of RTPS groups arriving where they should not.
    pub fn dropped(&self) -> (u64, u64) {
        let not_rtps = if self.catch_all {
            self.kernel.sg_count(ANY, ANY).unwrap_or_default().packets
        } else {
            0
        };
        let wrong_if = self
            .installed
            .iter()
            .map(|g| self.kernel.sg_count(ANY, *g).unwrap_or_default().wrong_if)
            .sum();
        (not_rtps, wrong_if)
    }
}

#[cfg(test)]
pub mod fake {
    //! A kernel stand-in that records what it was told.
    use super::*;
    use crate::kernel::mroute::{SgCount, VifCount};
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

    impl FakeMroute {
        fn member(oifs: &[(u16, u8)], vif: u16) -> bool {
            oifs.iter().any(|(v, t)| *v == vif && *t > 0 && *t < 255)
        }

        /// What the kernel does with a packet of (`src`, `group`) arriving
        /// on `vif` with `ttl` (net/ipv4/ipmr.c): the VIFs it leaves on, or
        /// None when no entry matches (an upcall).
        pub fn forward(
            &self,
            vif: u16,
            src: Ipv4Addr,
            group: Ipv4Addr,
            ttl: u8,
        ) -> Option<Vec<u16>> {
            let any = Ipv4Addr::UNSPECIFIED;
            let out = |oifs: &[(u16, u8)], skip: Option<u16>| -> Vec<u16> {
                let mut v: Vec<u16> = oifs
                    .iter()
                    .filter(|(o, t)| {
                        Some(*o) != skip && *t > 0 && ttl > *t && self.vifs.contains_key(o)
                    })
                    .map(|(o, _)| *o)
                    .collect();
                v.sort();
                v
            };
            // (S,G): arrival must be the parent
            if let Some((parent, oifs)) = self.mfc.get(&(src, group)) {
                return Some(if *parent == vif {
                    out(oifs, None)
                } else {
                    vec![]
                });
            }
            // the (*,*) entry whose oifs include `v`: the static tree
            let proxy = |v: u16| {
                self.mfc
                    .get(&(any, any))
                    .filter(|(_, o)| Self::member(o, v))
            };
            // (*,G), found when the arrival VIF is one of its oifs
            if let Some((parent, oifs)) = self.mfc.get(&(any, group)) {
                if Self::member(oifs, vif)
                    || proxy(*parent).is_some_and(|(_, o)| Self::member(o, vif))
                {
                    let in_tree = proxy(*parent).is_some_and(|(_, o)| Self::member(o, vif));
                    if !in_tree && *parent != vif {
                        return Some(vec![]); // wrong interface
                    }
                    return Some(out(oifs, Some(vif)));
                }
            }
            // (*,*): forwards only to its parent, and only from elsewhere
            if let Some((parent, oifs)) = proxy(vif) {
                if proxy(*parent).is_none() && *parent != vif {
                    return Some(vec![]); // wrong interface: dropped
                }
                let up = oifs
                    .iter()
                    .find(|(o, _)| o == parent)
                    .map_or(255, |(_, t)| *t);
                return Some(
                    if *parent != vif && ttl > up && self.vifs.contains_key(parent) {
                        vec![*parent]
                    } else {
                        vec![]
                    },
                );
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeMroute;
    use super::*;
    use crate::kernel::mroute::SgCount;

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

    #[test]
    fn rtps_from_pods_goes_to_the_lan_only() {
        let r = router();
        assert_eq!(r.kernel().forward(1, POD, SPDP, 2), Some(vec![0]));
    }

    #[test]
    fn rtps_from_the_lan_goes_to_pods_never_back_to_the_lan() {
        let r = router();
        assert_eq!(
            r.kernel().forward(0, LAPTOP, SPDP, 2),
            Some(vec![1]),
            "LAN -> LAN would duplicate on every node"
        );
    }

    #[test]
    fn ttl_1_is_not_forwarded() {
        // the TTL rule raises RTPS TTL 1 to 2 before routing; what is still 1 dies here
        let r = router();
        assert_eq!(r.kernel().forward(1, POD, SPDP, 1), Some(vec![]));
    }

    #[test]
    fn other_groups_are_caught_and_dropped_without_upcalls() {
        let r = router();
        for i in 0..5000u32 {
            let g = Ipv4Addr::from(u32::from(Ipv4Addr::new(239, 1, 0, 0)) + i);
            assert_eq!(r.kernel().forward(1, POD, g, 32), Some(vec![]), "{g}");
            assert_eq!(r.kernel().forward(0, LAPTOP, g, 32), Some(vec![]), "{g}");
        }
        // spoofed sources on an RTPS group: one entry serves them all
        for i in 0..1000u32 {
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 9, 0, 0)) + i);
            assert_eq!(r.kernel().forward(0, src, SPDP, 2), Some(vec![1]));
        }
        assert_eq!(r.kernel().mfc.len(), 2, "the catch-all and one (*,G)");
        r.kernel().counts.borrow_mut().insert(
            (ANY, ANY),
            SgCount {
                packets: 7,
                bytes: 700,
                wrong_if: 7,
            },
        );
        assert_eq!(r.dropped().0, 7);
        assert_eq!(r.upcalls(), 0);
    }

    #[test]
    fn the_routes_are_bounded_by_the_config() {
        let mut r = Router::new(FakeMroute::default(), vec![SPDP, SSDP]);
        r.set_vifs(two_vifs()).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.kernel().mfc.len(), 3);
        assert_eq!(r.kernel().mfc[&(ANY, ANY)].0, NO_VIF);
    }

    #[test]
    fn upcalls_reinstall_lost_routes() {
        let mut r = router();
        // another MRT_* user flushed the table
        r.kernel.mfc.clear();
        assert_eq!(r.kernel().forward(1, POD, SPDP, 2), None, "an upcall");
        let up = Upcall {
            kind: UpcallKind::NoCache,
            vif: 1,
            src: POD,
            group: SPDP,
        };
        r.handle(up, Instant::now()).unwrap();
        assert_eq!(r.kernel().forward(1, POD, SPDP, 2), Some(vec![0]));
        assert_eq!(r.upcalls(), 1);
    }

    #[test]
    fn vif_change_reinstalls_entries() {
        let mut r = router();
        let same = r.vifs().to_vec();
        assert!(!r.set_vifs(same).unwrap(), "no change");
        assert_eq!(r.len(), 2);
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
        assert_eq!(r.kernel().vifs[&1], 9);
        assert_eq!(r.kernel().forward(1, POD, SPDP, 2), Some(vec![0]));
        assert_eq!(r.kernel().mfc.len(), 2);
    }

    #[test]
    fn group_reload_moves_the_entries_and_keeps_counts() {
        let mut r = router();
        r.kernel().counts.borrow_mut().insert(
            (ANY, SPDP),
            SgCount {
                packets: 3,
                bytes: 300,
                wrong_if: 0,
            },
        );
        r.set_groups(vec![SSDP]).unwrap();
        assert_eq!(
            r.kernel().forward(1, POD, SPDP, 2),
            Some(vec![]),
            "no longer routed"
        );
        assert_eq!(
            r.kernel().forward(1, POD, SSDP, 2),
            Some(vec![0]),
            "now routed"
        );
        assert_eq!(
            r.forwarded()[&SPDP],
            (3, 300),
            "counts of the removed entry stay"
        );
    }

    #[test]
    fn without_lan_multicast_pods_rtps_stays_off_the_lan_but_the_lans_reaches_pods() {
        let mut r = router();
        r.set_lan_multicast(false).unwrap();
        assert_eq!(
            r.kernel().forward(1, POD, SPDP, 2),
            Some(vec![]),
            "pods -> LAN: the relay carries it"
        );
        assert_eq!(
            r.kernel().forward(0, LAPTOP, SPDP, 2),
            Some(vec![1]),
            "LAN -> pods still routed (the uplink stays in the static tree)"
        );
        assert_eq!(r.kernel().mfc[&(ANY, SPDP)].1, vec![(1, TTL_THRESHOLD)]);
        assert_eq!(
            r.kernel().mfc[&(ANY, ANY)].1.len(),
            2,
            "the catch-all keeps both VIFs"
        );
        // other groups still caught
        let other = Ipv4Addr::new(239, 1, 2, 3);
        assert_eq!(r.kernel().forward(1, POD, other, 32), Some(vec![]));
        assert_eq!(r.kernel().mfc.len(), 2);
        // and back
        r.set_lan_multicast(true).unwrap();
        assert_eq!(r.kernel().forward(1, POD, SPDP, 2), Some(vec![0]));
        // a VIF change keeps the setting
        let vifs = r.vifs().to_vec();
        r.set_lan_multicast(false).unwrap();
        r.flush();
        r.set_vifs(vifs).unwrap();
        assert_eq!(r.kernel().forward(1, POD, SPDP, 2), Some(vec![]));
    }

    #[test]
    fn flush_removes_everything() {
        let mut r = router();
        r.flush();
        assert!(r.is_empty() && r.kernel().mfc.is_empty());
    }

    #[test]
    fn kernel_errors_are_reported_not_recorded() {
        let mut r = Router::new(
            FakeMroute {
                fail_add_mfc: true,
                ..Default::default()
            },
            vec![SPDP],
        );
        assert!(r.set_vifs(two_vifs()).is_err());
        assert!(r.is_empty());
    }
}
