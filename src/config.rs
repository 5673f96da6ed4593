//! The one configuration format shared by the plugin (its conflist entry),
//! the agent (`--config FILE`) and the installer.
//!
//! Two shapes are accepted:
//! - node form: `{"subnet": "192.168.1.0/24", "podRange": "192.168.1.160/28", ...}`
//! - cluster form: `{"subnet": ..., "nodes": {"robot-1": "192.168.1.160/28", ...}}`,
//!   where the node name picks the pool (and optionally mode/uplink per node).
//!
//! Every key is documented in docs/config.md. Errors name the key and value.

use crate::cni::env::validate_ifname;
use crate::cni::{CniError, Code};
use ipnet::Ipv4Net;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub const DEFAULT_IFNAME: &str = "ros0";
pub const DEFAULT_BRIDGE: &str = "ros2br0";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ros2-cni";
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9741";
/// The relay's UDP port: just below the first RTPS port (7400, domain 0's
/// SPDP multicast), so never a port of any DDS domain or participant.
pub const DEFAULT_RELAY_PORT: u16 = 7399;
/// The pod annotation that opts a pod in.
pub const OPT_IN_ANNOTATION: &str = "ros2-cni.io/enabled";
/// runtimeConfig key containerd fills with the pod's annotations.
pub const ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// Keys the CNI runtime adds to a plugin's config; never ours to reject.
const CNI_KEYS: &[&str] = &[
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

/// Every key of our own, plugin and agent alike.
const OUR_KEYS: &[&str] = &[
    "mode",
    "uplink",
    "subnet",
    "podRange",
    "nodes",
    "nodeName",
    "ifName",
    "bridge",
    "dataDir",
    "namespaces",
    "primaryMulticast",
    "logFile",
    "logLevel",
    "logFormat",
    "force",
    "groups",
    "metricsAddress",
    "mfcIdleSeconds",
    "raiseTtl",
    "fastPath",
    "podDiscoveryRate",
    "podDiscoveryBurst",
    "uplinkDiscoveryRate",
    "uplinkDiscoveryBurst",
    "peers",
    "lanMulticast",
    "relayPort",
    "domains",
    "defaultDomains",
];

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
    /// The other subnets of the cluster (nodes' own `subnet`s): the plugin
    /// routes them through the pod's LAN interface.
    pub other_subnets: Vec<Ipv4Net>,
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

fn domain_list(key: &str, v: &Value) -> Result<Vec<u16>, CniError> {
    let max = crate::firewall::domains::MAX_DOMAIN;
    let arr = v.as_array().ok_or_else(|| {
        invalid(
            key,
            format!("expected a list of ROS domain IDs (0 to {max}), got {v}"),
        )
    })?;
    let mut out = vec![];
    for d in arr {
        let id = d.as_u64().filter(|n| *n <= u64::from(max)).ok_or_else(|| {
            invalid(
                key,
                format!("{d} is not a ROS domain ID (a whole number from 0 to {max})"),
            )
        })?;
        out.push(id as u16);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

impl Domains {
    pub fn from_map(m: &Map<String, Value>) -> Result<Option<Domains>, CniError> {
        let mut d = Domains::default();
        let mut set = false;
        match m.get("domains") {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) => {
                set = true;
                for (ns, v) in o {
                    if !is_dns1123_label(ns) {
                        return Err(invalid(
                            "domains",
                            format!("\"{ns}\" is not a namespace name (a DNS-1123 label: lowercase letters, digits and '-', at most 63)"),
                        ));
                    }
                    d.by_namespace
                        .insert(ns.clone(), domain_list(&format!("domains.{ns}"), v)?);
                }
            }
            Some(v) => {
                return Err(invalid(
                    "domains",
                    format!("expected an object mapping namespaces to lists of ROS domain IDs, e.g. {{\"team-a\": [0]}}, got {v}"),
                ))
            }
        }
        match m.get("defaultDomains") {
            None | Some(Value::Null) => {}
            Some(v) => {
                set = true;
                d.default = Some(domain_list("defaultDomains", v)?);
            }
        }
        Ok(set.then_some(d))
    }

    /// The domains a namespace's pods may use; None: every domain.
    pub fn allowed(&self, namespace: &str) -> Option<&[u16]> {
        self.by_namespace
            .get(namespace)
            .or(self.default.as_ref())
            .map(Vec::as_slice)
    }
}

fn invalid(key: &str, msg: impl fmt::Display) -> CniError {
    CniError::new(Code::InvalidConfig, format!("{key}: {msg}"))
}

fn get_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(invalid(key, format!("expected a string, got {v}"))),
    }
}

fn get_bool(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(invalid(key, format!("expected true or false, got {v}"))),
    }
}

fn get_str_list(m: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    invalid(
                        &format!("{key}[{i}]"),
                        format!("expected a string, got {v}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(v) => Err(invalid(key, format!("expected a list of strings, got {v}"))),
    }
}

/// A LAN subnet: an IPv4 CIDR without host bits, /8 to /30.
fn parse_subnet(key: &str, s: &str) -> Result<Ipv4Net, CniError> {
    let subnet: Ipv4Net = s
        .parse()
        .map_err(|_| invalid(key, format!("\"{s}\" is not an IPv4 CIDR")))?;
    if subnet.network() != subnet.addr() {
        return Err(invalid(
            key,
            format!(
                "\"{s}\" has host bits set (did you mean {}?)",
                subnet.trunc()
            ),
        ));
    }
    if subnet.prefix_len() > 30 || subnet.prefix_len() < 8 {
        return Err(invalid(
            key,
            format!("\"{s}\": prefix length must be between /8 and /30"),
        ));
    }
    Ok(subnet)
}

/// A relay peer or node address: a unicast IPv4 address.
fn parse_peer(key: &str, s: &str) -> Result<Ipv4Addr, CniError> {
    let a: Ipv4Addr = s
        .parse()
        .map_err(|_| invalid(key, format!("\"{s}\" is not an IPv4 address")))?;
    if a.is_multicast() || a.is_unspecified() || a.is_broadcast() || a.is_loopback() {
        return Err(invalid(
            key,
            format!("\"{s}\" is not a unicast address of a node"),
        ));
    }
    Ok(a)
}

fn parse_mode(key: &str, s: &str) -> Result<Mode, CniError> {
    match s {
        "routed" => Ok(Mode::Routed),
        "macvlan" => Ok(Mode::Macvlan),
        other => Err(invalid(
            key,
            format!("unknown mode \"{other}\" (expected \"routed\" or \"macvlan\")"),
        )),
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

/// The relay peers: `peers` plus every other node entry's `address`
/// (deduplicated, this node's own address left out); and this node's address.
fn relay_peers(
    m: &Map<String, Value>,
    nodes: &BTreeMap<String, NodeEntry>,
    node_name: Option<&str>,
) -> Result<(Vec<Ipv4Addr>, Option<Ipv4Addr>), CniError> {
    let mut seen: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for (name, e) in nodes {
        if let Some(a) = e.address {
            if let Some(other) = seen.insert(a, name) {
                return Err(invalid(
                    &format!("nodes.{name}.address"),
                    format!("{a} is also the address of \"{other}\""),
                ));
            }
            if let Some((p, _)) = nodes.iter().find(|(_, o)| o.pool.contains(a)) {
                return Err(invalid(
                    &format!("nodes.{name}.address"),
                    format!("{a} is inside the pool of \"{p}\""),
                ));
            }
        }
    }
    let name = node_name
        .map(str::to_owned)
        .or_else(default_node_name)
        .unwrap_or_default();
    let own = nodes.get(&name).and_then(|e| e.address);
    let mut peers = vec![];
    for (i, p) in get_str_list(m, "peers")?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        peers.push(parse_peer(&format!("peers[{i}]"), p)?);
    }
    peers.extend(
        nodes
            .iter()
            .filter(|(n, _)| **n != name)
            .filter_map(|(_, e)| e.address),
    );
    let mut out = vec![];
    for p in peers {
        if Some(p) != own && !out.contains(&p) {
            out.push(p);
        }
    }
    Ok((out, own))
}

impl Config {
    /// Parses a config object. `plugin` accepts the keys the CNI runtime adds
    /// (cniVersion, prevResult, ...); `node_name` overrides `nodeName`.
    pub fn from_value(
        v: &Value,
        plugin: bool,
        node_name: Option<&str>,
    ) -> Result<Config, CniError> {
        let m = v
            .as_object()
            .ok_or_else(|| CniError::new(Code::Decode, "config: expected a JSON object"))?;
        for key in m.keys() {
            let known =
                OUR_KEYS.contains(&key.as_str()) || (plugin && CNI_KEYS.contains(&key.as_str()));
            if !known {
                let mut e = CniError::new(
                    Code::UnsupportedField,
                    format!("unknown key \"{key}\" in the ros2-cni config"),
                );
                if let Some(near) = OUR_KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                    e = e.with_details(format!("did you mean \"{near}\"?"));
                }
                return Err(e);
            }
        }

        let subnet_s = get_str(m, "subnet")?.ok_or_else(|| {
            invalid(
                "subnet",
                "is required (the robot LAN, e.g. \"192.168.1.0/24\")",
            )
        })?;
        let top_subnet = parse_subnet("subnet", subnet_s)?;
        let mut subnet = top_subnet;

        let mode = match get_str(m, "mode")? {
            Some(s) => parse_mode("mode", s)?,
            None => Mode::default(),
        };

        let uplink = get_str(m, "uplink")?.map(str::to_owned);
        if let Some(u) = &uplink {
            validate_ifname("uplink", u).map_err(|e| CniError::new(Code::InvalidConfig, e))?;
        }

        let check_pool = |key: &str, s: &str, subnet: Ipv4Net| -> Result<Pool, CniError> {
            let pool = Pool::parse(s).map_err(|e| invalid(key, e))?;
            if !subnet.contains(&pool.start) || !subnet.contains(&pool.end) {
                return Err(invalid(
                    key,
                    format!("pool \"{s}\" is not inside subnet {subnet}"),
                ));
            }
            if pool.usable(&subnet).next().is_none() {
                return Err(invalid(key, format!("pool \"{s}\" has no usable address")));
            }
            Ok(pool)
        };

        let mut nodes = BTreeMap::new();
        match m.get("nodes") {
            None | Some(Value::Null) => {}
            Some(Value::Object(nm)) => {
                for (name, entry) in nm {
                    let key = format!("nodes.{name}");
                    let e = match entry {
                        Value::String(s) => NodeEntry {
                            pool: check_pool(&key, s, top_subnet)?,
                            mode: None,
                            uplink: None,
                            address: None,
                            subnet: None,
                        },
                        Value::Object(o) => {
                            for k in o.keys() {
                                if !["podRange", "mode", "uplink", "address", "subnet"]
                                    .contains(&k.as_str())
                                {
                                    return Err(CniError::new(
                                        Code::UnsupportedField,
                                        format!("unknown key \"{key}.{k}\" (expected podRange, mode, uplink, address, subnet)"),
                                    ));
                                }
                            }
                            let pr_key = format!("{key}.podRange");
                            let pr = get_str(o, "podRange")
                                .map_err(|e| invalid(&pr_key, e.msg))?
                                .ok_or_else(|| invalid(&pr_key, "is required"))?;
                            let mode = match get_str(o, "mode").map_err(|e| invalid(&key, e.msg))? {
                                Some(s) => Some(parse_mode(&format!("{key}.mode"), s)?),
                                None => None,
                            };
                            let uplink = get_str(o, "uplink")
                                .map_err(|e| invalid(&key, e.msg))?
                                .map(str::to_owned);
                            if let Some(u) = &uplink {
                                validate_ifname(&format!("{key}.uplink"), u)
                                    .map_err(|e| CniError::new(Code::InvalidConfig, e))?;
                            }
                            let address = match get_str(o, "address")
                                .map_err(|e| invalid(&format!("{key}.address"), e.msg))?
                            {
                                Some(a) => Some(parse_peer(&format!("{key}.address"), a)?),
                                None => None,
                            };
                            let sn_key = format!("{key}.subnet");
                            let own_subnet =
                                match get_str(o, "subnet").map_err(|e| invalid(&sn_key, e.msg))? {
                                    Some(v) => Some(parse_subnet(&sn_key, v)?),
                                    None => None,
                                };
                            NodeEntry {
                                pool: check_pool(&pr_key, pr, own_subnet.unwrap_or(top_subnet))?,
                                mode,
                                uplink,
                                address,
                                subnet: own_subnet,
                            }
                        }
                        v => {
                            return Err(invalid(
                                &key,
                                format!(
                                    "expected a pool string or an object with podRange, got {v}"
                                ),
                            ))
                        }
                    };
                    nodes.insert(name.clone(), e);
                }
                let list: Vec<_> = nodes.iter().collect();
                for (i, (a, ea)) in list.iter().enumerate() {
                    for (b, eb) in &list[i + 1..] {
                        let (sa, sb) = (
                            ea.subnet.unwrap_or(top_subnet),
                            eb.subnet.unwrap_or(top_subnet),
                        );
                        if sa != sb && (sa.contains(&sb.network()) || sb.contains(&sa.network())) {
                            return Err(invalid(
                                &format!("nodes.{b}.subnet"),
                                format!("{sb} overlaps {sa} of \"{a}\" (nodes share a subnet or have disjoint ones)"),
                            ));
                        }
                        if ea.pool.overlaps(&eb.pool) {
                            return Err(invalid(
                                "nodes",
                                format!(
                                    "the pools of \"{a}\" ({}) and \"{b}\" ({}) overlap",
                                    ea.pool, eb.pool
                                ),
                            ));
                        }
                    }
                }
            }
            Some(v) => {
                return Err(invalid(
                    "nodes",
                    format!("expected an object of node name to pool, got {v}"),
                ))
            }
        }

        let node_name = node_name
            .map(str::to_owned)
            .or(get_str(m, "nodeName")?.map(str::to_owned));

        let mut mode = mode;
        let mut uplink = uplink;
        let (pool, pool_error) = match get_str(m, "podRange")? {
            Some(s) => (Some(check_pool("podRange", s, top_subnet)?), None),
            None if nodes.is_empty() => {
                return Err(invalid(
                    "podRange",
                    "is required (this node's pool inside subnet, a CIDR or start-end), or give \"nodes\"",
                ))
            }
            None => {
                let name = node_name.clone().or_else(default_node_name);
                match name.as_deref().and_then(|n| nodes.get(n)) {
                    Some(e) => {
                        if let Some(md) = e.mode {
                            mode = md;
                        }
                        if e.uplink.is_some() {
                            uplink = e.uplink.clone();
                        }
                        if let Some(sn) = e.subnet {
                            subnet = sn;
                        }
                        (Some(e.pool), None)
                    }
                    None => (
                        None,
                        Some(format!(
                            "node \"{}\" has no pool in \"nodes\" (known nodes: {}); add it to the cluster config",
                            name.as_deref().unwrap_or("<unknown>"),
                            nodes.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    ),
                }
            }
        };

        let if_name = get_str(m, "ifName")?.unwrap_or(DEFAULT_IFNAME).to_owned();
        validate_ifname("ifName", &if_name).map_err(|e| CniError::new(Code::InvalidConfig, e))?;
        let bridge = get_str(m, "bridge")?.unwrap_or(DEFAULT_BRIDGE).to_owned();
        validate_ifname("bridge", &bridge).map_err(|e| CniError::new(Code::InvalidConfig, e))?;
        if Some(&bridge) == uplink.as_ref() {
            return Err(invalid(
                "bridge",
                format!("\"{bridge}\" is also the uplink"),
            ));
        }

        let data_dir = PathBuf::from(get_str(m, "dataDir")?.unwrap_or(DEFAULT_DATA_DIR));
        if !data_dir.is_absolute() {
            return Err(invalid(
                "dataDir",
                format!("\"{}\" is not an absolute path", data_dir.display()),
            ));
        }
        let log_file = get_str(m, "logFile")?.map(PathBuf::from);
        if let Some(p) = &log_file {
            if !p.is_absolute() {
                return Err(invalid(
                    "logFile",
                    format!("\"{}\" is not an absolute path", p.display()),
                ));
            }
        }
        let log_level = get_str(m, "logLevel")?.unwrap_or("info").to_owned();
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            return Err(invalid(
                "logLevel",
                format!("\"{log_level}\" (expected error, warn, info, debug or trace)"),
            ));
        }
        let log_format = match get_str(m, "logFormat")? {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(o) => {
                return Err(invalid(
                    "logFormat",
                    format!("\"{o}\" (expected \"human\" or \"json\")"),
                ))
            }
        };

        let namespaces = get_str_list(m, "namespaces")?.unwrap_or_default();
        let groups = match get_str_list(m, "groups")? {
            None => vec![DEFAULT_GROUP],
            Some(list) => {
                let mut out = Vec::new();
                for (i, g) in list.iter().enumerate() {
                    let a: Ipv4Addr = g.parse().map_err(|_| {
                        invalid(
                            &format!("groups[{i}]"),
                            format!("\"{g}\" is not an IPv4 address"),
                        )
                    })?;
                    if !a.is_multicast()
                        || a.octets()[0] == 224 && a.octets()[1] == 0 && a.octets()[2] == 0
                    {
                        return Err(invalid(
                            &format!("groups[{i}]"),
                            format!("\"{g}\" is not a routable multicast group (224.0.0.0/24 is link-local)"),
                        ));
                    }
                    out.push(a);
                }
                if out.is_empty() {
                    return Err(invalid("groups", "must list at least one group"));
                }
                out
            }
        };
        let metrics_address = get_str(m, "metricsAddress")?
            .unwrap_or(DEFAULT_METRICS_ADDRESS)
            .to_owned();
        if !metrics_address.is_empty() && metrics_address.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "metricsAddress",
                format!("\"{metrics_address}\" is not host:port (use \"\" to disable)"),
            ));
        }
        let mfc_idle_seconds = match m.get("mfcIdleSeconds") {
            None | Some(Value::Null) => 300,
            Some(v) => v.as_u64().filter(|n| *n >= 10).ok_or_else(|| {
                invalid(
                    "mfcIdleSeconds",
                    format!("expected a number >= 10, got {v}"),
                )
            })?,
        };

        let (peers, node_address) = relay_peers(m, &nodes, node_name.as_deref())?;
        let mut other_subnets: Vec<Ipv4Net> = vec![];
        for e in nodes.values() {
            let sn = e.subnet.unwrap_or(top_subnet);
            if sn != subnet && !other_subnets.contains(&sn) {
                other_subnets.push(sn);
            }
        }
        let relay_port = match m.get("relayPort") {
            None | Some(Value::Null) => DEFAULT_RELAY_PORT,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=65535).contains(n))
                .map(|n| n as u16)
                .ok_or_else(|| invalid("relayPort", format!("expected a port 1-65535, got {v}")))?,
        };

        Ok(Config {
            cni_version: get_str(m, "cniVersion")?.map(str::to_owned),
            name: get_str(m, "name")?.map(str::to_owned),
            mode,
            uplink,
            subnet,
            pool,
            pool_error,
            nodes,
            node_name,
            if_name,
            bridge,
            data_dir,
            namespaces,
            primary_multicast: get_bool(m, "primaryMulticast")?.unwrap_or(false),
            log_file,
            log_level,
            log_format,
            force: get_bool(m, "force")?.unwrap_or(false),
            groups,
            metrics_address,
            mfc_idle_seconds,
            raise_ttl: get_bool(m, "raiseTtl")?.unwrap_or(true),
            fast_path: get_bool(m, "fastPath")?.unwrap_or(true),
            limits: crate::firewall::limits::Limits::from_map(m)?,
            domains: Domains::from_map(m)?,
            peers,
            node_address,
            lan_multicast: get_bool(m, "lanMulticast")?.unwrap_or(true),
            relay_port,
            other_subnets,
        })
    }

    /// Reads a config file (agent, installer, doctor).
    pub fn from_file(path: &std::path::Path, node_name: Option<&str>) -> Result<Config, CniError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CniError::new(
                Code::Io,
                format!("cannot read config {}: {e}", path.display()),
            )
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            CniError::new(
                Code::Decode,
                format!("config {} is not valid JSON: {e}", path.display()),
            )
        })?;
        Config::from_value(&v, false, node_name)
    }

    /// This node's pool, or the reason there is none.
    pub fn pool(&self) -> Result<Pool, CniError> {
        self.pool.ok_or_else(|| {
            CniError::invalid_config(self.pool_error.clone().unwrap_or_else(|| "no pool".into()))
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
    use serde_json::json;

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
            let e = Config::from_value(&v, false, Some("a")).unwrap_err();
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
            let e = Config::from_value(&v, true, None).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig, "{key}={val}: {}", e.msg);
            assert!(e.msg.contains(key), "{key}={val}: {}", e.msg);
        }
        for (addr, says) in [("192.168.1.165", "pool"), ("nope", "IPv4")] {
            let v = json!({"subnet": "192.168.1.0/24",
                "nodes": {"a": {"podRange": "192.168.1.160/28", "address": addr}}});
            let e = Config::from_value(&v, false, Some("a")).unwrap_err();
            assert!(
                e.msg.contains("nodes.a.address") && e.msg.contains(says),
                "{}",
                e.msg
            );
        }
        let v = json!({"subnet": "192.168.1.0/24",
            "nodes": {"a": {"podRange": "192.168.1.160/28", "address": "192.168.1.11"},
                      "b": {"podRange": "192.168.1.176/28", "address": "192.168.1.11"}}});
        let e = Config::from_value(&v, false, Some("a")).unwrap_err();
        assert!(e.msg.contains("nodes.b.address"), "{}", e.msg);
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
            let e = Config::from_value(&v, true, None).unwrap_err();
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
            let e = Config::from_value(&v, true, None).unwrap_err();
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
                .unwrap_or_else(|e| panic!("{key}={val} is allowed: {}", e.msg));
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
        let e = Config::from_value(&base(), false, None).unwrap_err();
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
            let e = Config::from_value(&v, true, None).unwrap_err();
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
        let e = c.pool().unwrap_err();
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
        let e = Config::from_value(&v, false, Some("a")).unwrap_err();
        assert!(e.msg.contains("overlap"), "{}", e.msg);
    }
}
