//! The per-pod steps: each one knows how to make its piece of state
//! ([`Step::apply`]), remove it ([`Step::undo`]) and read whether it is
//! there ([`Step::check`]). Shared steps carry their work here; the
//! mode-specific ones (veth pair, host port, proxy entry, guard element;
//! macvlan child) call into their mode's module.

use super::{macvlan, node_link, routed, AddRequest, Error, Kernel, Result, MULTICAST_NET};
use crate::config::Config;
use crate::ipam::Attachment;
use crate::kernel::rtnl::{format_mac, parse_mac, Handle, Link, Neigh4, Route4};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// One piece of per-pod state, in the order ADD creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Routed: the veth pair, its host end a port of the node bridge, its
    /// pod end (the pod's LAN interface) in the pod.
    VethPair,
    /// Routed: the host end has no IPv6 addresses and is up (goes with the link).
    HostPort,
    /// Macvlan: the pod's LAN interface, a macvlan child of the uplink made
    /// in the pod.
    MacvlanChild,
    /// Its address, up state and multicast route in the pod (go with the link).
    PodConfig,
    /// The pod's primary interface lost its MULTICAST flag.
    PrimaryMulticastOff,
    /// Node: host route to the pod's address.
    HostRoute,
    /// Node: permanent neighbour entry for the pod.
    HostNeigh,
    /// Routed, node: proxy ARP entry on the uplink.
    ProxyNeigh,
    /// Routed, node: anti-spoofing set element.
    Guard,
}

impl Step {
    /// The step's name in logs, errors and fault points (both modes' link
    /// steps are "Link").
    pub fn name(self) -> &'static str {
        match self {
            Step::VethPair | Step::MacvlanChild => "Link",
            Step::HostPort => "HostPort",
            Step::PodConfig => "PodConfig",
            Step::PrimaryMulticastOff => "PrimaryMulticastOff",
            Step::HostRoute => "HostRoute",
            Step::HostNeigh => "HostNeigh",
            Step::ProxyNeigh => "ProxyNeigh",
            Step::Guard => "Guard",
        }
    }

    /// Whether undoing it waits out an RCU grace period (RTM_DELLINK:
    /// 15-25 ms; an nf_tables element delete: ~12 ms at socket close), so
    /// that DEL hands it to the agent when one runs.
    pub fn is_slow(self) -> bool {
        matches!(self, Step::VethPair | Step::MacvlanChild | Step::Guard)
    }

    /// Whether it is a node entry keyed by the pod's address alone (so it
    /// belongs to whichever pod holds the address now).
    pub fn is_address_keyed(self) -> bool {
        matches!(self, Step::HostRoute | Step::HostNeigh | Step::ProxyNeigh)
    }

    /// Makes this step's state for `att`; `pod` is a handle in the pod's
    /// namespace.
    pub fn apply(
        self,
        k: &mut Kernel,
        pod: &mut Handle,
        req: &AddRequest,
        att: &mut Attachment,
    ) -> Result<()> {
        let mac = parse_mac(&att.mac).expect("attachment MAC is ours");
        match self {
            Step::VethPair => routed::create_veth(k, req, att, mac),
            Step::HostPort => routed::set_up_host_port(k, att),
            Step::MacvlanChild => macvlan::create_child(k, req, att, mac),
            Step::PodConfig => configure_pod(pod, req, att),
            Step::PrimaryMulticastOff => clear_primary_multicast(pod, req, att),
            Step::HostRoute => {
                let dev = node_link(k, &att.node_dev, "node device")?;
                Ok(k.node()?.replace_route(att.ip, 32, dev.index)?)
            }
            Step::HostNeigh => {
                let dev = node_link(k, &att.node_dev, "node device")?;
                Ok(k.node()?.add_permanent_neigh(att.ip, mac, dev.index)?)
            }
            Step::ProxyNeigh => routed::add_proxy_neigh(k, att),
            Step::Guard => routed::allow_pod(k, att, mac),
        }
    }

    /// Removes this step's state; state that is already gone is fine. `pod`
    /// is None when the pod's namespace no longer exists.
    pub fn undo(self, k: &mut Kernel, pod: Option<&mut Handle>, att: &Attachment) -> Result<()> {
        match self {
            Step::VethPair => {
                k.node()?.delete_link_by_name(&att.host_if)?;
            }
            Step::MacvlanChild => macvlan::delete_child(pod, att)?,
            Step::HostPort | Step::PodConfig => {} // go with the link
            Step::PrimaryMulticastOff => {
                if let (true, Some(pod)) = (att.cleared_multicast, pod) {
                    if let Some(l) = pod.link_by_name(&att.ifname)? {
                        pod.set_multicast(l.index, true)?;
                    }
                }
            }
            Step::HostRoute => {
                let node = k.node()?;
                if let Some(dev) = node.link_by_name(&att.node_dev)? {
                    node.delete_route(att.ip, 32, dev.index)?;
                }
            }
            Step::HostNeigh => {
                let node = k.node()?;
                if let Some(dev) = node.link_by_name(&att.node_dev)? {
                    node.delete_neigh(att.ip, dev.index)?;
                }
            }
            Step::ProxyNeigh => routed::delete_proxy_neigh(k, att)?,
            Step::Guard => routed::forget_pod(k, att)?,
        }
        Ok(())
    }

    /// Appends to `diffs` what of this step's state the kernel lacks, each
    /// naming the item.
    pub fn check(
        self,
        o: &mut Observed,
        cfg: &Config,
        att: &Attachment,
        diffs: &mut Vec<String>,
    ) -> Result<()> {
        match self {
            Step::VethPair => {
                check_pod_link(o, att, diffs)?;
                routed::check_veth(o, att, diffs)
            }
            Step::HostPort => routed::check_host_port(o, att, diffs),
            Step::MacvlanChild => {
                check_pod_link(o, att, diffs)?;
                macvlan::check_child(o, att, diffs)
            }
            Step::PodConfig => check_pod_config(o, cfg, att, diffs),
            Step::PrimaryMulticastOff => {
                if !cfg.primary_multicast {
                    if let Some(l) = o.pod_link(&att.ifname)? {
                        if l.has_multicast() {
                            diffs.push(format!(
                            "pod interface {} has the MULTICAST flag (primaryMulticast is false)",
                            att.ifname
                        ));
                        }
                    }
                }
                Ok(())
            }
            Step::HostRoute => check_host_route(o, att, diffs),
            Step::HostNeigh => check_host_neigh(o, att, diffs),
            Step::ProxyNeigh => routed::check_proxy_neigh(o, att, diffs),
            Step::Guard => routed::check_guard(o, att, diffs),
        }
    }
}

fn configure_pod(pod: &mut Handle, req: &AddRequest, att: &Attachment) -> Result<()> {
    let l = pod
        .link_by_name(&att.pod_if)?
        .ok_or_else(|| Error::Missing(format!("{} did not appear in the pod", att.pod_if)))?;
    pod.set_no_ipv6_addresses(l.index)?;
    pod.add_address(l.index, att.ip, att.prefix_len)?;
    pod.set_up(l.index)?;
    pod.replace_route(MULTICAST_NET, 4, l.index)?;
    // other subnets of the cluster: through ros0 too (the node
    // answers ARP for them and routes them, no NAT)
    let routed = req.cfg.mode == crate::config::Mode::Routed;
    for sn in req.cfg.other_subnets.iter().filter(|_| routed) {
        pod.replace_route(sn.network(), sn.prefix_len(), l.index)?;
    }
    Ok(())
}

fn clear_primary_multicast(pod: &mut Handle, req: &AddRequest, att: &mut Attachment) -> Result<()> {
    if !req.cfg.primary_multicast {
        let l = pod
            .link_by_name(req.primary_if)?
            .ok_or_else(|| Error::NoPrimary(req.primary_if.to_owned()))?;
        // ADD recorded a prediction; this is what actually happens
        att.cleared_multicast = l.has_multicast();
        if l.has_multicast() {
            pod.set_multicast(l.index, false)?;
        }
    }
    Ok(())
}

/// The pod's LAN interface exists and carries the attachment's MAC.
fn check_pod_link(o: &mut Observed, att: &Attachment, diffs: &mut Vec<String>) -> Result<()> {
    let mac = parse_mac(&att.mac).unwrap_or_default();
    match o.pod_link(&att.pod_if)? {
        None => diffs.push(format!("pod interface {} is missing", att.pod_if)),
        Some(l) if l.mac != Some(mac) => diffs.push(format!(
            "pod interface {} has MAC {}, expected {}",
            att.pod_if,
            l.mac.map(|m| format_mac(&m)).unwrap_or_default(),
            att.mac
        )),
        Some(_) => {}
    }
    Ok(())
}

fn check_pod_config(
    o: &mut Observed,
    cfg: &Config,
    att: &Attachment,
    diffs: &mut Vec<String>,
) -> Result<()> {
    let Some(l) = o.pod_link(&att.pod_if)? else {
        return Ok(()); // named by the link step
    };
    if !l.is_up() {
        diffs.push(format!("pod interface {} is down", att.pod_if));
    }
    let addrs = o.pod.addresses4(l.index)?;
    if !addrs.contains(&(att.ip, att.prefix_len)) {
        diffs.push(format!(
            "pod interface {} lacks address {}/{} (has {:?})",
            att.pod_if, att.ip, att.prefix_len, addrs
        ));
    }
    let routes = o.pod_routes()?;
    let has = |dst: Ipv4Addr, len: u8| {
        routes
            .iter()
            .any(|r| r.dst == dst && r.prefix_len == len && r.oif == Some(l.index))
    };
    let multicast = has(MULTICAST_NET, 4);
    let subnet = has(cfg.subnet.network(), cfg.subnet.prefix_len());
    if !multicast {
        diffs.push(format!(
            "pod route 224.0.0.0/4 dev {} is missing",
            att.pod_if
        ));
    }
    if !subnet {
        diffs.push(format!(
            "pod route {} dev {} is missing",
            cfg.subnet, att.pod_if
        ));
    }
    Ok(())
}

fn check_host_route(o: &mut Observed, att: &Attachment, diffs: &mut Vec<String>) -> Result<()> {
    let Some(dev) = o.node_link(&att.node_dev)? else {
        diffs.push(format!("node device {} is missing", att.node_dev));
        return Ok(());
    };
    if !o
        .node_routes()?
        .iter()
        .any(|r| r.dst == att.ip && r.prefix_len == 32 && r.oif == Some(dev.index))
    {
        diffs.push(format!(
            "node route {}/32 dev {} is missing",
            att.ip, att.node_dev
        ));
    }
    Ok(())
}

fn check_host_neigh(o: &mut Observed, att: &Attachment, diffs: &mut Vec<String>) -> Result<()> {
    let Some(dev) = o.node_link(&att.node_dev)? else {
        return Ok(()); // named by the route step
    };
    let mac = parse_mac(&att.mac).unwrap_or_default();
    if !o
        .neighbours(false)?
        .iter()
        .any(|n| n.ip == att.ip && n.ifindex == dev.index && n.mac == Some(mac))
    {
        diffs.push(format!(
            "node neighbour {} lladdr {} dev {} is missing",
            att.ip, att.mac, att.node_dev
        ));
    }
    Ok(())
}

/// What CHECK reads of the kernel, each kind read once however many steps
/// look at it.
pub struct Observed<'a> {
    pub k: &'a mut Kernel,
    pub pod: &'a mut Handle,
    pod_links: HashMap<String, Option<Link>>,
    pod_routes: Option<Vec<Route4>>,
    node_routes: Option<Vec<Route4>>,
    neighbours: Option<Vec<Neigh4>>,
    proxies: Option<Vec<Neigh4>>,
    allowed: Option<Vec<(String, [u8; 6], Ipv4Addr)>>,
}

impl<'a> Observed<'a> {
    pub fn new(k: &'a mut Kernel, pod: &'a mut Handle) -> Observed<'a> {
        Observed {
            k,
            pod,
            pod_links: HashMap::new(),
            pod_routes: None,
            node_routes: None,
            neighbours: None,
            proxies: None,
            allowed: None,
        }
    }

    /// A link in the pod, by name.
    pub fn pod_link(&mut self, name: &str) -> Result<Option<Link>> {
        if let Some(l) = self.pod_links.get(name) {
            return Ok(l.clone());
        }
        let l = self.pod.link_by_name(name)?;
        self.pod_links.insert(name.to_owned(), l.clone());
        Ok(l)
    }

    /// A node link, by name (None for an unrecorded, empty name).
    pub fn node_link(&mut self, name: &str) -> Result<Option<Link>> {
        if name.is_empty() {
            return Ok(None);
        }
        self.k.link(name)
    }

    pub fn pod_routes(&mut self) -> Result<&[Route4]> {
        if self.pod_routes.is_none() {
            self.pod_routes = Some(self.pod.routes4()?);
        }
        Ok(self.pod_routes.as_deref().expect("just read"))
    }

    pub fn node_routes(&mut self) -> Result<&[Route4]> {
        if self.node_routes.is_none() {
            self.node_routes = Some(self.k.node()?.routes4()?);
        }
        Ok(self.node_routes.as_deref().expect("just read"))
    }

    /// The node's neighbour entries, or with `proxy` its proxy entries.
    pub fn neighbours(&mut self, proxy: bool) -> Result<&[Neigh4]> {
        let slot = if proxy {
            &mut self.proxies
        } else {
            &mut self.neighbours
        };
        if slot.is_none() {
            *slot = Some(self.k.node()?.neighbours4(proxy)?);
        }
        Ok(slot.as_deref().expect("just read"))
    }

    /// The anti-spoofing set's elements: (port, MAC, address).
    pub fn allowed_pods(&mut self) -> Result<&[(String, [u8; 6], Ipv4Addr)]> {
        if self.allowed.is_none() {
            self.allowed = Some(crate::firewall::allowed_pods(self.k.nf()?)?);
        }
        Ok(self.allowed.as_deref().expect("just read"))
    }
}
