//! `ros2-cni doctor`: what the node looks like, and why discovery fails.
//!
//! It gathers the agent's status and participant table (through
//! [`crate::api`]), the conflist entry, the attached pods, and turns them
//! into findings: each a plain-language cause and a fix, with a stable code
//! (see docs/troubleshooting.md).

use crate::api::{self, DiscoveryLimits, Participant, Participants, Pressure, Relay, Status};
use crate::config::{Config, Mode, Pool};
use crate::ipam::Store;
use ipnet::Ipv4Net;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long after its last drop a pod (or the uplink) still counts as
/// "being limited".
pub const RECENT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
}

impl Finding {
    fn new(code: &'static str, severity: Severity, message: String) -> Finding {
        Finding {
            code,
            severity,
            message,
        }
    }
}

/// Everything doctor looked at.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub subnet: Option<Ipv4Net>,
    pub mode: Option<Mode>,
    pub raise_ttl: bool,
    /// The agent's status document, or why it could not be had.
    pub status: Result<Status, String>,
    /// The agent's participant document.
    pub participants: Option<Participants>,
    /// (conflist path, has a ros2-cni entry), when a conf dir was looked at.
    pub conflist: Option<(PathBuf, bool)>,
    /// Attached pods: (name, address, netns path, has its interface: None if the netns is gone).
    pub pods: Vec<PodCheck>,
    /// What this node's kernel offers.
    pub kernel: KernelCheck,
    /// This node's name (the config's, else the agent's), if known.
    pub node: Option<String>,
    /// The other nodes of the cluster form, to tell their pods' and their
    /// own addresses among the LAN senders.
    pub cluster: Vec<ClusterNode>,
    /// The RTPS multicast groups (`groups`).
    pub groups: Vec<Ipv4Addr>,
    /// The node's Zenoh router (`zenohRouter`): its address and whether it
    /// accepted a TCP connection (Err: why not); None when not configured.
    pub zenoh_router: Option<(String, Result<(), String>)>,
    /// The multicast carried beyond RTPS (`extraMulticast`).
    pub extra_multicast: Vec<(Ipv4Addr, u16)>,
}

/// Another node of the cluster form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    pub pool: Option<Pool>,
    /// Its uplink address (`address`).
    pub address: Option<Ipv4Addr>,
}

/// What the kernel offers ros2-cni, probed on this node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KernelCheck {
    /// `uname -r`.
    pub release: String,
    /// IPv4 multicast routing (`CONFIG_IP_MROUTE`): None when it could not
    /// be told; Some(Err) says why not.
    pub multicast_routing: Option<Result<(), String>>,
}

impl KernelCheck {
    pub fn probe() -> KernelCheck {
        KernelCheck {
            release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            multicast_routing: Some(crate::kernel::mroute::MrouteSocket::probe().map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOPROTOOPT) {
                    format!("not built in (CONFIG_IP_MROUTE is not set; MRT_INIT: {e})")
                } else {
                    format!("MRT_INIT: {e}")
                }
            })),
        }
    }
}

/// The kernel section: what the kernel offers, which forwarder and fast
/// path run, and why.
fn kernel_lines(inp: &Inputs) -> Vec<String> {
    let mut out = vec![format!("kernel: Linux {}", inp.kernel.release)];
    out.push(match &inp.kernel.multicast_routing {
        Some(Ok(())) => "  multicast routing (CONFIG_IP_MROUTE): available".into(),
        Some(Err(why)) => format!("  multicast routing (CONFIG_IP_MROUTE): {why}"),
        None => "  multicast routing (CONFIG_IP_MROUTE): not probed".into(),
    });
    if let Ok(st) = &inp.status {
        out.push(match &st.forwarder.kind {
            Some(k) => format!("  forwarder: {k} ({})", st.forwarder.reason),
            None if st.forwarder.reason.is_empty() => "  forwarder: none".into(),
            None => format!("  forwarder: none ({})", st.forwarder.reason),
        });
        let fp = &st.fast_path;
        out.push(match (&fp.unavailable, fp.enabled) {
            (Some(why), _) => format!(
                "  fast path (tc cls_bpf, BPF): unavailable, pods use the normal path: {why}"
            ),
            (None, false) => "  fast path (tc cls_bpf, BPF): off".into(),
            (None, true) => format!(
                "  fast path (tc cls_bpf, BPF): {} on the uplink, {} pod(s)",
                if fp.lan { "attached" } else { "not attached" },
                fp.pods
            ),
        });
    }
    out
}

impl Inputs {
    /// The participants in the agent's table (none without one).
    pub fn participants(&self) -> &[Participant] {
        self.participants
            .as_ref()
            .map_or(&[], |p| p.participants.as_slice())
    }

    /// The Zenoh sessions the agent saw scouting.
    pub fn zenoh_scouts(&self) -> &[api::ZenohScout] {
        self.participants
            .as_ref()
            .map_or(&[], |p| p.zenoh_scouts.as_slice())
    }

    /// The multicast senders in the agent's table.
    fn sources(&self) -> &[api::Source] {
        self.participants
            .as_ref()
            .map_or(&[], |p| p.sources.as_slice())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCheck {
    pub pod: String,
    pub ip: Ipv4Addr,
    pub interface: String,
    pub netns: String,
    /// None when the pod's network namespace no longer exists.
    pub has_interface: Option<bool>,
    /// Its UDP sockets and multicast memberships, read in its network
    /// namespace (None: not read).
    #[serde(skip)]
    pub sockets: Option<PodSockets>,
}

/// What a pod's own sockets say about its DDS, read in its network
/// namespace: the addresses of its interfaces, its bound UDP sockets and
/// the multicast groups joined on each interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSockets {
    /// Interface name -> its IPv4 addresses.
    pub addresses: BTreeMap<String, Vec<Ipv4Addr>>,
    /// UDP sockets by local address and port (`/proc/net/udp`).
    pub udp: Vec<SocketAddrV4>,
    /// Interface name -> IPv4 multicast groups joined on it (`/proc/net/igmp`).
    pub joined: BTreeMap<String, Vec<Ipv4Addr>>,
    /// The first port of `net.ipv4.ip_local_port_range`: ports from it on
    /// are ephemeral, not RTPS well-known ports.
    pub ephemeral_from: u16,
}

/// An address as `/proc/net/udp` and `/proc/net/igmp` print it: the
/// network-order word in hex, as the host reads it.
fn proc_addr(hex: &str) -> Option<Ipv4Addr> {
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(u32::from_be(v)))
}

/// The local addresses of the sockets in `/proc/net/udp`.
pub fn parse_proc_udp(text: &str) -> Vec<SocketAddrV4> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let local = l.split_whitespace().nth(1)?;
            let (a, p) = local.split_once(':')?;
            Some(SocketAddrV4::new(
                proc_addr(a)?,
                u16::from_str_radix(p, 16).ok()?,
            ))
        })
        .collect()
}

/// The groups joined per interface in `/proc/net/igmp`.
pub fn parse_proc_igmp(text: &str) -> BTreeMap<String, Vec<Ipv4Addr>> {
    let mut out: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut dev: Option<String> = None;
    for l in text.lines().skip(1) {
        if l.starts_with(char::is_whitespace) {
            if let (Some(d), Some(g)) = (&dev, l.split_whitespace().next().and_then(proc_addr)) {
                out.entry(d.clone()).or_default().push(g);
            }
        } else {
            // "2\teth0      :     1      V3"
            dev = l
                .split_once(':')
                .and_then(|(head, _)| head.split_whitespace().nth(1))
                .map(str::to_owned);
        }
    }
    out
}

impl PodSockets {
    /// Reads them in the network namespace at `netns`: the addresses over
    /// rtnetlink, the `/proc` files from a short-lived thread that entered
    /// it (`/proc/thread-self`, since `/proc/self` is the process's).
    pub fn read(netns: &str) -> Result<PodSockets, String> {
        let ns = crate::kernel::netns::Netns::open(netns).map_err(|e| e.to_string())?;
        let mut h = crate::kernel::rtnl::Handle::open_in(&ns).map_err(|e| e.to_string())?;
        let mut addresses = BTreeMap::new();
        for l in h.links().map_err(|e| e.to_string())? {
            let a = h.addresses4(l.index).map_err(|e| e.to_string())?;
            addresses.insert(l.name, a.into_iter().map(|(ip, _)| ip).collect());
        }
        let (udp, igmp, range) = ns
            .run(|| {
                let read = |f: &str| std::fs::read_to_string(format!("/proc/thread-self/{f}"));
                (
                    read("net/udp"),
                    read("net/igmp"),
                    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range"),
                )
            })
            .map_err(|e| e.to_string())?;
        let udp = udp.map_err(|e| format!("/proc/net/udp: {e}"))?;
        Ok(PodSockets {
            addresses,
            udp: parse_proc_udp(&udp),
            joined: igmp.map(|t| parse_proc_igmp(&t)).unwrap_or_default(),
            ephemeral_from: range
                .ok()
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
                .unwrap_or(32768),
        })
    }

    /// The interface holding `ip` (the loopback for 127/8).
    fn interface_of(&self, ip: Ipv4Addr) -> Option<&str> {
        self.addresses
            .iter()
            .find(|(_, a)| a.contains(&ip))
            .map(|(n, _)| n.as_str())
            .or_else(|| ip.is_loopback().then_some("lo"))
    }

    /// An RTPS well-known port (7400 + 250d, 7401 + 250d, 7410 + 250d + 2p,
    /// ...) below the ephemeral range.
    fn rtps_port(&self, port: u16) -> bool {
        port < self.ephemeral_from && crate::rtps::ports::classify_port(port).is_some()
    }
}

/// A pod whose DDS runs on another interface than its LAN one: its
/// participant never announces itself on the LAN (SILENT_PARTICIPANT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Silent {
    pub pod: String,
    /// Its LAN interface (ros0).
    pub lan_interface: String,
    /// The RTPS ports its sockets hold.
    pub ports: Vec<u16>,
    /// The interfaces its DDS uses instead, with what shows it.
    pub elsewhere: BTreeMap<String, Vec<String>>,
}

impl Silent {
    /// Why the pod is isolated, in a few words (the graph's note).
    pub fn reason(&self) -> String {
        format!(
            "silent participant: DDS uses {}, not {}; it sends no discovery there",
            self.elsewhere
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            self.lan_interface
        )
    }
}

/// Whether `p`'s DDS runs elsewhere than on its LAN interface: it has UDP
/// sockets on RTPS ports, none of its sockets is bound to the LAN
/// interface's address and no RTPS group is joined there, and a socket is
/// bound to another interface's address or an RTPS group is joined on
/// another interface (what DDS pinned to an interface does: Cyclone DDS
/// binds its sending socket to the address and joins there).
fn silent_of(p: &PodCheck, s: &PodSockets, groups: &[Ipv4Addr]) -> Option<Silent> {
    let ports: BTreeSet<u16> = s
        .udp
        .iter()
        .map(|a| a.port())
        .filter(|port| s.rtps_port(*port))
        .collect();
    if ports.is_empty() {
        return None;
    }
    let rtps_group =
        |g: &Ipv4Addr| groups.contains(g) || *g == crate::rtps::ports::SPDP_MULTICAST_GROUP;
    let lan = p.interface.as_str();
    let on_lan = s.udp.iter().any(|a| s.interface_of(*a.ip()) == Some(lan))
        || s.joined.get(lan).is_some_and(|g| g.iter().any(rtps_group));
    if on_lan {
        return None;
    }
    let mut elsewhere: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in &s.udp {
        if a.ip().is_unspecified() || !(s.rtps_port(a.port()) || a.port() >= s.ephemeral_from) {
            continue;
        }
        if let Some(i) = s.interface_of(*a.ip()) {
            elsewhere
                .entry(i.to_owned())
                .or_default()
                .push(format!("a UDP socket bound to {a}"));
        }
    }
    for (i, gs) in &s.joined {
        for g in gs.iter().filter(|g| rtps_group(g)) {
            elsewhere
                .entry(i.clone())
                .or_default()
                .push(format!("{g} joined there"));
        }
    }
    (!elsewhere.is_empty()).then(|| Silent {
        pod: p.pod.clone(),
        lan_interface: lan.to_owned(),
        ports: ports.into_iter().collect(),
        elsewhere,
    })
}

/// The pods whose DDS runs on another interface than their LAN one and of
/// which the agent's table has no participant (one announcing on the wrong
/// interface is seen there, and is UNREACHABLE_LOCATORS instead).
pub fn silent_participants(inp: &Inputs) -> Vec<Silent> {
    inp.pods
        .iter()
        .filter(|p| p.has_interface == Some(true))
        .filter(|p| {
            !inp.participants()
                .iter()
                .any(|x| x.pod.as_deref() == Some(p.pod.as_str()))
        })
        .filter_map(|p| silent_of(p, p.sockets.as_ref()?, &inp.groups))
        .collect()
}

/// SILENT_PARTICIPANT.
fn silent_findings(inp: &Inputs) -> Vec<Finding> {
    silent_participants(inp)
        .into_iter()
        .map(|s| {
            let ifs: Vec<&str> = s.elsewhere.keys().map(String::as_str).collect();
            let shown: Vec<String> = s
                .elsewhere
                .iter()
                .map(|(i, why)| format!("{i}: {}", why.join(", ")))
                .collect();
            let ports: Vec<String> = s.ports.iter().map(u16::to_string).collect();
            Finding::new(
                "SILENT_PARTICIPANT",
                Severity::Error,
                format!(
                    "Pod {} runs a DDS participant (UDP sockets on RTPS ports {}) on {}, not on {}: \
                     it sends no discovery on {}, so nothing on the robot LAN discovers it and it \
                     discovers no one (the agent has seen no participant of it). Seen in the pod: {}. \
                     Cause: DDS is pinned to {} (CYCLONEDDS_URI naming it, a Fast DDS interface \
                     whitelist{}). Fix: unset the pin, or name {} in it.",
                    s.pod,
                    ports.join(", "),
                    ifs.join(" and "),
                    s.lan_interface,
                    s.lan_interface,
                    shown.join("; "),
                    ifs.join(" and "),
                    if ifs.contains(&"lo") {
                        ", or ROS_LOCALHOST_ONLY=1 for the loopback"
                    } else {
                        ""
                    },
                    s.lan_interface,
                ),
            )
        })
        .collect()
}

fn pod_label(p: &Participant) -> String {
    match &p.pod {
        Some(pod) => format!("pod {pod}"),
        None => format!("{} on {}", p.source, p.seen_on),
    }
}

fn domain_label(p: &Participant) -> String {
    p.domain.map_or_else(|| "?".into(), |d| d.to_string())
}

fn participant_label(p: &Participant) -> String {
    let name = p
        .name
        .as_ref()
        .map(|n| format!(" \"{n}\""))
        .unwrap_or_default();
    format!(
        "participant {}{} ({}, domain {})",
        p.guid_prefix,
        name,
        p.vendor,
        domain_label(p)
    )
}

/// MULTICAST_PRESSURE: the agent sees a flood of multicast to groups that
/// are not routed, naming the interface and the sources (with the pod each
/// source belongs to, when it is one).
fn multicast_pressure(inp: &Inputs, p: &Pressure) -> Option<Finding> {
    if !p.active {
        return None;
    }
    let iface = p
        .interface
        .as_deref()
        .unwrap_or("an interface not sampled yet");
    let rate = p.not_rtps_per_second;
    let sources: Vec<String> = p
        .sources
        .iter()
        .map(|s| {
            let pod = inp
                .pods
                .iter()
                .find(|c| c.ip == s.source)
                .map(|c| format!(" (pod {})", c.pod))
                .unwrap_or_default();
            format!(
                "{}{pod} on {}: {} packets to {} groups",
                s.source, s.interface, s.packets, s.groups
            )
        })
        .collect();
    let who = if sources.is_empty() {
        "sources not sampled yet".to_owned()
    } else {
        format!("sources in a sample: {}", sources.join("; "))
    };
    Some(Finding::new(
        "MULTICAST_PRESSURE",
        Severity::Warning,
        format!(
            "{rate} multicast packets/s to groups that are not routed arrive on {iface} ({who}). They are \
             not forwarded and cannot fill the multicast routes (RTPS discovery is unaffected), but they cost \
             this node and its LAN bandwidth. Fix: stop the sender (a pod: kubectl delete it; a LAN host: find it \
             by its address)."
        ),
    ))
}

/// What `ros2-cni doctor` says about the relay, from the status document's
/// `relay` part: the peers, whether each answers, and the participants
/// (by address) this node's pods hear only through the relay.
fn relay_findings(relay: &Relay) -> Vec<Finding> {
    let mut out = vec![];
    if relay.peers.is_empty() {
        return out;
    }
    if let Some(p) = &relay.problem {
        out.push(Finding::new(
            "RELAY_DOWN",
            Severity::Error,
            format!(
                "The RTPS relay cannot run ({p}): peers get none of this node's pods' discovery. \
                 Fix: free the port or change relayPort on every node."
            ),
        ));
    }
    let mut lines = vec![];
    let mut relayed_only = vec![];
    for p in &relay.peers {
        let addr = p.address;
        lines.push(format!(
            "{addr} (via {}, {}, sent {}, received {})",
            p.via,
            if p.reachable {
                "reachable"
            } else {
                "not heard from"
            },
            p.sent,
            p.received
        ));
        if !p.reachable {
            out.push(Finding::new(
                "RELAY_PEER_UNREACHABLE",
                Severity::Warning,
                format!(
                    "Relay peer {addr} has not been heard from in {} s: its agent is down, the address is \
                     wrong, or UDP {} is filtered between the nodes. Its pods and this node's do not discover \
                     each other through the relay.",
                    crate::relay::PEER_TIMEOUT.as_secs(),
                    relay.port
                ),
            ));
        }
        relayed_only.extend(p.sources.iter().map(|src| format!("{src} (from {addr})")));
    }
    out.push(Finding::new(
        "RELAY_PEERS",
        Severity::Info,
        format!("Relay peers: {}.", lines.join("; ")),
    ));
    if !relayed_only.is_empty() {
        out.push(Finding::new(
            "RELAY_ONLY_PARTICIPANTS",
            Severity::Info,
            format!(
                "Participants this node's pods hear only through the relay (they are not in the \
                 participant table, which sees this node's own traffic): {}.",
                relayed_only.join(", ")
            ),
        ));
    }
    out
}

/// Turns what was gathered into findings, most severe first.
pub fn findings(inp: &Inputs) -> Vec<Finding> {
    let mut out = agent_findings(inp);
    out.extend(conflist_finding(inp));
    out.extend(pod_findings(inp));
    let silent = silent_findings(inp);
    let any_silent = !silent.is_empty();
    out.extend(silent);
    out.extend(locator_findings(inp));
    out.extend(ttl1_findings(inp));
    if let Ok(st) = &inp.status {
        let now = crate::api::unix_now();
        out.extend(limit_findings(&st.discovery_limits, now));
        if let Some(dp) = &st.domain_policy {
            out.extend(domain_blocked_findings(dp, now, inp.participants()));
        }
    }
    out.extend(domain_finding(inp.participants()));
    out.extend(zenoh_findings(inp));
    out.extend(zenoh_scouting_finding(inp));
    if inp.status.is_ok()
        && inp.participants().is_empty()
        && inp.zenoh_scouts().is_empty()
        && !any_silent
    {
        out.push(Finding::new(
            "NO_PARTICIPANTS",
            Severity::Info,
            "The agent has seen no DDS participant announce itself on this node yet (SPDP to the RTPS groups), \
             and no Zenoh session scout. Start a ROS 2 node in an opted-in pod, or check `groups`."
                .into(),
        ));
    }
    out.sort_by_key(|f| f.severity);
    out
}

/// AGENT_DOWN, or what the agent itself reports: its problems, multicast
/// pressure, the relay.
fn agent_findings(inp: &Inputs) -> Vec<Finding> {
    let st = match &inp.status {
        Err(why) => {
            return vec![Finding::new(
                "AGENT_DOWN",
                Severity::Error,
                format!(
                    "The ros2-cni agent does not answer ({why}). Pods still get ros0 and unicast works, but no RTPS \
                     multicast is routed between this node's pods and other computers. Fix: start it (kubectl -n \
                     kube-system get ds ros2-cni; or systemctl start ros2-cni-agent) and check its log."
                ),
            )]
        }
        Ok(st) => st,
    };
    let mut out: Vec<Finding> = st
        .problems
        .iter()
        .map(|p| {
            Finding::new(
                "AGENT_PROBLEM",
                Severity::Warning,
                format!("The agent reports: {p}"),
            )
        })
        .collect();
    out.extend(multicast_pressure(inp, &st.multicast_pressure));
    if let Some(relay) = &st.relay {
        out.extend(relay_findings(relay));
    }
    out
}

/// CONFLIST_ENTRY_MISSING.
fn conflist_finding(inp: &Inputs) -> Option<Finding> {
    let Some((file, false)) = &inp.conflist else {
        return None;
    };
    Some(Finding::new(
        "CONFLIST_ENTRY_MISSING",
        Severity::Error,
        format!(
            "{} has no ros2-cni entry: pods started now get no ros0. Cause: the primary plugin's installer \
             (calico-node) rewrote the file while no agent was watching it. Fix: run `ros2-cni install` or \
             start the agent with --cni-conf-dir.",
            file.display()
        ),
    ))
}

/// POD_WITHOUT_INTERFACE and STALE_ATTACHMENT.
fn pod_findings(inp: &Inputs) -> Vec<Finding> {
    let mut out = vec![];
    for p in &inp.pods {
        match p.has_interface {
            Some(false) => out.push(Finding::new(
                "POD_WITHOUT_INTERFACE",
                Severity::Error,
                format!(
                    "Pod {} opted in and holds {} but has no {} in its network namespace. Something removed it; \
                     the pod cannot reach the LAN. Fix: delete the pod so it is recreated.",
                    p.pod, p.ip, p.interface
                ),
            )),
            None => out.push(Finding::new(
                "STALE_ATTACHMENT",
                Severity::Warning,
                format!(
                    "{} is recorded for pod {} whose network namespace ({}) is gone. Cause: the runtime never \
                     called DEL. Fix: nothing urgent; the runtime's GC (CNI 1.1) releases it, or delete the file \
                     in dataDir/attachments.",
                    p.ip, p.pod, p.netns
                ),
            )),
            Some(true) => {}
        }
    }
    out
}

/// A participant's UDPv4 unicast locators, loopback and unspecified left out.
fn unicast_v4(p: &Participant) -> Vec<(Ipv4Addr, u32)> {
    p.locators
        .iter()
        .filter(|l| l.is_unicast() && l.transport == "udpv4")
        .filter_map(|l| Some((l.address.as_deref()?.parse().ok()?, l.port)))
        .filter(|(a, _): &(Ipv4Addr, u32)| !a.is_loopback() && !a.is_unspecified())
        .collect()
}

/// UNREACHABLE_LOCATORS: participants that advertise no address on the robot LAN.
fn locator_findings(inp: &Inputs) -> Vec<Finding> {
    let Some(subnet) = inp.subnet else {
        return vec![];
    };
    let mut out = vec![];
    for p in inp.participants() {
        let unicast = unicast_v4(p);
        if unicast.is_empty() || unicast.iter().any(|(a, _)| subnet.contains(a)) {
            continue;
        }
        let addrs: BTreeSet<String> = unicast.iter().map(|(a, p)| format!("{a}:{p}")).collect();
        out.push(Finding::new(
            "UNREACHABLE_LOCATORS",
            Severity::Error,
            format!(
                "{} in {} advertises only {}, outside the robot LAN {subnet}: other computers cannot \
                 answer it (these are primary-network or masqueraded addresses). Cause: DDS is bound to \
                 the pod's primary interface (e.g. CYCLONEDDS_URI naming eth0, a Fast DDS interface \
                 whitelist, or primaryMulticast with default settings). Fix: let DDS use ros0 — remove the \
                 interface pin or name ros0.",
                participant_label(p),
                pod_label(p),
                addrs.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    out
}

/// TTL-1 RTPS multicast that no multicast route carries (and that should
/// be carried), with whether it arrived on the robot LAN path (the uplink,
/// the node device, a pod's port) rather than elsewhere.
fn ttl1_unforwarded(inp: &Inputs) -> Vec<(&api::Source, bool)> {
    let st = inp.status.as_ref().ok();
    let routes = st.map_or(&[][..], |s| s.routes.as_slice());
    let (uplink, node_dev) = st.map_or(("", ""), |s| (s.uplink.as_str(), s.node_device.as_str()));
    let mut out = vec![];
    // the RTPS groups only: the capture also watches Zenoh's scouting
    // group, whose TTL-1 scouts are carried by the copy rules, not by routes
    let rtps = |s: &&api::Source| inp.groups.is_empty() || inp.groups.contains(&s.group);
    for s in inp.sources().iter().filter(|s| s.ttl == 1).filter(rtps) {
        let (src, grp, ifname) = (s.source, s.group, s.interface.as_str());
        let forwarded = routes.iter().any(|r| {
            (r.source == src || r.source.is_unspecified())
                && r.group == grp
                && !r.oifs.is_empty()
                && r.packets > 0
        });
        let on_ros_path = ifname == uplink
            || ifname == node_dev
            || ifname.starts_with(crate::firewall::HOST_VETH_PREFIX);
        // on a macvlan node L2 carries everything: nothing is meant to be forwarded
        if forwarded || (inp.mode == Some(Mode::Macvlan) && on_ros_path) {
            continue;
        }
        out.push((s, on_ros_path));
    }
    out
}

/// The sources of TTL-1 discovery nothing forwards, with the interface it
/// arrives on (the graph's "no route" edges).
pub fn unforwarded_ttl1(inp: &Inputs) -> Vec<(Ipv4Addr, String)> {
    ttl1_unforwarded(inp)
        .into_iter()
        .map(|(s, _)| (s.source, s.interface.clone()))
        .collect()
}

/// TTL1_NOT_FORWARDED: TTL-1 discovery that no multicast route carries,
/// with its likely cause.
fn ttl1_findings(inp: &Inputs) -> Vec<Finding> {
    let routing = inp.status.as_ref().is_ok_and(|s| s.routing);
    let mut out = vec![];
    for (s, on_ros_path) in ttl1_unforwarded(inp) {
        let (src, grp, ifname) = (s.source, s.group, s.interface.as_str());
        let cause = if !on_ros_path {
            format!("it arrives on {ifname}, which is not part of the robot LAN path (a pod's primary network?): DDS there uses the wrong interface")
        } else if !routing {
            "the agent does not route multicast here".to_owned()
        } else if !inp.raise_ttl {
            "raiseTtl is false, so packets sent with TTL 1 (Fast DDS, Connext) die at the node"
                .to_owned()
        } else {
            "no multicast route carries it yet".to_owned()
        };
        out.push(Finding::new(
            "TTL1_NOT_FORWARDED",
            Severity::Warning,
            format!(
                "RTPS from {src} to {grp} arrives with TTL 1 on {ifname} and is not forwarded: {cause}. Fix: {}",
                if !on_ros_path {
                    "let DDS use ros0 (see UNREACHABLE_LOCATORS)"
                } else if !inp.raise_ttl {
                    "set raiseTtl to true (the default)"
                } else {
                    "check the agent's problems and `ip mroute show`"
                }
            ),
        ));
    }
    out
}

/// DOMAINS_DIFFER: participants in more than one DDS domain.
fn domain_finding(parts: &[Participant]) -> Option<Finding> {
    let mut domains: BTreeMap<u32, usize> = BTreeMap::new();
    for d in parts.iter().filter_map(|p| p.domain) {
        *domains.entry(d).or_default() += 1;
    }
    if domains.len() < 2 {
        return None;
    }
    let list: Vec<String> = domains
        .iter()
        .map(|(d, n)| format!("domain {d} ({n})"))
        .collect();
    Some(Finding::new(
        "DOMAINS_DIFFER",
        Severity::Warning,
        format!(
            "Participants are in different DDS domains: {}. Participants only discover others in the same \
             domain. If they were meant to meet, set the same ROS_DOMAIN_ID everywhere.",
            list.join(", ")
        ),
    ))
}

/// DOMAIN_BLOCKED, from the status' `domainPolicy` at unix time `now`: each
/// pod whose datagrams to a domain its namespace does not allow were dropped
/// within [`RECENT`], with the domains the policy recorded it trying (and
/// those of its participants the discovery table saw, if any).
fn domain_blocked_findings(
    dp: &api::DomainPolicy,
    now: u64,
    parts: &[Participant],
) -> Vec<Finding> {
    let recent = |t: Option<u64>| t.is_some_and(|t| now.saturating_sub(t) <= RECENT.as_secs());
    let list = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    let mut out = vec![];
    for p in dp.pods.iter().filter(|p| recent(p.last_sent_dropped)) {
        let name = if p.namespace.is_empty() {
            p.pod.clone()
        } else {
            format!("{}/{}", p.namespace, p.pod)
        };
        let allowed = p.allowed_domains.clone().unwrap_or_default();
        let mut wrong: Vec<u16> = p
            .blocked_domains
            .iter()
            .copied()
            .chain(
                parts
                    .iter()
                    .filter(|x| x.pod.as_deref() == Some(name.as_str()))
                    .filter_map(|x| x.domain.and_then(|d| u16::try_from(d).ok())),
            )
            .filter(|d| !allowed.contains(d))
            .collect();
        wrong.sort_unstable();
        wrong.dedup();
        let domain = if wrong.is_empty() {
            "another domain".to_owned()
        } else {
            format!("domain {}", list(&wrong))
        };
        out.push(Finding::new(
            "DOMAIN_BLOCKED",
            Severity::Warning,
            format!(
                "Pod {name} ({}) sends RTPS for {domain}, which its namespace may not use \
                 (domains allows {}): {} datagrams dropped so far, the last {} s ago. It discovers \
                 no one there and no one discovers it. Fix: set ROS_DOMAIN_ID in the pod to an \
                 allowed domain, or allow the domain for namespace \"{}\" in `domains` \
                 (SIGHUP applies it).",
                p.ip,
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    list(&allowed)
                },
                p.sent_dropped,
                now.saturating_sub(p.last_sent_dropped.unwrap_or(now)),
                p.namespace,
            ),
        ));
    }
    out
}

/// POD_RATE_LIMITED and UPLINK_RATE_LIMITED, from the status'
/// `discoveryLimits` at unix time `now`: each pod, and the uplink, whose
/// limit dropped something within [`RECENT`].
fn limit_findings(lim: &DiscoveryLimits, now: u64) -> Vec<Finding> {
    let recent = |t: Option<u64>| t.is_some_and(|t| now.saturating_sub(t) <= RECENT.as_secs());
    let ago = |t: Option<u64>| now.saturating_sub(t.unwrap_or(now));
    let limit = |l: Option<api::Limit>| {
        l.map_or_else(
            || "off".to_owned(),
            |l| format!("{}/s, burst {}", l.rate, l.burst),
        )
    };
    let warn = |code, message| Finding::new(code, Severity::Warning, message);
    let mut out = vec![];
    for p in lim.pods.iter().filter(|p| recent(p.last_limited)) {
        let name = if p.namespace.is_empty() {
            p.pod.clone()
        } else {
            format!("{}/{}", p.namespace, p.pod)
        };
        out.push(warn(
            "POD_RATE_LIMITED",
            format!(
                "Pod {name} ({}) sends RTPS discovery multicast faster than podDiscoveryRate allows ({}): \
                 {} datagrams dropped so far, {} per second lately, the last {} s ago. Its own discovery \
                 suffers (its announcements are dropped in the same proportion); the LAN and the other pods \
                 do not. Cause: something in the pod sends to the SPDP port in a loop (a crash-looping \
                 participant, a tool, a misconfigured DDS). Fix: stop it; if the rate is real (hundreds of \
                 participants in one pod), raise podDiscoveryRate and podDiscoveryBurst in the agent's config \
                 (SIGHUP applies it).",
                p.ip,
                limit(lim.pod),
                p.limited_packets,
                p.limited_per_second,
                ago(p.last_limited),
            ),
        ));
    }
    let iface = lim.uplink_interface.as_deref().unwrap_or("?");
    if recent(lim.uplink_sender_last_limited) {
        out.push(warn(
            "UPLINK_RATE_LIMITED",
            format!(
                "A sender on the LAN sends RTPS discovery multicast into the uplink {iface} faster than \
                 podDiscoveryRate allows one sender ({}): {} datagrams dropped so far, the last {} s ago. \
                 Other senders are not affected. Cause: a host on the LAN that does not run ros2-cni sends \
                 discovery in a loop (computers running ros2-cni limit their own pods). Fix: find it \
                 (tcpdump -ni {iface} udp port 7400) and stop it; if its traffic is real (one host running \
                 hundreds of participants), raise podDiscoveryRate and podDiscoveryBurst.",
                limit(lim.pod),
                lim.uplink_sender_limited_packets,
                ago(lim.uplink_sender_last_limited),
            ),
        ));
    }
    if recent(lim.uplink_last_limited) {
        out.push(warn(
            "UPLINK_RATE_LIMITED",
            format!(
                "More RTPS discovery multicast arrives on the uplink {iface}, all senders together, than \
                 uplinkDiscoveryRate allows ({}): {} datagrams dropped so far, the last {} s ago. While it \
                 lasts, discovery from other computers reaches this node's pods only in part. Cause: many \
                 senders at once (a fleet booting), or many flooding hosts. Fix: find the senders \
                 (tcpdump -ni {iface} udp port 7400); if the traffic is real, raise uplinkDiscoveryRate and \
                 uplinkDiscoveryBurst.",
                limit(lim.uplink),
                lim.uplink_limited_packets,
                ago(lim.uplink_last_limited),
            ),
        ));
    }
    out
}

/// The ros2-cni entry of a conflist document, with the conflist's
/// `cniVersion` and `name` (as the runtime passes them to the plugin).
pub fn conflist_entry(conflist: &Value) -> Option<Value> {
    let mut entry = conflist["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["type"] == crate::install::PLUGIN_TYPE)?
        .clone();
    for k in ["cniVersion", "name"] {
        if !conflist[k].is_null() {
            entry[k] = conflist[k].clone();
        }
    }
    Some(entry)
}

/// Reads `--config FILE`: the agent's config (node or cluster form), a
/// conflist (its ros2-cni entry), or one ros2-cni plugin entry (as in a
/// conflist's `plugins`). Errors name the file.
pub fn config_from_file(path: &Path, node: Option<&str>) -> Result<Config, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    config_from_value(&v, node).map_err(|e| format!("{}: {e}", path.display()))
}

/// [`config_from_file`] on a parsed document.
pub fn config_from_value(v: &Value, node: Option<&str>) -> Result<Config, String> {
    if let Some(plugins) = v.get("plugins") {
        let entry = conflist_entry(v).ok_or_else(|| {
            let types: Vec<String> = plugins
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["type"].as_str().unwrap_or("?").to_owned())
                .collect();
            format!(
                "a conflist without a ros2-cni entry (plugins: {}); run `ros2-cni install`, or pass the agent's config",
                if types.is_empty() { "none".to_owned() } else { types.join(", ") }
            )
        })?;
        return Config::from_value(&entry, true, node)
            .map_err(|e| format!("its ros2-cni entry: {e}"));
    }
    match v.get("type") {
        Some(t) if *t == crate::install::PLUGIN_TYPE => {
            Config::from_value(v, true, node).map_err(|e| e.to_string())
        }
        Some(t) => Err(format!(
            "the CNI entry of plugin {t}, not ros2-cni's; pass the conflist, the ros2-cni entry or the agent's config"
        )),
        None => Config::from_value(v, false, node).map_err(|e| e.to_string()),
    }
}

/// Gathers the inputs on this node.
pub fn gather(cfg: &Config, conf_dir: Option<&Path>) -> Inputs {
    let sock = cfg.agent_socket();
    let status = api::status(&sock).map_err(|e| e.to_string());
    let participants = status
        .as_ref()
        .ok()
        .and_then(|_| api::participants(&sock).ok());
    let conflist = conf_dir.and_then(|d| {
        let file = crate::install::choose_conf(d, None).ok()?;
        let text = std::fs::read_to_string(&file).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let has = v["plugins"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["type"] == crate::install::PLUGIN_TYPE));
        Some((file, has))
    });
    let pods = Store::new(&cfg.data_dir)
        .list()
        .unwrap_or_default()
        .records
        .into_iter()
        .map(|(_, a)| {
            let has_interface = crate::kernel::netns::Netns::open(&a.netns)
                .ok()
                .and_then(|ns| crate::kernel::rtnl::Handle::open_in(&ns).ok())
                .and_then(|mut h| h.link_by_name(&a.pod_if).ok())
                .map(|l| l.is_some());
            PodCheck {
                pod: if a.pod_name.is_empty() {
                    a.container_id.clone()
                } else {
                    format!("{}/{}", a.pod_namespace, a.pod_name)
                },
                ip: a.ip,
                interface: a.pod_if.clone(),
                netns: a.netns.clone(),
                has_interface,
                sockets: (has_interface == Some(true))
                    .then(|| PodSockets::read(&a.netns).ok())
                    .flatten(),
            }
        })
        .collect();
    let node = cfg
        .node_name
        .clone()
        .or_else(|| status.as_ref().ok().and_then(|s| s.node.clone()));
    let cluster = cfg
        .nodes
        .iter()
        .filter(|(name, _)| Some(*name) != node.as_ref())
        .map(|(name, e)| ClusterNode {
            name: name.clone(),
            pool: Some(e.pool),
            address: e.address,
        })
        .collect();
    let zenoh_router = zenoh_router_check(cfg, &status);
    Inputs {
        subnet: Some(cfg.subnet),
        mode: Some(cfg.mode),
        raise_ttl: cfg.raise_ttl,
        status,
        participants,
        conflist,
        pods,
        kernel: KernelCheck::probe(),
        node,
        cluster,
        groups: cfg.groups.clone(),
        zenoh_router,
        extra_multicast: cfg.extra_multicast.clone(),
    }
}

/// Tries the node's Zenoh router: at the address the agent gives its pods'
/// routers, else at the node entry's `address`.
fn zenoh_router_check(
    cfg: &Config,
    status: &Result<Status, String>,
) -> Option<(String, Result<(), String>)> {
    let port = cfg.zenoh_router?;
    let addr = status
        .as_ref()
        .ok()
        .and_then(|s| s.zenoh.as_ref()?.node_router.clone())
        .or_else(|| cfg.node_address.map(|a| format!("{a}:{port}")))?;
    let r = match addr.parse::<std::net::SocketAddr>() {
        Ok(sa) => std::net::TcpStream::connect_timeout(&sa, std::time::Duration::from_secs(1))
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("not an address: {e}")),
    };
    Some((addr, r))
}

/// ZENOH_SCOUTING_NOT_CARRIED: Zenoh sessions scout to a group and port
/// that `extraMulticast` does not carry, so they find only what shares
/// their network (in a pod: the pod itself).
fn zenoh_scouting_finding(inp: &Inputs) -> Option<Finding> {
    let carried = |group: &str| {
        group
            .parse::<SocketAddrV4>()
            .is_ok_and(|g| inp.extra_multicast.contains(&(*g.ip(), g.port())))
    };
    let lost: Vec<&api::ZenohScout> = inp
        .zenoh_scouts()
        .iter()
        .filter(|z| !carried(&z.group))
        .collect();
    if lost.is_empty() {
        return None;
    }
    let groups: BTreeSet<&str> = lost.iter().map(|z| z.group.as_str()).collect();
    let who: BTreeSet<String> = lost
        .iter()
        .map(|z| {
            format!(
                "{} ({})",
                z.pod.as_deref().unwrap_or("a LAN host"),
                z.source
            )
        })
        .collect();
    Some(Finding::new(
        "ZENOH_SCOUTING_NOT_CARRIED",
        Severity::Warning,
        format!(
            "Zenoh sessions scout by multicast to {}, which extraMulticast does not carry: {}. They find only \
             the sessions on their own network (a pod's: the pod itself). Fix: add it to extraMulticast (the \
             default carries Zenoh's 224.0.0.224:7446), or give the sessions a router to connect to \
             (zenohRouter, docs/zenoh.md).",
            groups.into_iter().collect::<Vec<_>>().join(", "),
            who.into_iter().collect::<Vec<_>>().join(", ")
        ),
    ))
}

/// What doctor says about the Zenoh routers: the node's router must accept
/// connections, every pod must have its router running.
fn zenoh_findings(inp: &Inputs) -> Vec<Finding> {
    let mut out = vec![];
    if let Some((addr, Err(e))) = &inp.zenoh_router {
        out.push(Finding::new(
            "ZENOH_ROUTER_DOWN",
            Severity::Error,
            format!(
                "zenohRouter: nothing accepts TCP on {addr} ({e}). The pods' Zenoh routers cannot reach the \
                 node's router, so rmw_zenoh sessions in a pod reach only the sessions of the same pod. Fix: \
                 run the node's router (ros2-cni zenoh-router-config --config FILE > router.json5; zenohd -c \
                 router.json5; or deploy/zenoh-router.yaml), or set zenohRouter to the port it listens on."
            ),
        ));
    }
    let Some(z) = inp.status.as_ref().ok().and_then(|s| s.zenoh.as_ref()) else {
        return out;
    };
    if let Some(p) = &z.problem {
        out.push(Finding::new(
            "ZENOH_PROBLEM",
            Severity::Warning,
            format!("The pods' Zenoh routers: {p}"),
        ));
    }
    for r in z.pods.iter().filter(|r| r.pid.is_none()) {
        let why = r
            .last_error
            .as_deref()
            .or(r.last_exit.as_deref().map(|e| e.trim()))
            .unwrap_or("not started yet");
        out.push(Finding::new(
            "ZENOH_POD_ROUTER_DOWN",
            Severity::Warning,
            format!(
                "Pod {} has no Zenoh router running ({why}; {} restart(s)): its rmw_zenoh sessions find no \
                 router at localhost:7447. Its log: dataDir/zenoh/{}.log; the command is zenohPodRouter ({}).",
                r.pod,
                r.restarts,
                r.key,
                z.command.join(" ")
            ),
        ));
    }
    let running = z.pods.iter().filter(|r| r.pid.is_some()).count();
    if let (Some(addr), Some((_, Ok(())))) = (&z.node_router, &inp.zenoh_router) {
        out.push(Finding::new(
            "ZENOH_ROUTERS",
            Severity::Info,
            format!(
                "Zenoh: {running} of {} pod(s) have their router at localhost:7447, connecting to the node's \
                 router at {addr}, which accepts connections.",
                z.pods.len()
            ),
        ));
    }
    out
}

/// The JSON report.
pub fn report(inp: &Inputs) -> Value {
    let st = inp.status.as_ref().ok();
    json!({
        "agent": match &inp.status {
            Ok(s) => json!({"running": true, "pid": s.pid, "mode": s.mode, "uplink": s.uplink,
                            "healthy": s.healthy, "restarts": s.restarts, "pods": s.pods}),
            Err(e) => json!({"running": false, "error": e}),
        },
        "conflist": inp.conflist.as_ref().map(|(f, has)| json!({"file": f, "entry": has})),
        "pods": inp.pods,
        "routes": st.map_or(&[][..], |s| s.routes.as_slice()),
        "kernel": {
            "release": inp.kernel.release,
            "multicastRouting": match &inp.kernel.multicast_routing {
                Some(Ok(())) => json!(true),
                Some(Err(why)) => json!({"available": false, "why": why}),
                None => Value::Null,
            },
            "forwarder": st.map(|s| &s.forwarder),
            "fastPath": st.map(|s| &s.fast_path),
        },
        "participants": inp.participants(),
        "zenohScouts": inp.zenoh_scouts(),
        "findings": findings(inp),
    })
}

/// The human-readable report.
pub fn render(inp: &Inputs) -> String {
    let mut o = String::new();
    match &inp.status {
        Ok(s) => o.push_str(&format!(
            "agent: running (pid {}), mode {}, uplink {}, {} pod(s), {} multicast route(s)\n",
            s.pid,
            s.mode,
            s.uplink,
            s.pods,
            s.routes.len()
        )),
        Err(e) => o.push_str(&format!("agent: NOT RUNNING ({e})\n")),
    }
    for line in kernel_lines(inp) {
        o.push_str(&line);
        o.push('\n');
    }
    if let Some((f, has)) = &inp.conflist {
        o.push_str(&format!(
            "conflist: {} {}\n",
            f.display(),
            if *has {
                "has the ros2-cni entry"
            } else {
                "LACKS the ros2-cni entry"
            }
        ));
    }
    o.push_str(&format!("pods ({}):\n", inp.pods.len()));
    let silent = silent_participants(inp);
    for p in &inp.pods {
        let quiet;
        let state = match p.has_interface {
            Some(true) => match silent.iter().find(|s| s.pod == p.pod) {
                Some(s) => {
                    quiet = format!(
                        "SILENT: DDS on {}, not {}",
                        s.elsewhere.keys().cloned().collect::<Vec<_>>().join(", "),
                        s.lan_interface
                    );
                    quiet.as_str()
                }
                None => "ok",
            },
            Some(false) => "MISSING INTERFACE",
            None => "netns gone",
        };
        o.push_str(&format!("  {:<32} {:<16} {}\n", p.pod, p.ip, state));
    }
    let parts = inp.participants();
    o.push_str(&format!("participants ({}):\n", parts.len()));
    for p in parts {
        let locs: BTreeSet<String> = p
            .locators
            .iter()
            .filter(|l| l.is_unicast())
            .map(|l| format!("{}:{}", l.address.as_deref().unwrap_or("?"), l.port))
            .collect();
        o.push_str(&format!(
            "  {} {:<12} domain {:<3} {:<28} seen on {:<14} unicast {}\n",
            p.guid_prefix,
            p.vendor,
            domain_label(p),
            p.pod.as_deref().or(p.name.as_deref()).unwrap_or("-"),
            p.seen_on,
            locs.into_iter().collect::<Vec<_>>().join(" ")
        ));
    }
    let scouts = inp.zenoh_scouts();
    if !scouts.is_empty() {
        o.push_str(&format!("zenoh sessions scouting ({}):\n", scouts.len()));
        for z in scouts {
            o.push_str(&format!(
                "  {:<21} {:<28} seen on {:<14} to {:<17} looks for {} (protocol {}{})\n",
                z.source,
                z.pod.as_deref().unwrap_or("-"),
                z.seen_on,
                z.group,
                z.looks_for.join(","),
                z.version,
                z.zid
                    .as_deref()
                    .map(|i| format!(", id {i}"))
                    .unwrap_or_default(),
            ));
        }
    }
    let f = findings(inp);
    if f.is_empty() {
        o.push_str("findings: none — discovery should work\n");
    } else {
        o.push_str(&format!("findings ({}):\n", f.len()));
        for x in f {
            o.push_str(&format!("  [{:?}] {}: {}\n", x.severity, x.code, x.message));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Locator, Peer, PressureSource, Route, Source};

    /// A routing agent on eth0 and ros2br0 with nothing to report.
    fn status() -> Status {
        Status {
            routing: true,
            uplink: "eth0".into(),
            node_device: "ros2br0".into(),
            ..Default::default()
        }
    }

    fn table(participants: Vec<Participant>, sources: Vec<Source>) -> Option<Participants> {
        Some(Participants {
            participants,
            sources,
            ..Default::default()
        })
    }

    fn base() -> Inputs {
        Inputs {
            subnet: Some("192.168.1.0/24".parse().unwrap()),
            mode: Some(Mode::Routed),
            raise_ttl: true,
            status: Ok(status()),
            participants: table(vec![], vec![]),
            conflist: None,
            pods: vec![],
            kernel: KernelCheck::default(),
            node: Some("n1".into()),
            cluster: vec![],
            groups: vec!["239.255.0.1".parse().unwrap()],
            zenoh_router: None,
            extra_multicast: vec![crate::config::ZENOH_SCOUTING],
        }
    }

    #[test]
    fn doctor_lists_zenoh_scouts_and_says_when_their_group_is_not_carried() {
        let scout = |source: &str, pod: Option<&str>| api::ZenohScout {
            source: source.into(),
            group: "224.0.0.224:7446".into(),
            seen_on: "ros2br0".into(),
            pod: pod.map(str::to_owned),
            version: 9,
            looks_for: vec!["router".into(), "peer".into(), "client".into()],
            ..Default::default()
        };
        let mut i = base();
        i.participants.as_mut().unwrap().zenoh_scouts = vec![
            scout("192.168.1.160:40001", Some("robots/talker")),
            scout("192.168.1.20:40002", None),
        ];
        // carried (the default): listed, no warning, and not "no participants"
        let f = findings(&i);
        let codes: Vec<_> = f.iter().map(|f| f.code).collect();
        assert!(!codes.contains(&"ZENOH_SCOUTING_NOT_CARRIED"), "{codes:?}");
        assert!(!codes.contains(&"NO_PARTICIPANTS"), "{codes:?}");
        let text = render(&i);
        assert!(text.contains("zenoh sessions scouting (2):"), "{text}");
        assert!(text.contains("192.168.1.160:40001"), "{text}");
        assert!(text.contains("robots/talker"), "{text}");
        assert!(
            text.contains("looks for router,peer,client (protocol 9)"),
            "{text}"
        );
        assert_eq!(report(&i)["zenohScouts"][1]["source"], "192.168.1.20:40002");
        // their TTL-1 scouts, in the senders' table, are not RTPS left unforwarded
        i.participants.as_mut().unwrap().sources = vec![api::Source {
            source: "192.168.1.20".parse().unwrap(),
            group: "224.0.0.224".parse().unwrap(),
            interface: "eth0".into(),
            ttl: 1,
            packets: 3,
            last_seen: 0,
        }];
        let codes: Vec<_> = findings(&i).iter().map(|f| f.code).collect();
        assert!(!codes.contains(&"TTL1_NOT_FORWARDED"), "{codes:?}");
        // not carried: a warning naming the group, the pod and the LAN host
        i.extra_multicast.clear();
        let f = findings(&i);
        let w = f
            .iter()
            .find(|f| f.code == "ZENOH_SCOUTING_NOT_CARRIED")
            .expect("finding");
        assert_eq!(w.severity, Severity::Warning);
        assert!(w.message.contains("224.0.0.224:7446"), "{}", w.message);
        assert!(
            w.message.contains("robots/talker (192.168.1.160:40001)"),
            "{}",
            w.message
        );
        assert!(
            w.message.contains("a LAN host (192.168.1.20:40002)"),
            "{}",
            w.message
        );
    }

    #[test]
    fn doctor_says_when_the_node_zenoh_router_is_down_and_names_pods_without_their_router() {
        let mut i = base();
        i.zenoh_router = Some((
            "192.168.1.11:7999".into(),
            Err("Connection refused (os error 111)".into()),
        ));
        if let Ok(st) = i.status.as_mut() {
            st.zenoh = Some(api::ZenohRouters {
                node_router: Some("192.168.1.11:7999".into()),
                command: vec!["zenohd".into(), "--config".into(), "{config}".into()],
                problem: None,
                pods: vec![
                    api::PodRouter {
                        key: "c1-eth0".into(),
                        pod: "default/talker".into(),
                        pid: Some(42),
                        restarts: 0,
                        last_exit: None,
                        last_error: None,
                    },
                    api::PodRouter {
                        key: "c2-eth0".into(),
                        pod: "default/listener".into(),
                        pid: None,
                        restarts: 3,
                        last_exit: None,
                        last_error: Some(
                            "starting zenohd: No such file or directory (os error 2)".into(),
                        ),
                    },
                ],
            });
        }
        let f = findings(&i);
        let down = f.iter().find(|f| f.code == "ZENOH_ROUTER_DOWN").unwrap();
        assert_eq!(down.severity, Severity::Error);
        assert!(
            down.message.contains("192.168.1.11:7999") && down.message.contains("refused"),
            "{}",
            down.message
        );
        let pod = f
            .iter()
            .find(|f| f.code == "ZENOH_POD_ROUTER_DOWN")
            .unwrap();
        assert!(
            pod.message.contains("default/listener") && pod.message.contains("No such file"),
            "{}",
            pod.message
        );
        assert!(!f.iter().any(|f| f.message.contains("default/talker")));
        assert!(!f.iter().any(|f| f.code == "ZENOH_ROUTERS"));
        // the router answers: one info line, no error
        i.zenoh_router = Some(("192.168.1.11:7999".into(), Ok(())));
        let f = findings(&i);
        assert!(!f.iter().any(|f| f.code == "ZENOH_ROUTER_DOWN"));
        let info = f.iter().find(|f| f.code == "ZENOH_ROUTERS").unwrap();
        assert!(info.message.contains("1 of 2 pod(s)"), "{}", info.message);
    }

    #[test]
    fn the_kernel_section_says_what_the_kernel_offers_and_which_forwarder_runs() {
        let mut i = base();
        i.kernel = KernelCheck {
            release: "6.18.44".into(),
            multicast_routing: Some(Err(
                "not built in (CONFIG_IP_MROUTE is not set; MRT_INIT: Protocol not available (os error 92))".into(),
            )),
        };
        if let Ok(st) = i.status.as_mut() {
            st.forwarder = api::ForwarderInfo {
                kind: Some("nftables".into()),
                reason: "the kernel has no IPv4 multicast routing".into(),
            };
            st.fast_path.unavailable = Some("attach BPF filter: no cls_bpf".into());
        }
        let text = render(&i);
        assert!(text.contains("kernel: Linux 6.18.44"), "{text}");
        assert!(
            text.contains("multicast routing (CONFIG_IP_MROUTE): not built in"),
            "{text}"
        );
        assert!(
            text.contains("forwarder: nftables (the kernel has no IPv4 multicast routing)"),
            "{text}"
        );
        assert!(
            text.contains("fast path (tc cls_bpf, BPF): unavailable, pods use the normal path"),
            "{text}"
        );
        let j = report(&i);
        assert_eq!(j["kernel"]["forwarder"]["kind"], "nftables");
        assert_eq!(j["kernel"]["multicastRouting"]["available"], false);
        i.kernel.multicast_routing = Some(Ok(()));
        assert!(render(&i).contains("multicast routing (CONFIG_IP_MROUTE): available"));
    }

    fn codes(i: &Inputs) -> Vec<&'static str> {
        findings(i).into_iter().map(|f| f.code).collect()
    }

    fn locator(kind: &str, addr: &str, port: u32) -> Locator {
        Locator {
            kind: kind.into(),
            transport: "udpv4".into(),
            address: Some(addr.into()),
            port,
        }
    }

    fn participant(addr: &str, domain: u32) -> Participant {
        Participant {
            guid_prefix: "0110aabb".into(),
            vendor: "Eclipse Cyclone DDS".into(),
            domain: Some(domain),
            pod: Some("robots/talker".into()),
            seen_on: "veth1".into(),
            source: format!("{addr}:7400"),
            locators: vec![locator("metatraffic_unicast", addr, 7410)],
            ..Default::default()
        }
    }

    fn ttl1_source(ifname: &str) -> Source {
        Source {
            source: "192.168.1.160".parse().unwrap(),
            group: "239.255.0.1".parse().unwrap(),
            interface: ifname.into(),
            ttl: 1,
            packets: 1,
            last_seen: 0,
        }
    }

    #[test]
    fn agent_down_is_an_error() {
        let mut i = base();
        i.status = Err("no agent answers".into());
        i.participants = None;
        assert_eq!(codes(&i), vec!["AGENT_DOWN"]);
    }

    #[test]
    fn primary_network_locators_are_named() {
        let mut i = base();
        i.participants = table(vec![participant("10.1.1.5", 0)], vec![]);
        let f = findings(&i);
        assert_eq!(f[0].code, "UNREACHABLE_LOCATORS");
        assert!(
            f[0].message.contains("10.1.1.5:7410") && f[0].message.contains("robots/talker"),
            "{}",
            f[0].message
        );
        // one reachable locator is enough
        let mut p = participant("10.1.1.5", 0);
        p.locators
            .push(locator("default_unicast", "192.168.1.160", 7411));
        i.participants = table(vec![p], vec![]);
        assert!(!codes(&i).contains(&"UNREACHABLE_LOCATORS"));
    }

    #[test]
    fn ttl1_not_forwarded_and_its_cause() {
        let mut i = base();
        i.participants = table(
            vec![participant("192.168.1.160", 0)],
            vec![ttl1_source("r2c0123")],
        );
        i.raise_ttl = false;
        let f: Vec<_> = findings(&i)
            .into_iter()
            .filter(|f| f.code == "TTL1_NOT_FORWARDED")
            .collect();
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("raiseTtl"), "{}", f[0].message);
        // forwarded: no finding
        i.status = Ok(Status {
            routes: vec![Route {
                source: "192.168.1.160".parse().unwrap(),
                group: "239.255.0.1".parse().unwrap(),
                iif: String::new(),
                oifs: vec!["eth0".into()],
                packets: 4,
                bytes: 0,
                wrong_if: 0,
            }],
            ..status()
        });
        assert!(!codes(&i).contains(&"TTL1_NOT_FORWARDED"));
    }

    #[test]
    fn domains_and_pods_and_conflist() {
        let mut i = base();
        i.participants = table(
            vec![
                participant("192.168.1.160", 0),
                participant("192.168.1.161", 5),
            ],
            vec![],
        );
        i.conflist = Some((PathBuf::from("/x/10-calico.conflist"), false));
        i.pods = vec![PodCheck {
            pod: "robots/a".into(),
            ip: "192.168.1.160".parse().unwrap(),
            interface: "ros0".into(),
            netns: "/x".into(),
            has_interface: Some(false),
            sockets: None,
        }];
        let c = codes(&i);
        assert!(
            c.contains(&"DOMAINS_DIFFER")
                && c.contains(&"CONFLIST_ENTRY_MISSING")
                && c.contains(&"POD_WITHOUT_INTERFACE"),
            "{c:?}"
        );
        // errors first
        assert_eq!(findings(&i)[0].severity, Severity::Error);
    }

    #[test]
    fn agent_problems_and_stale_attachments() {
        let mut i = base();
        i.status = Ok(Status {
            problems: vec!["multicast VIFs: Address already in use".into()],
            ..status()
        });
        i.pods = vec![PodCheck {
            pod: "robots/gone".into(),
            ip: "192.168.1.161".parse().unwrap(),
            interface: "ros0".into(),
            netns: "/var/run/netns/cni-1234".into(),
            has_interface: None,
            sockets: None,
        }];
        let f = findings(&i);
        let problem = f
            .iter()
            .find(|f| f.code == "AGENT_PROBLEM")
            .expect("AGENT_PROBLEM");
        assert!(
            problem.message.contains("Address already in use"),
            "{}",
            problem.message
        );
        let stale = f
            .iter()
            .find(|f| f.code == "STALE_ATTACHMENT")
            .expect("STALE_ATTACHMENT");
        assert_eq!(stale.severity, Severity::Warning);
        assert!(
            stale.message.contains("192.168.1.161")
                && stale.message.contains("robots/gone")
                && stale.message.contains("cni-1234"),
            "{}",
            stale.message
        );
    }

    #[test]
    fn multicast_pressure_names_the_interface_and_the_pod() {
        let mut i = base();
        i.status = Ok(Status {
            multicast_pressure: Pressure {
                not_rtps_per_second: 9000,
                active: true,
                interface: Some("ros2br0".into()),
                sources: vec![PressureSource {
                    source: "192.168.1.160".parse().unwrap(),
                    interface: "ros2br0".into(),
                    groups: 4000,
                    packets: 1800,
                }],
                ..Default::default()
            },
            ..status()
        });
        i.pods = vec![PodCheck {
            pod: "robots/flood".into(),
            ip: "192.168.1.160".parse().unwrap(),
            interface: "ros0".into(),
            netns: "/x".into(),
            has_interface: Some(true),
            sockets: None,
        }];
        let f = findings(&i);
        let p = f
            .iter()
            .find(|f| f.code == "MULTICAST_PRESSURE")
            .expect("MULTICAST_PRESSURE");
        assert!(
            p.message.contains("9000")
                && p.message.contains("ros2br0")
                && p.message.contains("robots/flood")
                && p.message.contains("4000 groups"),
            "{}",
            p.message
        );
        // no pressure: no finding
        i.status = Ok(Status {
            multicast_pressure: Pressure {
                not_rtps_per_second: 3,
                ..Default::default()
            },
            ..status()
        });
        assert!(!findings(&i).iter().any(|f| f.code == "MULTICAST_PRESSURE"));
    }

    #[test]
    fn ttl1_causes_wrong_interface_no_routing_no_route_and_macvlan() {
        let ttl1 = |ifname: &str| {
            table(
                vec![participant("192.168.1.160", 0)],
                vec![ttl1_source(ifname)],
            )
        };
        let message = |i: &Inputs| {
            findings(i)
                .into_iter()
                .find(|f| f.code == "TTL1_NOT_FORWARDED")
                .map(|f| f.message)
        };
        let mut i = base();
        // arriving on a primary-network veth: DDS uses the wrong interface
        i.participants = ttl1("cali1234");
        let m = message(&i).expect("finding");
        assert!(
            m.contains("cali1234") && m.contains("wrong interface"),
            "{m}"
        );
        // on the bridge, but the agent does not route
        i.participants = ttl1("ros2br0");
        i.status = Ok(Status {
            routing: false,
            ..status()
        });
        let m = message(&i).expect("finding");
        assert!(m.contains("does not route"), "{m}");
        // routing, raiseTtl on, but no route carries it
        i.status = base().status;
        let m = message(&i).expect("finding");
        assert!(m.contains("no multicast route"), "{m}");
        // a macvlan node: L2 carries it, nothing is meant to be forwarded
        i.mode = Some(Mode::Macvlan);
        assert_eq!(message(&i), None);
        i.participants = ttl1("cali1234");
        assert!(
            message(&i).is_some(),
            "the wrong interface is still wrong on macvlan"
        );
    }

    /// `/proc/net/udp` and `/proc/net/igmp` in a pod whose ddsperf is
    /// pinned to eth0 (10.1.1.5, no MULTICAST), and in one with default
    /// settings (ros0 192.168.1.160), as read on this machine.
    const PINNED_UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 7393: 0501010A:D5BF 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 520675 2 00000000ddbb9650 0
 9236: 00000000:1CF2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 520673 2 000000006ef3e455 0
 9237: 00000000:1CF3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 520674 2 0000000052e8bba9 0
";
    const PINNED_IGMP: &str = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter
1\tlo        :     1      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
2\teth0      :     1      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
3\tros0      :     1      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
";
    const DEFAULT_UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 7187: 00000000:94F1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 521324 2 00000000a7e811b1 0
 9226: 00000000:1CE8 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 521325 2 0000000083dc28a1 0
 9227: 00000000:1CE9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 521326 2 000000002ab88974 0
15237: A001A8C0:B463 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 521327 2 000000003c0d3774 0
";
    const DEFAULT_IGMP: &str = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter
1\tlo        :     1      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
2\teth0      :     1      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
3\tros0      :     2      V3
\t\t\t\t0100FFEF     2 0:00000000\t\t0
\t\t\t\t010000E0     1 0:00000000\t\t0
";

    pub(crate) fn pod_sockets(udp: &str, igmp: &str) -> PodSockets {
        PodSockets {
            addresses: [
                ("lo", "127.0.0.1"),
                ("eth0", "10.1.1.5"),
                ("ros0", "192.168.1.160"),
            ]
            .into_iter()
            .map(|(i, a)| (i.to_owned(), vec![a.parse().unwrap()]))
            .collect(),
            udp: parse_proc_udp(udp),
            joined: parse_proc_igmp(igmp),
            ephemeral_from: 32768,
        }
    }

    pub(crate) fn pod(name: &str, ip: &str, sockets: Option<PodSockets>) -> PodCheck {
        PodCheck {
            pod: name.into(),
            ip: ip.parse().unwrap(),
            interface: "ros0".into(),
            netns: format!("/var/run/netns/{}", name.replace('/', "-")),
            has_interface: Some(true),
            sockets,
        }
    }

    #[test]
    fn proc_files_parse_to_addresses_ports_and_groups() {
        let udp = parse_proc_udp(PINNED_UDP);
        assert_eq!(
            udp,
            [
                "10.1.1.5:54719".parse().unwrap(),
                "0.0.0.0:7410".parse().unwrap(),
                "0.0.0.0:7411".parse().unwrap()
            ]
        );
        let joined = parse_proc_igmp(DEFAULT_IGMP);
        assert_eq!(joined.len(), 3);
        let ros0: Vec<String> = joined["ros0"].iter().map(|g| g.to_string()).collect();
        assert_eq!(ros0, ["239.255.0.1", "224.0.0.1"]);
        assert_eq!(joined["eth0"], [Ipv4Addr::new(224, 0, 0, 1)]);
        assert!(parse_proc_udp("").is_empty() && parse_proc_igmp("").is_empty());
    }

    #[test]
    fn a_participant_pinned_to_eth0_is_silent_and_a_default_one_is_not() {
        let groups = [crate::rtps::ports::SPDP_MULTICAST_GROUP];
        let pinned = pod("robots/pinned", "192.168.1.160", None);
        let s = silent_of(&pinned, &pod_sockets(PINNED_UDP, PINNED_IGMP), &groups).expect("silent");
        assert_eq!(s.ports, [7410, 7411]);
        assert_eq!(s.elsewhere.keys().collect::<Vec<_>>(), ["eth0"]);
        assert_eq!(
            s.elsewhere["eth0"],
            ["a UDP socket bound to 10.1.1.5:54719"]
        );
        assert_eq!(
            s.reason(),
            "silent participant: DDS uses eth0, not ros0; it sends no discovery there"
        );
        // default settings: joined on ros0, sending from its address
        assert_eq!(
            silent_of(&pinned, &pod_sockets(DEFAULT_UDP, DEFAULT_IGMP), &groups),
            None
        );
        // only joined on ros0 (a socket bound to 0.0.0.0 only) is enough
        let mut joined_only = pod_sockets(DEFAULT_UDP, DEFAULT_IGMP);
        joined_only.udp.retain(|a| a.ip().is_unspecified());
        assert_eq!(silent_of(&pinned, &joined_only, &groups), None);
        // the loopback (ROS_LOCALHOST_ONLY=1): bound to 127.0.0.1
        let mut lo = pod_sockets(PINNED_UDP, PINNED_IGMP);
        lo.udp[0] = "127.0.0.1:40000".parse().unwrap();
        let s = silent_of(&pinned, &lo, &groups).expect("silent on lo");
        assert_eq!(s.elsewhere.keys().collect::<Vec<_>>(), ["lo"]);
        // joined on eth0 (primaryMulticast), bound to nothing specific
        let mut on_eth0 = pod_sockets(DEFAULT_UDP, DEFAULT_IGMP);
        on_eth0.udp.retain(|a| a.ip().is_unspecified());
        let g = on_eth0.joined.remove("ros0").unwrap();
        on_eth0.joined.insert("eth0".into(), g);
        let s = silent_of(&pinned, &on_eth0, &groups).expect("joined elsewhere");
        assert_eq!(s.elsewhere["eth0"], ["239.255.0.1 joined there"]);
        // no RTPS port: no DDS (a DNS client on an ephemeral port bound to eth0)
        let mut no_dds = pod_sockets(PINNED_UDP, PINNED_IGMP);
        no_dds.udp.retain(|a| !a.ip().is_unspecified());
        assert_eq!(silent_of(&pinned, &no_dds, &groups), None);
        // RTPS-looking ports in the ephemeral range are not RTPS ports
        let mut eph = pod_sockets(PINNED_UDP, PINNED_IGMP);
        eph.ephemeral_from = 7000;
        assert_eq!(silent_of(&pinned, &eph, &groups), None);
        // DDS with static unicast peers bound to 0.0.0.0 only: nothing says where
        let mut peers = pod_sockets(PINNED_UDP, PINNED_IGMP);
        peers.udp.retain(|a| a.ip().is_unspecified());
        assert_eq!(silent_of(&pinned, &peers, &groups), None);
    }

    #[test]
    fn doctor_names_the_silent_pod_and_the_interface_and_not_the_others() {
        let mut i = base();
        i.pods = vec![
            pod(
                "robots/pinned",
                "192.168.1.161",
                Some(pod_sockets(PINNED_UDP, PINNED_IGMP)),
            ),
            pod(
                "robots/plain",
                "192.168.1.160",
                Some(pod_sockets(DEFAULT_UDP, DEFAULT_IGMP)),
            ),
            // no DDS at all
            pod("robots/idle", "192.168.1.162", Some(PodSockets::default())),
        ];
        let f = findings(&i);
        let silent: Vec<&Finding> = f
            .iter()
            .filter(|f| f.code == "SILENT_PARTICIPANT")
            .collect();
        assert_eq!(silent.len(), 1, "{f:#?}");
        assert_eq!(silent[0].severity, Severity::Error);
        for want in [
            "Pod robots/pinned",
            "RTPS ports 7410, 7411",
            "on eth0, not on ros0",
            "10.1.1.5:54719",
            "CYCLONEDDS_URI",
            "unset the pin, or name ros0",
        ] {
            assert!(
                silent[0].message.contains(want),
                "{want}: {}",
                silent[0].message
            );
        }
        assert!(
            !codes(&i).contains(&"NO_PARTICIPANTS"),
            "the participant exists; it is not on the LAN"
        );
        let text = render(&i);
        assert!(
            text.contains("SILENT: DDS on eth0, not ros0"),
            "the pods section says it: {text}"
        );
        // a pod the agent sees announcing (here on the wrong interface) is
        // UNREACHABLE_LOCATORS' business, not this finding's
        let mut seen = participant("10.1.1.5", 0);
        seen.pod = Some("robots/pinned".into());
        seen.seen_on = "cali1234".into();
        i.participants = table(vec![seen], vec![]);
        assert!(
            !codes(&i).contains(&"SILENT_PARTICIPANT"),
            "{:?}",
            codes(&i)
        );
        // without the agent the sockets still tell
        i.status = Err("no agent answers".into());
        i.participants = None;
        assert!(codes(&i).contains(&"SILENT_PARTICIPANT"));
    }

    #[test]
    fn config_accepts_the_agents_config_a_conflist_and_a_plugin_entry() {
        let entry = json!({"type": "ros2-cni", "subnet": "192.168.0.0/20",
            "podRange": "192.168.1.160/28", "uplink": "eth0", "dataDir": "/x/ros2-cni",
            "capabilities": {"io.kubernetes.cri.pod-annotations": true}});
        let conflist = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [
            {"type": "calico", "ipam": {"type": "calico-ipam"}},
            entry.clone(),
            {"type": "portmap", "snat": true}]});
        let c = config_from_value(&conflist, Some("n1")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/x/ros2-cni"));
        assert_eq!(c.cni_version.as_deref(), Some("1.0.0"));
        assert_eq!(c.name.as_deref(), Some("k8s-pod-network"));
        let c = config_from_value(&entry, Some("n1")).unwrap();
        assert_eq!(c.subnet.to_string(), "192.168.0.0/20");
        let mut agent = entry.clone();
        for k in ["type", "capabilities"] {
            agent.as_object_mut().unwrap().remove(k);
        }
        assert!(config_from_value(&agent, Some("n1")).is_ok());
        // the agent's config keeps refusing the runtime's keys
        let mut odd = agent.clone();
        odd["prevResult"] = json!({});
        assert!(config_from_value(&odd, Some("n1")).is_err());
        let e = config_from_value(
            &json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "calico"}, {"type": "portmap"}]}),
            None,
        )
        .unwrap_err();
        assert!(
            e.contains("without a ros2-cni entry (plugins: calico, portmap)"),
            "{e}"
        );
        let e = config_from_value(&json!({"type": "calico"}), None).unwrap_err();
        assert!(e.contains("plugin \"calico\", not ros2-cni's"), "{e}");
        // a bad key in the entry is named
        let mut bad = conflist.clone();
        bad["plugins"][1]["podRange"] = json!("nonsense");
        let e = config_from_value(&bad, Some("n1")).unwrap_err();
        assert!(e.starts_with("its ros2-cni entry: "), "{e}");
        assert!(e.contains("podRange"), "{e}");
    }

    #[test]
    fn quiet_node_says_so() {
        assert_eq!(codes(&base()), vec!["NO_PARTICIPANTS"]);
    }

    #[test]
    fn doctor_names_peers_unreachable_ones_and_relayed_sources() {
        let peer = |address: &str, reachable: bool, received: u64, sources: &[&str]| Peer {
            address: address.parse().unwrap(),
            via: "relay".into(),
            sent: 3,
            sent_bytes: 0,
            received,
            received_bytes: 0,
            dropped: 0,
            last_seen: None,
            last_error: None,
            sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
            reachable,
        };
        let relay = Relay {
            port: 7399,
            peers: vec![
                peer("192.168.0.12", true, 4, &["192.168.2.5"]),
                peer("192.168.0.99", false, 0, &[]),
            ],
            ..Default::default()
        };
        let f = relay_findings(&relay);
        let codes: Vec<_> = f.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            [
                "RELAY_PEER_UNREACHABLE",
                "RELAY_PEERS",
                "RELAY_ONLY_PARTICIPANTS"
            ]
        );
        assert!(f[0].message.contains("192.168.0.99"));
        assert!(f[2].message.contains("192.168.2.5 (from 192.168.0.12)"));
        assert!(relay_findings(&Relay::default()).is_empty());
    }

    #[test]
    fn domain_blocked_names_the_pod_the_domain_and_the_count() {
        let dp: api::DomainPolicy = serde_json::from_value(json!({"pods": [
            {"namespace": "team-b", "pod": "stray", "ip": "192.168.1.5", "allowedDomains": [1],
             "sentDropped": 42, "receivedDropped": 0, "lastSentDropped": 1000},
            {"namespace": "team-a", "pod": "ok", "ip": "192.168.1.6", "allowedDomains": [0],
             "sentDropped": 0, "receivedDropped": 7, "lastSentDropped": null}]}))
        .unwrap();
        let seen: Participant = serde_json::from_value(json!({
            "guidPrefix": "01", "vendor": "x", "vendorId": "0110", "domain": 0,
            "locators": [], "seenOn": "r2c1", "source": "192.168.1.5:1", "pod": "team-b/stray",
            "ttl": 1, "leaseSeconds": null, "firstSeen": 0, "lastSeen": 0, "name": null}))
        .unwrap();
        let f = domain_blocked_findings(&dp, 1010, std::slice::from_ref(&seen));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].code, "DOMAIN_BLOCKED");
        for want in [
            "team-b/stray",
            "for domain 0,",
            "allows 1",
            "42 datagrams",
            "10 s ago",
        ] {
            assert!(f[0].message.contains(want), "{want}: {}", f[0].message);
        }
        assert!(
            domain_blocked_findings(&dp, 5000, &[]).is_empty(),
            "old drops"
        );
        // the domain from the policy's own record, without a participant seen
        let mut dp2 = dp.clone();
        dp2.pods[0].blocked_domains = vec![7];
        let f = domain_blocked_findings(&dp2, 1010, &[]);
        assert!(f[0].message.contains("for domain 7,"), "{}", f[0].message);
        assert!(domain_blocked_findings(&api::DomainPolicy::default(), 0, &[]).is_empty());
    }

    #[test]
    fn findings_name_recently_limited_pods_and_the_key() {
        // the status' part, read as doctor reads it
        let limits_of = |st: &Value| -> DiscoveryLimits {
            match &st["discoveryLimits"] {
                Value::Null => DiscoveryLimits::default(),
                v => serde_json::from_value(v.clone()).unwrap(),
            }
        };
        // moved here from agent::limits::tests with the findings
        let mut st = json!({"discoveryLimits": {
            "pod": {"rate": 200, "burst": 1000},
            "uplink": {"rate": 2000, "burst": 10000},
            "pods": [
                {"namespace": "robots", "pod": "flooder", "port": "r2c0aaa", "ip": "192.168.1.5", "limitedPackets": 4711,
                 "limitedPerSecond": 900.0, "lastLimited": 1000},
                {"namespace": "robots", "pod": "old", "port": "r2c0bbb", "ip": "192.168.1.6", "limitedPackets": 5,
                 "limitedPerSecond": 0.0, "lastLimited": 100},
                {"namespace": "robots", "pod": "quiet", "port": "r2c0ccc", "ip": "192.168.1.7", "limitedPackets": 0,
                 "limitedPerSecond": 0.0, "lastLimited": null}],
            "uplinkLimitedPackets": 0, "uplinkLastLimited": null}});
        let f = limit_findings(&limits_of(&st), 1010);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].code, "POD_RATE_LIMITED");
        for want in [
            "robots/flooder",
            "4711",
            "podDiscoveryRate",
            "200/s, burst 1000",
            "10 s ago",
        ] {
            assert!(f[0].message.contains(want), "{want}: {}", f[0].message);
        }
        st["discoveryLimits"]["uplinkLastLimited"] = json!(1005);
        st["discoveryLimits"]["uplinkLimitedPackets"] = json!(99);
        st["discoveryLimits"]["uplinkInterface"] = json!("eth0");
        let f = limit_findings(&limits_of(&st), 1010);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[1].code, "UPLINK_RATE_LIMITED");
        assert!(
            f[1].message.contains("eth0") && f[1].message.contains("uplinkDiscoveryRate"),
            "{}",
            f[1].message
        );
        st["discoveryLimits"]["uplinkSenderLastLimited"] = json!(1009);
        let f = limit_findings(&limits_of(&st), 1010);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(
            f[1].message.contains("one sender") && f[1].message.contains("podDiscoveryRate"),
            "{}",
            f[1].message
        );
        assert!(
            limit_findings(&limits_of(&json!({"pid": 1})), 0).is_empty(),
            "an older agent's status"
        );
    }
}
