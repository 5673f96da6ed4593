//! The multicast forwarder: what copies RTPS multicast between the uplink
//! and the node's pods (routed mode). Two implementations behind one trait:
//!
//! - [`Kind::Kernel`]: the kernel's IPv4 multicast routing (`MRT_INIT`,
//!   `CONFIG_IP_MROUTE`), static (*,G) routes between two VIFs
//!   ([`crate::mroute::Router`]); forward counters from `ip ros2_cni_count`.
//! - [`Kind::Nftables`]: `dup` rules in `ip ros2_cni_fwd`
//!   ([`crate::firewall::dup`]), for kernels built without multicast routing
//!   (many embedded and vendor ARM kernels, some VM kernels). Same
//!   guarantees: exactly once, never back where a packet came from, the
//!   source address kept, TTL lowered by one, the out device's own MAC, no
//!   state per group or per source.
//!
//! Both need the TTL rule (`ip ros2_cni`) for TTL-1 discovery and the same
//! IGMP membership reports on the uplink (a raw IGMP socket; for the kernel
//! forwarder it is the routing socket itself).
//!
//! The agent sees only [`Forwarder`]: it chooses one at start
//! ([`choose`], config `multicastForwarder`), keeps the nf_tables side in
//! step on every reconcile pass ([`sync_tables`], off the state lock) and
//! hands what that read back ([`Forwarder::observe`]). IPv6 can be added as
//! a third implementation (its groups are link-local or scoped, which the
//! nftables forwarder can copy without `CONFIG_IPV6_MROUTE`).

use crate::api;
use crate::firewall::{self, dup, Forwarded};
use crate::kernel::mroute::{MrouteSocket, Upcall};
use crate::kernel::nft::{Nfnl, NFPROTO_IPV4};
use crate::kernel::rtnl::Link;
use crate::mroute::{Decision, Role, Router, Vif};
use std::io;
use std::net::Ipv4Addr;

/// `multicastForwarder`: which forwarder the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    /// The kernel's multicast routing where the kernel has it, else nftables.
    #[default]
    Auto,
    Kernel,
    Nftables,
}

impl Choice {
    pub fn parse(s: &str) -> Option<Choice> {
        match s {
            "auto" => Some(Choice::Auto),
            "kernel" => Some(Choice::Kernel),
            "nftables" => Some(Choice::Nftables),
            _ => None,
        }
    }
}

/// The forwarder running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kernel,
    Nftables,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Kernel => "kernel",
            Kind::Nftables => "nftables",
        }
    }
}

/// Why no forwarder could start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("multicastForwarder is \"kernel\", but this kernel has no IPv4 multicast routing (CONFIG_IP_MROUTE is not set; MRT_INIT: {0}); set multicastForwarder to \"auto\" or \"nftables\" to forward with nftables dup rules instead (CONFIG_NFT_DUP_IPV4)")]
    NoKernelRouting(io::Error),
    #[error("multicast routing: another multicast router (smcroute, pimd, or a second agent) holds this network namespace's multicast routing ({0}); stop it, or set multicastForwarder to \"nftables\" only if it does not route the RTPS groups too (every packet would be forwarded twice)")]
    Busy(io::Error),
    #[error("multicast routing: {0}")]
    Kernel(io::Error),
    #[error("IGMP socket (membership reports for IGMP-snooping switches): {0}")]
    Igmp(io::Error),
    /// The forwarder's nf_tables side failed.
    #[error("{0}")]
    Tables(String),
}

/// The error of [`sync_tables`], with what a missing kernel feature means:
/// the nftables forwarder needs `dup` for IPv4 (`CONFIG_NFT_DUP_IPV4`).
pub fn nft_unsupported(kind: Kind, e: crate::kernel::Error) -> Error {
    let missing = matches!(
        e.errno(),
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) | Some(libc::EAFNOSUPPORT)
    );
    Error::Tables(match kind {
        Kind::Nftables if missing => format!(
            "{e}: the nftables forwarder needs nf_tables' dup expression for IPv4 (CONFIG_NFT_DUP_IPV4, module nft_dup_ipv4); without it and without multicast routing (CONFIG_IP_MROUTE) no RTPS multicast crosses this node (pods on the node still discover each other; the relay still carries discovery to and from its peers)"
        ),
        _ => format!("{} forwarder: {e}", kind.as_str()),
    })
}

/// Which forwarder to run and why, given what opening the kernel's
/// multicast routing gave (`open` is called only when the choice allows
/// the kernel forwarder). Pure apart from `open`, so it is unit-tested.
pub fn decide<T>(
    choice: Choice,
    open: impl FnOnce() -> io::Result<T>,
) -> Result<(Kind, Option<T>, String), Error> {
    let no_routing = |e: &io::Error| e.raw_os_error() == Some(libc::ENOPROTOOPT);
    match choice {
        Choice::Nftables => Ok((
            Kind::Nftables,
            None,
            "multicastForwarder is \"nftables\"".into(),
        )),
        Choice::Kernel => match open() {
            Ok(s) => Ok((
                Kind::Kernel,
                Some(s),
                "multicastForwarder is \"kernel\"".into(),
            )),
            Err(e) if no_routing(&e) => Err(Error::NoKernelRouting(e)),
            Err(e) => Err(busy_or(e)),
        },
        Choice::Auto => match open() {
            Ok(s) => Ok((
                Kind::Kernel,
                Some(s),
                "the kernel has IPv4 multicast routing (multicastForwarder \"auto\")".into(),
            )),
            Err(e) if no_routing(&e) => Ok((
                Kind::Nftables,
                None,
                format!(
                    "the kernel has no IPv4 multicast routing (CONFIG_IP_MROUTE; MRT_INIT: {e}): forwarding with nftables dup rules (multicastForwarder \"auto\")"
                ),
            )),
            Err(e) => Err(busy_or(e)),
        },
    }
}

fn busy_or(e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EADDRINUSE) {
        Error::Busy(e)
    } else {
        Error::Kernel(e)
    }
}

/// What a reconcile pass read of the forwarder's nf_tables state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Per (group, direction): packets and bytes forwarded.
    pub forwarded: Forwarded,
    /// Other multicast arriving (nftables forwarder; the kernel forwarder's
    /// catch-all route counts it itself).
    pub not_rtps: Option<u64>,
}

/// The forwarder as the agent uses it. Calls that change the kernel's
/// multicast routing run under the agent's state lock and are cheap when
/// nothing changed; the nf_tables work is [`sync_tables`], off the lock.
pub trait Forwarder: Send {
    fn kind(&self) -> Kind;
    /// Follows the interfaces; true when that changed the forwarding.
    fn set_interfaces(&mut self, uplink: &Link, pods: &Link) -> io::Result<bool>;
    fn set_groups(&mut self, groups: &[Ipv4Addr]) -> io::Result<()>;
    fn set_lan_multicast(&mut self, on: bool) -> io::Result<()>;
    /// A multicast-routing upcall (kernel forwarder only; none expected).
    fn handle_upcall(&mut self, up: Upcall) -> io::Result<Decision>;
    /// What the last reconcile pass read (counters).
    fn observe(&mut self, seen: &Seen);
    /// One entry per group, with its counters (both directions).
    fn routes(&self) -> Vec<api::Route>;
    /// The two interfaces with their counters.
    fn vifs(&self) -> Vec<api::Vif>;
    /// (other multicast arriving, RTPS multicast arriving on the wrong interface).
    fn dropped(&self) -> (u64, u64);
    fn upcalls(&self) -> u64;
    /// Forwarding entries in place (the kernel forwarder's catch-all included).
    fn route_count(&self) -> usize;
    /// The raw IGMP socket: membership reports out, queries (and the
    /// kernel forwarder's upcalls) in. None in unit tests.
    fn socket(&self) -> Option<&MrouteSocket>;
    /// SIGTERM: stop forwarding (the kernel forwarder's routes go; the
    /// nftables table is removed by [`remove_tables`]).
    fn stop(&mut self);
}

/// The two interfaces a forwarder joins.
pub fn vifs_for(uplink: &Link, pods: &Link) -> Vec<Vif> {
    vec![
        Vif {
            name: uplink.name.clone(),
            ifindex: uplink.index,
            role: Role::Uplink,
        },
        Vif {
            name: pods.name.clone(),
            ifindex: pods.index,
            role: Role::Pods,
        },
    ]
}

/// The kernel's multicast routing.
pub struct KernelForwarder {
    router: Router<MrouteSocket>,
}

impl KernelForwarder {
    pub fn new(sock: MrouteSocket, groups: Vec<Ipv4Addr>) -> Self {
        KernelForwarder {
            router: Router::new(sock, groups),
        }
    }
}

impl Forwarder for KernelForwarder {
    fn kind(&self) -> Kind {
        Kind::Kernel
    }
    fn set_interfaces(&mut self, uplink: &Link, pods: &Link) -> io::Result<bool> {
        self.router.set_vifs(vifs_for(uplink, pods))
    }
    fn set_groups(&mut self, groups: &[Ipv4Addr]) -> io::Result<()> {
        self.router.set_groups(groups.to_vec())
    }
    fn set_lan_multicast(&mut self, on: bool) -> io::Result<()> {
        self.router.set_lan_multicast(on)
    }
    fn handle_upcall(&mut self, up: Upcall) -> io::Result<Decision> {
        self.router.handle(up, std::time::Instant::now())
    }
    fn observe(&mut self, _seen: &Seen) {}
    fn routes(&self) -> Vec<api::Route> {
        self.router.routes()
    }
    fn vifs(&self) -> Vec<api::Vif> {
        use crate::kernel::mroute::Mroute;
        self.router
            .vifs()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let c = self.router.kernel().vif_count(i as u16).unwrap_or_default();
                api::Vif {
                    vif: i as u16,
                    name: v.name.clone(),
                    ifindex: v.ifindex,
                    role: role_name(v.role).to_owned(),
                    in_packets: c.in_packets,
                    out_packets: c.out_packets,
                }
            })
            .collect()
    }
    fn dropped(&self) -> (u64, u64) {
        self.router.dropped()
    }
    fn upcalls(&self) -> u64 {
        self.router.upcalls()
    }
    fn route_count(&self) -> usize {
        self.router.len()
    }
    fn socket(&self) -> Option<&MrouteSocket> {
        Some(self.router.kernel())
    }
    fn stop(&mut self) {
        self.router.flush();
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Uplink => "uplink",
        Role::Pods => "pods",
    }
}

/// The nftables forwarder: the rules are made by [`sync_tables`]; this
/// keeps what the status needs (interfaces, groups, last counters) and the
/// IGMP socket.
pub struct NftForwarder {
    igmp: Option<MrouteSocket>,
    groups: Vec<Ipv4Addr>,
    vifs: Vec<Vif>,
    seen: Seen,
}

impl NftForwarder {
    pub fn new(igmp: Option<MrouteSocket>, groups: Vec<Ipv4Addr>) -> Self {
        NftForwarder {
            igmp,
            groups,
            vifs: vec![],
            seen: Seen::default(),
        }
    }

    /// Packets forwarded each way, as (in on the interface, out of it).
    fn per_interface(&self, role: Role) -> (u64, u64) {
        let (mut into, mut out) = (0, 0);
        for ((_, dir), (p, _)) in &self.seen.forwarded {
            let from_lan = *dir == "lan_to_pods";
            if from_lan == (role == Role::Uplink) {
                into += p;
            } else {
                out += p;
            }
        }
        (into, out)
    }
}

impl Forwarder for NftForwarder {
    fn kind(&self) -> Kind {
        Kind::Nftables
    }
    fn set_interfaces(&mut self, uplink: &Link, pods: &Link) -> io::Result<bool> {
        let want = vifs_for(uplink, pods);
        let changed = want != self.vifs;
        self.vifs = want;
        Ok(changed)
    }
    fn set_groups(&mut self, groups: &[Ipv4Addr]) -> io::Result<()> {
        self.groups = groups.to_vec();
        Ok(())
    }
    fn set_lan_multicast(&mut self, _on: bool) -> io::Result<()> {
        Ok(()) // the rules follow the config in sync_tables
    }
    fn handle_upcall(&mut self, _up: Upcall) -> io::Result<Decision> {
        Ok(Decision::Ignore("no kernel multicast routing"))
    }
    fn observe(&mut self, seen: &Seen) {
        self.seen = seen.clone();
    }
    fn routes(&self) -> Vec<api::Route> {
        let names: Vec<String> = self.vifs.iter().map(|v| v.name.clone()).collect();
        self.groups
            .iter()
            .map(|g| {
                let (mut packets, mut bytes) = (0, 0);
                for ((fg, _), (p, b)) in &self.seen.forwarded {
                    if fg == g {
                        packets += p;
                        bytes += b;
                    }
                }
                api::Route {
                    source: Ipv4Addr::UNSPECIFIED,
                    group: *g,
                    iif: names.join(","),
                    oifs: names.clone(),
                    packets,
                    bytes,
                    wrong_if: 0,
                }
            })
            .collect()
    }
    fn vifs(&self) -> Vec<api::Vif> {
        self.vifs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (in_packets, out_packets) = self.per_interface(v.role);
                api::Vif {
                    vif: i as u16,
                    name: v.name.clone(),
                    ifindex: v.ifindex,
                    role: role_name(v.role).to_owned(),
                    in_packets,
                    out_packets,
                }
            })
            .collect()
    }
    fn dropped(&self) -> (u64, u64) {
        (self.seen.not_rtps.unwrap_or(0), 0)
    }
    fn upcalls(&self) -> u64 {
        0
    }
    fn route_count(&self) -> usize {
        if self.vifs.is_empty() {
            0
        } else {
            self.groups.len()
        }
    }
    fn socket(&self) -> Option<&MrouteSocket> {
        self.igmp.as_ref()
    }
    fn stop(&mut self) {}
}

/// Opens the forwarder `choice` allows: the kernel's when it may and can,
/// else nftables'. A killed agent's routing socket is released only once
/// that process is gone: EADDRINUSE is retried for up to `wait`.
pub fn open(
    choice: Choice,
    groups: &[Ipv4Addr],
    wait: std::time::Duration,
) -> Result<(Box<dyn Forwarder>, String), Error> {
    let start = std::time::Instant::now();
    let open_kernel = || loop {
        match MrouteSocket::open() {
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) && start.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            r => return r,
        }
    };
    let (kind, sock, why) = decide(choice, open_kernel)?;
    Ok(match (kind, sock) {
        (Kind::Kernel, Some(sock)) => (Box::new(KernelForwarder::new(sock, groups.to_vec())), why),
        _ => {
            let igmp = MrouteSocket::open_igmp().map_err(Error::Igmp)?;
            (
                Box::new(NftForwarder::new(Some(igmp), groups.to_vec())),
                why,
            )
        }
    })
}

/// The nf_tables side of the forwarder `kind` (off the state lock): the
/// kernel forwarder's count table, or the nftables forwarder's dup table,
/// made to match the config and the interfaces, the other one removed; then
/// their counters read.
pub fn sync_tables(
    nf: &mut Nfnl,
    kind: Kind,
    carry: &Carry,
    uplink: &Link,
    pods: &Link,
) -> Result<Seen, crate::kernel::Error> {
    fn dev(l: &Link) -> dup::Dev<'_> {
        dup::Dev {
            name: &l.name,
            index: l.index,
        }
    }
    // the dup table: every group with the nftables forwarder; beside the
    // kernel's routing only the extra pairs (link-local groups, which no
    // kernel routes)
    let rtps = match kind {
        Kind::Kernel => None,
        Kind::Nftables => Some(carry.groups.as_slice()),
    };
    let mut forwarded = Forwarded::new();
    let mut not_rtps = None;
    if rtps.is_none() && carry.extra.is_empty() {
        nf.delete_table(NFPROTO_IPV4, dup::TABLE)?;
    } else {
        let spec = dup::spec(
            dup::Carry {
                rtps,
                extra: &carry.extra,
            },
            &dev(uplink),
            &dev(pods),
            carry.lan_multicast,
        );
        if firewall::ensure_table(nf, &spec)? {
            tracing::info!(
                "{} forwarder: groups {:?} and {:?} between {} and {} (ip {})",
                kind.as_str(),
                rtps.unwrap_or_default(),
                carry.extra,
                uplink.name,
                pods.name,
                dup::TABLE
            );
        }
        let (f, other) = dup::counted(&nf.rules(NFPROTO_IPV4, dup::TABLE)?);
        forwarded = f;
        not_rtps = rtps.map(|_| other);
    }
    match kind {
        Kind::Kernel => {
            let count = firewall::count_spec(&carry.groups, &uplink.name, &pods.name);
            firewall::ensure_table(nf, &count)?;
            for (k, (p, b)) in firewall::forwarded(nf)? {
                let t = forwarded.entry(k).or_insert((0, 0));
                t.0 += p;
                t.1 += b;
            }
        }
        Kind::Nftables => {
            nf.delete_table(NFPROTO_IPV4, firewall::COUNT_TABLE)?;
        }
    }
    Ok(Seen {
        forwarded,
        not_rtps,
    })
}

/// What the forwarders carry, from the config.
#[derive(Debug, Clone, Default)]
pub struct Carry {
    /// The RTPS groups (every UDP port).
    pub groups: Vec<Ipv4Addr>,
    /// `extraMulticast`: (group, UDP port).
    pub extra: Vec<(Ipv4Addr, u16)>,
    /// `lanMulticast`.
    pub lan_multicast: bool,
}

/// Removes both forwarders' tables (SIGTERM, macvlan mode).
pub fn remove_tables(nf: &mut Nfnl) -> Result<bool, crate::kernel::Error> {
    let a = nf.delete_table(NFPROTO_IPV4, dup::TABLE)?;
    let b = nf.delete_table(NFPROTO_IPV4, firewall::COUNT_TABLE)?;
    Ok(a || b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i32) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(code))
    }

    #[test]
    fn auto_takes_the_kernel_router_where_there_is_one() {
        let (kind, sock, why) = decide(Choice::Auto, || Ok(())).unwrap();
        assert_eq!((kind, sock), (Kind::Kernel, Some(())));
        assert!(why.contains("has IPv4 multicast routing"), "{why}");
    }

    #[test]
    fn auto_falls_back_to_nftables_without_multicast_routing_and_says_why() {
        let (kind, sock, why) = decide(Choice::Auto, || err(libc::ENOPROTOOPT)).unwrap();
        assert_eq!((kind, sock), (Kind::Nftables, None));
        assert!(why.contains("CONFIG_IP_MROUTE"), "{why}");
    }

    #[test]
    fn nftables_never_touches_the_kernel_router() {
        let (kind, _, _) = decide::<()>(Choice::Nftables, || panic!("opened")).unwrap();
        assert_eq!(kind, Kind::Nftables);
    }

    #[test]
    fn forced_kernel_without_routing_names_the_option_and_the_way_out() {
        let e = decide(Choice::Kernel, || err(libc::ENOPROTOOPT)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("CONFIG_IP_MROUTE"), "{msg}");
        assert!(msg.contains("\"nftables\""), "{msg}");
        assert!(!msg.contains("smcroute"), "{msg}");
    }

    #[test]
    fn another_router_is_named_only_when_the_kernel_says_busy() {
        for choice in [Choice::Auto, Choice::Kernel] {
            let e = decide(choice, || err(libc::EADDRINUSE)).unwrap_err();
            assert!(matches!(e, Error::Busy(_)), "{e}");
            assert!(e.to_string().contains("smcroute"));
            let e = decide(choice, || err(libc::EPERM)).unwrap_err();
            assert!(matches!(e, Error::Kernel(_)), "{e}");
            assert!(!e.to_string().contains("smcroute"), "{e}");
        }
    }

    #[test]
    fn choice_names() {
        assert_eq!(Choice::parse("auto"), Some(Choice::Auto));
        assert_eq!(Choice::parse("kernel"), Some(Choice::Kernel));
        assert_eq!(Choice::parse("nftables"), Some(Choice::Nftables));
        assert_eq!(Choice::parse("ipmr"), None);
    }

    fn link(name: &str, index: u32) -> Link {
        Link {
            index,
            name: name.into(),
            flags: netlink_packet_route::link::LinkFlags::empty(),
            mac: None,
            controller: None,
            parent: None,
            kind: None,
            mtu: None,
        }
    }

    #[test]
    fn the_nftables_forwarder_reports_routes_and_interfaces_from_its_counters() {
        let g = Ipv4Addr::new(239, 255, 0, 1);
        let mut f = NftForwarder::new(None, vec![g]);
        assert!(f
            .set_interfaces(&link("eth0", 2), &link("ros2br0", 7))
            .unwrap());
        assert!(!f
            .set_interfaces(&link("eth0", 2), &link("ros2br0", 7))
            .unwrap());
        let mut seen = Seen::default();
        seen.forwarded.insert((g, "pods_to_lan"), (3, 300));
        seen.forwarded.insert((g, "lan_to_pods"), (5, 500));
        seen.not_rtps = Some(9);
        f.observe(&seen);
        let r = f.routes();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].packets, r[0].bytes), (8, 800));
        assert_eq!(r[0].oifs, ["eth0", "ros2br0"]);
        let v = f.vifs();
        // the uplink: 5 in from the LAN, 3 out to it; the bridge the reverse
        assert_eq!((v[0].in_packets, v[0].out_packets), (5, 3));
        assert_eq!((v[1].in_packets, v[1].out_packets), (3, 5));
        assert_eq!(f.dropped(), (9, 0));
        assert_eq!(f.kind(), Kind::Nftables);
    }
}
