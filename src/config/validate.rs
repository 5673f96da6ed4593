//! [`Raw::validate`]: every value checked, each error naming its key;
//! defaults filled in; this node's view of the cluster form resolved.

use super::raw::{DomainList, DomainMap, RawNode, Whole};
use super::{
    default_node_name, invalid, is_dns1123_label, Config, Domains, Error, LogFormat, Mode,
    NodeEntry, Pool, Raw, DEFAULT_BRIDGE, DEFAULT_DATA_DIR, DEFAULT_GROUP, DEFAULT_IFNAME,
    DEFAULT_METRICS_ADDRESS, DEFAULT_MFC_IDLE_SECONDS, DEFAULT_RELAY_PORT,
    DEFAULT_ZENOH_POD_ROUTER,
};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

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

/// `extraMulticast`: "GROUP:PORT" entries (default Zenoh's scouting); any
/// multicast group, link-local too, but not one of the RTPS `groups` (those
/// are carried on every port already).
fn parse_extra_multicast(
    list: Option<Vec<String>>,
    groups: &[Ipv4Addr],
) -> Result<Vec<(Ipv4Addr, u16)>, Error> {
    let Some(list) = list else {
        return Ok(vec![super::ZENOH_SCOUTING]);
    };
    let mut out = vec![];
    for (i, e) in list.iter().enumerate() {
        let key = format!("extraMulticast[{i}]");
        let bad = |why: &str| invalid(&key, format!("\"{e}\" {why}"));
        let (g, p) = e
            .rsplit_once(':')
            .ok_or_else(|| bad("is not GROUP:PORT (e.g. \"224.0.0.224:7446\")"))?;
        let g: Ipv4Addr = g.parse().map_err(|_| bad("has no IPv4 group"))?;
        if !g.is_multicast() {
            return Err(bad("is not a multicast group (224.0.0.0/4)"));
        }
        if groups.contains(&g) {
            return Err(bad(
                "is one of the RTPS groups, which are carried on every port",
            ));
        }
        let p: u16 = p
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("has no UDP port (1-65535)"))?;
        if !out.contains(&(g, p)) {
            out.push((g, p));
        }
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

fn parse_port(key: &str, n: Whole) -> Result<u16, Error> {
    match n {
        Whole(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Whole(n) => Err(invalid(key, format!("expected a port 1-65535, got {n}"))),
    }
}

fn parse_relay_port(n: Option<Whole>) -> Result<u16, Error> {
    n.map_or(Ok(DEFAULT_RELAY_PORT), |n| parse_port("relayPort", n))
}

/// `zenohPodRouter`: the command line of the router run in each pod; the
/// program must be named and `{config}` passed somewhere (the router has
/// no other way to learn its configuration but the environment).
fn parse_pod_router(argv: Option<Vec<String>>) -> Result<Vec<String>, Error> {
    let Some(argv) = argv else {
        return Ok(DEFAULT_ZENOH_POD_ROUTER
            .iter()
            .map(|s| s.to_string())
            .collect());
    };
    match argv.first() {
        None => Err(invalid(
            "zenohPodRouter",
            "expected a program and its arguments, got []",
        )),
        Some(p) if p.trim().is_empty() => Err(invalid("zenohPodRouter[0]", "the program is empty")),
        Some(_) => Ok(argv),
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

/// `domains` and `defaultDomains` (their values were read by serde: lists
/// of domain IDs 0 to 232, sorted, no repeats); the namespaces must be
/// namespace names. None when neither key is set.
fn check_domains(
    domains: Option<DomainMap>,
    default: Option<DomainList>,
) -> Result<Option<Domains>, Error> {
    if domains.is_none() && default.is_none() {
        return Ok(None);
    }
    let mut d = Domains {
        default: default.map(|DomainList(l)| l),
        ..Domains::default()
    };
    for (ns, DomainList(l)) in domains.map(|DomainMap(m)| m).unwrap_or_default() {
        if !is_dns1123_label(&ns) {
            return Err(invalid(
                "domains",
                format!("\"{ns}\" is not a namespace name (a DNS-1123 label: lowercase letters, digits and '-', at most 63)"),
            ));
        }
        d.by_namespace.insert(ns, l);
    }
    Ok(Some(d))
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
        let zenoh_router = self
            .zenoh_router
            .map(|n| parse_port("zenohRouter", n))
            .transpose()?;
        let zenoh_pod_router = parse_pod_router(self.zenoh_pod_router)?;
        let extra_multicast = parse_extra_multicast(self.extra_multicast, &groups)?;
        let relay_peer_limit = parse_limit(
            ("relayPeerRate", self.relay_peer_rate),
            ("relayPeerBurst", self.relay_peer_burst),
            DEFAULT_LIMITS.uplink,
        )?;
        let multicast_forwarder = match self.multicast_forwarder.as_deref() {
            None => crate::forward::Choice::Auto,
            Some(s) => crate::forward::Choice::parse(s).ok_or_else(|| {
                invalid(
                    "multicastForwarder",
                    format!("\"{s}\" (expected \"auto\", \"kernel\" or \"nftables\")"),
                )
            })?,
        };
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
            domains: check_domains(self.domains, self.default_domains)?,
            peers,
            node_address,
            lan_multicast: self.lan_multicast.unwrap_or(true),
            relay_port,
            multicast_forwarder,
            extra_multicast,
            relay_peer_limit,
            other_subnets,
            zenoh_router,
            zenoh_pod_router,
        })
    }
}
