//! Macvlan mode, for wired robot LANs: the pod's `ros0` is a macvlan child
//! (bridge mode) of the uplink, created directly in the pod's namespace. Pods
//! sit on the wire with their own MAC: multicast discovery works at L2 and no
//! multicast routing is needed on this node.
//!
//! What Multus + macvlan got wrong, and what this mode does instead:
//! - addresses come from this node's own pool (pools never overlap), not a
//!   host-local range repeated on every node;
//! - the kernel filters traffic between macvlan children and their parent, so
//!   the node reaches its pods through a macvlan *shim* of its own
//!   (`ros2shim`, a sibling of the pods) with a /32 route and a permanent
//!   neighbour entry per pod; the shim answers the pods' ARP for the node's
//!   addresses and, with `arp_filter`, nobody else's;
//! - the primary interface loses its MULTICAST flag as in routed mode, so DDS
//!   with default settings picks `ros0`;
//! - a wireless uplink is refused (an access point accepts only the station's
//!   own MAC), naming routed mode as the fix, unless `force` is set.

use super::routed::resolve_uplink;
use super::{config_err, Error, Result};
use super::{node_link, AddRequest, Dataplane, Kernel, Observed, Prepare, Step};
use crate::config::Config;
use crate::ipam::Attachment;
use crate::kernel::rtnl::{Handle, Link};
use crate::kernel::sysctl;
use std::path::Path;

pub struct Macvlan;

/// The node's own macvlan sibling, through which it reaches its pods.
pub const SHIM: &str = "ros2shim";

/// Whether `ifname` is a wireless (802.11) interface, as sysfs tells.
pub fn is_wireless(ifname: &str) -> bool {
    let dir = Path::new("/sys/class/net").join(ifname);
    dir.join("wireless").exists() || dir.join("phy80211").exists()
}

/// Refuses a wireless uplink unless `force`.
pub fn refuse_wireless(cfg: &Config, uplink: &str) -> Result<()> {
    if !cfg.force && is_wireless(uplink) {
        return Err(Error::Refused(format!(
                "mode: \"macvlan\" cannot work on {uplink}, a wireless interface: an access point accepts \
                 frames only from the station's own MAC, so macvlan pods would lose all traffic. Use \
                 \"mode\": \"routed\" on this node (or set \"force\": true if the link really carries \
                 foreign MACs, e.g. 4-address/WDS)"
        )));
    }
    Ok(())
}

fn shim_mac(uplink: &Link) -> [u8; 6] {
    let h = super::fnv1a(uplink.name.as_bytes()).to_be_bytes();
    [0x0e, 0x2c, 0x5b, h[0], h[1], h[2]]
}

/// Creates the shim if missing (or re-creates it on a changed uplink) and
/// sets it up: no IPv6 addresses, arp_filter on, up.
pub fn ensure_shim(node: &mut Handle, uplink: &Link) -> Result<Link> {
    if let Some(l) = node.link_by_name(SHIM)? {
        if l.parent == Some(uplink.index) && l.kind.as_deref() == Some("macvlan") {
            if !l.is_up() {
                node.set_up(l.index)?;
            }
            return Ok(l);
        }
        // a shim of another uplink, or a foreign link with our name
        if l.kind.as_deref() != Some("macvlan") {
            return Err(config_err(
                "mode",
                format!(
                    "macvlan needs the interface name {SHIM}, but a {} by that name exists",
                    l.kind.as_deref().unwrap_or("link")
                ),
            ));
        }
        node.delete_link(l.index)?;
    }
    match node.create_macvlan(SHIM, uplink.index, shim_mac(uplink), None) {
        Ok(()) => {}
        Err(e) if e.is_exists() => {} // a concurrent ADD made it
        Err(e) => return Err(e.into()),
    }
    let l = node
        .link_by_name(SHIM)?
        .ok_or_else(|| Error::Missing(format!("{SHIM} vanished after creation")))?;
    node.set_no_ipv6_addresses(l.index)?;
    // answer ARP only for what is routed through the shim: the pods asking
    // for the node's address, never the LAN (which eth0 answers)
    if sysctl::read(&format!("net/ipv4/conf/{SHIM}/arp_filter"))
        .ok()
        .as_deref()
        != Some("1")
    {
        node.set_ipv4_conf(l.index, |c| c.arpfilter = 1)?;
    }
    if !l.is_up() {
        node.set_up(l.index)?;
    }
    Ok(l)
}

impl Dataplane for Macvlan {
    fn steps(&self) -> &'static [Step] {
        &[
            Step::MacvlanChild,
            Step::PodConfig,
            Step::PrimaryMulticastOff,
            Step::HostRoute,
            Step::HostNeigh,
        ]
    }

    fn node_dev<'a>(&self, _cfg: &'a Config) -> &'a str {
        SHIM
    }

    fn preflight(&self, k: &mut Kernel, cfg: &Config) -> Result<String> {
        let up = resolve_uplink(k.node()?, cfg)?;
        refuse_wireless(cfg, &up.name)?;
        k.remember(&up);
        Ok(up.name)
    }

    fn node_setup(&self) -> Prepare {
        Prepare::Shim
    }

    /// The shim: there, a macvlan of the uplink, up.
    fn check_node(
        &self,
        o: &mut Observed,
        att: &Attachment,
        diffs: &mut Vec<String>,
    ) -> Result<()> {
        match (o.node_link(SHIM)?, o.node_link(&att.uplink)?) {
            (None, _) => diffs.push(format!("node shim {SHIM} is missing")),
            (_, None) => diffs.push(format!("uplink {} is missing", att.uplink)),
            (Some(s), Some(up)) => {
                if s.parent != Some(up.index) {
                    diffs.push(format!(
                        "node shim {SHIM} is not a macvlan of {}",
                        att.uplink
                    ));
                }
                if !s.is_up() {
                    diffs.push(format!("node shim {SHIM} is down"));
                }
            }
        }
        Ok(())
    }
}

/// [`Prepare::Shim`]: the shim on `uplink`, remembered for the steps.
pub(super) fn ensure_node(k: &mut Kernel, uplink: &str) -> Result<()> {
    let up = k
        .link(uplink)?
        .ok_or_else(|| config_err("uplink", format!("interface \"{uplink}\" does not exist")))?;
    let shim = ensure_shim(k.node()?, &up)?;
    k.remember(&shim);
    Ok(())
}

/// [`Step::MacvlanChild`]
pub(super) fn create_child(
    k: &mut Kernel,
    req: &AddRequest,
    att: &Attachment,
    mac: [u8; 6],
) -> Result<()> {
    let up = node_link(k, &att.uplink, "uplink")?;
    k.node()?
        .create_macvlan(&att.pod_if, up.index, mac, Some(req.netns))?;
    Ok(())
}

/// Undoes [`Step::MacvlanChild`]: the macvlan lives in the pod; with the
/// pod's netns gone it is gone too.
pub(super) fn delete_child(pod: Option<&mut Handle>, att: &Attachment) -> Result<()> {
    if let Some(pod) = pod {
        if let Some(l) = pod.link_by_name(&att.pod_if)? {
            if l.kind.as_deref() == Some("macvlan") {
                pod.delete_link(l.index)?;
            }
        }
    }
    Ok(())
}

/// Checks [`Step::MacvlanChild`]: the pod's interface is a macvlan.
pub(super) fn check_child(
    o: &mut Observed,
    att: &Attachment,
    diffs: &mut Vec<String>,
) -> Result<()> {
    if let Some(l) = o.pod_link(&att.pod_if)? {
        if l.kind.as_deref() != Some("macvlan") {
            diffs.push(format!(
                "pod interface {} is a {}, not a macvlan",
                att.pod_if,
                l.kind.as_deref().unwrap_or("link")
            ));
        }
    }
    Ok(())
}
