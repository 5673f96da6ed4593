//! The one configuration format shared by the plugin (its conflist entry),
//! the agent (`--config FILE`) and the installer.
//!
//! Two shapes are accepted:
//! - node form: `{"subnet": "192.168.1.0/24", "podRange": "192.168.1.160/28", ...}`
//! - cluster form: `{"subnet": ..., "nodes": {"robot-1": "192.168.1.160/28", ...}}`,
//!   where the node name picks the pool (and optionally mode/uplink per node).
//!
//! Every key is documented in docs/config.md. Reading is two steps: serde
//! reads the JSON into [`Raw`] (one field per key; an unknown key or a value
//! of the wrong type is refused there, with the key's path), then
//! [`Raw::validate`] checks values and resolves this node's view into
//! [`Config`]. Adding a key is one field of `Raw` and one check in
//! `validate`. Errors ([`Error`]) name the key and the value.

use ipnet::Ipv4Net;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
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
pub const DEFAULT_MFC_IDLE_SECONDS: u64 = 300;
/// The pod annotation that opts a pod in.
pub const OPT_IN_ANNOTATION: &str = "ros2-cni.io/enabled";
/// runtimeConfig key containerd fills with the pod's annotations.
pub const ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// Keys the CNI runtime adds to a plugin's config; never ours to reject in
/// a conflist entry, never accepted in the agent's file.
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
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {} is not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn invalid(field: impl Into<String>, msg: impl fmt::Display) -> Error {
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

// ---------------------------------------------------------------------------
// The serde form: one field per key, typed as the JSON carries it. `null`
// is the same as a missing key everywhere.

/// Every key, as written. The CNI runtime's own keys are here so that the
/// plugin can read `cniVersion` and `name`; the agent's file refuses them
/// (`check_keys`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Raw {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    _type: Option<Value>,
    #[serde(rename = "capabilities")]
    _capabilities: Option<Value>,
    #[serde(rename = "runtimeConfig")]
    _runtime_config: Option<Value>,
    #[serde(rename = "prevResult")]
    _prev_result: Option<Value>,
    #[serde(rename = "args")]
    _args: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    _valid_attachments: Option<Value>,
    #[serde(rename = "cni.dev/attachments")]
    _attachments: Option<Value>,

    mode: Option<String>,
    uplink: Option<String>,
    subnet: Option<String>,
    pod_range: Option<String>,
    nodes: Option<BTreeMap<String, RawNode>>,
    node_name: Option<String>,
    if_name: Option<String>,
    bridge: Option<String>,
    data_dir: Option<String>,
    namespaces: Option<Vec<String>>,
    primary_multicast: Option<bool>,
    log_file: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    force: Option<bool>,
    groups: Option<Vec<String>>,
    metrics_address: Option<String>,
    mfc_idle_seconds: Option<Whole>,
    raise_ttl: Option<bool>,
    fast_path: Option<bool>,
    pod_discovery_rate: Option<Whole>,
    pod_discovery_burst: Option<Whole>,
    uplink_discovery_rate: Option<Whole>,
    uplink_discovery_burst: Option<Whole>,
    peers: Option<Vec<String>>,
    lan_multicast: Option<bool>,
    relay_port: Option<Whole>,
}

/// A node entry of the cluster form, object shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNodeEntry {
    pod_range: Option<String>,
    mode: Option<String>,
    uplink: Option<String>,
    address: Option<String>,
    subnet: Option<String>,
}

/// A node entry: a pool string (`"192.168.1.160/28"`) or an object.
#[derive(Debug)]
enum RawNode {
    Pool(String),
    Entry(RawNodeEntry),
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawNode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a pool string or an object with podRange")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawNode, E> {
                Ok(RawNode::Pool(s.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawNode, A::Error> {
                RawNodeEntry::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(RawNode::Entry)
            }
        }
        d.deserialize_any(V)
    }
}

/// A whole number (0 or more); the bounds are checked by `validate`, which
/// names them.
#[derive(Debug, Clone, Copy)]
struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Whole, E> {
                Ok(Whole(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Whole, E> {
                u64::try_from(n)
                    .map(Whole)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// The names serde accepts for `T` (what `deny_unknown_fields` allows),
/// read from the derived impl itself, so that the list of known keys is the
/// struct and nothing else. Hand-written: serde has no public way to ask.
fn fields_of<T: de::DeserializeOwned>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Fields(&'static [&'static str]);
    impl fmt::Display for Fields {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("fields")
        }
    }
    impl std::error::Error for Fields {}
    impl de::Error for Fields {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Fields(&[])
        }
    }
    struct Probe;
    impl<'de> Deserializer<'de> for Probe {
        type Error = Fields;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Fields(f)) => f,
        Ok(_) => &[],
    }
}

/// The key of ours closest to an unknown one: the same but for case, or
/// at most two edits away (`podRnage`, `podrange` -> `podRange`).
fn did_you_mean(key: &str, ours: &[&'static str]) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    ours.iter()
        .map(|k| {
            (
                strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Unknown keys, before any value is looked at (so a typo is reported as
/// such even when other values are wrong too): at the top level, and in
/// object-shaped node entries.
fn check_keys(m: &serde_json::Map<String, Value>, plugin: bool) -> Result<(), Error> {
    let all = fields_of::<Raw>();
    let ours: Vec<&'static str> = all
        .iter()
        .copied()
        .filter(|k| !CNI_KEYS.contains(k))
        .collect();
    for key in m.keys() {
        let known = ours.contains(&key.as_str()) || (plugin && CNI_KEYS.contains(&key.as_str()));
        if !known {
            return Err(Error::UnknownKey {
                key: key.clone(),
                did_you_mean: did_you_mean(key, &ours),
            });
        }
    }
    let entry_keys = fields_of::<RawNodeEntry>();
    for (name, entry) in m
        .get("nodes")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        for k in entry.as_object().into_iter().flat_map(|o| o.keys()) {
            if !entry_keys.contains(&k.as_str()) {
                return Err(Error::UnknownNodeKey {
                    key: format!("nodes.{name}.{k}"),
                    expected: entry_keys.join(", "),
                });
            }
        }
    }
    Ok(())
}

/// Reads the serde form; a value of the wrong type names its path
/// (`peers[1]`, `nodes.robot-1.address`).
fn read_raw(v: &Value) -> Result<Raw, Error> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let mut field = String::new();
        for seg in e.path() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => field += &format!("[{index}]"),
                serde_path_to_error::Segment::Map { key } if field.is_empty() => field += key,
                serde_path_to_error::Segment::Map { key } => field += &format!(".{key}"),
                _ => {}
            }
        }
        if field.is_empty() {
            field = "config".into();
        }
        invalid(field, e.into_inner())
    })
}

// ---------------------------------------------------------------------------
// The checks of single values.

/// A LAN subnet: an IPv4 CIDR without host bits, /8 to /30.
fn parse_subnet(key: &str, s: &str) -> Result<Ipv4Net, Error> {
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
fn parse_peer(key: &str, s: &str) -> Result<Ipv4Addr, Error> {
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

fn parse_mode(key: &str, s: &str) -> Result<Mode, Error> {
    match s {
        "routed" => Ok(Mode::Routed),
        "macvlan" => Ok(Mode::Macvlan),
        other => Err(invalid(
            key,
            format!("unknown mode \"{other}\" (expected \"routed\" or \"macvlan\")"),
        )),
    }
}

fn check_ifname(key: &str, name: &str) -> Result<(), Error> {
    crate::ifname::check(name).map_err(|e| invalid(key, e))
}

fn absolute(key: &str, p: &str) -> Result<PathBuf, Error> {
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(invalid(key, format!("\"{p}\" is not an absolute path")));
    }
    Ok(path)
}

/// A pool inside `subnet` with at least one address a pod may get.
fn check_pool(key: &str, s: &str, subnet: Ipv4Net) -> Result<Pool, Error> {
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
}

fn parse_groups(list: Option<Vec<String>>) -> Result<Vec<Ipv4Addr>, Error> {
    let Some(list) = list else {
        return Ok(vec![DEFAULT_GROUP]);
    };
    let mut out = Vec::new();
    for (i, g) in list.iter().enumerate() {
        let key = format!("groups[{i}]");
        let a: Ipv4Addr = g
            .parse()
            .map_err(|_| invalid(&key, format!("\"{g}\" is not an IPv4 address")))?;
        if !a.is_multicast() || a.octets()[0] == 224 && a.octets()[1] == 0 && a.octets()[2] == 0 {
            return Err(invalid(
                &key,
                format!("\"{g}\" is not a routable multicast group (224.0.0.0/24 is link-local)"),
            ));
        }
        out.push(a);
    }
    if out.is_empty() {
        return Err(invalid("groups", "must list at least one group"));
    }
    Ok(out)
}

fn parse_log_level(level: Option<String>) -> Result<String, Error> {
    let level = level.unwrap_or_else(|| "info".into());
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        return Err(invalid(
            "logLevel",
            format!("\"{level}\" (expected error, warn, info, debug or trace)"),
        ));
    }
    Ok(level)
}

fn parse_log_format(format: Option<&str>) -> Result<LogFormat, Error> {
    match format {
        None | Some("human") => Ok(LogFormat::Human),
        Some("json") => Ok(LogFormat::Json),
        Some(o) => Err(invalid(
            "logFormat",
            format!("\"{o}\" (expected \"human\" or \"json\")"),
        )),
    }
}

/// host:port, or "" (no metrics endpoint).
fn parse_metrics_address(a: Option<String>) -> Result<String, Error> {
    let a = a.unwrap_or_else(|| DEFAULT_METRICS_ADDRESS.into());
    if !a.is_empty() && a.parse::<std::net::SocketAddr>().is_err() {
        return Err(invalid(
            "metricsAddress",
            format!("\"{a}\" is not host:port (use \"\" to disable)"),
        ));
    }
    Ok(a)
}

fn parse_mfc_idle(n: Option<Whole>) -> Result<u64, Error> {
    match n {
        None => Ok(DEFAULT_MFC_IDLE_SECONDS),
        Some(Whole(n)) if n >= 10 => Ok(n),
        Some(Whole(n)) => Err(invalid(
            "mfcIdleSeconds",
            format!("expected a number >= 10, got {n}"),
        )),
    }
}

fn parse_relay_port(n: Option<Whole>) -> Result<u16, Error> {
    match n {
        None => Ok(DEFAULT_RELAY_PORT),
        Some(Whole(n)) if (1..=65535).contains(&n) => Ok(n as u16),
        Some(Whole(n)) => Err(invalid(
            "relayPort",
            format!("expected a port 1-65535, got {n}"),
        )),
    }
}

const DEFAULT_LIMITS: crate::firewall::limits::Limits = crate::firewall::limits::Limits::DEFAULT;

/// `podDiscoveryRate`/`Burst` and `uplinkDiscoveryRate`/`Burst`.
fn parse_limit(
    (rate_key, rate): (&str, Option<Whole>),
    (burst_key, burst): (&str, Option<Whole>),
    def: crate::firewall::limits::Limit,
) -> Result<crate::firewall::limits::Limit, Error> {
    use crate::firewall::limits::{MAX_BURST, MAX_RATE};
    let count = |key: &str, v: Option<Whole>, def: u32, max: u32| match v {
        None => Ok(def),
        Some(Whole(n)) if n <= u64::from(max) => Ok(n as u32),
        Some(Whole(n)) => Err(invalid(
            key,
            format!("expected a whole number from 0 to {max}, got {n}"),
        )),
    };
    let rate = count(rate_key, rate, def.rate, MAX_RATE)?;
    let burst = count(burst_key, burst, def.burst, MAX_BURST)?;
    if rate > 0 && burst == 0 {
        return Err(invalid(
            burst_key,
            format!("must be at least 1 while {rate_key} is on (0 turns the limit off: set {rate_key} to 0)"),
        ));
    }
    Ok(crate::firewall::limits::Limit { rate, burst })
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

// ---------------------------------------------------------------------------
// The checks across keys.

/// The node entries of the cluster form, each checked, then pairwise: pools
/// must not overlap, and nodes share a subnet or have disjoint ones.
fn check_nodes(
    raw: BTreeMap<String, RawNode>,
    top_subnet: Ipv4Net,
) -> Result<BTreeMap<String, NodeEntry>, Error> {
    let mut nodes = BTreeMap::new();
    for (name, entry) in raw {
        let key = format!("nodes.{name}");
        let e = match entry {
            RawNode::Pool(s) => NodeEntry {
                pool: check_pool(&key, &s, top_subnet)?,
                mode: None,
                uplink: None,
                address: None,
                subnet: None,
            },
            RawNode::Entry(o) => {
                let pr_key = format!("{key}.podRange");
                let pr = o.pod_range.ok_or_else(|| invalid(&pr_key, "is required"))?;
                let mode = o
                    .mode
                    .map(|s| parse_mode(&format!("{key}.mode"), &s))
                    .transpose()?;
                if let Some(u) = &o.uplink {
                    check_ifname(&format!("{key}.uplink"), u)?;
                }
                let address = o
                    .address
                    .map(|a| parse_peer(&format!("{key}.address"), &a))
                    .transpose()?;
                let subnet = o
                    .subnet
                    .map(|s| parse_subnet(&format!("{key}.subnet"), &s))
                    .transpose()?;
                NodeEntry {
                    pool: check_pool(&pr_key, &pr, subnet.unwrap_or(top_subnet))?,
                    mode,
                    uplink: o.uplink,
                    address,
                    subnet,
                }
            }
        };
        nodes.insert(name, e);
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
                    format!("nodes.{b}.subnet"),
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
    Ok(nodes)
}

/// The relay peers: `peers` plus every other node entry's `address`
/// (deduplicated, this node's own address left out); and this node's address.
fn relay_peers(
    peers: Option<Vec<String>>,
    nodes: &BTreeMap<String, NodeEntry>,
    node_name: Option<&str>,
) -> Result<(Vec<Ipv4Addr>, Option<Ipv4Addr>), Error> {
    let mut seen: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for (name, e) in nodes {
        if let Some(a) = e.address {
            if let Some(other) = seen.insert(a, name) {
                return Err(invalid(
                    format!("nodes.{name}.address"),
                    format!("{a} is also the address of \"{other}\""),
                ));
            }
            if let Some((p, _)) = nodes.iter().find(|(_, o)| o.pool.contains(a)) {
                return Err(invalid(
                    format!("nodes.{name}.address"),
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
    let mut all = vec![];
    for (i, p) in peers.unwrap_or_default().iter().enumerate() {
        all.push(parse_peer(&format!("peers[{i}]"), p)?);
    }
    all.extend(
        nodes
            .iter()
            .filter(|(n, _)| **n != name)
            .filter_map(|(_, e)| e.address),
    );
    let mut out = vec![];
    for p in all {
        if Some(p) != own && !out.contains(&p) {
            out.push(p);
        }
    }
    Ok((out, own))
}

/// The subnets of the other nodes (not `subnet`, this node's own).
fn other_subnets(
    nodes: &BTreeMap<String, NodeEntry>,
    top_subnet: Ipv4Net,
    subnet: Ipv4Net,
) -> Vec<Ipv4Net> {
    let mut out: Vec<Ipv4Net> = vec![];
    for e in nodes.values() {
        let sn = e.subnet.unwrap_or(top_subnet);
        if sn != subnet && !out.contains(&sn) {
            out.push(sn);
        }
    }
    out
}

/// This node's view: its pool, and the mode, uplink and subnet its node
/// entry overrides. No pool is not an error here (see [`Config::pool`]).
struct NodeView {
    pool: Option<Pool>,
    pool_error: Option<String>,
    mode: Option<Mode>,
    uplink: Option<String>,
    subnet: Option<Ipv4Net>,
}

fn resolve_node(
    pod_range: Option<&str>,
    top_subnet: Ipv4Net,
    nodes: &BTreeMap<String, NodeEntry>,
    node_name: Option<&str>,
) -> Result<NodeView, Error> {
    let none = NodeView {
        pool: None,
        pool_error: None,
        mode: None,
        uplink: None,
        subnet: None,
    };
    if let Some(s) = pod_range {
        let pool = check_pool("podRange", s, top_subnet)?;
        return Ok(NodeView {
            pool: Some(pool),
            ..none
        });
    }
    if nodes.is_empty() {
        return Err(invalid(
            "podRange",
            "is required (this node's pool inside subnet, a CIDR or start-end), or give \"nodes\"",
        ));
    }
    let name = node_name.map(str::to_owned).or_else(default_node_name);
    Ok(match name.as_deref().and_then(|n| nodes.get(n)) {
        Some(e) => NodeView {
            pool: Some(e.pool),
            mode: e.mode,
            uplink: e.uplink.clone(),
            subnet: e.subnet,
            ..none
        },
        None => NodeView {
            pool_error: Some(format!(
                "node \"{}\" has no pool in \"nodes\" (known nodes: {}); add it to the cluster config",
                name.as_deref().unwrap_or("<unknown>"),
                nodes.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            ..none
        },
    })
}

impl Raw {
    /// The one validation step: every value checked (each error names its
    /// key), defaults filled in, this node's view resolved.
    pub fn validate(self, node_name: Option<&str>) -> Result<Config, Error> {
        let top_subnet = parse_subnet(
            "subnet",
            self.subnet.as_deref().ok_or_else(|| {
                invalid(
                    "subnet",
                    "is required (the robot LAN, e.g. \"192.168.1.0/24\")",
                )
            })?,
        )?;
        let mode = self.mode.map(|s| parse_mode("mode", &s)).transpose()?;
        if let Some(u) = &self.uplink {
            check_ifname("uplink", u)?;
        }
        let nodes = check_nodes(self.nodes.unwrap_or_default(), top_subnet)?;
        let node_name = node_name.map(str::to_owned).or(self.node_name);
        let view = resolve_node(
            self.pod_range.as_deref(),
            top_subnet,
            &nodes,
            node_name.as_deref(),
        )?;
        let uplink = view.uplink.or(self.uplink);
        let subnet = view.subnet.unwrap_or(top_subnet);

        let if_name = self.if_name.unwrap_or_else(|| DEFAULT_IFNAME.into());
        check_ifname("ifName", &if_name)?;
        let bridge = self.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.into());
        check_ifname("bridge", &bridge)?;
        if Some(&bridge) == uplink.as_ref() {
            return Err(invalid(
                "bridge",
                format!("\"{bridge}\" is also the uplink"),
            ));
        }
        let data_dir = absolute(
            "dataDir",
            self.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR),
        )?;
        let log_file = self.log_file.map(|p| absolute("logFile", &p)).transpose()?;
        let log_level = parse_log_level(self.log_level)?;
        let log_format = parse_log_format(self.log_format.as_deref())?;
        let groups = parse_groups(self.groups)?;
        let metrics_address = parse_metrics_address(self.metrics_address)?;
        let mfc_idle_seconds = parse_mfc_idle(self.mfc_idle_seconds)?;
        let (peers, node_address) = relay_peers(self.peers, &nodes, node_name.as_deref())?;
        let other_subnets = other_subnets(&nodes, top_subnet, subnet);
        let relay_port = parse_relay_port(self.relay_port)?;
        let limits = crate::firewall::limits::Limits {
            pod: parse_limit(
                ("podDiscoveryRate", self.pod_discovery_rate),
                ("podDiscoveryBurst", self.pod_discovery_burst),
                DEFAULT_LIMITS.pod,
            )?,
            uplink: parse_limit(
                ("uplinkDiscoveryRate", self.uplink_discovery_rate),
                ("uplinkDiscoveryBurst", self.uplink_discovery_burst),
                DEFAULT_LIMITS.uplink,
            )?,
        };
        Ok(Config {
            cni_version: self.cni_version,
            name: self.name,
            mode: view.mode.or(mode).unwrap_or_default(),
            uplink,
            subnet,
            pool: view.pool,
            pool_error: view.pool_error,
            nodes,
            node_name,
            if_name,
            bridge,
            data_dir,
            namespaces: self.namespaces.unwrap_or_default(),
            primary_multicast: self.primary_multicast.unwrap_or(false),
            log_file,
            log_level,
            log_format,
            force: self.force.unwrap_or(false),
            groups,
            metrics_address,
            mfc_idle_seconds,
            raise_ttl: self.raise_ttl.unwrap_or(true),
            fast_path: self.fast_path.unwrap_or(true),
            limits,
            peers,
            node_address,
            lan_multicast: self.lan_multicast.unwrap_or(true),
            relay_port,
            other_subnets,
        })
    }
}

impl Config {
    /// Parses a config object. `plugin` accepts the keys the CNI runtime adds
    /// (cniVersion, prevResult, ...); `node_name` overrides `nodeName`.
    pub fn from_value(v: &Value, plugin: bool, node_name: Option<&str>) -> Result<Config, Error> {
        let m = v.as_object().ok_or(Error::NotAnObject)?;
        check_keys(m, plugin)?;
        read_raw(v)?.validate(node_name)
    }

    /// Reads a config file (agent, installer, doctor).
    pub fn from_file(path: &std::path::Path, node_name: Option<&str>) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_owned(),
            source,
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
