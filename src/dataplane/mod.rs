//! What a pod gets, per mode, behind one trait.
//!
//! Each mode sets up an attachment as a list of [`Step`]s, each of which
//! knows its apply, undo and check ([`step`]). ADD reads, then plans
//! ([`plan`], pure), then applies: it records every step it completes; if a
//! later step fails, the completed ones are undone in reverse. DEL and GC
//! undo all steps of a recorded attachment, tolerating whatever is already
//! gone. One undo per step serves both.

pub mod macvlan;
pub mod plan;
pub mod routed;
pub mod step;

pub use plan::{AddFacts, AddPlan, Prepare, TeardownPlan};
pub use step::{Observed, Step};

use crate::config::{Config, Mode};
use crate::ipam::Attachment;
use crate::kernel::netns::Netns;
use crate::kernel::nft::Nfnl;
use crate::kernel::rtnl::{Handle, Link};
use std::net::Ipv4Addr;

/// Why a pod's data plane could not be set up or torn down. The kernel's
/// errors keep their operation and errno; the plugin's edge maps each
/// variant to a CNI code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node does not match the config (an uplink that does not exist, a
    /// bridge name taken by a NIC, a pool holding the node's address).
    #[error("{field}: {msg}")]
    Config { field: &'static str, msg: String },
    /// A setup this node refuses (macvlan on a wireless uplink).
    #[error("{0}")]
    Refused(String),
    /// The pod has no interface CNI_IFNAME.
    #[error("CNI_IFNAME: the pod has no interface \"{0}\"")]
    NoPrimary(String),
    /// The pod's host-side link exists already (another ADD made it).
    #[error("link {0} already exists on the node")]
    LinkExists(String),
    /// A link that must be there is not (not recorded, gone, never appeared).
    #[error("{0}")]
    Missing(String),
    /// Some undo steps failed: each one, named.
    #[error("teardown incomplete: {}", .0.join("; "))]
    Teardown(Vec<String>),
    /// A kernel operation (rtnetlink, tc or nf_tables) failed.
    #[error(transparent)]
    Kernel(#[from] crate::kernel::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn config_err(field: &'static str, msg: impl Into<String>) -> Error {
    Error::Config {
        field,
        msg: msg.into(),
    }
}

/// The route every attached pod gets for multicast.
pub const MULTICAST_NET: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 0);

/// Kernel handles for one invocation, opened on first use.
pub struct Kernel {
    node: Option<Handle>,
    nf: Option<Nfnl>,
    /// Node links already looked up in this invocation (uplink, bridge, shim),
    /// by name: each step needs their indexes, one lookup serves them all.
    links: std::collections::HashMap<String, Link>,
}

impl Kernel {
    pub fn new() -> Kernel {
        Kernel {
            node: None,
            nf: None,
            links: Default::default(),
        }
    }

    /// A node link by name, looked up once per invocation.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        if let Some(l) = self.links.get(name) {
            return Ok(Some(l.clone()));
        }
        let l = self.node()?.link_by_name(name)?;
        if let Some(l) = &l {
            self.links.insert(name.to_owned(), l.clone());
        }
        Ok(l)
    }

    /// Records a link just looked up or made elsewhere.
    pub fn remember(&mut self, l: &Link) {
        self.links.insert(l.name.clone(), l.clone());
    }

    /// rtnetlink in the node's (the plugin's own) namespace.
    pub fn node(&mut self) -> Result<&mut Handle> {
        if self.node.is_none() {
            self.node = Some(Handle::new()?);
        }
        Ok(self.node.as_mut().expect("just set"))
    }

    pub fn nf(&mut self) -> Result<&mut Nfnl> {
        if self.nf.is_none() {
            self.nf = Some(Nfnl::new()?);
        }
        Ok(self.nf.as_mut().expect("just set"))
    }
}

impl Default for Kernel {
    fn default() -> Self {
        Kernel::new()
    }
}

/// A pod being attached.
pub struct AddRequest<'a> {
    pub cfg: &'a Config,
    pub netns: &'a Netns,
    /// The chain's CNI_IFNAME (the pod's primary interface).
    pub primary_if: &'a str,
}

pub trait Dataplane {
    /// Checks everything this mode needs on the node before anything changes;
    /// returns the uplink to use. Also STATUS's check.
    fn preflight(&self, k: &mut Kernel, cfg: &Config) -> Result<String>;

    /// The node-wide state this mode needs (made if missing, never undone).
    fn node_setup(&self) -> Prepare;

    /// The steps of this mode, in ADD order.
    fn steps(&self) -> &'static [Step];

    /// Differences between the node-wide state and what this mode needs,
    /// beyond what its steps check.
    fn check_node(&self, o: &mut Observed, att: &Attachment, diffs: &mut Vec<String>)
        -> Result<()>;

    /// The node device pods are reached through (bridge or shim).
    fn node_dev<'a>(&self, cfg: &'a Config) -> &'a str;
}

pub fn for_mode(mode: Mode) -> &'static dyn Dataplane {
    match mode {
        Mode::Routed => &routed::Routed,
        Mode::Macvlan => &macvlan::Macvlan,
    }
}

// ---- steps every mode shares ----

/// The node-side link `name` (looked up once per invocation), or a kernel
/// error naming `what` is missing.
pub(crate) fn node_link(k: &mut Kernel, name: &str, what: &str) -> Result<Link> {
    if name.is_empty() {
        return Err(Error::Missing(format!("{what} is not recorded")));
    }
    k.link(name)?
        .ok_or_else(|| Error::Missing(format!("{what} {name} is missing")))
}

/// Applies `steps` in order for `att`, passing a fault point after each.
/// Returns the steps done and, if one failed, that step and its error (the
/// steps after it are not tried).
pub fn apply_all(
    k: &mut Kernel,
    pod: &mut Handle,
    req: &AddRequest,
    att: &mut Attachment,
    steps: &[Step],
) -> (Vec<Step>, Option<(Step, Error)>) {
    let mut done = Vec::with_capacity(steps.len());
    for step in steps {
        match step.apply(k, pod, req, att) {
            Ok(()) => {
                done.push(*step);
                crate::faults::point(&format!("ADD step {}", step.name()));
            }
            Err(e) => return (done, Some((*step, e))),
        }
    }
    (done, None)
}

/// What CHECK finds missing: each of the mode's steps reads what it should
/// have made, then the mode checks its node-wide state.
pub fn check(
    dp: &dyn Dataplane,
    k: &mut Kernel,
    pod: &mut Handle,
    cfg: &Config,
    att: &Attachment,
) -> Result<Vec<String>> {
    let mut o = Observed::new(k, pod);
    let mut diffs = vec![];
    for step in dp.steps() {
        step.check(&mut o, cfg, att, &mut diffs)?;
    }
    dp.check_node(&mut o, att, &mut diffs)?;
    Ok(diffs)
}

pub fn for_attachment(att: &Attachment) -> &'static dyn Dataplane {
    for_mode(if att.mode == Mode::Macvlan.as_str() {
        Mode::Macvlan
    } else {
        Mode::Routed
    })
}

/// FNV-1a, 64 bit: stable across releases, unlike std's hasher.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Deterministic host-side veth name for an attachment: "r2c" + 11 hex digits.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let h = fnv1a(format!("{container_id}/{ifname}").as_bytes());
    format!("{}{:011x}", crate::firewall::HOST_VETH_PREFIX, h >> 20)
}

/// The MAC a pod's LAN interface gets: locally administered, unicast,
/// derived from its address (so it is unique wherever the address is).
pub fn pod_mac(ip: std::net::Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0e, 0x2c, o[0], o[1], o[2], o[3]]
}

/// The address a MAC made by [`pod_mac`] carries; None for other MACs.
pub fn pod_mac_ip(mac: [u8; 6]) -> Option<std::net::Ipv4Addr> {
    (mac[..2] == [0x0e, 0x2c]).then(|| std::net::Ipv4Addr::new(mac[2], mac[3], mac[4], mac[5]))
}

/// Undoes `done` steps in reverse, collecting (not stopping at) failures.
pub fn undo_all(
    k: &mut Kernel,
    mut pod: Option<&mut Handle>,
    att: &Attachment,
    done: &[Step],
) -> Result<()> {
    let mut errors = vec![];
    for step in done.iter().rev() {
        if let Err(e) = step.undo(k, pod.as_deref_mut(), att) {
            errors.push(format!("{}: {e}", step.name()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Teardown(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_fit() {
        let a = host_veth_name("0123456789abcdef", "eth0");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("r2c"));
        assert_eq!(a, host_veth_name("0123456789abcdef", "eth0"));
        assert_ne!(a, host_veth_name("0123456789abcdef", "eth1"));
        // pinned: a change here renames every host veth on upgrade
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn pod_mac_is_local_unicast() {
        let m = pod_mac("192.168.1.160".parse().unwrap());
        assert_eq!(m[0] & 0x01, 0, "unicast");
        assert_eq!(m[0] & 0x02, 0x02, "locally administered");
        assert_eq!(&m[2..], &[192, 168, 1, 160]);
        assert_eq!(pod_mac_ip(m), Some("192.168.1.160".parse().unwrap()));
        assert_eq!(pod_mac_ip([0x02, 0x42, 192, 168, 1, 160]), None);
    }
}
