//! The agent's socket protocol, as types: what a client may ask on
//! `dataDir/agent.sock` and what the agent answers.
//!
//! The wire: a client writes one line (a [`Request`]) and reads one JSON
//! document (a reply) until the agent closes the connection. Requests are
//! `status` (or an empty line), `participants` and `teardown {Handoff as
//! JSON}`; replies are [`Status`], [`Participants`], [`Queued`], or
//! [`ErrorReply`] when the request was not understood.
//!
//! The agent builds its replies from these types and every client (the
//! plugin, `doctor`, `health`, the lab) reads them through them, so a
//! renamed field is a compile error on both sides. Reading: unknown fields
//! are ignored (a newer agent may say more); a missing section reads as
//! empty (an older agent said less), a missing identity field (`pid`,
//! `mode`, `healthy`, ...) is an error that names it, so that something
//! else on the socket does not pass for a quiet agent.
//!
//! This module is a leaf: it uses nothing else in the crate, and anything
//! may use it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a client waits for the agent to take its request and answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `status` (also an empty line): the [`Status`] document.
    Status,
    /// `participants`: the [`Participants`] table.
    Participants,
    /// `teardown {json}`: run a DEL's slow kernel work; answered with [`Queued`].
    Teardown(Handoff),
}

/// Why a request line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("bad teardown request: {0}")]
    BadTeardown(String),
    #[error("unknown command \"{0}\" (try \"status\" or \"participants\")")]
    Unknown(String),
}

impl Request {
    /// The line a client sends (without the newline).
    pub fn line(&self) -> String {
        match self {
            Request::Status => "status".into(),
            Request::Participants => "participants".into(),
            Request::Teardown(h) => format!(
                "teardown {}",
                serde_json::to_string(h).expect("a Handoff always serializes")
            ),
        }
    }

    /// Reads a request line (surrounding whitespace ignored).
    pub fn parse(line: &str) -> Result<Request, RequestError> {
        let line = line.trim();
        if let Some(job) = line.strip_prefix("teardown ") {
            return serde_json::from_str(job)
                .map(Request::Teardown)
                .map_err(|e| RequestError::BadTeardown(e.to_string()));
        }
        match line {
            "" | "status" => Ok(Request::Status),
            "participants" => Ok(Request::Participants),
            other => Err(RequestError::Unknown(other.to_owned())),
        }
    }
}

/// Work a DEL hands to the agent (`teardown`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handoff {
    /// The link to delete: its index and name, in `netns` ("" = the node's).
    pub ifindex: u32,
    pub name: String,
    #[serde(default)]
    pub netns: String,
    /// The anti-spoofing element (port, MAC, IPv4) to delete, if any.
    #[serde(default)]
    pub element: Option<(String, String, Ipv4Addr)>,
}

/// The answer to `teardown`: the work was taken (it runs after the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub queued: bool,
}

/// The answer to a request the agent did not understand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

/// The answer to `status`: the agent's health and what it routes.
///
/// The identity and health fields are required; the sections default to
/// empty, so that a status from an agent that predates a section still reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub node: Option<String>,
    /// "routed" or "macvlan".
    pub mode: String,
    pub uplink: String,
    /// The device pods are reached through: the bridge or the macvlan shim.
    pub node_device: String,
    /// Whether the agent routes multicast (routed mode).
    pub routing: bool,
    /// Which multicast forwarder runs and why (none in macvlan mode).
    #[serde(default)]
    pub forwarder: ForwarderInfo,
    pub subnet: String,
    pub pool: Option<String>,
    #[serde(default)]
    pub groups: Vec<Ipv4Addr>,
    /// Unix time.
    #[serde(default)]
    pub started_at: u64,
    #[serde(default)]
    pub restarts: u64,
    #[serde(default)]
    pub reloads: u64,
    #[serde(default)]
    pub pods: u64,
    #[serde(default)]
    pub vifs: Vec<Vif>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub forwarded: Vec<Forwarded>,
    #[serde(default)]
    pub dropped: Dropped,
    #[serde(default)]
    pub ttl_raised: u64,
    #[serde(default)]
    pub upcalls: u64,
    #[serde(default)]
    pub multicast_pressure: Pressure,
    #[serde(default)]
    pub discovery_limits: DiscoveryLimits,
    /// The domain policy (`domains`); None: no policy in force.
    #[serde(default)]
    pub domain_policy: Option<DomainPolicy>,
    /// Per-pod discovery datagrams sent and received.
    #[serde(default)]
    pub discovery_datagrams: Vec<PodDiscovery>,
    #[serde(default)]
    pub igmp_reports_sent: u64,
    /// How many participants the table holds.
    #[serde(default)]
    pub participants: u64,
    #[serde(default)]
    pub fast_path: FastPath,
    pub relay: Option<Relay>,
    /// The pods' Zenoh routers, when `zenohRouter` is set.
    #[serde(default)]
    pub zenoh: Option<ZenohRouters>,
    /// The conflist watcher's counters, when the agent keeps the entry installed.
    pub install: Option<Install>,
    pub healthy: bool,
    pub problems: Vec<String>,
}

/// A multicast VIF.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vif {
    pub vif: u16,
    pub name: String,
    pub ifindex: u32,
    /// "uplink" or "pods".
    pub role: String,
    pub in_packets: u64,
    pub out_packets: u64,
}

/// The multicast forwarder: `kind` "kernel" (the kernel's multicast
/// routing) or "nftables" (dup rules), None when the agent forwards nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ForwarderInfo {
    pub kind: Option<String>,
    pub reason: String,
}

/// One multicast route with its kernel counters (keys as the kernel's
/// names: `wrong_if`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// 0.0.0.0: every source.
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    /// The VIFs a packet may arrive on (and leaves on the others of).
    pub iif: String,
    pub oifs: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
    pub wrong_if: u64,
}

/// RTPS multicast forwarded for one group in one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    pub group: Ipv4Addr,
    pub direction: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Packets not forwarded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(default)]
pub struct Dropped {
    pub not_rtps: u64,
    pub wrong_interface: u64,
    pub spoofed: u64,
}

/// Multicast to groups that are not routed, arriving now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(default)]
pub struct Pressure {
    pub not_rtps_per_second: u64,
    pub threshold: u64,
    pub active: bool,
    pub interface: Option<String>,
    pub sources: Vec<PressureSource>,
    /// Unix time it began.
    pub since: Option<u64>,
}

/// A source of multicast pressure, from a sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PressureSource {
    pub source: Ipv4Addr,
    /// The interface it arrived on.
    pub interface: String,
    /// Distinct groups it sent to in the sample.
    pub groups: u64,
    pub packets: u64,
}

/// The discovery rate limits and what they dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(default)]
pub struct DiscoveryLimits {
    /// Per pod (and per LAN sender); None: off.
    pub pod: Option<Limit>,
    /// All LAN senders together; None: off.
    pub uplink: Option<Limit>,
    pub uplink_interface: Option<String>,
    pub pods: Vec<PodLimited>,
    pub unlisted_limited_packets: u64,
    pub uplink_limited_packets: u64,
    pub uplink_limited_per_second: f64,
    /// Unix time of the read that saw the count grow.
    pub uplink_last_limited: Option<u64>,
    pub uplink_sender_limited_packets: u64,
    pub uplink_sender_last_limited: Option<u64>,
}

/// A token bucket: packets per second and burst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub rate: u32,
    pub burst: u32,
}

/// A pod's discovery limit and what it dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodLimited {
    pub namespace: String,
    pub pod: String,
    /// The host-side port.
    pub port: String,
    pub ip: String,
    pub limited_packets: u64,
    pub limited_per_second: f64,
    pub last_limited: Option<u64>,
}

/// The domain policy in force and what it dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(default)]
pub struct DomainPolicy {
    pub pods: Vec<PodDomains>,
    /// From and to pod ports not listed yet (default deny).
    pub unlisted_sent_dropped: u64,
    pub unlisted_received_dropped: u64,
}

/// One pod under the domain policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(default)]
pub struct PodDomains {
    pub namespace: String,
    pub pod: String,
    /// The host-side port.
    pub port: String,
    pub ip: String,
    /// None: every domain.
    pub allowed_domains: Option<Vec<u16>>,
    /// Domains it sent to and may not use (last five minutes).
    pub blocked_domains: Vec<u16>,
    pub sent_dropped: u64,
    pub received_dropped: u64,
    /// Unix times of the reads that saw the counts grow.
    pub last_sent_dropped: Option<u64>,
    pub last_received_dropped: Option<u64>,
}

/// A pod's RTPS discovery datagrams (UDP to a multicast group on an SPDP port).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(default)]
pub struct PodDiscovery {
    pub namespace: String,
    pub pod: String,
    pub sent: u64,
    pub received: u64,
}

/// The tc/BPF fast path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FastPath {
    pub enabled: bool,
    /// Attached to the uplink.
    pub lan: bool,
    /// Pods' ports attached.
    pub pods: u64,
    /// Pods the uplink's program delivers LAN unicast straight into
    /// (`bpf_redirect_peer`, past the bridge).
    #[serde(rename = "intoPods")]
    pub into_pods: u64,
    /// Why it does not deliver straight into pods (a kernel before 5.10),
    /// if it does not: their LAN unicast goes through the bridge.
    #[serde(rename = "intoPodsRefused")]
    pub into_pods_refused: Option<String>,
    /// Why it cannot run, if it cannot.
    pub unavailable: Option<String>,
}

/// The RTPS relay to the peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(default)]
pub struct Relay {
    pub active: bool,
    pub port: u16,
    pub lan_multicast: bool,
    pub captured: u64,
    pub not_peer: u64,
    pub last_not_peer: Option<Ipv4Addr>,
    pub rejected: BTreeMap<String, u64>,
    pub problem: Option<String>,
    pub peers: Vec<Peer>,
}

/// The pods' Zenoh routers (`zenohRouter`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZenohRouters {
    /// The node's router they connect to (address:port).
    pub node_router: Option<String>,
    /// `zenohPodRouter`.
    pub command: Vec<String>,
    pub problem: Option<String>,
    pub pods: Vec<PodRouter>,
}

/// One pod's Zenoh router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRouter {
    /// The attachment key (`dataDir/zenoh/KEY.log` is its log).
    pub key: String,
    /// namespace/name.
    pub pod: String,
    /// None while it is not running.
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub last_error: Option<String>,
}

/// A relay peer and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    pub address: Ipv4Addr,
    /// "relay" or "lan": how this node's pods' RTPS reaches the peer.
    pub via: String,
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
    pub dropped: u64,
    /// Unix time of the last datagram from it.
    pub last_seen: Option<u64>,
    pub last_error: Option<String>,
    /// Sources of the packets it relayed: participants known only through it.
    pub sources: BTreeSet<Ipv4Addr>,
    pub reachable: bool,
}

/// The conflist watcher's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Install {
    pub applied: u64,
    pub unchanged: u64,
    pub errors: u64,
}

/// The answer to `participants`: the discovery table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Participants {
    pub node: Option<String>,
    pub subnet: String,
    pub participants: Vec<Participant>,
    pub sources: Vec<Source>,
    /// Datagrams to the watched groups that are neither RTPS nor a Zenoh SCOUT.
    pub malformed: u64,
    /// Zenoh sessions scouting by multicast on this node.
    #[serde(default, rename = "zenohScouts")]
    pub zenoh_scouts: Vec<ZenohScout>,
}

/// A Zenoh session seen scouting (a SCOUT to a watched group), by source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZenohScout {
    /// Where its scouts come from (address:port: one per session).
    pub source: String,
    /// The group and port it scouts on.
    pub group: String,
    /// The interface it was seen on.
    pub seen_on: String,
    /// The pod it belongs to (namespace/name), when it is one of this node's.
    pub pod: Option<String>,
    /// The Zenoh protocol version (9 for zenoh 1.x).
    pub version: u8,
    /// What it looks for: router, peer, client.
    pub looks_for: Vec<String>,
    /// Its Zenoh ID in hex, when its scouts carry one (zenoh 1.x's do not).
    pub zid: Option<String>,
    /// IP TTL of its last scout on arrival.
    pub ttl: u8,
    pub first_seen: u64,
    pub last_seen: u64,
}

/// A DDS participant seen on the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub guid_prefix: String,
    pub vendor: String,
    pub vendor_id: String,
    pub domain: Option<u32>,
    pub name: Option<String>,
    pub locators: Vec<Locator>,
    /// The interface it was seen on.
    pub seen_on: String,
    /// Where its announcements come from (address:port).
    pub source: String,
    /// The pod it belongs to (namespace/name), when it is one of this node's.
    pub pod: Option<String>,
    /// IP TTL of its last announcement on arrival.
    pub ttl: u8,
    pub lease_seconds: Option<f64>,
    pub first_seen: u64,
    pub last_seen: u64,
}

/// One advertised locator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locator {
    /// metatraffic_unicast, metatraffic_multicast, default_unicast, default_multicast
    pub kind: String,
    /// udpv4, udpv6 or the numeric kind
    pub transport: String,
    pub address: Option<String>,
    pub port: u32,
}

impl Locator {
    /// A unicast locator (metatraffic or default).
    pub fn is_unicast(&self) -> bool {
        self.kind.ends_with("_unicast")
    }
}

/// A sender of RTPS multicast, by source address and group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub interface: String,
    pub ttl: u8,
    pub packets: u64,
    pub last_seen: u64,
}

/// Times in the protocol (`startedAt`, `lastSeen`, ...) are whole seconds
/// since the Unix epoch; a time before it is 0.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Now, in the protocol's seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// A reply as one line: the JSON document and a newline.
pub fn reply_line<T: Serialize>(reply: &T) -> String {
    let mut s = serde_json::to_string(reply).expect("replies always serialize");
    s.push('\n');
    s
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no agent answers on {path}: {source}")]
    Unreachable {
        path: String,
        source: std::io::Error,
    },
    #[error("the agent on {path} sent an unreadable answer: {msg}")]
    Garbled { path: String, msg: String },
    #[error("the agent on {path} refused the request: {msg}")]
    Refused { path: String, msg: String },
}

/// Sends one line to the agent at `path` and reads its JSON document,
/// untyped (blocking, [`TIMEOUT`] each way). For tools and tests that look
/// at the wire itself; everyone else asks through [`status`],
/// [`participants`] and [`teardown`].
pub fn exchange(path: &Path, line: &str) -> Result<serde_json::Value, QueryError> {
    let unreachable = |source| QueryError::Unreachable {
        path: path.display().to_string(),
        source,
    };
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(unreachable)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(unreachable)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(unreachable)?;
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(unreachable)?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(unreachable)?;
    serde_json::from_str(buf.trim()).map_err(|e| QueryError::Garbled {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}

/// Asks `req` and reads the reply as `T`; an [`ErrorReply`] is
/// [`QueryError::Refused`], a document that is not a `T` is
/// [`QueryError::Garbled`] naming the field.
pub fn query<T: DeserializeOwned>(path: &Path, req: &Request) -> Result<T, QueryError> {
    decode(path, exchange(path, &req.line())?)
}

fn decode<T: DeserializeOwned>(path: &Path, doc: serde_json::Value) -> Result<T, QueryError> {
    if let Some(msg) = doc.get("error").and_then(|e| e.as_str()) {
        return Err(QueryError::Refused {
            path: path.display().to_string(),
            msg: msg.to_owned(),
        });
    }
    serde_json::from_value(doc).map_err(|e| QueryError::Garbled {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}

/// The agent's [`Status`].
pub fn status(path: &Path) -> Result<Status, QueryError> {
    query(path, &Request::Status)
}

/// The agent's [`Participants`] table.
pub fn participants(path: &Path) -> Result<Participants, QueryError> {
    query(path, &Request::Participants)
}

/// Hands a teardown to the agent; Ok(true) when it took it.
pub fn teardown(path: &Path, h: &Handoff) -> Result<bool, QueryError> {
    query::<Queued>(path, &Request::Teardown(h.clone())).map(|q| q.queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_doc() -> Status {
        Status {
            version: "0.1.0".into(),
            pid: 42,
            node: Some("n1".into()),
            mode: "routed".into(),
            uplink: "eth0".into(),
            node_device: "ros2br0".into(),
            routing: true,
            subnet: "192.168.1.0/24".into(),
            groups: vec!["239.255.0.1".parse().unwrap()],
            routes: vec![Route {
                source: Ipv4Addr::UNSPECIFIED,
                group: "239.255.0.1".parse().unwrap(),
                iif: "eth0,ros2br0".into(),
                oifs: vec!["eth0".into(), "ros2br0".into()],
                packets: 3,
                bytes: 300,
                wrong_if: 0,
            }],
            discovery_limits: DiscoveryLimits {
                pod: Some(Limit {
                    rate: 100,
                    burst: 200,
                }),
                uplink_limited_per_second: 1.5,
                ..Default::default()
            },
            relay: Some(Relay {
                port: 7399,
                rejected: [("checksum".to_owned(), 2)].into_iter().collect(),
                peers: vec![Peer {
                    address: "192.168.0.12".parse().unwrap(),
                    via: "relay".into(),
                    sent: 1,
                    sent_bytes: 2,
                    received: 3,
                    received_bytes: 4,
                    dropped: 0,
                    last_seen: Some(9),
                    last_error: None,
                    sources: ["192.168.2.5".parse().unwrap()].into_iter().collect(),
                    reachable: true,
                }],
                ..Default::default()
            }),
            healthy: true,
            ..Default::default()
        }
    }

    #[test]
    fn status_round_trips_with_the_documented_keys() {
        let st = status_doc();
        let v = serde_json::to_value(&st).unwrap();
        for key in [
            "version",
            "pid",
            "node",
            "mode",
            "uplink",
            "nodeDevice",
            "routing",
            "subnet",
            "pool",
            "groups",
            "startedAt",
            "restarts",
            "reloads",
            "pods",
            "vifs",
            "routes",
            "forwarded",
            "dropped",
            "ttlRaised",
            "upcalls",
            "multicastPressure",
            "discoveryLimits",
            "igmpReportsSent",
            "participants",
            "fastPath",
            "relay",
            "install",
            "healthy",
            "problems",
        ] {
            assert!(v.get(key).is_some(), "status lacks {key}: {v}");
        }
        assert_eq!(v["routes"][0]["wrong_if"], 0);
        assert_eq!(v["dropped"]["notRtps"], 0);
        assert_eq!(v["discoveryLimits"]["pod"]["rate"], 100);
        assert_eq!(v["relay"]["peers"][0]["sentBytes"], 2);
        assert_eq!(v["relay"]["rejected"]["checksum"], 2);
        let back: Status = serde_json::from_value(v).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn key_order_is_the_wire_order() {
        // the documents are read by people too (doctor --json, curl-like use)
        let text = serde_json::to_string(&status_doc()).unwrap();
        let at = |k: &str| text.find(&format!("\"{k}\"")).unwrap();
        assert!(at("version") < at("pid") && at("pid") < at("node"));
        assert!(at("healthy") < at("problems"));
    }

    #[test]
    fn unknown_fields_are_ignored_missing_ones_are_named() {
        let mut v = serde_json::to_value(status_doc()).unwrap();
        v["aFieldFromTheFuture"] = serde_json::json!({"x": 1});
        assert_eq!(
            serde_json::from_value::<Status>(v.clone()).unwrap(),
            status_doc()
        );
        v.as_object_mut().unwrap().remove("pid");
        let e = decode::<Status>(Path::new("/s"), v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `pid`"), "{e}");
    }

    #[test]
    fn an_older_agent_without_the_newer_sections_still_reads() {
        let v = serde_json::json!({"version": "0.0.9", "pid": 7, "mode": "routed", "uplink": "eth0",
            "nodeDevice": "ros2br0", "routing": true, "subnet": "192.168.1.0/24",
            "healthy": true, "problems": [], "discoveryLimits": {"pods": []}});
        let st: Status = serde_json::from_value(v).unwrap();
        assert_eq!(
            (st.pid, st.relay, st.discovery_limits),
            (7, None, DiscoveryLimits::default())
        );
    }

    #[test]
    fn an_error_reply_is_refused_not_garbled() {
        let doc = serde_json::to_value(ErrorReply {
            error: "unknown command \"x\"".into(),
        })
        .unwrap();
        let e = decode::<Status>(Path::new("/s"), doc).unwrap_err();
        assert!(matches!(e, QueryError::Refused { .. }), "{e}");
    }

    #[test]
    fn participants_round_trip() {
        let p = Participants {
            node: None,
            subnet: "192.168.1.0/24".into(),
            participants: vec![Participant {
                guid_prefix: "0110aabb".into(),
                vendor: "Eclipse Cyclone DDS".into(),
                domain: Some(0),
                locators: vec![Locator {
                    kind: "metatraffic_unicast".into(),
                    transport: "udpv4".into(),
                    address: Some("192.168.1.160".into()),
                    port: 7410,
                }],
                lease_seconds: Some(10.5),
                ..Default::default()
            }],
            sources: vec![Source {
                source: "192.168.1.160".parse().unwrap(),
                group: "239.255.0.1".parse().unwrap(),
                interface: "ros2br0".into(),
                ttl: 1,
                packets: 4,
                last_seen: 5,
            }],
            malformed: 1,
            zenoh_scouts: vec![ZenohScout {
                source: "192.168.1.161:40123".into(),
                group: "224.0.0.224:7446".into(),
                looks_for: vec!["router".into(), "peer".into()],
                version: 9,
                ..Default::default()
            }],
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["participants"][0]["guidPrefix"], "0110aabb");
        assert_eq!(v["zenohScouts"][0]["looksFor"][1], "peer");
        // an older agent's document, without Zenoh scouts, still reads
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("zenohScouts");
        assert!(serde_json::from_value::<Participants>(old)
            .unwrap()
            .zenoh_scouts
            .is_empty());
        assert_eq!(v["participants"][0]["seenOn"], "");
        assert_eq!(v["sources"][0]["lastSeen"], 5);
        assert!(p.participants[0].locators[0].is_unicast());
        assert_eq!(serde_json::from_value::<Participants>(v).unwrap(), p);
    }

    #[test]
    fn request_lines_round_trip() {
        let h = Handoff {
            ifindex: 7,
            name: "r2c0abc".into(),
            netns: String::new(),
            element: Some((
                "r2c0abc".into(),
                "aa:bb:cc:dd:ee:ff".into(),
                "192.168.1.9".parse().unwrap(),
            )),
        };
        for r in [Request::Status, Request::Participants, Request::Teardown(h)] {
            assert_eq!(Request::parse(&r.line()).unwrap(), r);
        }
        assert_eq!(Request::parse("").unwrap(), Request::Status);
        assert_eq!(Request::parse("status\n").unwrap(), Request::Status);
        assert_eq!(
            Request::parse("teardown {}").unwrap_err().to_string(),
            "bad teardown request: missing field `ifindex` at line 1 column 2"
        );
        assert_eq!(
            Request::parse("stats").unwrap_err().to_string(),
            "unknown command \"stats\" (try \"status\" or \"participants\")"
        );
        // a handoff without the optional fields (an older plugin)
        let Request::Teardown(h) =
            Request::parse(r#"teardown {"ifindex": 3, "name": "x"}"#).unwrap()
        else {
            panic!("not a teardown")
        };
        assert_eq!((h.netns.as_str(), h.element), ("", None));
    }

    #[test]
    fn queued_is_the_documented_reply() {
        assert_eq!(reply_line(&Queued { queued: true }), "{\"queued\":true}\n");
        let q: Queued = serde_json::from_str("{\"queued\":true}").unwrap();
        assert!(q.queued);
    }
}
