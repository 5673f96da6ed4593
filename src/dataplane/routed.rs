//! Routed mode: the pod's `ros0` is a veth whose peer joins the node bridge.
//!
//! The node routes between the bridge and the uplink without NAT:
//! - a /32 route and a permanent neighbour entry make each pod reachable from
//!   the node;
//! - a proxy neighbour entry on the uplink makes the node answer ARP on the LAN
//!   for exactly its own pods' addresses (proxy_delay 0: no held-back first packet);
//! - proxy_arp on the bridge makes the node answer pods' ARP for the rest of the
//!   LAN, so everything a pod sends to the LAN leaves with the node's own MAC
//!   (what a Wi-Fi access point insists on);
//! - pods on one node share the bridge and reach each other at L2;
//! - the `bridge ros2_cni` table drops frames from a pod port unless they carry
//!   that pod's MAC and address.

use super::{AddRequest, Dataplane, Kernel, Step};
use crate::cni::{CniError, Code, Result};
use crate::config::Config;
use crate::firewall;
use crate::ipam::Attachment;
use crate::netlink::{format_mac, parse_mac, sysctl, Handle, Link};
use std::net::Ipv4Addr;

pub struct Routed;

pub const MULTICAST_NET: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 0);

/// Resolves and checks the uplink: configured or the default-route interface,
/// present, with an address in `subnet` that is outside every pool.
pub fn resolve_uplink(node: &mut Handle, cfg: &Config) -> Result<Link> {
    let link = match &cfg.uplink {
        Some(name) => node.link_by_name(name)?.ok_or_else(|| {
            CniError::invalid_config(format!("uplink: interface \"{name}\" does not exist on this node"))
        })?,
        None => node.default_route_link()?.ok_or_else(|| {
            CniError::invalid_config(
                "uplink: not set, and this node has no IPv4 default route to take it from; set \"uplink\"",
            )
        })?,
    };
    let addrs = node.addresses4(link.index)?;
    let in_subnet: Vec<Ipv4Addr> = addrs
        .iter()
        .map(|(a, _)| *a)
        .filter(|a| cfg.subnet.contains(a))
        .collect();
    if in_subnet.is_empty() {
        return Err(CniError::invalid_config(format!(
            "uplink: {} has no IPv4 address in subnet {} (it has: {}); is \"subnet\" the robot LAN?",
            link.name,
            cfg.subnet,
            if addrs.is_empty() {
                "none".to_owned()
            } else {
                addrs.iter().map(|(a, p)| format!("{a}/{p}")).collect::<Vec<_>>().join(", ")
            }
        )));
    }
    let pools: Vec<_> = cfg
        .pool
        .iter()
        .chain(cfg.nodes.values().map(|n| &n.pool))
        .collect();
    for a in &in_subnet {
        if let Some(p) = pools.iter().find(|p| p.contains(*a)) {
            return Err(CniError::invalid_config(format!(
                "podRange: the node's own address {a} on {} lies inside pool {p}; pools must exclude node addresses",
                link.name
            )));
        }
    }
    Ok(link)
}

fn bridge_mac(name: &str) -> [u8; 6] {
    let h = super::fnv1a(name.as_bytes()).to_be_bytes();
    [0x0e, 0x2c, 0xb0, h[0], h[1], h[2]]
}

fn link_of(node: &mut Handle, name: &str) -> Result<Option<Link>> {
    if name.is_empty() {
        return Ok(None);
    }
    Ok(node.link_by_name(name)?)
}

/// Creates the node bridge and the sysctls routed mode relies on, if missing.
/// Shared by the plugin (every ADD) and the agent (start-up).
pub fn ensure_bridge(node: &mut Handle, bridge: &str, uplink: &str) -> Result<Link> {
    let link = match node.link_by_name(bridge)? {
        Some(l) => l,
        None => {
            let created = match node.create_bridge(bridge, bridge_mac(bridge)) {
                Ok(()) => true,
                Err(e) if e.is_exists() => false, // a concurrent ADD made it
                Err(e) => return Err(e.into()),
            };
            let l = node.link_by_name(bridge)?.ok_or_else(|| {
                CniError::kernel(format!("bridge {bridge} vanished after creation"))
            })?;
            if created {
                node.set_no_ipv6_addresses(l.index)?;
            }
            l
        }
    };
    if link.kind.as_deref().is_some_and(|k| k != "bridge") {
        return Err(CniError::invalid_config(format!(
            "bridge: \"{bridge}\" exists on this node but is a {}, not a bridge",
            link.kind.as_deref().unwrap_or("?")
        )));
    }
    if !link.is_up() {
        node.set_up(link.index)?;
    }
    let set = |key: String, v: &str| -> Result<()> {
        sysctl::ensure(&key, v)
            .map(|_| ())
            .map_err(|e| CniError::kernel(e.to_string()))
    };
    // answer pods' ARP for the LAN with the bridge's MAC; no random delay
    set(format!("net/ipv4/conf/{bridge}/proxy_arp"), "1")?;
    set(format!("net/ipv4/neigh/{bridge}/proxy_delay"), "0")?;
    set(format!("net/ipv4/conf/{bridge}/forwarding"), "1")?;
    // answer the LAN's ARP for our pods (proxy entries) at once
    set(format!("net/ipv4/neigh/{uplink}/proxy_delay"), "0")?;
    set(format!("net/ipv4/conf/{uplink}/forwarding"), "1")?;
    Ok(link)
}

impl Dataplane for Routed {
    fn steps(&self) -> &'static [Step] {
        &[
            Step::Link,
            Step::HostPort,
            Step::PodConfig,
            Step::PrimaryMulticastOff,
            Step::HostRoute,
            Step::HostNeigh,
            Step::ProxyNeigh,
            Step::Guard,
        ]
    }

    fn preflight(&self, k: &mut Kernel, cfg: &Config) -> Result<String> {
        Ok(resolve_uplink(k.node()?, cfg)?.name)
    }

    fn ensure_node(&self, k: &mut Kernel, cfg: &Config, uplink: &str) -> Result<()> {
        ensure_bridge(k.node()?, &cfg.bridge, uplink).map(|_| ())
    }

    fn apply(
        &self,
        k: &mut Kernel,
        pod: &mut Handle,
        req: &AddRequest,
        att: &mut Attachment,
        step: Step,
    ) -> Result<()> {
        let cfg = req.cfg;
        let mac = parse_mac(&att.mac).expect("attachment MAC is ours");
        match step {
            Step::Link => {
                let node = k.node()?;
                let br = node
                    .link_by_name(&att.bridge)?
                    .ok_or_else(|| CniError::kernel(format!("bridge {} is missing", att.bridge)))?;
                let mtu = node.link_by_name(&att.uplink)?.and_then(|l| l.mtu);
                node.create_veth(&att.host_if, br.index, &att.pod_if, mac, req.netns, mtu)
                    .map_err(|e| {
                        if e.is_exists() {
                            CniError::new(
                                Code::AlreadyAttached,
                                format!("link {} already exists on the node", att.host_if),
                            )
                        } else {
                            e.into()
                        }
                    })?;
                // from here on the link is ours to undo, even if bringing it up fails
            }
            Step::HostPort => {
                let node = k.node()?;
                let h = node
                    .link_by_name(&att.host_if)?
                    .ok_or_else(|| CniError::kernel(format!("{} vanished after creation", att.host_if)))?;
                node.set_no_ipv6_addresses(h.index)?;
                node.set_up(h.index)?;
            }
            Step::PodConfig => {
                let l = pod.link_by_name(&att.pod_if)?.ok_or_else(|| {
                    CniError::kernel(format!("{} did not appear in the pod", att.pod_if))
                })?;
                pod.set_no_ipv6_addresses(l.index)?;
                pod.add_address(l.index, att.ip, att.prefix_len)?;
                pod.set_up(l.index)?;
                pod.replace_route(MULTICAST_NET, 4, l.index)?;
            }
            Step::PrimaryMulticastOff => {
                if !cfg.primary_multicast {
                    let l = pod.link_by_name(req.primary_if)?.ok_or_else(|| {
                        CniError::new(
                            Code::InvalidEnv,
                            format!(
                                "CNI_IFNAME: the pod has no interface \"{}\"",
                                req.primary_if
                            ),
                        )
                    })?;
                    if l.has_multicast() {
                        pod.set_multicast(l.index, false)?;
                        att.cleared_multicast = true;
                    }
                }
            }
            Step::HostRoute => {
                let node = k.node()?;
                let br = link_of(node, &att.bridge)?
                    .ok_or_else(|| CniError::kernel(format!("bridge {} is missing", att.bridge)))?;
                node.replace_route(att.ip, 32, br.index)?;
            }
            Step::HostNeigh => {
                let node = k.node()?;
                let br = link_of(node, &att.bridge)?
                    .ok_or_else(|| CniError::kernel(format!("bridge {} is missing", att.bridge)))?;
                node.add_permanent_neigh(att.ip, mac, br.index)?;
            }
            Step::ProxyNeigh => {
                let node = k.node()?;
                let up = link_of(node, &att.uplink)?
                    .ok_or_else(|| CniError::kernel(format!("uplink {} is missing", att.uplink)))?;
                node.add_proxy_neigh(att.ip, up.index)?;
            }
            Step::Guard => {
                firewall::allow_pod(k.nf()?, &att.host_if, mac, att.ip)?;
            }
        }
        Ok(())
    }

    fn undo(
        &self,
        k: &mut Kernel,
        pod: Option<&mut Handle>,
        att: &Attachment,
        step: Step,
    ) -> Result<()> {
        let mac = parse_mac(&att.mac);
        match step {
            Step::Link => {
                k.node()?.delete_link_by_name(&att.host_if)?;
            }
            Step::PodConfig | Step::HostPort => {} // go with the link
            Step::PrimaryMulticastOff => {
                if let (true, Some(pod)) = (att.cleared_multicast, pod) {
                    if let Some(l) = pod.link_by_name(&att.ifname)? {
                        pod.set_multicast(l.index, true)?;
                    }
                }
            }
            Step::HostRoute => {
                let node = k.node()?;
                if let Some(br) = link_of(node, &att.bridge)? {
                    node.delete_route(att.ip, 32, br.index)?;
                }
            }
            Step::HostNeigh => {
                let node = k.node()?;
                if let Some(br) = link_of(node, &att.bridge)? {
                    node.delete_neigh(att.ip, br.index)?;
                }
            }
            Step::ProxyNeigh => {
                let node = k.node()?;
                if let Some(up) = link_of(node, &att.uplink)? {
                    node.delete_proxy_neigh(att.ip, up.index)?;
                }
            }
            Step::Guard => {
                if let Some(mac) = mac {
                    firewall::forget_pod(k.nf()?, &att.host_if, mac, att.ip)?;
                }
            }
        }
        Ok(())
    }

    fn check(
        &self,
        k: &mut Kernel,
        pod: &mut Handle,
        cfg: &Config,
        att: &Attachment,
    ) -> Result<Vec<String>> {
        let mut diffs = vec![];
        let mac = parse_mac(&att.mac).unwrap_or_default();
        // the pod
        match pod.link_by_name(&att.pod_if)? {
            None => diffs.push(format!("pod interface {} is missing", att.pod_if)),
            Some(l) => {
                if !l.is_up() {
                    diffs.push(format!("pod interface {} is down", att.pod_if));
                }
                if l.mac != Some(mac) {
                    diffs.push(format!(
                        "pod interface {} has MAC {}, expected {}",
                        att.pod_if,
                        l.mac.map(|m| format_mac(&m)).unwrap_or_default(),
                        att.mac
                    ));
                }
                let addrs = pod.addresses4(l.index)?;
                if !addrs.contains(&(att.ip, att.prefix_len)) {
                    diffs.push(format!(
                        "pod interface {} lacks address {}/{} (has {:?})",
                        att.pod_if, att.ip, att.prefix_len, addrs
                    ));
                }
                let routes = pod.routes4()?;
                let has = |dst: Ipv4Addr, len: u8| {
                    routes
                        .iter()
                        .any(|r| r.dst == dst && r.prefix_len == len && r.oif == Some(l.index))
                };
                if !has(MULTICAST_NET, 4) {
                    diffs.push(format!(
                        "pod route 224.0.0.0/4 dev {} is missing",
                        att.pod_if
                    ));
                }
                if !has(cfg.subnet.network(), cfg.subnet.prefix_len()) {
                    diffs.push(format!(
                        "pod route {} dev {} is missing",
                        cfg.subnet, att.pod_if
                    ));
                }
            }
        }
        if !cfg.primary_multicast {
            if let Some(l) = pod.link_by_name(&att.ifname)? {
                if l.has_multicast() {
                    diffs.push(format!(
                        "pod interface {} has the MULTICAST flag (primaryMulticast is false)",
                        att.ifname
                    ));
                }
            }
        }
        // the node
        let node = k.node()?;
        let br = node.link_by_name(&att.bridge)?;
        match (&br, node.link_by_name(&att.host_if)?) {
            (_, None) => diffs.push(format!("host interface {} is missing", att.host_if)),
            (None, _) => diffs.push(format!("bridge {} is missing", att.bridge)),
            (Some(br), Some(h)) => {
                if h.controller != Some(br.index) {
                    diffs.push(format!(
                        "host interface {} is not a port of {}",
                        att.host_if, att.bridge
                    ));
                }
                if !h.is_up() {
                    diffs.push(format!("host interface {} is down", att.host_if));
                }
            }
        }
        if let Some(br) = &br {
            let routes = node.routes4()?;
            if !routes
                .iter()
                .any(|r| r.dst == att.ip && r.prefix_len == 32 && r.oif == Some(br.index))
            {
                diffs.push(format!(
                    "node route {}/32 dev {} is missing",
                    att.ip, att.bridge
                ));
            }
            let neighs = node.neighbours4(false)?;
            if !neighs
                .iter()
                .any(|n| n.ip == att.ip && n.ifindex == br.index && n.mac == Some(mac))
            {
                diffs.push(format!(
                    "node neighbour {} lladdr {} dev {} is missing",
                    att.ip, att.mac, att.bridge
                ));
            }
        }
        match node.link_by_name(&att.uplink)? {
            None => diffs.push(format!("uplink {} is missing", att.uplink)),
            Some(up) => {
                let proxies = node.neighbours4(true)?;
                if !proxies
                    .iter()
                    .any(|n| n.ip == att.ip && n.ifindex == up.index)
                {
                    diffs.push(format!(
                        "proxy neighbour {} dev {} is missing",
                        att.ip, att.uplink
                    ));
                }
            }
        }
        let allowed = firewall::allowed_pods(k.nf()?)?;
        if !allowed.contains(&(att.host_if.clone(), mac, att.ip)) {
            diffs.push(format!(
                "nft element {} . {} . {} is missing from bridge {} {}",
                att.host_if,
                att.mac,
                att.ip,
                firewall::TABLE,
                firewall::PODS_SET
            ));
        }
        Ok(diffs)
    }
}
