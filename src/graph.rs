//! A picture of discovery: computers, pods and LAN hosts, with an edge
//! wherever a participant's discovery is seen, marked by the path it took
//! (the node bridge, LAN multicast, the relay) and by what stops it (the
//! domain policy, a rate limit, no route).
//!
//! The model is built from what `ros2-cni doctor` gathered on a node
//! ([`node_view`]) or from a lab matrix (`lab::matrix::lab_view`), and written two
//! ways: [`Graph::to_dot`] (Graphviz's language, for those who want its
//! layouts) and [`Graph::to_svg`], laid out here with no Graphviz at all:
//! robots and the agent's image have none, and the same input always gives
//! the same picture. The layout is an arc diagram: one row of boxes (each
//! computer with its pods, then the LAN hosts), every edge an arc above the
//! row, an isolated pod's reason written under it, and a legend.
//!
//! Edges point the way discovery travels: from the participant that
//! announces itself to where it is seen (doctor: this node; lab: the host
//! that discovered it). Every node and edge of the SVG carries a `<title>`
//! as Graphviz writes them (the node id; `from->to`), and `data-` attributes
//! with the kind, path and stop.

use crate::api::Participant;
use crate::doctor::{self, Inputs, RECENT};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

/// What a node of the graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeKind {
    /// A robot computer (a Kubernetes node): this one, or another seen as a
    /// LAN sender or relay peer.
    Computer,
    /// A pod, inside its computer.
    Pod,
    /// A host on the LAN that is not a known computer or pod.
    LanHost,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Computer => "computer",
            NodeKind::Pod => "pod",
            NodeKind::LanHost => "lan-host",
        }
    }
}

/// How discovery travelled along an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// Inside a computer: the node bridge (or the pod's own interfaces).
    Bridge,
    /// Multicast on the robot LAN.
    LanMulticast,
    /// The agents' RTPS relay (unicast between nodes).
    Relay,
}

impl PathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Bridge => "bridge",
            PathKind::LanMulticast => "lan-multicast",
            PathKind::Relay => "relay",
        }
    }

    fn words(self) -> &'static str {
        match self {
            PathKind::Bridge => "node bridge",
            PathKind::LanMulticast => "LAN multicast",
            PathKind::Relay => "relay",
        }
    }
}

/// What stops discovery along an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stop {
    /// The namespace may not use the domain (`domains`): dropped at the node.
    DomainPolicy,
    /// Over `podDiscoveryRate` / `uplinkDiscoveryRate`: dropped at the node.
    RateLimit,
    /// Nothing carries it: not forwarded, the wrong interface, a peer not
    /// heard from, or (lab) not discovered within the probe's time.
    NoRoute,
}

impl Stop {
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::DomainPolicy => "domain-policy",
            Stop::RateLimit => "rate-limit",
            Stop::NoRoute => "no-route",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique: `computer:NAME`, `pod:NAMESPACE/NAME` (this node's pods),
    /// `pod:ADDRESS` (another computer's pod, known by its address),
    /// `host:ADDRESS` or `host:NAME`.
    pub id: String,
    pub kind: NodeKind,
    /// The name shown.
    pub label: String,
    /// A second line (an address, "this node").
    pub detail: Option<String>,
    /// The id of the computer a pod runs on.
    pub computer: Option<String>,
    /// Why this pod can neither discover nor be discovered (drawn isolated).
    pub isolated: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub path: PathKind,
    pub stop: Option<Stop>,
    /// The same both ways (a lab pair), drawn with two arrowheads.
    pub both: bool,
    pub label: String,
}

impl Edge {
    /// The edge without its label: what tests compare.
    pub fn key(&self) -> (String, String, PathKind, Option<Stop>, bool) {
        (
            self.from.clone(),
            self.to.clone(),
            self.path,
            self.stop,
            self.both,
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    pub title: String,
    /// In drawing order (computers' pods follow their computer when drawn).
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

impl Graph {
    pub fn new(title: impl Into<String>) -> Graph {
        Graph {
            title: title.into(),
            ..Default::default()
        }
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Adds a node unless one with its id exists; returns the id.
    pub fn add_node(&mut self, n: Node) -> String {
        let id = n.id.clone();
        if self.node(&id).is_none() {
            self.nodes.push(n);
        }
        id
    }

    pub fn computer(&mut self, name: &str, detail: Option<String>) -> String {
        self.add_node(Node {
            id: format!("computer:{name}"),
            kind: NodeKind::Computer,
            label: name.to_owned(),
            detail,
            computer: None,
            isolated: None,
        })
    }

    pub fn pod(
        &mut self,
        id: String,
        label: &str,
        detail: Option<String>,
        computer: &str,
    ) -> String {
        self.add_node(Node {
            id,
            kind: NodeKind::Pod,
            label: label.to_owned(),
            detail,
            computer: Some(computer.to_owned()),
            isolated: None,
        })
    }

    pub fn lan_host(&mut self, id: String, label: &str, detail: Option<String>) -> String {
        self.add_node(Node {
            id,
            kind: NodeKind::LanHost,
            label: label.to_owned(),
            detail,
            computer: None,
            isolated: None,
        })
    }

    pub fn add_edge(&mut self, e: Edge) {
        self.edges.push(e);
    }

    /// Graphviz's DOT: a `digraph` with a cluster per computer; every node
    /// and edge on its own line, with `kind`, `path`, `stop` and `isolated`
    /// attributes beside the drawing ones.
    pub fn to_dot(&self) -> String {
        let mut o = String::from("digraph discovery {\n");
        let _ = writeln!(
            o,
            "  graph [label={}, labelloc=t, fontname=\"sans-serif\", rankdir=LR];",
            quote(&self.title)
        );
        o.push_str("  node [fontname=\"sans-serif\", fontsize=11, shape=box, style=rounded];\n");
        o.push_str("  edge [fontname=\"sans-serif\", fontsize=9];\n");
        let node_line = |n: &Node, indent: &str| -> String {
            let label = match &n.detail {
                Some(d) => format!("{}\n{d}", n.label),
                None => n.label.clone(),
            };
            let mut attrs = vec![
                format!("kind={}", quote(n.kind.as_str())),
                format!("label={}", quote(&label)),
            ];
            match n.kind {
                NodeKind::Computer => attrs.push("shape=box3d, style=bold".into()),
                NodeKind::LanHost => attrs.push("shape=ellipse".into()),
                NodeKind::Pod => {}
            }
            if let Some(why) = &n.isolated {
                attrs.push(format!("isolated={}", quote(why)));
                attrs.push(format!(
                    "color=\"#dc2626\", style=\"rounded,dashed\", xlabel={}",
                    quote(why)
                ));
            }
            format!("{indent}{} [{}];\n", quote(&n.id), attrs.join(", "))
        };
        for c in self.nodes.iter().filter(|n| n.kind == NodeKind::Computer) {
            let _ = writeln!(o, "  subgraph {} {{", quote(&format!("cluster_{}", c.id)));
            let _ = writeln!(
                o,
                "    label={}; style=\"rounded\"; color=\"#9ca3af\";",
                quote(&c.label)
            );
            o.push_str(&node_line(c, "    "));
            for p in self
                .nodes
                .iter()
                .filter(|p| p.computer.as_deref() == Some(&c.id))
            {
                o.push_str(&node_line(p, "    "));
            }
            o.push_str("  }\n");
        }
        for n in self.nodes.iter().filter(|n| {
            n.kind != NodeKind::Computer
                && n.computer.as_ref().is_none_or(|c| self.node(c).is_none())
        }) {
            o.push_str(&node_line(n, "  "));
        }
        for e in &self.edges {
            let (color, style) = edge_style(e);
            let mut attrs = vec![format!("path={}", quote(e.path.as_str()))];
            if let Some(s) = e.stop {
                attrs.push(format!("stop={}", quote(s.as_str())));
            }
            attrs.push(format!("label={}", quote(&e.label)));
            attrs.push(format!("color={}", quote(color)));
            attrs.push(format!("fontcolor={}", quote(color)));
            if style != "solid" {
                attrs.push(format!("style={}", quote(style)));
            }
            if e.both {
                attrs.push("dir=both".into());
            }
            let _ = writeln!(
                o,
                "  {} -> {} [{}];",
                quote(&e.from),
                quote(&e.to),
                attrs.join(", ")
            );
        }
        o.push_str("}\n");
        o
    }
}

/// A DOT string literal.
fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Colour and line style of an edge (DOT names; the SVG maps them).
fn edge_style(e: &Edge) -> (&'static str, &'static str) {
    if e.stop.is_some() {
        return (RED, "dotted");
    }
    match e.path {
        PathKind::Bridge => (GREY, "solid"),
        PathKind::LanMulticast => (BLUE, "solid"),
        PathKind::Relay => (GREEN, "dashed"),
    }
}

const RED: &str = "#dc2626";
const GREY: &str = "#6b7280";
const BLUE: &str = "#2563eb";
const GREEN: &str = "#059669";

// ---------------------------------------------------------------------------
// The node's view (doctor)

/// The graph of what doctor gathered on one node: this computer and its
/// pods; the computers, pods and LAN hosts whose discovery the agent saw
/// (by the participants' source address: another node's pool makes it that
/// node's pod, a relay peer or node address that node); an edge from each
/// to this computer for every path discovery arrived by, and one for every
/// recent drop (domain policy, rate limit) and every announcement nothing
/// carries (no route). Pods whose DDS never announces on their LAN
/// interface ([`doctor::silent_participants`]) are isolated.
pub fn node_view(inp: &Inputs) -> Graph {
    let st = inp.status.as_ref().ok();
    let name = inp
        .node
        .clone()
        .or_else(|| st.and_then(|s| s.node.clone()))
        .unwrap_or_else(|| "this node".to_owned());
    let mut g = Graph::new(format!("RTPS discovery as {name} sees it"));
    let me = g.computer(
        &name,
        Some(match st {
            Some(s) if !s.uplink.is_empty() => format!("this node, uplink {}", s.uplink),
            _ => "this node".to_owned(),
        }),
    );
    let silent = doctor::silent_participants(inp);
    for p in &inp.pods {
        let isolated = match p.has_interface {
            None => continue, // its network namespace is gone: no pod
            Some(false) => Some(format!("no {} in its network namespace", p.interface)),
            Some(true) => silent.iter().find(|s| s.pod == p.pod).map(|s| s.reason()),
        };
        let id = g.pod(
            format!("pod:{}", p.pod),
            &p.pod,
            Some(p.ip.to_string()),
            &me,
        );
        if let Some(n) = g.nodes.iter_mut().find(|n| n.id == id) {
            n.isolated = isolated;
        }
    }
    let mut agg: BTreeMap<(String, PathKind, Option<Stop>), Seen> = BTreeMap::new();
    let (uplink, node_dev) = st.map_or(("", ""), |s| (s.uplink.as_str(), s.node_device.as_str()));
    for p in inp.participants() {
        let from = origin(&mut g, inp, &me, p);
        let (path, stop, via) =
            if p.seen_on == node_dev || p.seen_on.starts_with(crate::firewall::HOST_VETH_PREFIX) {
                (PathKind::Bridge, None, None)
            } else if p.seen_on == uplink {
                (PathKind::LanMulticast, None, None)
            } else {
                // a pod's primary-network veth: DDS on the wrong interface
                (
                    PathKind::Bridge,
                    Some(Stop::NoRoute),
                    Some(p.seen_on.clone()),
                )
            };
        let s = agg.entry((from, path, stop)).or_default();
        s.participants += 1;
        s.domains.extend(p.domain);
        s.via.extend(via);
    }
    for ((from, path, stop), s) in agg {
        let domains = s
            .domains
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let what = format!(
            "{} participant{}{}",
            s.participants,
            if s.participants == 1 { "" } else { "s" },
            if domains.is_empty() {
                String::new()
            } else {
                format!(", domain {domains}")
            }
        );
        let label = match stop {
            Some(_) => format!(
                "no route: on {}, not its LAN interface ({what})",
                s.via.into_iter().collect::<Vec<_>>().join(", ")
            ),
            None => format!("{}: {what}", path.words()),
        };
        g.add_edge(Edge {
            from,
            to: me.clone(),
            path,
            stop,
            both: false,
            label,
        });
    }
    // TTL-1 discovery no route carries (from an address the table has no
    // participant of, or on the node's own path)
    for (src, ifname) in doctor::unforwarded_ttl1(inp) {
        let from = remote(&mut g, inp, &me, src);
        let path = if ifname == uplink {
            PathKind::LanMulticast
        } else {
            PathKind::Bridge
        };
        let label = format!("no route: TTL 1 on {ifname}, not forwarded");
        if !g
            .edges
            .iter()
            .any(|e| e.from == from && e.stop == Some(Stop::NoRoute) && e.path == path)
        {
            g.add_edge(Edge {
                from,
                to: me.clone(),
                path,
                stop: Some(Stop::NoRoute),
                both: false,
                label,
            });
        }
    }
    if let Some(st) = st {
        relay_edges(&mut g, inp, &me, st);
        drop_edges(&mut g, &me, st);
    }
    g
}

#[derive(Default)]
struct Seen {
    participants: usize,
    domains: BTreeSet<u32>,
    via: BTreeSet<String>,
}

/// The node a participant's discovery comes from.
fn origin(g: &mut Graph, inp: &Inputs, me: &str, p: &Participant) -> String {
    if let Some(pod) = &p.pod {
        return g.pod(format!("pod:{pod}"), pod, None, me);
    }
    match p
        .source
        .rsplit_once(':')
        .map_or(p.source.as_str(), |(a, _)| a)
        .parse::<Ipv4Addr>()
    {
        Ok(ip) => remote(g, inp, me, ip),
        Err(_) => g.lan_host(format!("host:{}", p.source), &p.source, None),
    }
}

/// The node for an address seen sending: this node's pod, another
/// computer's pod (its pool), a computer (its address, a relay peer), or a
/// LAN host.
fn remote(g: &mut Graph, inp: &Inputs, me: &str, ip: Ipv4Addr) -> String {
    if let Some(p) = inp.pods.iter().find(|p| p.ip == ip) {
        return g.pod(format!("pod:{}", p.pod), &p.pod, Some(ip.to_string()), me);
    }
    if let Some(n) = inp
        .cluster
        .iter()
        .find(|n| n.pool.is_some_and(|p| p.contains(ip)))
    {
        let c = g.computer(&n.name, n.address.map(|a| a.to_string()));
        return g.pod(format!("pod:{ip}"), &ip.to_string(), None, &c);
    }
    if let Some(c) = peer_computer(g, inp, ip) {
        return c;
    }
    g.lan_host(format!("host:{ip}"), &ip.to_string(), None)
}

/// The computer with uplink address `ip`: a node of the cluster form, or a
/// relay peer (named by its address).
fn peer_computer(g: &mut Graph, inp: &Inputs, ip: Ipv4Addr) -> Option<String> {
    if let Some(n) = inp.cluster.iter().find(|n| n.address == Some(ip)) {
        return Some(g.computer(&n.name, Some(ip.to_string())));
    }
    let peers = inp
        .status
        .as_ref()
        .ok()
        .and_then(|s| s.relay.as_ref())
        .map_or(&[][..], |r| r.peers.as_slice());
    peers
        .iter()
        .any(|p| p.address == ip)
        .then(|| g.computer(&format!("node {ip}"), Some("relay peer".into())))
}

/// Relay peers (computers) and the participants known only through them.
fn relay_edges(g: &mut Graph, inp: &Inputs, me: &str, st: &crate::api::Status) {
    let Some(relay) = &st.relay else { return };
    for p in &relay.peers {
        let Some(c) = peer_computer(g, inp, p.address) else {
            continue;
        };
        let (stop, label) = if p.reachable {
            (
                None,
                format!("relay: {} datagrams received (via {})", p.received, p.via),
            )
        } else {
            (
                Some(Stop::NoRoute),
                format!("no route: relay peer {} not heard from", p.address),
            )
        };
        g.add_edge(Edge {
            from: c.clone(),
            to: me.to_owned(),
            path: PathKind::Relay,
            stop,
            both: false,
            label,
        });
        for src in &p.sources {
            let from = match inp
                .cluster
                .iter()
                .find(|n| n.pool.is_some_and(|pool| pool.contains(*src)))
            {
                Some(_) => remote(g, inp, me, *src),
                None => g.pod(format!("pod:{src}"), &src.to_string(), None, &c),
            };
            g.add_edge(Edge {
                from,
                to: me.to_owned(),
                path: PathKind::Relay,
                stop: None,
                both: false,
                label: format!("relay: relayed by {}", p.address),
            });
        }
    }
}

/// Recent drops by the domain policy and the rate limits, from the status.
fn drop_edges(g: &mut Graph, me: &str, st: &crate::api::Status) {
    let now = crate::api::unix_now();
    let recent = |t: Option<u64>| t.is_some_and(|t| now.saturating_sub(t) <= RECENT.as_secs());
    let name = |ns: &str, pod: &str| {
        if ns.is_empty() {
            pod.to_owned()
        } else {
            format!("{ns}/{pod}")
        }
    };
    if let Some(dp) = &st.domain_policy {
        for p in dp.pods.iter().filter(|p| recent(p.last_sent_dropped)) {
            let pod = name(&p.namespace, &p.pod);
            let from = g.pod(format!("pod:{pod}"), &pod, Some(p.ip.clone()), me);
            let domains = if p.blocked_domains.is_empty() {
                String::new()
            } else {
                format!(
                    " (domain {})",
                    p.blocked_domains
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            g.add_edge(Edge {
                from,
                to: me.to_owned(),
                path: PathKind::Bridge,
                stop: Some(Stop::DomainPolicy),
                both: false,
                label: format!("domain policy: {} dropped{domains}", p.sent_dropped),
            });
        }
    }
    let lim = &st.discovery_limits;
    for p in lim.pods.iter().filter(|p| recent(p.last_limited)) {
        let pod = name(&p.namespace, &p.pod);
        let from = g.pod(format!("pod:{pod}"), &pod, Some(p.ip.clone()), me);
        g.add_edge(Edge {
            from,
            to: me.to_owned(),
            path: PathKind::Bridge,
            stop: Some(Stop::RateLimit),
            both: false,
            label: format!("rate limit: {} dropped", p.limited_packets),
        });
    }
    if recent(lim.uplink_last_limited) || recent(lim.uplink_sender_last_limited) {
        let from = g.lan_host(
            "host:lan".into(),
            "the LAN",
            lim.uplink_interface.clone().map(|i| format!("uplink {i}")),
        );
        g.add_edge(Edge {
            from,
            to: me.to_owned(),
            path: PathKind::LanMulticast,
            stop: Some(Stop::RateLimit),
            both: false,
            label: format!(
                "rate limit: {} dropped",
                lim.uplink_limited_packets + lim.uplink_sender_limited_packets
            ),
        });
    }
}

// ---------------------------------------------------------------------------
// SVG, laid out here

const FONT: f64 = 12.0;
/// Average advance of a character at [`FONT`] in a sans-serif face.
const CHAR_W: f64 = 7.0;
const BOX_H: f64 = 40.0;
const GAP: f64 = 22.0;
const GROUP_PAD: f64 = 12.0;
const MARGIN: f64 = 24.0;
const ISOLATED_W: f64 = 190.0;

struct Placed {
    x: f64,
    w: f64,
}

fn text_w(s: &str) -> f64 {
    s.chars().count() as f64 * CHAR_W
}

/// Words of `s` in lines of at most `chars` characters.
fn wrap(s: &str, chars: usize) -> Vec<String> {
    let mut lines: Vec<String> = vec![];
    for w in s.split_whitespace() {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + w.chars().count() <= chars => {
                l.push(' ');
                l.push_str(w);
            }
            _ => lines.push(w.to_owned()),
        }
    }
    lines
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An edge drawn: its ends on the row and the height of its arc.
struct Arc<'a> {
    edge: &'a Edge,
    x1: f64,
    x2: f64,
    h: f64,
}

/// Advance of a character of an edge label (10 px).
const LABEL_CHAR_W: f64 = 5.8;

fn legend_item_w(text: &str) -> f64 {
    34.0 + text.chars().count() as f64 * LABEL_CHAR_W + 22.0
}

impl Graph {
    /// The drawing order: each computer followed by its pods, then pods of
    /// no computer drawn, then LAN hosts.
    fn row(&self) -> Vec<&Node> {
        let mut row = vec![];
        for c in self.nodes.iter().filter(|n| n.kind == NodeKind::Computer) {
            row.push(c);
            row.extend(
                self.nodes.iter().filter(|p| {
                    p.kind != NodeKind::Computer && p.computer.as_deref() == Some(&c.id)
                }),
            );
        }
        row.extend(self.nodes.iter().filter(|n| {
            n.kind == NodeKind::Pod && n.computer.as_ref().is_none_or(|c| self.node(c).is_none())
        }));
        row.extend(self.nodes.iter().filter(|n| n.kind == NodeKind::LanHost));
        row
    }

    /// The legend's entries for what the picture shows: (text, colour,
    /// dash attribute or "box" for the isolated pod).
    fn legend(&self) -> Vec<(String, &'static str, &'static str)> {
        let mut out = vec![];
        for (path, color, dash) in [
            (PathKind::Bridge, GREY, ""),
            (PathKind::LanMulticast, BLUE, ""),
            (PathKind::Relay, GREEN, " stroke-dasharray=\"7 4\""),
        ] {
            if self
                .edges
                .iter()
                .any(|e| e.stop.is_none() && e.path == path)
            {
                out.push((path.words().to_owned(), color, dash));
            }
        }
        let stops: BTreeSet<Stop> = self.edges.iter().filter_map(|e| e.stop).collect();
        if !stops.is_empty() {
            let words: Vec<&str> = stops
                .iter()
                .map(|s| match s {
                    Stop::DomainPolicy => "domain policy",
                    Stop::RateLimit => "rate limit",
                    Stop::NoRoute => "no route",
                })
                .collect();
            out.push((
                format!("stopped: {}", words.join(", ")),
                RED,
                " stroke-dasharray=\"2 4\"",
            ));
        }
        if self.nodes.iter().any(|n| n.isolated.is_some()) {
            out.push(("isolated pod".to_owned(), RED, "box"));
        }
        out
    }

    /// Every edge's arc: its ends spread over the top of each box so that
    /// arcs nest (those going left on the left, those going right on the
    /// right, the farther the other end the farther out), each arc higher
    /// than the arcs inside it, and raised until its label (at its top)
    /// overlaps no label drawn before it.
    fn arcs<'a>(&'a self, placed: &BTreeMap<&str, Placed>) -> Vec<Arc<'a>> {
        let center = |id: &str| placed.get(id).map(|p| p.x + p.w / 2.0);
        let edges: Vec<(usize, &Edge, f64, f64)> = self
            .edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.from != e.to)
            .filter_map(|(i, e)| Some((i, e, center(&e.from)?, center(&e.to)?)))
            .collect();
        let mut ends: BTreeMap<&str, Vec<(usize, f64)>> = BTreeMap::new();
        for (i, e, cf, ct) in &edges {
            ends.entry(e.from.as_str()).or_default().push((*i, *ct));
            ends.entry(e.to.as_str()).or_default().push((*i, *cf));
        }
        let mut at: BTreeMap<(usize, &str), f64> = BTreeMap::new();
        for (id, list) in &mut ends {
            let p = &placed[*id];
            let c = p.x + p.w / 2.0;
            list.sort_by(|a, b| {
                let (ra, rb) = (a.1 > c, b.1 > c);
                ra.cmp(&rb).then(b.1.total_cmp(&a.1)).then(if ra {
                    a.0.cmp(&b.0)
                } else {
                    b.0.cmp(&a.0)
                })
            });
            let k = list.len() as f64;
            for (slot, (i, _)) in list.iter().enumerate() {
                at.insert(
                    (*i, *id),
                    p.x + p.w * (0.15 + 0.7 * (slot as f64 + 0.5) / k),
                );
            }
        }
        let mut arcs: Vec<Arc> = edges
            .iter()
            .map(|(i, e, _, _)| Arc {
                edge: e,
                x1: at[&(*i, e.from.as_str())],
                x2: at[&(*i, e.to.as_str())],
                h: 0.0,
            })
            .collect();
        let span = |a: &Arc| (a.x1.min(a.x2), a.x1.max(a.x2));
        let mut order: Vec<usize> = (0..arcs.len()).collect();
        order.sort_by(|a, b| {
            let (sa, sb) = (span(&arcs[*a]), span(&arcs[*b]));
            (sa.1 - sa.0).total_cmp(&(sb.1 - sb.0)).then(a.cmp(b))
        });
        // label boxes and arcs drawn so far: (left, right, top, bottom) in
        // heights above the row; arcs as points along them (few edges only:
        // the check is quadratic)
        let careful = arcs.len() <= 200;
        let mut labels: Vec<(f64, f64, f64, f64)> = vec![];
        let mut curves: Vec<Vec<(f64, f64)>> = vec![];
        let hits = |(l, r, t, b): (f64, f64, f64, f64), pts: &[(f64, f64)]| {
            pts.iter()
                .any(|(x, y)| *x > l - 2.0 && *x < r + 2.0 && *y > b - 2.0 && *y < t + 2.0)
        };
        for (n, &i) in order.iter().enumerate() {
            let (lo, hi) = span(&arcs[i]);
            let inner = order[..n]
                .iter()
                .filter(|&&j| {
                    let (l, r) = span(&arcs[j]);
                    l >= lo && r <= hi
                })
                .map(|&j| arcs[j].h + 30.0)
                .fold(0.0, f64::max);
            let mut h = (30.0 + (hi - lo) * 0.25).max(inner);
            let half = text_w(&arcs[i].edge.label) / CHAR_W * LABEL_CHAR_W / 2.0 + 3.0;
            let mid = (lo + hi) / 2.0;
            let rect = |h: f64| {
                let base = h * 0.75 + 4.0;
                (mid - half, mid + half, base + 11.0, base - 3.0)
            };
            let (x1, x2) = (arcs[i].x1, arcs[i].x2);
            // the cubic from (x1, 0) over (x1, h), (x2, h) to (x2, 0)
            let curve = |h: f64| -> Vec<(f64, f64)> {
                (10..39)
                    .map(|k| {
                        let t = f64::from(k) / 48.0;
                        let u = 1.0 - t;
                        (
                            x1 * (u * u * u + 3.0 * u * u * t) + x2 * (3.0 * u * t * t + t * t * t),
                            3.0 * t * u * h,
                        )
                    })
                    .collect()
            };
            // labels never overlap; an arc through a label is avoided by
            // raising it a few steps (near its ends it may be unavoidable)
            for step in 0..200 {
                let r = rect(h);
                let (l, rr, t, b) = r;
                let clash = labels
                    .iter()
                    .any(|(l2, r2, t2, b2)| l < *r2 && *l2 < rr && b < *t2 && *b2 < t)
                    || (careful
                        && step < 6
                        && (curves.iter().any(|c| hits(r, c))
                            || labels.iter().any(|lb| hits(*lb, &curve(h)))));
                if !clash {
                    break;
                }
                h += 20.0;
            }
            labels.push(rect(h));
            if careful {
                curves.push(curve(h));
            }
            arcs[i].h = h;
        }
        arcs
    }

    /// The picture as SVG: an arc diagram laid out here (no Graphviz).
    /// Deterministic: the same graph always gives the same bytes.
    pub fn to_svg(&self) -> String {
        let row = self.row();
        // x of every box; computers' groups get padding around them
        let mut placed: BTreeMap<&str, Placed> = BTreeMap::new();
        let mut groups: Vec<(f64, f64)> = vec![];
        let mut x = MARGIN;
        let mut open: Option<(&str, f64)> = None;
        for n in &row {
            let group_of = match n.kind {
                NodeKind::Computer => Some(n.id.as_str()),
                _ => n.computer.as_deref().filter(|c| self.node(c).is_some()),
            };
            if open.map(|(c, _)| Some(c)) != Some(group_of) {
                if let Some((_, start)) = open.take() {
                    groups.push((start, x - GAP + GROUP_PAD));
                    x += GROUP_PAD;
                }
                if let Some(c) = group_of {
                    open = Some((c, x));
                    x += GROUP_PAD;
                }
            }
            let lines = [n.label.as_str(), n.detail.as_deref().unwrap_or("")];
            let mut w = lines.iter().map(|l| text_w(l)).fold(0.0, f64::max) + 20.0;
            if n.isolated.is_some() {
                w = w.max(ISOLATED_W);
            }
            placed.insert(&n.id, Placed { x, w });
            x += w + GAP;
        }
        if let Some((_, start)) = open.take() {
            groups.push((start, x - GAP + GROUP_PAD));
            x += GROUP_PAD;
        }
        let legend = self.legend();
        let legend_w = MARGIN * 2.0
            + legend
                .iter()
                .map(|(t, _, _)| legend_item_w(t))
                .sum::<f64>()
                .max(110.0 * LABEL_CHAR_W);
        let width = (x - GAP + MARGIN).max(legend_w);
        // the title in lines that fit (15 px bold)
        let title = wrap(&self.title, ((width - 2.0 * MARGIN) / 8.8) as usize);
        let arcs = self.arcs(&placed);
        let arc_top = arcs.iter().map(|a| a.h * 0.75 + 14.0).fold(0.0, f64::max);
        let title_h = 14.0 + 20.0 * title.len() as f64;
        let row_y = title_h + arc_top + 28.0 + GROUP_PAD;
        let reasons: Vec<(&Node, Vec<String>)> = row
            .iter()
            .filter_map(|n| {
                let w = placed[n.id.as_str()].w;
                Some((*n, wrap(n.isolated.as_deref()?, (w / 6.0) as usize)))
            })
            .collect();
        let reason_h = reasons
            .iter()
            .map(|(_, l)| l.len() as f64 * 13.0 + 8.0)
            .fold(0.0, f64::max);
        let legend_y = row_y + BOX_H + GROUP_PAD + reason_h + 24.0;
        let height = legend_y + 40.0;

        let mut o = String::new();
        let _ = writeln!(
            o,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
             width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" \
             font-family=\"sans-serif\" font-size=\"{FONT}\">"
        );
        let _ = writeln!(o, "<title>{}</title>", esc(&self.title));
        o.push_str("<defs>\n");
        for (name, color) in [
            ("grey", GREY),
            ("blue", BLUE),
            ("green", GREEN),
            ("red", RED),
        ] {
            let _ = writeln!(
                o,
                "<marker id=\"arrow-{name}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" \
                 markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
                 <path d=\"M0,0 L10,5 L0,10 z\" fill=\"{color}\"/></marker>"
            );
        }
        o.push_str("</defs>\n");
        o.push_str("<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n");
        for (k, line) in title.iter().enumerate() {
            let _ = writeln!(
                o,
                "<text x=\"{MARGIN}\" y=\"{}\" font-size=\"15\" font-weight=\"bold\">{}</text>",
                22 + 20 * k,
                esc(line)
            );
        }
        for (x0, x1) in &groups {
            let _ = writeln!(
                o,
                "<rect class=\"computer-group\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                 rx=\"10\" fill=\"#f9fafb\" stroke=\"#9ca3af\"/>",
                row_y - GROUP_PAD,
                x1 - x0,
                BOX_H + 2.0 * GROUP_PAD
            );
        }
        // edges under the boxes
        for (i, a) in arcs.iter().enumerate() {
            let (e, x1, x2, h) = (a.edge, a.x1, a.x2, a.h);
            let (color, style) = edge_style(e);
            let marker = match color {
                RED => "red",
                BLUE => "blue",
                GREEN => "green",
                _ => "grey",
            };
            let dash = match style {
                "dotted" => " stroke-dasharray=\"2 4\"",
                "dashed" => " stroke-dasharray=\"7 4\"",
                _ => "",
            };
            let (y, top) = (row_y, row_y - h);
            let start = if e.both {
                format!(" marker-start=\"url(#arrow-{marker})\"")
            } else {
                String::new()
            };
            let stop = e
                .stop
                .map(|s| format!(" data-stop=\"{}\"", s.as_str()))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "<g id=\"edge{}\" class=\"edge\" data-path=\"{}\"{stop}><title>{}-&gt;{}</title>\n\
                 <path d=\"M{x1:.1},{y:.1} C{x1:.1},{top:.1} {x2:.1},{top:.1} {x2:.1},{y:.1}\" fill=\"none\" \
                 stroke=\"{color}\" stroke-width=\"2\"{dash}{start} marker-end=\"url(#arrow-{marker})\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\" fill=\"{color}\" \
                 stroke=\"#ffffff\" stroke-width=\"3\" paint-order=\"stroke\">{}</text></g>",
                i + 1,
                e.path.as_str(),
                esc(&e.from),
                esc(&e.to),
                (x1 + x2) / 2.0,
                row_y - h * 0.75 - 4.0,
                esc(&e.label)
            );
        }
        for (i, n) in row.iter().enumerate() {
            let p = &placed[n.id.as_str()];
            let (fill, stroke, rx, extra) = match (n.kind, n.isolated.is_some()) {
                (_, true) => ("#fef2f2", RED, 6, " stroke-dasharray=\"5 3\""),
                (NodeKind::Computer, _) => ("#e5e7eb", "#111827", 2, ""),
                (NodeKind::Pod, _) => ("#ffffff", "#374151", 6, ""),
                (NodeKind::LanHost, _) => ("#eff6ff", "#1d4ed8", 18, ""),
            };
            let isolated = n
                .isolated
                .as_ref()
                .map(|r| format!(" data-isolated=\"{}\"", esc(r)))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "<g id=\"node{}\" class=\"node\" data-kind=\"{}\"{isolated}><title>{}</title>\n\
                 <rect x=\"{:.1}\" y=\"{row_y:.1}\" width=\"{:.1}\" height=\"{BOX_H}\" rx=\"{rx}\" \
                 fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{}\"{extra}/>",
                i + 1,
                n.kind.as_str(),
                esc(&n.id),
                p.x,
                p.w,
                if n.kind == NodeKind::Computer { 2 } else { 1 }
            );
            let cx = p.x + p.w / 2.0;
            let weight = if n.kind == NodeKind::Computer {
                " font-weight=\"bold\""
            } else {
                ""
            };
            match &n.detail {
                Some(d) => {
                    let _ = writeln!(
                        o,
                        "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\"{weight}>{}</text>\n\
                         <text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\" fill=\"#4b5563\">{}</text>",
                        row_y + 17.0,
                        esc(&n.label),
                        row_y + 31.0,
                        esc(d)
                    );
                }
                None => {
                    let _ = writeln!(
                        o,
                        "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\"{weight}>{}</text>",
                        row_y + 24.0,
                        esc(&n.label)
                    );
                }
            }
            if let Some((_, lines)) = reasons.iter().find(|(r, _)| r.id == n.id) {
                for (k, l) in lines.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\" fill=\"{RED}\">{}</text>",
                        row_y + BOX_H + GROUP_PAD + 14.0 + k as f64 * 13.0,
                        esc(l)
                    );
                }
            }
            o.push_str("</g>\n");
        }
        // the legend
        let mut lx = MARGIN;
        let ly = legend_y;
        o.push_str("<g class=\"legend\">\n");
        for (text, color, dash) in &legend {
            if dash == &"box" {
                let _ = writeln!(
                    o,
                    "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"22\" height=\"12\" rx=\"3\" fill=\"#fef2f2\" stroke=\"{color}\" stroke-dasharray=\"5 3\"/>",
                    ly - 6.0
                );
            } else {
                let _ = writeln!(
                    o,
                    "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
                    lx + 28.0
                );
            }
            let _ = writeln!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
                lx + 34.0,
                ly + 4.0,
                esc(text)
            );
            lx += legend_item_w(text);
        }
        let _ = writeln!(
            o,
            "<text x=\"{MARGIN}\" y=\"{:.1}\" font-size=\"10\" fill=\"#4b5563\">{}</text>",
            ly + 22.0,
            if self.edges.is_empty() {
                "No discovery seen."
            } else {
                "Arrows point the way discovery travels: from the participant that announces itself to where it is seen."
            }
        );
        o.push_str("</g>\n</svg>\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        DiscoveryLimits, DomainPolicy, Locator, Participants, Peer, PodDomains, PodLimited, Relay,
        Source, Status,
    };
    use crate::config::{Mode, Pool};
    use crate::doctor::{ClusterNode, KernelCheck, PodCheck, PodSockets};

    fn seen(pod: Option<&str>, source: &str, seen_on: &str, domain: u32) -> Participant {
        Participant {
            guid_prefix: format!("01{source}"),
            vendor: "Eclipse Cyclone DDS".into(),
            domain: Some(domain),
            pod: pod.map(str::to_owned),
            seen_on: seen_on.into(),
            source: format!("{source}:7400"),
            locators: vec![Locator {
                kind: "metatraffic_unicast".into(),
                transport: "udpv4".into(),
                address: Some(source.into()),
                port: 7410,
            }],
            ..Default::default()
        }
    }

    fn pod(name: &str, ip: &str, sockets: Option<PodSockets>) -> PodCheck {
        PodCheck {
            pod: name.into(),
            ip: ip.parse().unwrap(),
            interface: "ros0".into(),
            netns: "/x".into(),
            has_interface: Some(true),
            sockets,
        }
    }

    /// Ddsperf pinned to eth0: RTPS unicast ports on 0.0.0.0, its sending
    /// socket bound to eth0's address, nothing joined on ros0.
    fn pinned_sockets() -> PodSockets {
        PodSockets {
            addresses: [("eth0", "10.1.1.6"), ("ros0", "192.168.1.161")]
                .into_iter()
                .map(|(i, a)| (i.to_owned(), vec![a.parse().unwrap()]))
                .collect(),
            udp: ["10.1.1.6:54719", "0.0.0.0:7410", "0.0.0.0:7411"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect(),
            joined: BTreeMap::new(),
            ephemeral_from: 32768,
        }
    }

    /// n1 with four pods (one talking, one pinned to eth0, one over its
    /// rate limit, one sending to a forbidden domain, one whose DDS is on
    /// its primary veth), a pod of n2 and a laptop heard on the LAN (the
    /// laptop's TTL-1 discovery not forwarded), a reachable relay peer n3
    /// relaying one of its pods, and a peer not heard from.
    fn scenario() -> Inputs {
        let now = crate::api::unix_now();
        let status = Status {
            node: Some("n1".into()),
            mode: "routed".into(),
            uplink: "eth0".into(),
            node_device: "ros2br0".into(),
            routing: true,
            relay: Some(Relay {
                port: 7399,
                peers: vec![
                    Peer {
                        address: "192.168.0.13".parse().unwrap(),
                        via: "relay".into(),
                        sent: 4,
                        sent_bytes: 0,
                        received: 9,
                        received_bytes: 0,
                        dropped: 0,
                        last_seen: Some(now),
                        last_error: None,
                        sources: ["192.168.2.5".parse().unwrap()].into_iter().collect(),
                        reachable: true,
                    },
                    Peer {
                        address: "192.168.0.99".parse().unwrap(),
                        via: "relay".into(),
                        sent: 4,
                        sent_bytes: 0,
                        received: 0,
                        received_bytes: 0,
                        dropped: 0,
                        last_seen: None,
                        last_error: None,
                        sources: Default::default(),
                        reachable: false,
                    },
                ],
                ..Default::default()
            }),
            domain_policy: Some(DomainPolicy {
                pods: vec![PodDomains {
                    namespace: "robots".into(),
                    pod: "stray".into(),
                    ip: "192.168.1.164".into(),
                    allowed_domains: Some(vec![1]),
                    blocked_domains: vec![7],
                    sent_dropped: 42,
                    last_sent_dropped: Some(now),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            discovery_limits: DiscoveryLimits {
                pods: vec![
                    PodLimited {
                        namespace: "robots".into(),
                        pod: "flooder".into(),
                        ip: "192.168.1.163".into(),
                        limited_packets: 4711,
                        last_limited: Some(now - 10),
                        ..Default::default()
                    },
                    PodLimited {
                        namespace: "robots".into(),
                        pod: "talker".into(),
                        ip: "192.168.1.160".into(),
                        limited_packets: 3,
                        // long ago: no edge
                        last_limited: Some(now - 3600),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            healthy: true,
            ..Default::default()
        };
        Inputs {
            subnet: Some("192.168.0.0/20".parse().unwrap()),
            mode: Some(Mode::Routed),
            raise_ttl: true,
            status: Ok(status),
            participants: Some(Participants {
                participants: vec![
                    seen(Some("robots/talker"), "192.168.1.160", "ros2br0", 0),
                    seen(Some("robots/talker"), "192.168.1.160", "ros2br0", 0),
                    seen(Some("robots/wrong"), "10.1.1.9", "cali0a1b2c", 0),
                    seen(None, "192.168.1.201", "eth0", 0),
                    seen(None, "192.168.0.200", "eth0", 0),
                ],
                sources: vec![Source {
                    source: "192.168.0.200".parse().unwrap(),
                    group: "239.255.0.1".parse().unwrap(),
                    interface: "eth0".into(),
                    ttl: 1,
                    packets: 3,
                    last_seen: now,
                }],
                ..Default::default()
            }),
            conflist: None,
            pods: vec![
                pod("robots/talker", "192.168.1.160", None),
                pod("robots/pinned", "192.168.1.161", Some(pinned_sockets())),
                pod("robots/flooder", "192.168.1.163", None),
                pod("robots/wrong", "192.168.1.165", None),
                PodCheck {
                    has_interface: None,
                    ..pod("robots/gone", "192.168.1.166", None)
                },
            ],
            kernel: KernelCheck::default(),
            node: Some("n1".into()),
            cluster: vec![
                ClusterNode {
                    name: "n2".into(),
                    pool: Some(Pool::parse("192.168.1.192/27").unwrap()),
                    address: None,
                },
                ClusterNode {
                    name: "n3".into(),
                    pool: None,
                    address: Some("192.168.0.13".parse().unwrap()),
                },
            ],
            groups: vec!["239.255.0.1".parse().unwrap()],
            zenoh_router: None,
            extra_multicast: vec![],
        }
    }

    type Key = (String, String, PathKind, Option<Stop>, bool);

    fn key(from: &str, to: &str, path: PathKind, stop: Option<Stop>, both: bool) -> Key {
        (from.into(), to.into(), path, stop, both)
    }

    #[test]
    fn node_view_has_exactly_the_computers_pods_hosts_and_edges_seen() {
        let g = node_view(&scenario());
        let nodes: Vec<(&str, NodeKind, Option<&str>)> = g
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.kind, n.computer.as_deref()))
            .collect();
        use NodeKind::*;
        let n1 = Some("computer:n1");
        assert_eq!(
            nodes,
            [
                ("computer:n1", Computer, None),
                ("pod:robots/talker", Pod, n1),
                ("pod:robots/pinned", Pod, n1),
                ("pod:robots/flooder", Pod, n1),
                ("pod:robots/wrong", Pod, n1),
                ("computer:n2", Computer, None),
                ("pod:192.168.1.201", Pod, Some("computer:n2")),
                ("host:192.168.0.200", LanHost, None),
                ("computer:n3", Computer, None),
                ("pod:192.168.2.5", Pod, Some("computer:n3")),
                ("computer:node 192.168.0.99", Computer, None),
                ("pod:robots/stray", Pod, n1),
            ]
        );
        let isolated: Vec<(&str, &str)> = g
            .nodes
            .iter()
            .filter_map(|n| Some((n.id.as_str(), n.isolated.as_deref()?)))
            .collect();
        assert_eq!(
            isolated,
            [(
                "pod:robots/pinned",
                "silent participant: DDS uses eth0, not ros0; it sends no discovery there"
            )]
        );
        let me = "computer:n1";
        use PathKind::*;
        let edges: BTreeSet<Key> = g.edges.iter().map(Edge::key).collect();
        let want: BTreeSet<Key> = [
            key("pod:robots/talker", me, Bridge, None, false),
            key("pod:robots/wrong", me, Bridge, Some(Stop::NoRoute), false),
            key("pod:192.168.1.201", me, LanMulticast, None, false),
            key("host:192.168.0.200", me, LanMulticast, None, false),
            key(
                "host:192.168.0.200",
                me,
                LanMulticast,
                Some(Stop::NoRoute),
                false,
            ),
            key("computer:n3", me, Relay, None, false),
            key("pod:192.168.2.5", me, Relay, None, false),
            key(
                "computer:node 192.168.0.99",
                me,
                Relay,
                Some(Stop::NoRoute),
                false,
            ),
            key(
                "pod:robots/stray",
                me,
                Bridge,
                Some(Stop::DomainPolicy),
                false,
            ),
            key(
                "pod:robots/flooder",
                me,
                Bridge,
                Some(Stop::RateLimit),
                false,
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(edges, want);
        assert_eq!(g.edges.len(), want.len(), "no edge twice: {:#?}", g.edges);
        let label = |from: &str, stop: Option<Stop>| {
            g.edges
                .iter()
                .find(|e| e.from == from && e.stop == stop)
                .unwrap()
                .label
                .clone()
        };
        assert_eq!(
            label("pod:robots/talker", None),
            "node bridge: 2 participants, domain 0"
        );
        assert_eq!(
            label("pod:robots/wrong", Some(Stop::NoRoute)),
            "no route: on cali0a1b2c, not its LAN interface (1 participant, domain 0)"
        );
        assert_eq!(
            label("pod:robots/stray", Some(Stop::DomainPolicy)),
            "domain policy: 42 dropped (domain 7)"
        );
        assert_eq!(
            label("host:192.168.0.200", Some(Stop::NoRoute)),
            "no route: TTL 1 on eth0, not forwarded"
        );
        assert_eq!(g.title, "RTPS discovery as n1 sees it");
    }

    #[test]
    fn node_view_of_a_quiet_node_is_the_node_and_its_pods() {
        let mut i = scenario();
        i.participants = Some(Participants::default());
        i.status = Err("no agent answers".into());
        i.pods[0].has_interface = Some(false);
        let g = node_view(&i);
        assert_eq!(
            g.node("pod:robots/talker").unwrap().isolated.as_deref(),
            Some("no ros0 in its network namespace")
        );
        let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "computer:n1",
                "pod:robots/talker",
                "pod:robots/pinned",
                "pod:robots/flooder",
                "pod:robots/wrong"
            ]
        );
        assert!(g.edges.is_empty(), "{:#?}", g.edges);
    }

    /// The DOT, read back line by line: nodes with their cluster and kind,
    /// edges with path and stop.
    #[test]
    fn dot_has_every_node_in_its_cluster_and_every_edge_with_its_attributes() {
        let g = node_view(&scenario());
        let dot = g.to_dot();
        assert!(dot.starts_with("digraph discovery {\n") && dot.ends_with("}\n"));
        let mut cluster = None;
        let mut nodes = vec![];
        let mut edges = BTreeSet::new();
        for l in dot.lines().map(str::trim) {
            if let Some(rest) = l.strip_prefix("subgraph \"cluster_") {
                cluster = Some(rest.trim_end_matches("\" {").to_owned());
            } else if l == "}" {
                cluster = None;
            } else if l.contains(" -> ") {
                let (from, rest) = l.split_once(" -> ").unwrap();
                let to = rest.split(" [").next().unwrap();
                let attr = |k: &str| {
                    rest.split(&format!("{k}=\""))
                        .nth(1)
                        .map(|v| v.split('"').next().unwrap().to_owned())
                };
                edges.insert((
                    from.trim_matches('"').to_owned(),
                    to.trim_matches('"').to_owned(),
                    attr("path").unwrap(),
                    attr("stop"),
                ));
            } else if let Some(rest) = l.strip_prefix('"') {
                let id = rest.split('"').next().unwrap().to_owned();
                nodes.push((id, cluster.clone()));
            }
        }
        let want_nodes: Vec<(String, Option<String>)> = g
            .nodes
            .iter()
            .map(|n| {
                let c = match n.kind {
                    NodeKind::Computer => Some(n.id.clone()),
                    _ => n.computer.clone(),
                };
                (n.id.clone(), c)
            })
            .collect();
        let mut sorted = nodes.clone();
        sorted.sort();
        let mut want_sorted = want_nodes;
        want_sorted.sort();
        assert_eq!(sorted, want_sorted);
        let want_edges: BTreeSet<_> = g
            .edges
            .iter()
            .map(|e| {
                (
                    e.from.clone(),
                    e.to.clone(),
                    e.path.as_str().to_owned(),
                    e.stop.map(|s| s.as_str().to_owned()),
                )
            })
            .collect();
        assert_eq!(edges, want_edges);
        assert!(
            dot.contains("isolated=\"silent participant: DDS uses eth0"),
            "{dot}"
        );
        assert_eq!(quote("a \"b\"\\\nc"), "\"a \\\"b\\\"\\\\\\nc\"");
    }

    #[test]
    fn svg_titles_every_node_and_edge_and_is_the_same_every_time() {
        let g = node_view(&scenario());
        let svg = g.to_svg();
        assert_eq!(svg, node_view(&scenario()).to_svg(), "deterministic");
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
        let titles: Vec<&str> = svg
            .split("<title>")
            .skip(1)
            .map(|t| t.split("</title>").next().unwrap())
            .collect();
        assert_eq!(titles.len(), 1 + g.nodes.len() + g.edges.len());
        for n in &g.nodes {
            assert!(titles.contains(&esc(&n.id).as_str()), "{}", n.id);
        }
        for e in &g.edges {
            let t = format!("{}-&gt;{}", esc(&e.from), esc(&e.to));
            assert!(titles.contains(&t.as_str()), "{t}");
        }
        assert_eq!(svg.matches("class=\"node\"").count(), g.nodes.len());
        assert_eq!(svg.matches("class=\"edge\"").count(), g.edges.len());
        assert_eq!(svg.matches("data-stop=\"rate-limit\"").count(), 1);
        assert_eq!(svg.matches("data-isolated=").count(), 1);
        // text is escaped
        let mut g2 = Graph::new("a <b> & c");
        g2.lan_host("host:<x>".into(), "<x>", None);
        let svg2 = g2.to_svg();
        assert!(
            svg2.contains("a &lt;b&gt; &amp; c") && !svg2.contains("<x>"),
            "{svg2}"
        );
    }

    #[test]
    fn arcs_stay_low_and_labels_apart() {
        let g = node_view(&scenario());
        let svg = g.to_svg();
        let height: f64 = svg
            .split("height=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(height < 700.0, "{height}");
        // labels never overlap
        let labels: Vec<(f64, f64, usize)> = svg
            .split("<text x=\"")
            .skip(1)
            .filter(|t| t.contains("font-size=\"10\" fill=") && t.contains("paint-order"))
            .map(|t| {
                let x: f64 = t.split('"').next().unwrap().parse().unwrap();
                let y: f64 = t
                    .split("y=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                let len = t
                    .split('>')
                    .nth(1)
                    .unwrap()
                    .split('<')
                    .next()
                    .unwrap()
                    .chars()
                    .count();
                (x, y, len)
            })
            .collect();
        assert_eq!(labels.len(), g.edges.len());
        for (i, a) in labels.iter().enumerate() {
            for b in &labels[i + 1..] {
                let apart_x = (a.0 - b.0).abs() * 2.0 >= (a.2 + b.2) as f64 * LABEL_CHAR_W;
                assert!(apart_x || (a.1 - b.1).abs() >= 14.0, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn wrap_keeps_words_whole() {
        assert_eq!(wrap("a bb ccc dddd", 6), ["a bb", "ccc", "dddd"]);
        assert!(wrap("", 5).is_empty());
    }
}
