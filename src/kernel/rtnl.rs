//! The only place that talks rtnetlink.
//!
//! A [`Handle`] is a synchronous NETLINK_ROUTE socket bound to one network
//! namespace, on the one netlink transport ([`crate::kernel::netlink`]:
//! receive timeout, acks, dumps) with its errors ([`crate::kernel::Error`]:
//! the operation and the errno). The plugin path needs a handful of requests per pod, so a
//! blocking socket and the message types of `netlink-packet-route` (the crate
//! under `rtnetlink`) are all it takes: no async runtime on the pod's start path.
//! Link lookups read only what [`Link`] keeps from the kernel's bytes
//! (`LinkQuery`): a whole `LinkMessage` per answer cost the musl build
//! about ten page mappings each.
//!
//! Namespaces: `setns` changes the calling *thread*. [`Handle::open_in`] enters
//! the target namespace on a short-lived thread of its own, opens the socket
//! there and hands it back; the socket stays bound to that namespace wherever
//! it is used afterwards. No other thread ever changes namespace.

use crate::kernel::netns::Netns;

use crate::kernel::netlink::{Conn, Wire};
use crate::kernel::{Error, Result};

use netlink_packet_core::{
    parse_string, parse_u32, DecodeError, NetlinkDeserializable, NetlinkHeader,
    NetlinkSerializable, NlasIterator, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InetDevConf, InfoBridge, InfoData,
    InfoKind, InfoMacVlan, InfoVeth, LinkAttribute, LinkFlags, LinkHeader, LinkInfo, LinkMessage,
    MacVlanMode,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::neighbour_table::{
    NeighbourTableAttribute, NeighbourTableMessage, NeighbourTableParameter,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

/// The link index in an operation's text: the digits after its first '#'.
fn link_index_in(op: &str) -> Option<u32> {
    let digits = &op[op.find('#')? + 1..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub flags: LinkFlags,
    pub mac: Option<[u8; 6]>,
    pub controller: Option<u32>,
    /// IFLA_LINK: the parent of a macvlan or the peer index of a veth.
    pub parent: Option<u32>,
    pub kind: Option<String>,
    pub mtu: Option<u32>,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.flags.contains(LinkFlags::Up)
    }

    pub fn has_multicast(&self) -> bool {
        self.flags.contains(LinkFlags::Multicast)
    }

    /// A link from an RTM_NEWLINK payload, reading only the attributes a
    /// [`Link`] keeps (see [`LinkQuery`] for why not a whole `LinkMessage`).
    fn from_payload(payload: &[u8]) -> std::result::Result<Link, DecodeError> {
        let header = LinkHeader::parse(payload)?;
        let mut l = Link {
            index: header.index,
            name: String::new(),
            flags: header.flags,
            mac: None,
            controller: None,
            parent: None,
            kind: None,
            mtu: None,
        };
        for nla in NlasIterator::new(&payload[LINK_HEADER_LEN..]) {
            let nla = nla?;
            let v = nla.value();
            match nla.kind() {
                IFLA_IFNAME => l.name = parse_string(v)?,
                IFLA_ADDRESS if v.len() == 6 => l.mac = v.try_into().ok(),
                IFLA_MASTER => l.controller = Some(parse_u32(v)?),
                IFLA_LINK => l.parent = Some(parse_u32(v)?),
                IFLA_MTU => l.mtu = Some(parse_u32(v)?),
                IFLA_LINKINFO => {
                    for info in NlasIterator::new(v) {
                        let info = info?;
                        if info.kind() == IFLA_INFO_KIND {
                            l.kind = Some(parse_string(info.value())?);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(l)
    }
}

// Kernel ABI (include/uapi/linux/if_link.h, rtnetlink.h); netlink-packet-route
// keeps its copies private.
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const LINK_HEADER_LEN: usize = 16;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;

/// An RTM_GETLINK request, and its answers read into a [`Link`] straight
/// from the kernel's bytes. Parsing a whole `LinkMessage` builds every
/// attribute the kernel sends (about 40: statistics, the inet and inet6
/// devconf arrays, ...) for [`Link`] to keep six; under musl's allocator
/// (the image's build) that churn mapped and unmapped pages about ten
/// times per answer, some 150 mmap/munmap calls per ADD (issue 20).
enum LinkQuery {
    Get(RouteNetlinkMessage),
    Got(Link),
}

impl LinkQuery {
    fn get(m: LinkMessage) -> LinkQuery {
        LinkQuery::Get(RouteNetlinkMessage::GetLink(m))
    }

    fn into_link(self) -> Option<Link> {
        match self {
            LinkQuery::Got(l) => Some(l),
            LinkQuery::Get(_) => None,
        }
    }
}

impl NetlinkSerializable for LinkQuery {
    fn message_type(&self) -> u16 {
        match self {
            LinkQuery::Get(m) => m.message_type(),
            LinkQuery::Got(_) => RTM_NEWLINK,
        }
    }

    fn buffer_len(&self) -> usize {
        match self {
            LinkQuery::Get(m) => m.buffer_len(),
            LinkQuery::Got(_) => 0,
        }
    }

    fn serialize(&self, buffer: &mut [u8]) {
        if let LinkQuery::Get(m) = self {
            m.serialize(buffer)
        }
    }
}

impl NetlinkDeserializable for LinkQuery {
    type Error = DecodeError;

    fn deserialize(
        header: &NetlinkHeader,
        payload: &[u8],
    ) -> std::result::Result<LinkQuery, DecodeError> {
        if header.message_type != RTM_NEWLINK {
            return Err(format!(
                "message type {} in answer to RTM_GETLINK ({RTM_GETLINK})",
                header.message_type
            )
            .into());
        }
        Link::from_payload(payload).map(LinkQuery::Got)
    }
}

/// An IPv4 route as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
    pub table: u32,
    pub kind: RouteType,
}

/// An IPv4 neighbour (or proxy) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neigh4 {
    pub ip: Ipv4Addr,
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    pub proxy: bool,
    pub state: NeighbourState,
}

pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A blocking rtnetlink socket in one network namespace (or, in unit
/// tests, a fake wire).
pub struct Handle<W = Socket> {
    conn: Conn<W>,
}

impl Handle {
    /// A socket in the calling thread's network namespace.
    pub fn new() -> Result<Handle> {
        Ok(Handle {
            conn: Conn::open(NETLINK_ROUTE)?,
        })
    }

    /// A socket in `ns`, opened on a dedicated thread that entered `ns`.
    pub fn open_in(ns: &Netns) -> Result<Handle> {
        Ok(Handle {
            conn: Conn::open_in(NETLINK_ROUTE, ns)?,
        })
    }
}

impl<W: Wire> Handle<W> {
    pub fn with_wire(wire: W) -> Handle<W> {
        Handle {
            conn: Conn::with_wire(wire),
        }
    }

    /// Sends a request and collects its answers (see [`crate::kernel::netlink`]).
    /// A failed request that names a link by index ("link #7") names it by
    /// name too ("link r2c1a2b3c4 (#7)"), looked up only then.
    fn exchange<M: NetlinkSerializable + NetlinkDeserializable>(
        &mut self,
        op: &str,
        msg: M,
        flags: u16,
    ) -> Result<Vec<M>> {
        match self.conn.request(op, msg, flags) {
            // only when the kernel answered (a socket that failed or timed
            // out would only fail or time out again), and not for "not
            // there" and "already there", answers callers expect and handle
            Err(e @ Error::Kernel { .. }) if !e.is_not_found() && !e.is_exists() => {
                Err(self.name_link(e))
            }
            r => r,
        }
    }

    /// `e` with the first "#<index>" in its operation followed by the link's
    /// name, if the link is there to ask (one RTM_GETLINK, no retry).
    fn name_link(&mut self, e: Error) -> Error {
        let Some(index) = e.op().and_then(link_index_in) else {
            return e;
        };
        let mut m = LinkMessage::default();
        m.header.index = index;
        let name = self
            .conn
            .request("get link name", LinkQuery::get(m), 0)
            .ok()
            .and_then(|v| v.into_iter().find_map(LinkQuery::into_link))
            .map(|l| l.name)
            .filter(|n| !n.is_empty());
        match name {
            Some(name) => {
                e.map_op(|op| op.replacen(&format!("#{index}"), &format!("{name} (#{index})"), 1))
            }
            None => e,
        }
    }

    /// A change, acknowledged.
    pub(super) fn request(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.exchange(op, msg, flags | NLM_F_ACK).map(|_| ())
    }

    pub(super) fn dump<M: NetlinkSerializable + NetlinkDeserializable>(
        &mut self,
        op: &str,
        msg: M,
    ) -> Result<Vec<M>> {
        self.exchange(op, msg, NLM_F_DUMP)
    }

    // ---- links ----

    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(&format!("get link {name}"), m)
    }

    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.get_link(&format!("get link #{index}"), m)
    }

    /// One RTM_GETLINK; a link that is not there is `None`.
    fn get_link(&mut self, op: &str, m: LinkMessage) -> Result<Option<Link>> {
        match self.exchange(op, LinkQuery::get(m), 0) {
            Ok(v) => Ok(v.into_iter().find_map(LinkQuery::into_link)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        Ok(self
            .dump("dump links", LinkQuery::get(LinkMessage::default()))?
            .into_iter()
            .filter_map(LinkQuery::into_link)
            .collect())
    }

    /// Creates a bridge with a fixed MAC (so its address never follows its
    /// ports) and IGMP snooping off (multicast reaches every pod and the host).
    pub fn create_bridge(&mut self, name: &str, mac: [u8; 6]) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::MulticastSnooping(false)])),
        ]));
        self.request(
            &format!("create bridge {name}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Creates a veth pair, both ends down: `host` here, enslaved to
    /// `controller`; `peer` created directly in `peer_ns` with `peer_mac`.
    pub fn create_veth(
        &mut self,
        host: &str,
        controller: u32,
        peer: &str,
        peer_mac: [u8; 6],
        peer_ns: &Netns,
        mtu: Option<u32>,
    ) -> Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_owned()));
        p.attributes.push(LinkAttribute::Address(peer_mac.to_vec()));
        p.attributes
            .push(LinkAttribute::NetNsFd(peer_ns.fd().as_raw_fd()));
        if let Some(mtu) = mtu {
            p.attributes.push(LinkAttribute::Mtu(mtu));
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.to_owned()));
        m.attributes.push(LinkAttribute::Controller(controller));
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(
            &format!("create veth {host} (peer {peer})"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Creates a macvlan child (bridge mode, down) of `parent`, an index in
    /// this namespace, named `name` with `mac`: directly in `ns` when given
    /// (a pod's `ros0`), else here (the node's shim).
    pub fn create_macvlan(
        &mut self,
        name: &str,
        parent: u32,
        mac: [u8; 6],
        ns: Option<&Netns>,
    ) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        m.attributes.push(LinkAttribute::Link(parent));
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        if let Some(ns) = ns {
            m.attributes
                .push(LinkAttribute::NetNsFd(ns.fd().as_raw_fd()));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                MacVlanMode::Bridge,
            )])),
        ]));
        self.request(
            &format!("create macvlan {name}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Sets the flags in `mask` to their values in `flags`.
    pub fn set_flags(&mut self, index: u32, flags: LinkFlags, mask: LinkFlags) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.header.change_mask = mask;
        self.request(
            &format!("set flags of link #{index}"),
            RouteNetlinkMessage::SetLink(m),
            0,
        )
    }

    /// Stops the kernel from generating IPv6 addresses on a (down) link, so
    /// it never sends IPv6 (DAD, MLD with a link-local source).
    pub fn set_no_ipv6_addresses(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(no_ipv6_addresses());
        match self.request(
            &format!("set addrgenmode none on link #{index}"),
            RouteNetlinkMessage::SetLink(m),
            0,
        ) {
            // IPv6 disabled in this namespace: nothing to turn off
            Err(e) if e.errno() == Some(libc::EAFNOSUPPORT) => Ok(()),
            r => r,
        }
    }

    /// Sets IPv4 devconf values of one link; `set` fills in the non-zero
    /// ones (zero means "leave alone": the kernel API cannot tell them apart).
    /// Netlink instead of /proc/sys, so it works where /proc/sys is
    /// read-only (an unprivileged container with CAP_NET_ADMIN).
    pub fn set_ipv4_conf(&mut self, index: u32, set: impl FnOnce(&mut InetDevConf)) -> Result<()> {
        let mut conf = InetDevConf::default();
        set(&mut conf);
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::DevConfRequest(conf),
            ])]));
        self.request(
            &format!("set IPv4 devconf of link #{index}"),
            RouteNetlinkMessage::SetLink(m),
            0,
        )
    }

    /// Sets the ARP proxy_delay (milliseconds) of one link.
    pub fn set_proxy_delay(&mut self, index: u32, ms: u64) -> Result<()> {
        let mut m = NeighbourTableMessage::default();
        m.header.family = AddressFamily::Inet;
        m.attributes
            .push(NeighbourTableAttribute::Name("arp_cache".into()));
        m.attributes.push(NeighbourTableAttribute::Parms(vec![
            NeighbourTableParameter::Ifindex(index),
            NeighbourTableParameter::ProxyDelay(ms),
        ]));
        self.request(
            &format!("set proxy_delay of link #{index}"),
            RouteNetlinkMessage::SetNeighbourTable(m),
            0,
        )
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_flags(index, LinkFlags::Up, LinkFlags::Up)
    }

    pub fn set_multicast(&mut self, index: u32, on: bool) -> Result<()> {
        let flags = if on {
            LinkFlags::Multicast
        } else {
            LinkFlags::empty()
        };
        self.set_flags(index, flags, LinkFlags::Multicast)
    }

    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(
            &format!("delete link #{index}"),
            RouteNetlinkMessage::DelLink(m),
            0,
        )
    }

    /// Deletes link `name`; Ok(false) if it did not exist.
    pub fn delete_link_by_name(&mut self, name: &str) -> Result<bool> {
        match self.link_by_name(name)? {
            Some(l) => match self.delete_link(l.index) {
                Ok(()) => Ok(true),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }

    // ---- addresses ----

    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix_len;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        if prefix_len < 31 {
            let bcast = u32::from(ip) | (u32::MAX >> prefix_len);
            m.attributes
                .push(AddressAttribute::Broadcast(Ipv4Addr::from(bcast)));
        }
        self.request(
            &format!("add address {ip}/{prefix_len} to link #{index}"),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// IPv4 addresses of link `index` as (address, prefix length).
    pub fn addresses4(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.index = index;
        Ok(self
            .dump("dump addresses", RouteNetlinkMessage::GetAddress(m))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Local(IpAddr::V4(ip)) => Some((*ip, a.header.prefix_len)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    // ---- routes ----

    fn route_message(dst: Ipv4Addr, prefix_len: u8, oif: u32) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = prefix_len;
        m.header.table = libc::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Static;
        m.header.scope = RouteScope::Link;
        // `ip route add 224.0.0.0/4 dev ros0` is a unicast-type route too
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        m.attributes.push(RouteAttribute::Oif(oif));
        m
    }

    /// Adds (or replaces) a link-scope route `dst/prefix_len dev oif`.
    pub fn replace_route(&mut self, dst: Ipv4Addr, prefix_len: u8, oif: u32) -> Result<()> {
        let m = Self::route_message(dst, prefix_len, oif);
        self.request(
            &format!("add route {dst}/{prefix_len} dev #{oif}"),
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Deletes `dst/prefix_len dev oif`; Ok(false) if it did not exist.
    pub fn delete_route(&mut self, dst: Ipv4Addr, prefix_len: u8, oif: u32) -> Result<bool> {
        let mut m = Self::route_message(dst, prefix_len, oif);
        m.header.protocol = RouteProtocol::Unspec;
        m.header.scope = RouteScope::NoWhere;
        match self.request(
            &format!("delete route {dst}/{prefix_len} dev #{oif}"),
            RouteNetlinkMessage::DelRoute(m),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// IPv4 routes of the main table.
    pub fn routes4(&mut self) -> Result<Vec<Route4>> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        Ok(self
            .dump("dump routes", RouteNetlinkMessage::GetRoute(m))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => {
                    let mut out = Route4 {
                        dst: Ipv4Addr::UNSPECIFIED,
                        prefix_len: r.header.destination_prefix_length,
                        oif: None,
                        gateway: None,
                        table: r.header.table as u32,
                        kind: r.header.kind,
                    };
                    for a in &r.attributes {
                        match a {
                            RouteAttribute::Destination(RouteAddress::Inet(d)) => out.dst = *d,
                            RouteAttribute::Oif(o) => out.oif = Some(*o),
                            RouteAttribute::Gateway(RouteAddress::Inet(g)) => {
                                out.gateway = Some(*g)
                            }
                            RouteAttribute::Table(t) => out.table = *t,
                            _ => {}
                        }
                    }
                    (out.table == libc::RT_TABLE_MAIN as u32).then_some(out)
                }
                _ => None,
            })
            .collect())
    }

    /// The interface of the IPv4 default route, if there is one.
    pub fn default_route_link(&mut self) -> Result<Option<Link>> {
        let oif = self
            .routes4()?
            .into_iter()
            .filter(|r| r.prefix_len == 0 && r.kind == RouteType::Unicast)
            .find_map(|r| r.oif);
        match oif {
            Some(i) => self.link_by_index(i),
            None => Ok(None),
        }
    }

    // ---- neighbours ----

    fn neigh_message(ip: Ipv4Addr, ifindex: u32) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = ifindex;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        m
    }

    /// `ip neigh replace proxy IP dev IFINDEX`: answer ARP for `ip` on that link.
    pub fn add_proxy_neigh(&mut self, ip: Ipv4Addr, ifindex: u32) -> Result<()> {
        let mut m = Self::neigh_message(ip, ifindex);
        m.header.flags = NeighbourFlags::Proxy;
        m.header.state = NeighbourState::Permanent;
        self.request(
            &format!("add proxy neighbour {ip} on link #{ifindex}"),
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    pub fn delete_proxy_neigh(&mut self, ip: Ipv4Addr, ifindex: u32) -> Result<bool> {
        let mut m = Self::neigh_message(ip, ifindex);
        m.header.flags = NeighbourFlags::Proxy;
        match self.request(
            &format!("delete proxy neighbour {ip} on link #{ifindex}"),
            RouteNetlinkMessage::DelNeighbour(m),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A permanent ARP entry: `ip` is at `mac` on `ifindex`.
    pub fn add_permanent_neigh(&mut self, ip: Ipv4Addr, mac: [u8; 6], ifindex: u32) -> Result<()> {
        let mut m = Self::neigh_message(ip, ifindex);
        m.header.state = NeighbourState::Permanent;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(
            &format!(
                "add neighbour {ip} lladdr {} on link #{ifindex}",
                format_mac(&mac)
            ),
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    pub fn delete_neigh(&mut self, ip: Ipv4Addr, ifindex: u32) -> Result<bool> {
        let m = Self::neigh_message(ip, ifindex);
        match self.request(
            &format!("delete neighbour {ip} on link #{ifindex}"),
            RouteNetlinkMessage::DelNeighbour(m),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// IPv4 neighbour entries; with `proxy`, the proxy table instead.
    pub fn neighbours4(&mut self, proxy: bool) -> Result<Vec<Neigh4>> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        if proxy {
            m.header.flags = NeighbourFlags::Proxy;
        }
        Ok(self
            .dump("dump neighbours", RouteNetlinkMessage::GetNeighbour(m))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.family == AddressFamily::Inet => {
                    let mut out = Neigh4 {
                        ip: Ipv4Addr::UNSPECIFIED,
                        ifindex: n.header.ifindex,
                        mac: None,
                        proxy: n.header.flags.contains(NeighbourFlags::Proxy),
                        state: n.header.state,
                    };
                    for a in &n.attributes {
                        match a {
                            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                                out.ip = *ip
                            }
                            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                                let mut mac = [0u8; 6];
                                mac.copy_from_slice(l);
                                out.mac = Some(mac);
                            }
                            _ => {}
                        }
                    }
                    (out.proxy == proxy).then_some(out)
                }
                _ => None,
            })
            .collect())
    }
}

/// IFLA_AF_SPEC asking the kernel not to generate IPv6 addresses on a link.
fn no_ipv6_addresses() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
        In6AddrGenMode::None,
    )])])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_roundtrip() {
        let m = [0x0e, 0x2c, 0xc0, 0xa8, 0x01, 0xa0];
        assert_eq!(format_mac(&m), "0e:2c:c0:a8:01:a0");
        assert_eq!(parse_mac("0e:2c:c0:a8:01:a0"), Some(m));
        assert_eq!(parse_mac("0e:2c:c0:a8:01"), None);
        assert_eq!(parse_mac("0e:2c:c0:a8:01:a0:ff"), None);
        assert_eq!(parse_mac("zz:2c:c0:a8:01:a0"), None);
    }

    #[test]
    fn missing_objects_are_none_or_false_and_errors_name_the_operation() {
        use crate::kernel::netlink::fake::{ack, new_link, Fake};
        let mut h = Handle::with_wire(Fake::default());
        h.conn.wire().answers.push_back(ack(1, -libc::ENODEV));
        assert_eq!(h.link_by_name("nope").unwrap(), None);
        h.conn.wire().answers.push_back(ack(2, -libc::ESRCH));
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        assert!(!h.delete_route(ip, 32, 7).unwrap());
        // a failure names the link: one RTM_GETLINK for #7 after it
        h.conn.wire().answers.push_back(ack(3, -libc::EPERM));
        h.conn
            .wire()
            .answers
            .push_back(new_link(4, 0, 7, "r2c0a1b2c3"));
        let e = h.replace_route(ip, 32, 7).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert_eq!(
            e.to_string(),
            format!(
                "add route 10.0.0.5/32 dev r2c0a1b2c3 (#7): {}",
                std::io::Error::from_raw_os_error(libc::EPERM)
            )
        );
        // no answer: no second request to name the link (it would wait too)
        let e = h.set_up(7).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert_eq!(h.conn.wire().sent.len(), 5, "one request, no lookup");
        // a link that is gone keeps its number
        h.conn.wire().answers.push_back(ack(6, -libc::EPERM));
        h.conn.wire().answers.push_back(ack(7, -libc::ENODEV));
        let e = h.set_up(7).unwrap_err();
        assert_eq!(e.op(), Some("set flags of link #7"));
        // tc: a clsact qdisc that is already there is fine, and asks nothing
        h.conn.wire().answers.push_back(ack(8, -libc::EEXIST));
        h.ensure_clsact(7).unwrap();
        let sent = h.conn.wire().sent.len();
        assert_eq!(sent, 8, "no lookup after the not-found and exists answers");
    }

    #[test]
    fn a_link_is_read_from_the_kernels_bytes_keeping_what_link_needs() {
        use netlink_packet_core::Emitable;
        use netlink_packet_route::link::{Inet6DevConf, Stats64};
        let mut m = LinkMessage::default();
        m.header.index = 42;
        m.header.flags = LinkFlags::Up | LinkFlags::Multicast;
        m.attributes = vec![
            LinkAttribute::IfName("r2c0a1b2c3".into()),
            LinkAttribute::Mtu(1450),
            // attributes Link does not keep, as the kernel sends them
            LinkAttribute::Stats64(Stats64::default()),
            LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::DevConf(
                Inet6DevConf::default(),
            )])]),
            LinkAttribute::Address(vec![0x0e, 0x2c, 0xc0, 0xa8, 0x01, 0xa0]),
            LinkAttribute::Controller(7),
            LinkAttribute::Link(9),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let mut b = vec![0; m.buffer_len()];
        m.emit(&mut b);
        let l = Link::from_payload(&b).unwrap();
        assert_eq!(
            l,
            Link {
                index: 42,
                name: "r2c0a1b2c3".into(),
                flags: LinkFlags::Up | LinkFlags::Multicast,
                mac: Some([0x0e, 0x2c, 0xc0, 0xa8, 0x01, 0xa0]),
                controller: Some(7),
                parent: Some(9),
                kind: Some("veth".into()),
                mtu: Some(1450),
            }
        );
        // a link without the optional attributes, and an address that is not a MAC
        let mut m = LinkMessage::default();
        m.header.index = 1;
        m.attributes = vec![
            LinkAttribute::IfName("lo".into()),
            LinkAttribute::Address(vec![0; 4]),
        ];
        let mut b = vec![0; m.buffer_len()];
        m.emit(&mut b);
        let l = Link::from_payload(&b).unwrap();
        assert_eq!(
            (l.index, l.name.as_str(), l.mac, l.kind),
            (1, "lo", None, None)
        );
        // truncated: an error, not a guess
        assert!(Link::from_payload(&b[..8]).is_err());
        let mut hdr = NetlinkHeader::default();
        hdr.message_type = RTM_NEWLINK + 4; // RTM_NEWADDR
        assert!(LinkQuery::deserialize(&hdr, &b).is_err());
    }

    #[test]
    fn the_link_index_is_read_from_the_operation() {
        assert_eq!(link_index_in("add route 10.0.0.5/32 dev #7"), Some(7));
        assert_eq!(link_index_in("set flags of link #123 now"), Some(123));
        assert_eq!(link_index_in("dump links"), None);
        assert_eq!(link_index_in("odd #"), None);
    }
}
