//! Pod-facing node state, kept true to the attachment records.
//!
//! The plugin makes a pod's node-side state once, at ADD. Things happen to a
//! node afterwards: `nft flush ruleset` or a firewall reload empties the
//! anti-spoofing set (and the drop rule then cuts every pod off), someone
//! flushes routes or neighbour entries, a DEL hands its slow kernel work to
//! the agent. Every reconcile the agent compares the kernel with the records
//! in `dataDir/attachments` and repairs the difference: missing elements,
//! routes, permanent and proxy neighbour entries come back for pods whose
//! interface still exists; leftovers of pods without a record go.
//!
//! It also runs the teardown work DEL hands over: deleting a link and a set
//! element each wait out an RCU grace period in the kernel (15-25 ms), which
//! need not sit on the pod's deletion path.

use crate::api::Handoff;
use crate::firewall;
use crate::ipam::Attachment;
use crate::kernel::netns::Netns;
use crate::kernel::nft::Nfnl;
use crate::kernel::rtnl::{parse_mac, Handle, Link};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// Runs a handoff: deletes the link by index (a new link with the same name
/// is left alone), then the element unless a link by its port name exists
/// again (a new pod took the name).
pub fn run_handoff(h: &Handoff) -> Result<(), String> {
    let mut node = Handle::new().map_err(|e| e.to_string())?;
    let deleted = if h.ifindex == 0 {
        false // the link was gone already; only the element is left
    } else if h.netns.is_empty() {
        delete_if_same(&mut node, h.ifindex, &h.name)?
    } else {
        match Netns::open(&h.netns).and_then(|ns| Handle::open_in(&ns)) {
            Ok(mut pod) => delete_if_same(&mut pod, h.ifindex, &h.name)?,
            Err(_) => false, // the pod's namespace is gone, and the link with it
        }
    };
    if let Some((port, mac, ip)) = &h.element {
        let reused = node
            .link_by_name(port)
            .map_err(|e| e.to_string())?
            .is_some();
        if !reused {
            if let (Some(mac), Ok(mut nf)) = (parse_mac(mac), Nfnl::new()) {
                firewall::forget_pod(&mut nf, port, mac, *ip).map_err(|e| e.to_string())?;
            }
        }
    }
    tracing::debug!(link = %h.name, deleted, "handed-over teardown done");
    Ok(())
}

fn delete_if_same(h: &mut Handle, ifindex: u32, name: &str) -> Result<bool, String> {
    match h.link_by_index(ifindex).map_err(|e| e.to_string())? {
        Some(l) if l.name == name => match h.delete_link(ifindex) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.to_string()),
        },
        _ => Ok(false),
    }
}

/// What the kernel holds that pods depend on, read once per reconcile.
struct Seen {
    links: HashMap<String, Link>,
    routes: BTreeSet<(Ipv4Addr, u32)>,
    neighbours: BTreeSet<(Ipv4Addr, u32)>,
    proxies: BTreeSet<(Ipv4Addr, u32)>,
    elements: BTreeSet<(String, [u8; 6], Ipv4Addr)>,
}

fn read(node: &mut Handle, nf: Option<&mut Nfnl>) -> Result<Seen, String> {
    let e = |x: crate::kernel::Error| x.to_string();
    Ok(Seen {
        links: node
            .links()
            .map_err(e)?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect(),
        routes: node
            .routes4()
            .map_err(e)?
            .into_iter()
            .filter(|r| r.prefix_len == 32)
            .filter_map(|r| Some((r.dst, r.oif?)))
            .collect(),
        neighbours: node
            .neighbours4(false)
            .map_err(e)?
            .into_iter()
            .filter(|n| n.state == netlink_packet_route::neighbour::NeighbourState::Permanent)
            .map(|n| (n.ip, n.ifindex))
            .collect(),
        proxies: node
            .neighbours4(true)
            .map_err(e)?
            .into_iter()
            .map(|n| (n.ip, n.ifindex))
            .collect(),
        elements: match nf {
            Some(nf) => firewall::allowed_pods(nf)
                .map_err(|x| x.to_string())?
                .into_iter()
                .collect(),
            None => BTreeSet::new(),
        },
    })
}

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fix {
    Route(Ipv4Addr),
    Neigh(Ipv4Addr, [u8; 6]),
    Proxy(Ipv4Addr),
    Element(String, [u8; 6], Ipv4Addr),
    DropRoute(Ipv4Addr),
    DropNeigh(Ipv4Addr),
    DropProxy(Ipv4Addr),
    DropElement(String, [u8; 6], Ipv4Addr),
    DropLink(String, u32),
}

impl Fix {
    /// Whether this removes something (a leftover) rather than repairing.
    fn removes(&self) -> bool {
        matches!(
            self,
            Fix::DropRoute(_)
                | Fix::DropNeigh(_)
                | Fix::DropProxy(_)
                | Fix::DropElement(..)
                | Fix::DropLink(..)
        )
    }

    /// The pod address the change is keyed by, if any.
    fn address(&self) -> Option<Ipv4Addr> {
        match self {
            Fix::Route(ip)
            | Fix::Neigh(ip, _)
            | Fix::Proxy(ip)
            | Fix::Element(_, _, ip)
            | Fix::DropRoute(ip)
            | Fix::DropNeigh(ip)
            | Fix::DropProxy(ip)
            | Fix::DropElement(_, _, ip) => Some(*ip),
            Fix::DropLink(..) => None,
        }
    }
}

fn pod_name(a: &Attachment) -> String {
    if a.pod_name.is_empty() {
        a.container_id.clone()
    } else {
        format!("{}/{}", a.pod_namespace, a.pod_name)
    }
}

/// What differs between the kernel (`seen`) and `records`.
fn plan(
    seen: &Seen,
    records: &[Attachment],
    node_dev: &Link,
    uplink: &Link,
    pool: Option<crate::config::Pool>,
    routed: bool,
) -> Vec<(Fix, String)> {
    let mut out = vec![];
    let ours: Vec<&Attachment> = records
        .iter()
        .filter(|a| a.node_dev == node_dev.name)
        .collect();
    for a in &ours {
        // a pod whose host end (routed) or namespace (macvlan) is gone is
        // gone; DEL or GC will come
        let gone = if routed {
            !seen.links.contains_key(&a.host_if)
        } else {
            !std::path::Path::new(&a.netns).exists()
        };
        if gone {
            continue;
        }
        let Some(mac) = parse_mac(&a.mac) else {
            continue;
        };
        let pod = pod_name(a);
        if !seen.routes.contains(&(a.ip, node_dev.index)) {
            out.push((
                Fix::Route(a.ip),
                format!("route {}/32 dev {} for {pod}", a.ip, node_dev.name),
            ));
        }
        if !seen.neighbours.contains(&(a.ip, node_dev.index)) {
            out.push((
                Fix::Neigh(a.ip, mac),
                format!("neighbour {} on {} for {pod}", a.ip, node_dev.name),
            ));
        }
        if routed {
            if !seen.proxies.contains(&(a.ip, uplink.index)) {
                out.push((
                    Fix::Proxy(a.ip),
                    format!("proxy ARP {} on {} for {pod}", a.ip, uplink.name),
                ));
            }
            if !seen.elements.contains(&(a.host_if.clone(), mac, a.ip)) {
                out.push((
                    Fix::Element(a.host_if.clone(), mac, a.ip),
                    format!("anti-spoofing element for {pod}"),
                ));
            }
        }
    }
    // leftovers of pods that have no record
    let ips: BTreeSet<Ipv4Addr> = ours.iter().map(|a| a.ip).collect();
    let in_pool = |ip: &Ipv4Addr| pool.is_some_and(|p| p.contains(*ip));
    for (ip, oif) in &seen.routes {
        if *oif == node_dev.index && in_pool(ip) && !ips.contains(ip) {
            out.push((
                Fix::DropRoute(*ip),
                format!("removed leftover route {ip}/32 dev {}", node_dev.name),
            ));
        }
    }
    for (ip, dev) in &seen.neighbours {
        if *dev == node_dev.index && in_pool(ip) && !ips.contains(ip) {
            out.push((
                Fix::DropNeigh(*ip),
                format!("removed leftover neighbour {ip} on {}", node_dev.name),
            ));
        }
    }
    if routed {
        for (ip, dev) in &seen.proxies {
            if *dev == uplink.index && in_pool(ip) && !ips.contains(ip) {
                out.push((
                    Fix::DropProxy(*ip),
                    format!("removed leftover proxy ARP {ip} on {}", uplink.name),
                ));
            }
        }
        let wanted: BTreeSet<(String, [u8; 6], Ipv4Addr)> = ours
            .iter()
            .filter_map(|a| Some((a.host_if.clone(), parse_mac(&a.mac)?, a.ip)))
            .collect();
        for el in seen.elements.difference(&wanted) {
            out.push((
                Fix::DropElement(el.0.clone(), el.1, el.2),
                format!("removed leftover anti-spoofing element {} {}", el.0, el.2),
            ));
        }
        let ports: BTreeSet<&str> = ours.iter().map(|a| a.host_if.as_str()).collect();
        for (name, l) in &seen.links {
            if name.starts_with(firewall::HOST_VETH_PREFIX) && !ports.contains(name.as_str()) {
                out.push((
                    Fix::DropLink(name.clone(), l.index),
                    format!("removed leftover link {name}"),
                ));
            }
        }
    }
    out
}

/// Repairs pod-facing state; returns (repairs made, problems).
///
/// `cached` are the records as last read; when they show anything to fix,
/// `fresh` re-reads them and the plan is made again. The kernel is read
/// first and the records after it: a link an ADD made is then always covered
/// by a record (ADD writes the record before it creates the link), so no live
/// pod is ever taken for a leftover. When `fresh` cannot read every record,
/// only repairs are made, nothing is removed; an address-keyed leftover
/// (route, neighbour, proxy entry, element) whose address `leased` says is
/// held again stays too (a new pod took the address since the kernel read).
pub fn reconcile(
    cached: &[Attachment],
    fresh: &mut dyn FnMut() -> Result<Vec<Attachment>, String>,
    leased: &dyn Fn(Ipv4Addr) -> bool,
    node_dev: &Link,
    uplink: &Link,
    pool: Option<crate::config::Pool>,
    routed: bool,
) -> (Vec<String>, Vec<String>) {
    let mut repairs = vec![];
    let mut problems = vec![];
    let mut node = match Handle::new() {
        Ok(h) => h,
        Err(e) => return (repairs, vec![e.to_string()]),
    };
    let mut nf = if routed { Nfnl::new().ok() } else { None };
    let seen = match read(&mut node, nf.as_mut()) {
        Ok(s) => s,
        Err(e) => return (repairs, vec![format!("reading pod state: {e}")]),
    };
    let mut fixes = plan(&seen, cached, node_dev, uplink, pool, routed);
    if !fixes.is_empty() {
        match fresh() {
            Ok(records) => fixes = plan(&seen, &records, node_dev, uplink, pool, routed),
            Err(why) => {
                problems.push(format!(
                    "{why}: leftovers are kept until every record can be read"
                ));
                fixes.retain(|(f, _)| !f.removes());
            }
        }
    }
    fixes.retain(|(f, _)| f.address().is_none_or(|ip| !f.removes() || !leased(ip)));
    for (fix, what) in fixes {
        let r: Result<(), String> = match &fix {
            Fix::Route(ip) => node
                .replace_route(*ip, 32, node_dev.index)
                .map_err(|e| e.to_string()),
            Fix::Neigh(ip, mac) => node
                .add_permanent_neigh(*ip, *mac, node_dev.index)
                .map_err(|e| e.to_string()),
            Fix::Proxy(ip) => node
                .add_proxy_neigh(*ip, uplink.index)
                .map_err(|e| e.to_string()),
            Fix::Element(port, mac, ip) => match nf.as_mut() {
                Some(nf) => firewall::allow_pod(nf, port, *mac, *ip).map_err(|e| e.to_string()),
                None => Err("no nftables socket".into()),
            },
            Fix::DropRoute(ip) => node
                .delete_route(*ip, 32, node_dev.index)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Fix::DropNeigh(ip) => node
                .delete_neigh(*ip, node_dev.index)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Fix::DropProxy(ip) => node
                .delete_proxy_neigh(*ip, uplink.index)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Fix::DropElement(port, mac, ip) => match nf.as_mut() {
                Some(nf) => firewall::forget_pod(nf, port, *mac, *ip)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => Err("no nftables socket".into()),
            },
            Fix::DropLink(name, index) => delete_if_same(&mut node, *index, name).map(|_| ()),
        };
        match r {
            Ok(()) => repairs.push(what),
            Err(e) => problems.push(format!("{what}: {e}")),
        }
    }
    (repairs, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkFlags;

    fn link(name: &str, index: u32) -> Link {
        Link {
            index,
            name: name.into(),
            flags: LinkFlags::Up,
            mac: None,
            controller: None,
            parent: None,
            kind: None,
            mtu: None,
        }
    }

    fn record(host_if: &str, ip: [u8; 4]) -> Attachment {
        Attachment {
            container_id: "c".into(),
            ifname: "eth0".into(),
            pod_if: "ros0".into(),
            netns: "/nonexistent".into(),
            ip: Ipv4Addr::from(ip),
            prefix_len: 24,
            mac: "0e:2c:c0:a8:01:0a".into(),
            host_if: host_if.into(),
            node_dev: "ros2br0".into(),
            uplink: "eth0".into(),
            mode: "routed".into(),
            cleared_multicast: true,
            primary_ips: vec![],
            pod_namespace: "robots".into(),
            pod_name: "a".into(),
            network: String::new(),
        }
    }

    fn seen(links: &[(&str, u32)]) -> Seen {
        Seen {
            links: links
                .iter()
                .map(|(n, i)| (n.to_string(), link(n, *i)))
                .collect(),
            routes: BTreeSet::new(),
            neighbours: BTreeSet::new(),
            proxies: BTreeSet::new(),
            elements: BTreeSet::new(),
        }
    }

    fn pool() -> Option<crate::config::Pool> {
        crate::config::Pool::parse("192.168.1.0/24").ok()
    }

    #[test]
    fn a_live_pod_gets_everything_back() {
        let s = seen(&[("ros2br0", 5), ("eth0", 2), ("r2c1", 9)]);
        let fixes: Vec<Fix> = plan(
            &s,
            &[record("r2c1", [192, 168, 1, 10])],
            &link("ros2br0", 5),
            &link("eth0", 2),
            pool(),
            true,
        )
        .into_iter()
        .map(|(f, _)| f)
        .collect();
        let ip = Ipv4Addr::new(192, 168, 1, 10);
        let mac = parse_mac("0e:2c:c0:a8:01:0a").unwrap();
        assert_eq!(
            fixes,
            vec![
                Fix::Route(ip),
                Fix::Neigh(ip, mac),
                Fix::Proxy(ip),
                Fix::Element("r2c1".into(), mac, ip)
            ]
        );
    }

    #[test]
    fn a_gone_pod_gets_nothing_and_leftovers_go() {
        let mut s = seen(&[("ros2br0", 5), ("eth0", 2), ("r2c2", 11)]);
        let ip = Ipv4Addr::new(192, 168, 1, 20);
        s.routes.insert((ip, 5));
        s.proxies.insert((ip, 2));
        s.proxies.insert((Ipv4Addr::new(10, 0, 0, 1), 2)); // not in the pool: not ours
        s.elements
            .insert(("r2c2".into(), [0x0e, 0x2c, 0, 0, 0, 1], ip));
        // the record's host end r2c1 is gone; r2c2 has no record
        let fixes: Vec<Fix> = plan(
            &s,
            &[record("r2c1", [192, 168, 1, 10])],
            &link("ros2br0", 5),
            &link("eth0", 2),
            pool(),
            true,
        )
        .into_iter()
        .map(|(f, _)| f)
        .collect();
        assert_eq!(
            fixes,
            vec![
                Fix::DropRoute(ip),
                Fix::DropProxy(ip),
                Fix::DropElement("r2c2".into(), [0x0e, 0x2c, 0, 0, 0, 1], ip),
                Fix::DropLink("r2c2".into(), 11),
            ]
        );
    }

    #[test]
    fn macvlan_pods_whose_namespace_is_gone_are_left_alone() {
        let s = seen(&[("ros2shim", 7), ("eth0", 2)]);
        let mut r = record("", [192, 168, 1, 10]);
        r.node_dev = "ros2shim".into();
        let fixes = plan(
            &s,
            &[r.clone()],
            &link("ros2shim", 7),
            &link("eth0", 2),
            pool(),
            false,
        );
        assert!(fixes.is_empty(), "{fixes:?}");
        r.netns = "/proc/self/ns/net".into();
        let fixes = plan(
            &s,
            &[r],
            &link("ros2shim", 7),
            &link("eth0", 2),
            pool(),
            false,
        );
        assert_eq!(fixes.len(), 2, "route and neighbour on the shim: {fixes:?}");
    }
}
