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

use super::{config_err, Error, Result};
use super::{node_link, AddRequest, Dataplane, Kernel, Observed, Prepare, Step};
use crate::config::Config;
use crate::firewall;
use crate::ipam::Attachment;
use crate::kernel::rtnl::{parse_mac, Handle, Link};
use crate::kernel::sysctl;
use std::net::Ipv4Addr;

pub struct Routed;

/// Resolves and checks the uplink: configured or the default-route interface,
/// present, with an address in `subnet` that is outside every pool.
pub fn resolve_uplink(node: &mut Handle, cfg: &Config) -> Result<Link> {
    let link = match &cfg.uplink {
        Some(name) => node.link_by_name(name)?.ok_or_else(|| {
            config_err(
                "uplink",
                format!("interface \"{name}\" does not exist on this node"),
            )
        })?,
        None => node.default_route_link()?.ok_or_else(|| {
            config_err(
                "uplink",
                "not set, and this node has no IPv4 default route to take it from; set \"uplink\"",
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
        return Err(config_err(
            "uplink",
            format!(
                "{} has no IPv4 address in subnet {} (it has: {}); is \"subnet\" the robot LAN?",
                link.name,
                cfg.subnet,
                if addrs.is_empty() {
                    "none".to_owned()
                } else {
                    addrs
                        .iter()
                        .map(|(a, p)| format!("{a}/{p}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ));
    }
    let pools: Vec<_> = cfg
        .pool
        .iter()
        .chain(cfg.nodes.values().map(|n| &n.pool))
        .collect();
    for a in &in_subnet {
        if let Some(p) = pools.iter().find(|p| p.contains(*a)) {
            return Err(config_err("podRange", format!(
                "the node's own address {a} on {} lies inside pool {p}; pools must exclude node addresses",
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
    if bridge == uplink {
        return Err(config_err(
            "bridge",
            format!("\"{bridge}\" is this node's uplink; the node bridge needs a name of its own"),
        ));
    }
    let link = match node.link_by_name(bridge)? {
        Some(l) => l,
        None => {
            let created = match node.create_bridge(bridge, bridge_mac(bridge)) {
                Ok(()) => true,
                Err(e) if e.is_exists() => false, // a concurrent ADD made it
                Err(e) => return Err(e.into()),
            };
            let l = node.link_by_name(bridge)?.ok_or_else(|| {
                Error::Missing(format!("bridge {bridge} vanished after creation"))
            })?;
            if created {
                node.set_no_ipv6_addresses(l.index)?;
            }
            l
        }
    };
    // a link without a kind is a physical NIC (or lo): not ours to turn into
    // a router port
    if link.kind.as_deref() != Some("bridge") {
        return Err(config_err(
            "bridge",
            format!(
                "\"{bridge}\" exists on this node but is {}, not a bridge",
                link.kind.as_deref().map_or(
                    "a device without a link kind (a NIC?)".to_owned(),
                    |k| format!("a {k}")
                )
            ),
        ));
    }
    if !link.is_up() {
        node.set_up(link.index)?;
    }
    let up = node.link_by_name(uplink)?.ok_or_else(|| {
        config_err(
            "uplink",
            format!("interface \"{uplink}\" does not exist on this node"),
        )
    })?;
    // read /proc/sys (readable everywhere), write through netlink only what differs
    let is = |key: String, want: &str| sysctl::read(&key).map(|v| v == want).unwrap_or(false);
    // bridge: answer pods' ARP for the LAN with the bridge's MAC, forward, no random delay
    if !is(format!("net/ipv4/conf/{bridge}/forwarding"), "1")
        || !is(format!("net/ipv4/conf/{bridge}/proxy_arp"), "1")
    {
        node.set_ipv4_conf(link.index, |c| {
            c.forwarding = 1;
            c.proxy_arp = 1;
        })?;
    }
    if !is(format!("net/ipv4/neigh/{bridge}/proxy_delay"), "0") {
        node.set_proxy_delay(link.index, 0)?;
    }
    // uplink: forward, and answer the LAN's ARP for our pods (proxy entries) at once
    if !is(format!("net/ipv4/conf/{uplink}/forwarding"), "1") {
        node.set_ipv4_conf(up.index, |c| c.forwarding = 1)?;
    }
    if !is(format!("net/ipv4/neigh/{uplink}/proxy_delay"), "0") {
        node.set_proxy_delay(up.index, 0)?;
    }
    Ok(link)
}

impl Dataplane for Routed {
    fn steps(&self) -> &'static [Step] {
        &[
            Step::VethPair,
            Step::HostPort,
            Step::PodConfig,
            Step::PrimaryMulticastOff,
            Step::HostRoute,
            Step::HostNeigh,
            Step::ProxyNeigh,
            Step::Guard,
        ]
    }

    fn node_dev<'a>(&self, cfg: &'a Config) -> &'a str {
        &cfg.bridge
    }

    fn preflight(&self, k: &mut Kernel, cfg: &Config) -> Result<String> {
        let up = resolve_uplink(k.node()?, cfg)?;
        k.remember(&up);
        Ok(up.name)
    }

    fn node_setup(&self) -> Prepare {
        Prepare::Bridge
    }

    /// The bridge is checked by the steps (node device, bridge port).
    fn check_node(&self, _: &mut Observed, _: &Attachment, _: &mut Vec<String>) -> Result<()> {
        Ok(())
    }
}

/// [`Prepare::Bridge`]: the bridge, remembered for the steps.
pub(super) fn ensure_node(k: &mut Kernel, cfg: &Config, uplink: &str) -> Result<()> {
    let br = ensure_bridge(k.node()?, &cfg.bridge, uplink)?;
    k.remember(&br);
    Ok(())
}

// ---- routed mode's steps (see Step) ----

/// [`Step::VethPair`]
pub(super) fn create_veth(
    k: &mut Kernel,
    req: &AddRequest,
    att: &Attachment,
    mac: [u8; 6],
) -> Result<()> {
    let br = node_link(k, &att.node_dev, "bridge")?;
    let mtu = k.link(&att.uplink)?.and_then(|l| l.mtu);
    k.node()?
        .create_veth(&att.host_if, br.index, &att.pod_if, mac, req.netns, mtu)
        .map_err(|e| {
            if e.is_exists() {
                Error::LinkExists(att.host_if.clone())
            } else {
                e.into()
            }
        })?;
    // from here on the link is ours to undo, even if bringing it up fails
    Ok(())
}

/// [`Step::HostPort`]
pub(super) fn set_up_host_port(k: &mut Kernel, att: &Attachment) -> Result<()> {
    let node = k.node()?;
    let h = node
        .link_by_name(&att.host_if)?
        .ok_or_else(|| Error::Missing(format!("{} vanished after creation", att.host_if)))?;
    node.set_no_ipv6_addresses(h.index)?;
    node.set_up(h.index)?;
    Ok(())
}

/// [`Step::ProxyNeigh`]
pub(super) fn add_proxy_neigh(k: &mut Kernel, att: &Attachment) -> Result<()> {
    let up = node_link(k, &att.uplink, "uplink")?;
    k.node()?.add_proxy_neigh(att.ip, up.index)?;
    Ok(())
}

/// Undoes [`Step::ProxyNeigh`].
pub(super) fn delete_proxy_neigh(k: &mut Kernel, att: &Attachment) -> Result<()> {
    let node = k.node()?;
    if let Some(up) = link_of(node, &att.uplink)? {
        node.delete_proxy_neigh(att.ip, up.index)?;
    }
    Ok(())
}

/// [`Step::Guard`]
pub(super) fn allow_pod(k: &mut Kernel, att: &Attachment, mac: [u8; 6]) -> Result<()> {
    firewall::allow_pod(k.nf()?, &att.host_if, mac, att.ip)?;
    Ok(())
}

/// Undoes [`Step::Guard`].
pub(super) fn forget_pod(k: &mut Kernel, att: &Attachment) -> Result<()> {
    if let Some(mac) = parse_mac(&att.mac) {
        firewall::forget_pod(k.nf()?, &att.host_if, mac, att.ip)?;
    }
    Ok(())
}

/// Checks [`Step::VethPair`]'s host end: there, and a port of the bridge.
pub(super) fn check_veth(
    o: &mut Observed,
    att: &Attachment,
    diffs: &mut Vec<String>,
) -> Result<()> {
    let Some(h) = o.node_link(&att.host_if)? else {
        diffs.push(format!("host interface {} is missing", att.host_if));
        return Ok(());
    };
    if let Some(br) = o.node_link(&att.node_dev)? {
        if h.controller != Some(br.index) {
            diffs.push(format!(
                "host interface {} is not a port of {}",
                att.host_if, att.node_dev
            ));
        }
    }
    Ok(())
}

/// Checks [`Step::HostPort`]: the host end is up (where it is a port).
pub(super) fn check_host_port(
    o: &mut Observed,
    att: &Attachment,
    diffs: &mut Vec<String>,
) -> Result<()> {
    if let (Some(_), Some(h)) = (o.node_link(&att.node_dev)?, o.node_link(&att.host_if)?) {
        if !h.is_up() {
            diffs.push(format!("host interface {} is down", att.host_if));
        }
    }
    Ok(())
}

/// Checks [`Step::ProxyNeigh`].
pub(super) fn check_proxy_neigh(
    o: &mut Observed,
    att: &Attachment,
    diffs: &mut Vec<String>,
) -> Result<()> {
    let Some(up) = o.node_link(&att.uplink)? else {
        diffs.push(format!("uplink {} is missing", att.uplink));
        return Ok(());
    };
    if !o
        .neighbours(true)?
        .iter()
        .any(|n| n.ip == att.ip && n.ifindex == up.index)
    {
        diffs.push(format!(
            "proxy neighbour {} dev {} is missing",
            att.ip, att.uplink
        ));
    }
    Ok(())
}

/// Checks [`Step::Guard`].
pub(super) fn check_guard(
    o: &mut Observed,
    att: &Attachment,
    diffs: &mut Vec<String>,
) -> Result<()> {
    let mac = parse_mac(&att.mac).unwrap_or_default();
    let key = (att.host_if.clone(), mac, att.ip);
    if !o.allowed_pods()?.contains(&key) {
        diffs.push(format!(
            "nft element {} . {} . {} is missing from bridge {} {}",
            att.host_if,
            att.mac,
            att.ip,
            firewall::TABLE,
            firewall::PODS_SET
        ));
    }
    Ok(())
}
