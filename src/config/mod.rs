//! The one configuration format shared by the plugin (its conflist entry),
//! the agent (`--config FILE`) and the installer.
//!
//! Two shapes are accepted:
//! - node form: `{"subnet": "192.168.1.0/24", "podRange": "192.168.1.160/28", ...}`
//! - cluster form: `{"subnet": ..., "nodes": {"robot-1": "192.168.1.160/28", ...}}`,
//!   where the node name picks the pool (and optionally mode/uplink per node).
//!
//! Every key is documented in docs/config.md. Reading is two steps: serde
//! reads the JSON into [`Raw`] (raw.rs; one field per key; an unknown key or a value
//! of the wrong type is refused there, with the key's path), then
//! [`Raw::validate`] (validate.rs) checks values and resolves this node's view into
//! [`Config`]. Adding a key is one field of `Raw` and one check in
//! `validate`. Errors ([`Error`]) name the key and the value.

mod raw;
mod validate;

pub use raw::Raw;

use ipnet::Ipv4Net;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub const DEFAULT_IFNAME: &str = "ros0";
pub const DEFAULT_BRIDGE: &str = "ros2br0";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ros2-cni";
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
/// Zenoh's multicast scouting (eclipse-zenoh, zenoh-pico, zenohd): the
/// default of `extraMulticast`.
pub const ZENOH_SCOUTING: (Ipv4Addr, u16) = (Ipv4Addr::new(224, 0, 0, 224), 7446);
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9741";
/// The relay's UDP port: just below the first RTPS port (7400, domain 0's
/// SPDP multicast), so never a port of any DDS domain or participant.
pub const DEFAULT_RELAY_PORT: u16 = 7399;
/// Default of `zenohPodRouter`: zenohd reads the generated configuration.
pub const DEFAULT_ZENOH_POD_ROUTER: [&str; 3] = ["zenohd", "--config", "{config}"];
pub const DEFAULT_MFC_IDLE_SECONDS: u64 = 300;
/// The pod annotation that opts a pod in.
pub const OPT_IN_ANNOTATION: &str = "ros2-cni.io/enabled";
/// runtimeConfig key containerd fills with the pod's annotations.
pub const ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// Keys the CNI runtime adds to a plugin's config; never ours to reject in
/// a conflist entry, never accepted in the agent's file.
pub(crate) const CNI_KEYS: &[&str] = &[
    "cniVersion",
    "name",
    "type",
    "capabilities",
    "runtimeConfig",
    "prevResult",
    "args",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
];

/// Why a config was refused. Every variant names the key (and value) at
/// fault; the plugin's edge maps them to CNI codes (2 for an unknown key,
/// 6 for what is not JSON, 5 for a file that cannot be read, else 7).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: expected a JSON object")]
    NotAnObject,
    #[error("unknown key \"{key}\" in the ros2-cni config{}",
        did_you_mean.map(|k| format!(": did you mean \"{k}\"?")).unwrap_or_default())]
    UnknownKey {
        key: String,
        did_you_mean: Option<&'static str>,
    },
    #[error("unknown key \"{key}\" (expected {expected})")]
    UnknownNodeKey { key: String, expected: String },
    /// A value that is missing, of the wrong type or out of bounds.
    #[error("{field}: {msg}")]
    Invalid { field: String, msg: String },
    /// The cluster form has no entry for this node (raised only when the
    /// pool is needed: ADD, STATUS, the agent's start).
    #[error("{0}")]
    NoPool(String),
    // `error` is in the message, so not chained as `source` as well
    #[error("cannot read config {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config {} is not valid JSON: {error}", path.display())]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },
}

pub(crate) fn invalid(field: impl Into<String>, msg: impl fmt::Display) -> Error {
    Error::Invalid {
        field: field.into(),
        msg: msg.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Routed,
    Macvlan,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Routed => "routed",
            Mode::Macvlan => "macvlan",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// A node's address pool: an inclusive range of IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl Pool {
    /// Parses `a.b.c.d/n` or `a.b.c.d-e.f.g.h`.
    pub fn parse(s: &str) -> Result<Pool, String> {
        if let Some((a, b)) = s.split_once('-') {
            let start: Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| format!("\"{a}\" is not an IPv4 address"))?;
            let end: Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| format!("\"{b}\" is not an IPv4 address"))?;
            if u32::from(start) > u32::from(end) {
                return Err(format!("range \"{s}\" ends before it starts"));
            }
            return Ok(Pool { start, end });
        }
        let net: Ipv4Net = s
            .parse()
            .map_err(|_| format!("\"{s}\" is neither a CIDR nor a start-end range"))?;
        if net.network() != net.addr() {
            return Err(format!(
                "\"{s}\" has host bits set (did you mean {}?)",
                net.trunc()
            ));
        }
        Ok(Pool {
            start: net.network(),
            end: net.broadcast(),
        })
    }

    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        (u32::from(self.start)..=u32::from(self.end)).contains(&u32::from(a))
    }

    pub fn overlaps(&self, o: &Pool) -> bool {
        u32::from(self.start) <= u32::from(o.end) && u32::from(o.start) <= u32::from(self.end)
    }

    /// The addresses of the pool a pod may get in `subnet` (never the subnet's
    /// network or broadcast address), in order.
    pub fn usable(&self, subnet: &Ipv4Net) -> impl Iterator<Item = Ipv4Addr> + Clone {
        let (net, bcast) = (u32::from(subnet.network()), u32::from(subnet.broadcast()));
        let small = subnet.prefix_len() >= 31;
        (u32::from(self.start)..=u32::from(self.end))
            .filter(move |a| small || (*a != net && *a != bcast))
            .map(Ipv4Addr::from)
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// One node's entry in the cluster form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    pub pool: Pool,
    pub mode: Option<Mode>,
    pub uplink: Option<String>,
    /// The node's uplink address (a relay peer of every other node).
    pub address: Option<Ipv4Addr>,
    /// The node's own LAN subnet, when not the top-level `subnet` (nodes
    /// on two subnets joined by a router).
    pub subnet: Option<Ipv4Net>,
}

/// The parsed, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `cniVersion` (plugin config only).
    pub cni_version: Option<String>,
    /// `name` (plugin config only).
    pub name: Option<String>,
    pub mode: Mode,
    pub uplink: Option<String>,
    pub subnet: Ipv4Net,
    /// This node's pool, resolved from `podRange` or from `nodes` + node name.
    /// `None` when the cluster form has no entry for this node: every ADD and
    /// STATUS then fails with `pool_error`.
    pub pool: Option<Pool>,
    pub pool_error: Option<String>,
    pub nodes: BTreeMap<String, NodeEntry>,
    pub node_name: Option<String>,
    pub if_name: String,
    pub bridge: String,
    pub data_dir: PathBuf,
    pub namespaces: Vec<String>,
    pub primary_multicast: bool,
    pub log_file: Option<PathBuf>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub force: bool,
    pub groups: Vec<Ipv4Addr>,
    pub metrics_address: String,
    pub mfc_idle_seconds: u64,
    /// Agent: raise TTL 1 to 2 for RTPS groups so TTL-1 discovery (Fast DDS,
    /// Connext) crosses the node; false leaves TTLs alone.
    pub raise_ttl: bool,
    /// Agent (routed mode): tc/BPF fast path for pod <-> LAN unicast.
    pub fast_path: bool,
    /// Agent (routed mode): rate limits on RTPS discovery multicast.
    pub limits: crate::firewall::limits::Limits,
    /// Discovery isolation (`domains`, `defaultDomains`): which ROS domains
    /// each namespace's pods may use; None when neither key is set.
    pub domains: Option<Domains>,
    /// Agent: the other nodes' uplink addresses the RTPS relay serves
    /// (`peers`, plus every other node entry's `address`).
    pub peers: Vec<Ipv4Addr>,
    /// This node's own `address` from its node entry, if given.
    pub node_address: Option<Ipv4Addr>,
    /// Agent: put the pods' RTPS multicast on the uplink (`lanMulticast`).
    pub lan_multicast: bool,
    /// Agent: UDP port of the relay (`relayPort`).
    pub relay_port: u16,
    /// Agent (routed mode): which multicast forwarder runs
    /// (`multicastForwarder`: auto, kernel or nftables).
    pub multicast_forwarder: crate::forward::Choice,
    /// Agent (routed mode): multicast carried like RTPS discovery beyond
    /// the RTPS groups, as (group, UDP port) (`extraMulticast`; default
    /// Zenoh's scouting, 224.0.0.224:7446). Link-local groups allowed.
    pub extra_multicast: Vec<(Ipv4Addr, u16)>,
    /// Agent: packets per second (and burst) one relay peer may deliver to
    /// this node's pods (`relayPeerRate`, `relayPeerBurst`; rate 0: no limit).
    pub relay_peer_limit: crate::firewall::limits::Limit,
    /// The other subnets of the cluster (nodes' own `subnet`s): the plugin
    /// routes them through the pod's LAN interface.
    pub other_subnets: Vec<Ipv4Net>,
    /// Agent: TCP port of the node's Zenoh router (`zenohRouter`); when
    /// set, every opted-in pod gets a Zenoh router at its own
    /// `localhost:7447` that connects to it (docs/zenoh.md).
    pub zenoh_router: Option<u16>,
    /// Agent: the command line of a pod's Zenoh router (`zenohPodRouter`);
    /// `{config}` is replaced by the path of its generated configuration.
    pub zenoh_pod_router: Vec<String>,
}

/// `domains` and `defaultDomains`: the ROS domains (0–232) each namespace's
/// pods may use (docs/config.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Domains {
    pub by_namespace: BTreeMap<String, Vec<u16>>,
    /// For namespaces not listed; None: every domain.
    pub default: Option<Vec<u16>>,
}

/// Whether `s` is a DNS-1123 label (a Kubernetes namespace name).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl Domains {
    /// The domains a namespace's pods may use; None: every domain.
    pub fn allowed(&self, namespace: &str) -> Option<&[u16]> {
        self.by_namespace
            .get(namespace)
            .or(self.default.as_ref())
            .map(Vec::as_slice)
    }
}

/// Where the node name comes from when the config does not say.
pub fn default_node_name() -> Option<String> {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
}

impl Config {
    /// Every group carried between pods, nodes and LAN hosts: the RTPS
    /// `groups`, then those of `extraMulticast`.
    pub fn discovery_groups(&self) -> Vec<Ipv4Addr> {
        let mut out = self.groups.clone();
        for (g, _) in &self.extra_multicast {
            if !out.contains(g) {
                out.push(*g);
            }
        }
        out
    }

    /// The UDP ports of `extraMulticast` (the RTPS groups are carried on
    /// every port; their discovery limits and counts take the SPDP ports).
    pub fn extra_ports(&self) -> Vec<u16> {
        let mut out: Vec<u16> = self.extra_multicast.iter().map(|(_, p)| *p).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Parses a config object. `plugin` accepts the keys the CNI runtime adds
    /// (cniVersion, prevResult, ...); `node_name` overrides `nodeName`.
    pub fn from_value(v: &Value, plugin: bool, node_name: Option<&str>) -> Result<Config, Error> {
        let m = v.as_object().ok_or(Error::NotAnObject)?;
        raw::check_keys(m, plugin)?;
        raw::read(v)?.validate(node_name)
    }

    /// Reads a config file (agent, installer, doctor).
    pub fn from_file(path: &std::path::Path, node_name: Option<&str>) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::Read {
            path: path.to_owned(),
            error,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|error| Error::Json {
            path: path.to_owned(),
            error,
        })?;
        Config::from_value(&v, false, node_name)
    }

    /// This node's pool, or the reason there is none.
    pub fn pool(&self) -> Result<Pool, Error> {
        self.pool.ok_or_else(|| {
            Error::NoPool(self.pool_error.clone().unwrap_or_else(|| "no pool".into()))
        })
    }

    /// The prefix pods get on their LAN interface (the subnet's).
    pub fn prefix_len(&self) -> u8 {
        self.subnet.prefix_len()
    }

    pub fn lock_path(&self) -> PathBuf {
        self.data_dir.join("lock")
    }

    pub fn agent_socket(&self) -> PathBuf {
        self.data_dir.join("agent.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::{CniError, Code};
    use serde_json::json;

    /// What the plugin answers for a refused config (the CNI code and message).
    fn cni(e: Error) -> CniError {
        CniError::from(e)
    }

    fn base() -> Value {
        json!({"cniVersion": "0.3.1", "name": "k8s-pod-network", "type": "ros2-cni",
               "subnet": "192.168.1.0/24", "podRange": "192.168.1.160/28"})
    }

    #[test]
    fn defaults() {
        let c = Config::from_value(&base(), true, None).unwrap();
        assert_eq!(c.mode, Mode::Routed);
        assert_eq!(c.if_name, "ros0");
        assert_eq!(c.bridge, "ros2br0");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/ros2-cni"));
        assert!(!c.primary_multicast);
        assert_eq!(c.groups, vec![DEFAULT_GROUP]);
        let p = c.pool().unwrap();
        assert_eq!(p.len(), 16);
        assert_eq!(p.start, Ipv4Addr::new(192, 168, 1, 160));
        // the rest of docs/config.md's defaults column
        assert_eq!(
            c.uplink, None,
            "uplink: the default-route interface, found at run time"
        );
        assert!(c.namespaces.is_empty());
        assert_eq!(c.log_file, None);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.log_format, LogFormat::Human);
        assert!(!c.force);
        assert_eq!(c.metrics_address, "127.0.0.1:9741");
        assert_eq!(c.mfc_idle_seconds, 300);
        assert!(c.raise_ttl);
        assert!(c.fast_path);
        assert!(c.peers.is_empty());
        assert!(c.lan_multicast);
        assert_eq!(c.relay_port, 7399);
        assert_eq!(c.multicast_forwarder, crate::forward::Choice::Auto);
        assert_eq!(
            (c.relay_peer_limit.rate, c.relay_peer_limit.burst),
            (2000, 10000)
        );
    }

    #[test]
    fn extra_multicast_defaults_to_zenoh_scouting_and_names_bad_entries() {
        let c = Config::from_value(&base(), true, None).unwrap();
        assert_eq!(c.extra_multicast, vec![ZENOH_SCOUTING]);
        let mut v = base();
        v["extraMulticast"] = json!(["224.0.0.224:7446", "239.1.2.3:9000"]);
        let c = Config::from_value(&v, true, None).unwrap();
        assert_eq!(
            c.extra_multicast,
            vec![ZENOH_SCOUTING, (Ipv4Addr::new(239, 1, 2, 3), 9000)]
        );
        assert_eq!(
            c.discovery_groups(),
            vec![
                DEFAULT_GROUP,
                Ipv4Addr::new(224, 0, 0, 224),
                Ipv4Addr::new(239, 1, 2, 3)
            ]
        );
        v["extraMulticast"] = json!([]);
        assert!(Config::from_value(&v, true, None)
            .unwrap()
            .extra_multicast
            .is_empty());
        for (bad, says) in [
            (json!(["10.0.0.1:7446"]), "extraMulticast[0]"),
            (json!(["224.0.0.224"]), "extraMulticast[0]"),
            (json!(["224.0.0.224:0"]), "extraMulticast[0]"),
            (json!(["224.0.0.224:7446", "x:1"]), "extraMulticast[1]"),
            (json!(["239.255.0.1:7400"]), "extraMulticast[0]"),
        ] {
            let mut v = base();
            v["extraMulticast"] = bad.clone();
            let e = cni(Config::from_value(&v, true, None).unwrap_err());
            assert_eq!(e.code, Code::InvalidConfig, "{bad}: {}", e.msg);
            assert!(e.msg.contains(says), "{bad}: {}", e.msg);
        }
    }

    #[test]
    fn multicast_forwarder_is_one_of_three_names() {
        use crate::forward::Choice;
        for (name, want) in [
            ("auto", Choice::Auto),
            ("kernel", Choice::Kernel),
            ("nftables", Choice::Nftables),
        ] {
            let mut v = base();
            v["multicastForwarder"] = json!(name);
            let c = Config::from_value(&v, true, None).unwrap();
            assert_eq!(c.multicast_forwarder, want);
        }
        for bad in [json!("ipmr"), json!(true)] {
            let mut v = base();
            v["multicastForwarder"] = bad.clone();
            let e = cni(Config::from_value(&v, true, None).unwrap_err());
            assert_eq!(e.code, Code::InvalidConfig, "{bad}: {}", e.msg);
            assert!(e.msg.contains("multicastForwarder"), "{bad}: {}", e.msg);
        }
    }

    #[test]
    fn relay_peers_node_and_cluster_form() {
        let mut v = base();
        v["peers"] = json!(["192.168.1.12", "192.168.1.13", "192.168.1.12"]);
        v["lanMulticast"] = json!(false);
        v["relayPort"] = json!(9000);
        let c = Config::from_value(&v, true, None).unwrap();
        assert_eq!(
            c.peers,
            vec![
                Ipv4Addr::new(192, 168, 1, 12),
                Ipv4Addr::new(192, 168, 1, 13)
            ]
        );
        assert!(!c.lan_multicast);
        assert_eq!(c.relay_port, 9000);
        let v = json!({"subnet": "192.168.1.0/24", "peers": ["10.0.0.5"],
            "nodes": {"a": {"podRange": "192.168.1.160/28", "address": "192.168.1.11"},
                      "b": {"podRange": "192.168.1.176/28", "address": "192.168.1.12"},
                      "c": "192.168.1.192/28"}});
        let c = Config::from_value(&v, false, Some("a")).unwrap();
        assert_eq!(
            c.peers,
            vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(192, 168, 1, 12)]
        );
        assert_eq!(c.node_address, Some(Ipv4Addr::new(192, 168, 1, 11)));
        let c = Config::from_value(&v, false, Some("c")).unwrap();
        assert_eq!(
            c.peers.len(),
            3,
            "c has no address of its own: every other is a peer"
        );
    }

    #[test]
    fn nodes_on_two_subnets() {
        let v = json!({"subnet": "192.168.0.0/20",
            "nodes": {"a": {"podRange": "192.168.1.0/24", "address": "192.168.0.11"},
                      "b": {"podRange": "192.168.2.0/24", "address": "192.168.0.12"},
                      "c": {"podRange": "192.168.17.0/24", "address": "192.168.16.13",
                            "subnet": "192.168.16.0/20"}}});
        let a = Config::from_value(&v, false, Some("a")).unwrap();
        assert_eq!(a.subnet.to_string(), "192.168.0.0/20");
        assert_eq!(a.other_subnets, vec!["192.168.16.0/20".parse().unwrap()]);
        let c = Config::from_value(&v, false, Some("c")).unwrap();
        assert_eq!(c.subnet.to_string(), "192.168.16.0/20");
        assert_eq!(c.prefix_len(), 20);
        assert_eq!(c.other_subnets, vec!["192.168.0.0/20".parse().unwrap()]);
        // a pool outside the node's own subnet, overlapping subnets
        for (entry, says) in [
            (
                json!({"podRange": "192.168.3.0/24", "subnet": "192.168.16.0/20"}),
                "nodes.c.podRange",
            ),
            (
                json!({"podRange": "192.168.17.0/24", "subnet": "192.168.0.0/16"}),
                "nodes.c.subnet",
            ),
            (
                json!({"podRange": "192.168.17.0/24", "subnet": "192.168.16.1/20"}),
                "nodes.c.subnet",
            ),
        ] {
            let mut v = v.clone();
            v["nodes"]["c"] = entry;
            let e = cni(Config::from_value(&v, false, Some("a")).unwrap_err());
            assert!(e.msg.contains(says), "{says}: {}", e.msg);
        }
    }

    #[test]
    fn relay_keys_are_validated_with_the_key_named() {
        for (key, val) in [
            ("peers", json!(["nope"])),
            ("peers", json!(["239.255.0.1"])),
            ("peers", json!("192.168.1.12")),
            ("lanMulticast", json!("no")),
            ("relayPort", json!(0)),
            ("relayPort", json!(70000)),
        ] {
            let mut v = base();
            v[key] = val.clone();
            let e = cni(Config::from_value(&v, true, None).unwrap_err());
            assert_eq!(e.code, Code::InvalidConfig, "{key}={val}: {}", e.msg);
            assert!(e.msg.contains(key), "{key}={val}: {}", e.msg);
        }
        for (addr, says) in [("192.168.1.165", "pool"), ("nope", "IPv4")] {
            let v = json!({"subnet": "192.168.1.0/24",
                "nodes": {"a": {"podRange": "192.168.1.160/28", "address": addr}}});
            let e = cni(Config::from_value(&v, false, Some("a")).unwrap_err());
            assert!(
                e.msg.contains("nodes.a.address") && e.msg.contains(says),
                "{}",
                e.msg
            );
        }
        let v = json!({"subnet": "192.168.1.0/24",
            "nodes": {"a": {"podRange": "192.168.1.160/28", "address": "192.168.1.11"},
                      "b": {"podRange": "192.168.1.176/28", "address": "192.168.1.11"}}});
        let e = cni(Config::from_value(&v, false, Some("a")).unwrap_err());
        assert!(e.msg.contains("nodes.b.address"), "{}", e.msg);
    }

    #[test]
    fn keys_default_validate_and_name_the_key() {
        // moved from firewall::limits (the discovery limit keys are read here)
        use crate::firewall::limits::{Limit, Limits};
        let limits = |extra: Value| {
            let mut v = base();
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            Config::from_value(&v, true, None)
                .map(|c| c.limits)
                .map_err(cni)
        };
        // docs/config.md's defaults column
        assert_eq!(
            limits(json!({})).unwrap(),
            Limits {
                pod: Limit {
                    rate: 200,
                    burst: 1000
                },
                uplink: Limit {
                    rate: 2000,
                    burst: 10000
                }
            }
        );
        let l = limits(json!({"podDiscoveryRate": 0, "uplinkDiscoveryBurst": 5})).unwrap();
        assert!(!l.pod.is_on() && l.uplink.is_on());
        assert_eq!(l.uplink.burst, 5);
        for (key, v, says) in [
            ("podDiscoveryRate", json!(-1), "whole number"),
            ("podDiscoveryRate", json!(1.5), "whole number"),
            ("podDiscoveryBurst", json!("10"), "whole number"),
            ("uplinkDiscoveryRate", json!(20_000_000), "10000000"),
            ("podDiscoveryBurst", json!(0), "at least 1"),
            ("uplinkDiscoveryBurst", json!(0), "at least 1"),
        ] {
            let e = limits(json!({ key: v.clone() })).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig);
            assert!(
                e.msg.starts_with(key) && e.msg.contains(says),
                "{key}={v}: {}",
                e.msg
            );
        }
        // burst 0 is fine once the limit is off
        limits(json!({"podDiscoveryRate": 0, "podDiscoveryBurst": 0})).unwrap();
    }

    #[test]
    fn null_is_absent_and_errors_name_the_path() {
        // docs/config.md: `null` is the same as leaving a key out
        let mut v = base();
        for k in [
            "mode",
            "groups",
            "peers",
            "mfcIdleSeconds",
            "relayPort",
            "nodes",
            "logFile",
        ] {
            v[k] = Value::Null;
        }
        let c = Config::from_value(&v, true, None).unwrap();
        assert_eq!((c.groups, c.relay_port), (vec![DEFAULT_GROUP], 7399));
        // a near miss is suggested in details; a far one is not
        for (key, near) in [
            ("podRnage", "did you mean \"podRange\"?"),
            ("PODRANGE", "did you mean \"podRange\"?"),
            ("colour", ""),
        ] {
            let mut v = base();
            v[key] = json!("x");
            let e = cni(Config::from_value(&v, true, None).unwrap_err());
            assert_eq!(
                (e.code, e.details.as_str()),
                (Code::UnsupportedField, near),
                "{key}"
            );
            assert!(e.msg.contains(key), "{}", e.msg);
        }
        // a value of the wrong type: the message starts with its path
        for (key, val, path) in [
            ("peers", json!(["192.168.1.2", 7]), "peers[1]: "),
            (
                "nodes",
                json!({"a": {"podRange": "192.168.1.160/28", "address": 7}}),
                "nodes.a.address: ",
            ),
            ("nodes", json!({"a": 7}), "nodes.a: "),
            ("relayPort", json!("7399"), "relayPort: "),
        ] {
            let mut v = base();
            v[key] = val;
            let e = cni(Config::from_value(&v, true, Some("a")).unwrap_err());
            assert_eq!(e.code, Code::InvalidConfig, "{}", e.msg);
            assert!(e.msg.starts_with(path), "{path}: {}", e.msg);
        }
        // in a node entry, an unknown key is code 2 with the entry named
        let v = json!({"subnet": "192.168.1.0/24", "nodes": {"a": {"podRange": "192.168.1.160/28", "adress": "192.168.1.2"}}});
        let e = cni(Config::from_value(&v, false, Some("a")).unwrap_err());
        assert_eq!(e.code, Code::UnsupportedField);
        assert!(e.msg.contains("nodes.a.adress"), "{}", e.msg);
    }

    #[test]
    fn domains_parse_validate_and_name_the_key() {
        let c = Config::from_value(&base(), true, None).unwrap();
        assert_eq!(c.domains, None, "unset: no policy");
        let mut v = base();
        v["domains"] = json!({"team-a": [0], "team-b": [2, 1, 1]});
        let d = Config::from_value(&v, true, None).unwrap().domains.unwrap();
        assert_eq!(d.allowed("team-a"), Some(&[0u16][..]));
        assert_eq!(d.allowed("team-b"), Some(&[1u16, 2][..]));
        assert_eq!(d.allowed("other"), None, "no defaultDomains: every domain");
        v["defaultDomains"] = json!([232]);
        let d = Config::from_value(&v, true, None).unwrap().domains.unwrap();
        assert_eq!(d.allowed("other"), Some(&[232u16][..]));
        // cluster form: the same top-level key
        let mut v = base();
        v.as_object_mut().unwrap().remove("podRange");
        v["nodes"] = json!({"robot-1": "192.168.1.160/28"});
        v["domains"] = json!({"team-a": [0]});
        let c = Config::from_value(&v, true, Some("robot-1")).unwrap();
        assert_eq!(c.domains.unwrap().allowed("team-a"), Some(&[0u16][..]));
        for (key, val, names, says) in [
            ("domains", json!([0]), "domains", "object"),
            ("domains", json!({"Team_A": [0]}), "domains", "DNS-1123"),
            (
                "domains",
                json!({"team-a": [233]}),
                "domains.team-a",
                "0 to 232",
            ),
            ("domains", json!({"team-a": 0}), "domains.team-a", "list"),
            (
                "domains",
                json!({"team-a": [-1]}),
                "domains.team-a",
                "0 to 232",
            ),
            ("defaultDomains", json!(["0"]), "defaultDomains", "0 to 232"),
        ] {
            let mut v = base();
            v[key] = val.clone();
            let e = cni(Config::from_value(&v, true, None).unwrap_err());
            assert_eq!(e.code, Code::InvalidConfig, "{key}={val}: {}", e.msg);
            assert!(
                e.msg.starts_with(names) && e.msg.contains(says),
                "{key}={val}: {}",
                e.msg
            );
        }
        assert!(is_dns1123_label("a-1") && !is_dns1123_label("-a") && !is_dns1123_label(""));
    }

    #[test]
    fn documented_limits_are_enforced() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("mfcIdleSeconds", json!(9), "10"),
            ("groups", json!(["224.0.0.251"]), "224.0.0.0/24"),
            ("subnet", json!("10.0.0.0/7"), "/8"),
            ("subnet", json!("192.168.1.0/31"), "/30"),
        ];
        for (key, val, says) in cases {
            let mut v = base();
            v[key] = val.clone();
            if key == "subnet" {
                v.as_object_mut().unwrap().remove("podRange");
            }
            let e = cni(Config::from_value(&v, true, None).unwrap_err());
            assert_eq!(e.code, Code::InvalidConfig, "{key}={val}: {}", e.msg);
            assert!(
                e.msg.contains(key) && e.msg.contains(says),
                "{key}={val}: {}",
                e.msg
            );
        }
        for (key, val) in [
            ("mfcIdleSeconds", json!(10)),
            ("groups", json!(["239.255.0.1", "239.255.0.2"])),
            ("subnet", json!("192.168.0.0/16")),
        ] {
            let mut v = base();
            v[key] = val.clone();
            Config::from_value(&v, true, None)
                .unwrap_or_else(|e| panic!("{key}={val} is allowed: {e}"));
        }
    }

    #[test]
    fn range_pool_and_usable_skips_network_and_broadcast() {
        let p = Pool::parse("192.168.1.0-192.168.1.255").unwrap();
        let net: Ipv4Net = "192.168.1.0/24".parse().unwrap();
        let u: Vec<_> = p.usable(&net).collect();
        assert_eq!(u.len(), 254);
        assert_eq!(u[0], Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(*u.last().unwrap(), Ipv4Addr::new(192, 168, 1, 254));
    }

    #[test]
    fn plugin_keys_rejected_in_agent_file() {
        let e = cni(Config::from_value(&base(), false, None).unwrap_err());
        assert_eq!(e.code, Code::UnsupportedField);
        assert!(e.msg.contains("cniVersion"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: Vec<(&str, Value, Code)> = vec![
            ("subnet", json!("nope"), Code::InvalidConfig),
            ("subnet", json!("192.168.1.5/24"), Code::InvalidConfig),
            ("subnet", json!(24), Code::InvalidConfig),
            ("podRange", json!("10.0.0.0/28"), Code::InvalidConfig),
            (
                "podRange",
                json!("192.168.1.20-192.168.1.10"),
                Code::InvalidConfig,
            ),
            (
                "ifName",
                json!("this-name-is-too-long"),
                Code::InvalidConfig,
            ),
            ("mode", json!("ipvlan"), Code::InvalidConfig),
            ("dataDir", json!("relative/dir"), Code::InvalidConfig),
            ("namespaces", json!("robots"), Code::InvalidConfig),
            ("primaryMulticast", json!("yes"), Code::InvalidConfig),
            ("groups", json!(["10.0.0.1"]), Code::InvalidConfig),
            ("metricsAddress", json!("localhost"), Code::InvalidConfig),
            ("podrange", json!("192.168.1.0/28"), Code::UnsupportedField),
        ];
        for (key, val, code) in cases {
            let mut v = base();
            v[key] = val.clone();
            let e = cni(Config::from_value(&v, true, None).unwrap_err());
            assert_eq!(e.code, code, "{key}={val}: {}", e.msg);
            assert!(e.msg.contains(key), "{key}={val}: {}", e.msg);
        }
    }

    #[test]
    fn cluster_form_resolves_node() {
        let v = json!({"subnet": "192.168.1.0/24", "uplink": "eth0",
            "nodes": {"a": "192.168.1.160/28", "b": {"podRange": "192.168.1.176-192.168.1.190", "mode": "macvlan"}}});
        let c = Config::from_value(&v, false, Some("b")).unwrap();
        assert_eq!(c.mode, Mode::Macvlan);
        assert_eq!(c.pool().unwrap().len(), 15);
        let c = Config::from_value(&v, false, Some("zz")).unwrap();
        let e = cni(c.pool().unwrap_err());
        assert!(
            e.msg.contains("\"zz\"") && e.msg.contains("a, b"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn overlapping_node_pools_rejected() {
        let v = json!({"subnet": "192.168.1.0/24",
            "nodes": {"a": "192.168.1.160/28", "b": "192.168.1.170-192.168.1.180"}});
        let e = cni(Config::from_value(&v, false, Some("a")).unwrap_err());
        assert!(e.msg.contains("overlap"), "{}", e.msg);
    }
}
