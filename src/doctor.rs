//! `ros2-cni doctor`: what the node looks like, and why discovery fails.
//!
//! It gathers the agent's status and participant table (through
//! [`crate::api`]), the conflist entry, the attached pods, and turns them
//! into findings: each a plain-language cause and a fix, with a stable code
//! (see docs/troubleshooting.md).

use crate::api::{self, DiscoveryLimits, Participant, Participants, Pressure, Relay, Status};
use crate::config::{Config, Mode};
use crate::ipam::Store;
use ipnet::Ipv4Net;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
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
    fn participants(&self) -> &[Participant] {
        self.participants
            .as_ref()
            .map_or(&[], |p| p.participants.as_slice())
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
    if inp.status.is_ok() && inp.participants().is_empty() {
        out.push(Finding::new(
            "NO_PARTICIPANTS",
            Severity::Info,
            "The agent has seen no DDS participant announce itself on this node yet (SPDP to the RTPS groups). \
             Start a ROS 2 node in an opted-in pod, or check `groups`."
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

/// TTL1_NOT_FORWARDED: TTL-1 discovery that no multicast route carries,
/// with its likely cause.
fn ttl1_findings(inp: &Inputs) -> Vec<Finding> {
    let st = inp.status.as_ref().ok();
    let routes = st.map_or(&[][..], |s| s.routes.as_slice());
    let routing = st.is_some_and(|s| s.routing);
    let (uplink, node_dev) = st.map_or(("", ""), |s| (s.uplink.as_str(), s.node_device.as_str()));
    let mut out = vec![];
    for s in inp.sources().iter().filter(|s| s.ttl == 1) {
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
            }
        })
        .collect();
    Inputs {
        subnet: Some(cfg.subnet),
        mode: Some(cfg.mode),
        raise_ttl: cfg.raise_ttl,
        status,
        participants,
        conflist,
        pods,
        kernel: KernelCheck::probe(),
    }
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
    for p in &inp.pods {
        let state = match p.has_interface {
            Some(true) => "ok",
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
        }
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
