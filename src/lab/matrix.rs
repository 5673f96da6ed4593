//! The lab's results: discovery matrices, their table and JSON forms, and
//! the summary paragraph. Pure data and formatting: no namespaces, no probes.

use crate::graph::{Edge, Graph, PathKind, Stop};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// One ordered pair: did `from` discover `to`, and after how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub from: String,
    pub to: String,
    pub discovered: bool,
    /// Seconds until `from` discovered `to`; None when it did not.
    pub seconds: Option<f64>,
    /// A remark on an odd outcome (not in the JSON pairs' fixed shape).
    pub note: Option<String>,
}

/// Every ordered pair among `hosts`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matrix {
    /// Row and column order.
    pub hosts: Vec<String>,
    pub pairs: Vec<Pair>,
}

/// Seconds rounded to milliseconds, for JSON.
fn millis(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

impl Matrix {
    pub fn get(&self, from: &str, to: &str) -> Option<&Pair> {
        self.pairs.iter().find(|p| p.from == from && p.to == to)
    }

    pub fn discovered(&self) -> usize {
        self.pairs.iter().filter(|p| p.discovered).count()
    }

    /// Every pair was probed and discovered.
    pub fn all_discovered(&self) -> bool {
        !self.pairs.is_empty() && self.discovered() == self.pairs.len()
    }

    /// Seconds of the discovered pairs, sorted.
    fn times(&self) -> Vec<f64> {
        let mut t: Vec<f64> = self.pairs.iter().filter_map(|p| p.seconds).collect();
        t.sort_by(f64::total_cmp);
        t
    }

    /// `[{"from", "to", "discovered", "seconds"}]`.
    pub fn pairs_json(&self) -> Value {
        Value::Array(
            self.pairs
                .iter()
                .map(|p| {
                    json!({
                        "from": p.from,
                        "to": p.to,
                        "discovered": p.discovered,
                        "seconds": p.seconds.map(millis),
                    })
                })
                .collect(),
        )
    }

    /// Rows = from, columns = to; a cell holds seconds, `no`, `-` on the
    /// diagonal and `?` for a pair that was not probed.
    pub fn table(&self) -> String {
        let corner = "from \\ to";
        let cell = |from: &str, to: &str| -> String {
            if from == to {
                return "-".into();
            }
            match self.get(from, to) {
                Some(Pair {
                    seconds: Some(s),
                    discovered: true,
                    ..
                }) => format!("{s:.2}"),
                Some(_) => "no".into(),
                None => "?".into(),
            }
        };
        let first = self
            .hosts
            .iter()
            .map(String::len)
            .chain([corner.len()])
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = self
            .hosts
            .iter()
            .map(|to| {
                self.hosts
                    .iter()
                    .map(|from| cell(from, to).len())
                    .chain([to.len(), 4])
                    .max()
                    .unwrap_or(4)
            })
            .collect();
        let mut out = format!("{corner:<first$}");
        for (h, w) in self.hosts.iter().zip(&widths) {
            let _ = write!(out, "  {h:>w$}");
        }
        out.push('\n');
        for from in &self.hosts {
            let _ = write!(out, "{from:<first$}");
            for (to, w) in self.hosts.iter().zip(&widths) {
                let _ = write!(out, "  {:>w$}", cell(from, to));
            }
            out.push('\n');
        }
        out
    }

    /// The odd outcomes, one line each.
    fn notes(&self) -> Vec<String> {
        self.pairs
            .iter()
            .filter_map(|p| Some(format!("{} -> {}: {}", p.from, p.to, p.note.as_ref()?)))
            .collect()
    }
}

/// The Multus-style macvlan comparison run.
#[derive(Debug, Clone, PartialEq)]
pub struct MacvlanRun {
    pub matrix: Matrix,
    /// The address host-local gave each pod's macvlan interface.
    pub addresses: Vec<(String, Ipv4Addr)>,
    /// The host-local range every node used, e.g. "192.168.1.160-192.168.1.180".
    pub range: String,
    /// Frames the Wi-Fi-like switch dropped (None: no Wi-Fi rule).
    pub wifi_drops: Option<u64>,
}

impl MacvlanRun {
    /// Addresses that host-local gave to more than one pod, with those pods.
    pub fn duplicates(&self) -> Vec<(Ipv4Addr, Vec<String>)> {
        let mut by_ip: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
        for (pod, ip) in &self.addresses {
            by_ip.entry(*ip).or_default().push(pod.clone());
        }
        by_ip.into_iter().filter(|(_, p)| p.len() > 1).collect()
    }
}

/// What each matrix of `--relay` is, as the text and the JSON say it.
pub const MULTICAST_ONLY_CONFIGURATION: &str =
    "Multicast only (no relay peers, lanMulticast true: the default)";
pub const RELAY_CONFIGURATION: &str =
    "Relay (peers: every other node's address, lanMulticast false)";

/// The relay scenario (`--relay`): the same test bed twice, a LAN switch
/// that drops all IPv4 multicast and a node behind a router, first without
/// relay peers, then with them (that run is `Report::ros2cni`).
#[derive(Debug, Clone, PartialEq)]
pub struct RelayScenario {
    pub multicast_only: Matrix,
    /// IPv4 multicast frames the switch dropped during each run.
    pub multicast_only_drops: Option<u64>,
    pub relay_drops: Option<u64>,
    /// Nodes on the switch that drops multicast.
    pub lan_nodes: Vec<String>,
    /// The subnet behind the router and the nodes on it.
    pub second_subnet: String,
    pub second_subnet_nodes: Vec<String>,
}

/// Everything one `ros2-cni lab` run found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub nodes: usize,
    pub pods_per_node: usize,
    pub wifi: bool,
    pub prober: String,
    /// The Calico stand-in: "ptp" or "builtin".
    pub primary: String,
    pub timeout_seconds: u64,
    pub ros2cni: Matrix,
    /// Frames the Wi-Fi-like switch dropped during the ros2-cni run.
    pub ros2cni_wifi_drops: Option<u64>,
    /// The comparison, or why it did not run.
    pub macvlan: Result<MacvlanRun, String>,
    /// `--relay`: `ros2cni` is the relay configuration, this the rest.
    pub relay: Option<RelayScenario>,
    /// The graphs written (`--graph-dir`): which matrix, and the SVG file.
    pub graph_files: Vec<(String, std::path::PathBuf)>,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Report {
    /// A graph of each matrix, by name (the file stem `--graph-dir` uses):
    /// `ros2-cni` and `macvlan`, or with `--relay` `multicast-only` and `relay`.
    pub fn graphs(&self) -> Vec<(&'static str, Graph)> {
        let t = self.timeout_seconds;
        let view =
            |title: String, m: &Matrix, across| lab_view(&title, m, PathKind::Bridge, across, t);
        if let Some(r) = &self.relay {
            return vec![
                (
                    "multicast-only",
                    view(
                        format!("{MULTICAST_ONLY_CONFIGURATION}: who discovered whom"),
                        &r.multicast_only,
                        PathKind::LanMulticast,
                    ),
                ),
                (
                    "relay",
                    view(
                        format!("{RELAY_CONFIGURATION}: who discovered whom"),
                        &self.ros2cni,
                        PathKind::Relay,
                    ),
                ),
            ];
        }
        let mut out = vec![(
            "ros2-cni",
            view(
                "ros2-cni (ros0 on the LAN, agent on every node): who discovered whom".into(),
                &self.ros2cni,
                PathKind::LanMulticast,
            ),
        )];
        if let Ok(mv) = &self.macvlan {
            out.push((
                "macvlan",
                lab_view(
                    &format!(
                        "Multus-style macvlan (primary eth0 + macvlan, host-local {} on every node, no agent): who discovered whom",
                        mv.range
                    ),
                    &mv.matrix,
                    PathKind::LanMulticast,
                    PathKind::LanMulticast,
                    t,
                ),
            ));
        }
        out
    }

    /// The `--json` document.
    pub fn json(&self) -> Value {
        let mut v = json!({
            "pairs": self.ros2cni.pairs_json(),
            "macvlan": Value::Null,
            "nodes": self.nodes,
            "podsPerNode": self.pods_per_node,
            "wifi": self.wifi,
            "prober": self.prober,
            "primary": self.primary,
            "timeoutSeconds": self.timeout_seconds,
            "hosts": self.ros2cni.hosts,
            "wifiDroppedFrames": self.ros2cni_wifi_drops,
        });
        match &self.macvlan {
            Ok(m) => {
                v["macvlan"] = json!({
                    "pairs": m.matrix.pairs_json(),
                    "range": m.range,
                    "addresses": m.addresses.iter()
                        .map(|(p, ip)| json!({"pod": p, "address": ip.to_string()}))
                        .collect::<Vec<_>>(),
                    "wifiDroppedFrames": m.wifi_drops,
                });
            }
            Err(reason) => {
                v["macvlanSkipped"] = json!(reason);
            }
        }
        if !self.graph_files.is_empty() {
            v["graphs"] = self
                .graph_files
                .iter()
                .map(|(name, f)| (name.clone(), json!(f)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        if let Some(r) = &self.relay {
            v["scenario"] = json!("relay");
            v["configuration"] = json!(RELAY_CONFIGURATION);
            v["switchDroppedMulticastFrames"] = json!(r.relay_drops);
            v["multicastOnly"] = json!({
                "configuration": MULTICAST_ONLY_CONFIGURATION,
                "pairs": r.multicast_only.pairs_json(),
                "switchDroppedMulticastFrames": r.multicast_only_drops,
            });
            v["lanNodes"] = json!(r.lan_nodes);
            v["secondSubnet"] = json!({
                "subnet": r.second_subnet,
                "nodes": r.second_subnet_nodes,
            });
        }
        v
    }

    /// Ordered pairs of pods on different nodes that discovered each other,
    /// and all such pairs. Pod labels are `n<node>-pod<j>`.
    fn across_nodes(m: &Matrix) -> (usize, usize) {
        let node = |l: &str| l.split('-').next().unwrap_or("").to_owned();
        let across: Vec<&Pair> = m
            .pairs
            .iter()
            .filter(|p| p.from != "laptop" && p.to != "laptop" && node(&p.from) != node(&p.to))
            .collect();
        (across.iter().filter(|p| p.discovered).count(), across.len())
    }

    /// The relay scenario's paragraph.
    fn relay_summary(&self, r: &RelayScenario) -> String {
        let mut s = format!(
            "Lab: {} with {} each: {} on a switch that drops all IPv4 multicast between its \
             ports, {} on {} behind a router; no laptop; {} probe between every ordered pair, \
             stock DDS settings, {} s per probe. ",
            plural(self.nodes, "robot computer", "robot computers"),
            plural(self.pods_per_node, "pod", "pods"),
            r.lan_nodes.join(", "),
            r.second_subnet_nodes.join(", "),
            r.second_subnet,
            self.prober,
            self.timeout_seconds
        );
        let (mc_ok, mc_all) = Self::across_nodes(&r.multicast_only);
        let _ = write!(
            s,
            "Multicast only: {} of {} pairs discovered each other, {mc_ok} of {mc_all} across nodes",
            r.multicast_only.discovered(),
            r.multicast_only.pairs.len()
        );
        if let Some(n) = r.multicast_only_drops {
            let _ = write!(s, " (the switch dropped {n} multicast frames)");
        }
        s.push_str(". ");
        let m = &self.ros2cni;
        let _ = write!(
            s,
            "Relay: {} of {} pairs discovered each other",
            m.discovered(),
            m.pairs.len()
        );
        let t = m.times();
        if let (Some(first), Some(last)) = (t.first(), t.last()) {
            let median = t[t.len() / 2];
            let _ = write!(
                s,
                " (fastest {first:.2} s, median {median:.2} s, slowest {last:.2} s)"
            );
        }
        if let Some(n) = r.relay_drops {
            let _ = write!(s, "; the switch dropped {n} multicast frames");
        }
        s.push('.');
        if m.all_discovered() {
            s.push_str(
                " The agents carry their pods' discovery to each other by unicast, across the \
                 switch and the router alike.",
            );
        } else {
            s.push_str(
                " Some relay pairs failed: run with --keep and look at the agents' logs and \
                 `ros2-cni agent` status (its \"relay\" peers) in the node namespaces.",
            );
        }
        s
    }

    /// What the lab had: "2 robot computers with 1 pod each and an off-cluster laptop".
    fn setup(&self) -> String {
        format!(
            "{} with {} each and an off-cluster laptop{}",
            plural(self.nodes, "robot computer", "robot computers"),
            plural(self.pods_per_node, "pod", "pods"),
            if self.wifi {
                ", behind a Wi-Fi-like switch that drops frames whose source MAC is not the sending node's own"
            } else {
                ", on a wired switch"
            }
        )
    }

    /// One paragraph: what worked, what did not, and why where it is known.
    pub fn summary(&self) -> String {
        if let Some(r) = &self.relay {
            return self.relay_summary(r);
        }
        let m = &self.ros2cni;
        let mut s = format!(
            "Lab: {}; {} probe between every ordered pair, stock DDS settings, {} s per probe. ",
            self.setup(),
            self.prober,
            self.timeout_seconds
        );
        let t = m.times();
        let _ = write!(
            s,
            "ros2-cni: {} of {} pairs discovered each other",
            m.discovered(),
            m.pairs.len()
        );
        if let (Some(first), Some(last)) = (t.first(), t.last()) {
            let median = t[t.len() / 2];
            let _ = write!(
                s,
                " (fastest {first:.2} s, median {median:.2} s, slowest {last:.2} s)"
            );
        }
        s.push('.');
        if self.wifi {
            match self.ros2cni_wifi_drops {
                Some(0) => s.push_str(" No frame left a node with a foreign MAC."),
                Some(n) => {
                    let _ = write!(s, " The Wi-Fi rule dropped {n} frames from ros2-cni nodes.");
                }
                None => {}
            }
        }
        if !m.all_discovered() {
            s.push_str(
                " Some ros2-cni pairs failed: run with --keep and look at the agents' logs and \
                 `ros2-cni agent` status in the node namespaces.",
            );
        }
        match &self.macvlan {
            Err(reason) => {
                let _ = write!(
                    s,
                    " The Multus-style macvlan comparison did not run: {reason}."
                );
            }
            Ok(mv) => {
                let _ = write!(
                    s,
                    " Multus-style macvlan (each pod keeps its primary eth0 and gets a reference \
                     macvlan interface with host-local handing out {} on every node, as the \
                     original recipe does): {} of {} pairs discovered each other.",
                    mv.range,
                    mv.matrix.discovered(),
                    mv.matrix.pairs.len()
                );
                let dups = mv.duplicates();
                if !dups.is_empty() {
                    let list: Vec<String> = dups
                        .iter()
                        .map(|(ip, pods)| format!("{ip} to {}", pods.join(" and ")))
                        .collect();
                    let _ = write!(
                        s,
                        " host-local allocates per node, so pods on different nodes got the same \
                         address: {}.",
                        list.join("; ")
                    );
                }
                if let Some(n) = mv.wifi_drops.filter(|n| *n > 0) {
                    let _ = write!(
                        s,
                        " The Wi-Fi rule dropped {n} frames sent with a macvlan pod's own MAC, \
                         as an access point does."
                    );
                }
                if mv.matrix.discovered() < mv.matrix.pairs.len() {
                    s.push_str(
                        " With both eth0 and the macvlan interface, Cyclone DDS with default \
                         settings uses one interface, usually eth0, whose multicast never leaves \
                         the node.",
                    );
                }
            }
        }
        s
    }

    /// The human-readable report: both tables and the summary.
    pub fn text(&self) -> String {
        if let Some(r) = &self.relay {
            let head = |conf: &str| {
                format!(
                    "{conf}: seconds until FROM discovered TO (\"no\": not within {} s)\n",
                    self.timeout_seconds
                )
            };
            let mut out = head(MULTICAST_ONLY_CONFIGURATION);
            out.push_str(&indent(&r.multicast_only.table()));
            for n in r.multicast_only.notes() {
                let _ = writeln!(out, "  note: {n}");
            }
            out.push('\n');
            out.push_str(&head(RELAY_CONFIGURATION));
            out.push_str(&indent(&self.ros2cni.table()));
            for n in self.ros2cni.notes() {
                let _ = writeln!(out, "  note: {n}");
            }
            out.push('\n');
            out.push_str(&self.summary());
            out.push('\n');
            out.push_str(&self.graphs_line());
            return out;
        }
        let mut out = format!(
            "ros2-cni (ros0 on the LAN, agent on every node): seconds until FROM discovered TO \
             (\"no\": not within {} s)\n",
            self.timeout_seconds
        );
        out.push_str(&indent(&self.ros2cni.table()));
        for n in self.ros2cni.notes() {
            let _ = writeln!(out, "  note: {n}");
        }
        out.push('\n');
        match &self.macvlan {
            Ok(mv) => {
                let _ = writeln!(
                    out,
                    "Multus-style macvlan (primary eth0 + macvlan, host-local {} on every node, no agent):",
                    mv.range
                );
                out.push_str(&indent(&mv.matrix.table()));
                for n in mv.matrix.notes() {
                    let _ = writeln!(out, "  note: {n}");
                }
            }
            Err(reason) => {
                let _ = writeln!(out, "Multus-style macvlan: not run ({reason})");
            }
        }
        out.push('\n');
        out.push_str(&self.summary());
        out.push('\n');
        out.push_str(&self.graphs_line());
        out
    }

    /// "Graphs: ..." naming the files written, or nothing.
    fn graphs_line(&self) -> String {
        if self.graph_files.is_empty() {
            return String::new();
        }
        let files: Vec<String> = self
            .graph_files
            .iter()
            .map(|(name, f)| format!("{} ({name})", f.display()))
            .collect();
        format!(
            "Graphs (SVG, with the same graph as DOT beside each): {}\n",
            files.join(", ")
        )
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

// ---------------------------------------------------------------------------
// A lab matrix

/// The graph of one lab matrix: the lab's computers (`nN` of a host label
/// `nN-podM`) with their pods, the other hosts (the laptop) as LAN hosts,
/// and for every pair of hosts an edge the way discovery went (toward the
/// host that discovered the other): one edge with two arrowheads when both
/// did, and a `no route` edge where a host did not discover the other
/// within `timeout` seconds. `local` is the path between pods on one
/// computer, `across` between computers (the laptop is on the LAN).
pub fn lab_view(title: &str, m: &Matrix, local: PathKind, across: PathKind, timeout: u64) -> Graph {
    let mut g = Graph::new(title);
    let computer_of = |h: &str| h.split_once("-pod").map(|(c, _)| c.to_owned());
    let id_of = |h: &str| match computer_of(h) {
        Some(_) => format!("pod:{h}"),
        None => format!("host:{h}"),
    };
    for h in &m.hosts {
        match computer_of(h) {
            Some(c) => {
                let cid = g.computer(&c, None);
                g.pod(id_of(h), h, None, &cid);
            }
            None => {
                g.lan_host(id_of(h), h, None);
            }
        }
    }
    let secs = |p: Option<&Pair>| {
        p.filter(|p| p.discovered)
            .map(|p| p.seconds.map_or("yes".to_owned(), |s| format!("{s:.2} s")))
    };
    for (i, a) in m.hosts.iter().enumerate() {
        for b in &m.hosts[i + 1..] {
            let path = match (computer_of(a), computer_of(b)) {
                (Some(x), Some(y)) if x == y => local,
                (Some(_), Some(_)) => across,
                _ => PathKind::LanMulticast,
            };
            // `a` discovered `b`: b's discovery reached a
            let ab = secs(m.get(a, b));
            let ba = secs(m.get(b, a));
            let (ida, idb) = (id_of(a), id_of(b));
            let failed = format!("no route: not within {timeout} s");
            let edge = |from: &str, to: &str, stop: Option<Stop>, both: bool, label: String| Edge {
                from: from.to_owned(),
                to: to.to_owned(),
                path,
                stop,
                both,
                label,
            };
            match (ab, ba) {
                (Some(x), Some(y)) => {
                    g.add_edge(edge(&idb, &ida, None, true, format!("{a}: {x}, {b}: {y}")))
                }
                (None, None) => g.add_edge(edge(&idb, &ida, Some(Stop::NoRoute), true, failed)),
                (x, y) => {
                    for (from, to, who, t) in [(&idb, &ida, a, x), (&ida, &idb, b, y)] {
                        g.add_edge(match t {
                            Some(t) => edge(from, to, None, false, format!("{who}: {t}")),
                            None => edge(from, to, Some(Stop::NoRoute), false, failed.clone()),
                        });
                    }
                }
            }
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::graph::NodeKind;

    type Key = (String, String, PathKind, Option<Stop>, bool);

    fn key(from: &str, to: &str, path: PathKind, stop: Option<Stop>, both: bool) -> Key {
        (from.into(), to.into(), path, stop, both)
    }

    fn lab_matrix() -> Matrix {
        let hosts = ["n1-pod1", "n1-pod2", "n2-pod1", "laptop"];
        let ok = |f: &str, t: &str| {
            !matches!(
                (f, t),
                ("n2-pod1", "n1-pod2") | ("laptop", "n2-pod1") | ("n2-pod1", "laptop")
            )
        };
        let mut pairs = vec![];
        for f in hosts {
            for t in hosts.iter().filter(|t| **t != f) {
                let d = ok(f, t);
                pairs.push(Pair {
                    from: f.into(),
                    to: (*t).into(),
                    discovered: d,
                    seconds: d.then_some(0.25),
                    note: None,
                });
            }
        }
        Matrix {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            pairs,
        }
    }

    #[test]
    fn lab_view_has_an_edge_per_pair_the_way_discovery_went() {
        let g = lab_view("t", &lab_matrix(), PathKind::Bridge, PathKind::Relay, 5);
        let nodes: Vec<(&str, NodeKind, Option<&str>)> = g
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.kind, n.computer.as_deref()))
            .collect();
        use NodeKind::*;
        assert_eq!(
            nodes,
            [
                ("computer:n1", Computer, None),
                ("pod:n1-pod1", Pod, Some("computer:n1")),
                ("pod:n1-pod2", Pod, Some("computer:n1")),
                ("computer:n2", Computer, None),
                ("pod:n2-pod1", Pod, Some("computer:n2")),
                ("host:laptop", LanHost, None),
            ]
        );
        use PathKind::*;
        let edges: Vec<Key> = g.edges.iter().map(Edge::key).collect();
        assert_eq!(
            edges,
            [
                key("pod:n1-pod2", "pod:n1-pod1", Bridge, None, true),
                key("pod:n2-pod1", "pod:n1-pod1", Relay, None, true),
                key("host:laptop", "pod:n1-pod1", LanMulticast, None, true),
                // n1-pod2 discovered n2-pod1, not the other way round
                key("pod:n2-pod1", "pod:n1-pod2", Relay, None, false),
                key(
                    "pod:n1-pod2",
                    "pod:n2-pod1",
                    Relay,
                    Some(Stop::NoRoute),
                    false
                ),
                key("host:laptop", "pod:n1-pod2", LanMulticast, None, true),
                key(
                    "host:laptop",
                    "pod:n2-pod1",
                    LanMulticast,
                    Some(Stop::NoRoute),
                    true
                ),
            ]
        );
        assert_eq!(g.edges[0].label, "n1-pod1: 0.25 s, n1-pod2: 0.25 s");
        assert_eq!(g.edges[3].label, "n1-pod2: 0.25 s");
        assert_eq!(g.edges[6].label, "no route: not within 5 s");
    }

    fn pair(from: &str, to: &str, s: Option<f64>) -> Pair {
        Pair {
            from: from.into(),
            to: to.into(),
            discovered: s.is_some(),
            seconds: s,
            note: None,
        }
    }

    fn matrix(cells: &[(&str, &str, Option<f64>)]) -> Matrix {
        Matrix {
            hosts: vec!["n1-pod1".into(), "n2-pod1".into(), "laptop".into()],
            pairs: cells.iter().map(|(f, t, s)| pair(f, t, *s)).collect(),
        }
    }

    fn full(ok: bool) -> Matrix {
        let s = |x: f64| if ok { Some(x) } else { None };
        matrix(&[
            ("n1-pod1", "n2-pod1", s(0.2134)),
            ("n1-pod1", "laptop", s(0.05)),
            ("n2-pod1", "n1-pod1", s(0.19)),
            ("n2-pod1", "laptop", s(0.0449)),
            ("laptop", "n1-pod1", s(0.031)),
            ("laptop", "n2-pod1", s(12.5)),
        ])
    }

    fn report(macvlan: Result<MacvlanRun, String>) -> Report {
        Report {
            nodes: 2,
            pods_per_node: 1,
            wifi: true,
            prober: "ddsperf".into(),
            primary: "ptp".into(),
            timeout_seconds: 5,
            ros2cni: full(true),
            ros2cni_wifi_drops: Some(0),
            macvlan,
            relay: None,
            graph_files: vec![],
        }
    }

    fn mv() -> MacvlanRun {
        MacvlanRun {
            matrix: full(false),
            addresses: vec![
                ("n1-pod1".into(), Ipv4Addr::new(192, 168, 1, 160)),
                ("n2-pod1".into(), Ipv4Addr::new(192, 168, 1, 160)),
            ],
            range: "192.168.1.160-192.168.1.180".into(),
            wifi_drops: Some(42),
        }
    }

    #[test]
    fn table_has_rows_from_and_columns_to() {
        let t = full(true).table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["from", "\\", "to", "n1-pod1", "n2-pod1", "laptop"]
        );
        // the row of n1-pod1: itself, then n2-pod1 (0.2134 -> 0.21), then the laptop
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["n1-pod1", "-", "0.21", "0.05"]
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["laptop", "0.03", "12.50", "-"]
        );
        // columns line up: every line as long as the header
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{t}");
    }

    #[test]
    fn table_says_no_for_failures_and_marks_missing_pairs() {
        let mut m = full(false);
        m.pairs.pop(); // laptop -> n2-pod1 never probed
        let t = m.table();
        let row: Vec<&str> = t.lines().nth(3).unwrap().split_whitespace().collect();
        assert_eq!(row, ["laptop", "no", "?", "-"]);
        assert_eq!(
            t.lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["n1-pod1", "-", "no", "no"]
        );
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v = report(Ok(mv())).json();
        assert_eq!(v["nodes"], 2);
        assert_eq!(v["podsPerNode"], 1);
        assert_eq!(v["wifi"], true);
        assert_eq!(v["prober"], "ddsperf");
        let pairs = v["pairs"].as_array().unwrap();
        assert_eq!(pairs.len(), 6);
        let keys: Vec<&String> = pairs[0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["from", "to", "discovered", "seconds"]);
        assert_eq!(
            pairs[0],
            json!({"from": "n1-pod1", "to": "n2-pod1", "discovered": true, "seconds": 0.213})
        );
        let mpairs = v["macvlan"]["pairs"].as_array().unwrap();
        assert_eq!(mpairs.len(), 6);
        assert_eq!(
            mpairs[5],
            json!({"from": "laptop", "to": "n2-pod1", "discovered": false, "seconds": null})
        );
        assert!(v.get("macvlanSkipped").is_none());
    }

    #[test]
    fn json_says_why_the_comparison_is_missing() {
        let v = report(Err("the reference macvlan plugin is not installed".into())).json();
        assert!(v["macvlan"].is_null());
        assert_eq!(
            v["macvlanSkipped"],
            "the reference macvlan plugin is not installed"
        );
    }

    #[test]
    fn summary_counts_and_explains() {
        let r = report(Ok(mv()));
        let s = r.summary();
        assert!(s.contains("ros2-cni: 6 of 6 pairs"), "{s}");
        assert!(s.contains("fastest 0.03 s"), "{s}");
        assert!(s.contains("slowest 12.50 s"), "{s}");
        assert!(s.contains("0 of 6 pairs"), "{s}");
        assert!(
            s.contains("192.168.1.160 to n1-pod1 and n2-pod1"),
            "duplicate addresses named: {s}"
        );
        assert!(s.contains("dropped 42 frames"), "{s}");
        assert!(!s.contains('\n'), "one paragraph: {s}");
        let text = r.text();
        assert!(text.contains("Multus-style macvlan"), "{text}");
        assert!(text.ends_with(&format!("{s}\n")));
    }

    #[test]
    fn summary_flags_failed_ros2cni_pairs() {
        let mut r = report(Err("skipped".into()));
        r.ros2cni.pairs[0] = pair("n1-pod1", "n2-pod1", None);
        let s = r.summary();
        assert!(s.contains("5 of 6 pairs"), "{s}");
        assert!(s.contains("Some ros2-cni pairs failed"), "{s}");
        assert!(!r.ros2cni.all_discovered());
    }

    #[test]
    fn relay_report_names_both_configurations_in_text_and_json() {
        let hosts = ["n1-pod1", "n2-pod1", "n3-pod1"];
        let m = |ok: bool| Matrix {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            pairs: hosts
                .iter()
                .flat_map(|f| hosts.iter().filter(move |t| *t != f).map(move |t| (f, t)))
                .map(|(f, t)| pair(f, t, ok.then_some(0.4)))
                .collect(),
        };
        let mut r = report(Err("not part of the relay scenario (--relay)".into()));
        r.nodes = 3;
        r.wifi = false;
        r.ros2cni = m(true);
        r.relay = Some(RelayScenario {
            multicast_only: m(false),
            multicast_only_drops: Some(17),
            relay_drops: Some(0),
            lan_nodes: vec!["n1".into(), "n2".into()],
            second_subnet: "192.168.16.0/20".into(),
            second_subnet_nodes: vec!["n3".into()],
        });
        let v = r.json();
        assert_eq!(v["scenario"], "relay");
        assert_eq!(v["configuration"], RELAY_CONFIGURATION);
        assert_eq!(v["pairs"].as_array().unwrap().len(), 6);
        assert_eq!(
            v["multicastOnly"]["configuration"],
            MULTICAST_ONLY_CONFIGURATION
        );
        assert_eq!(v["multicastOnly"]["pairs"].as_array().unwrap().len(), 6);
        assert_eq!(v["multicastOnly"]["switchDroppedMulticastFrames"], 17);
        assert_eq!(v["secondSubnet"]["nodes"], json!(["n3"]));
        assert!(v["macvlan"].is_null());
        let text = r.text();
        let mc = text
            .find(MULTICAST_ONLY_CONFIGURATION)
            .expect("first header");
        let rl = text.find(RELAY_CONFIGURATION).expect("second header");
        assert!(mc < rl, "{text}");
        assert!(!text.contains("macvlan"), "{text}");
        let s = r.summary();
        assert!(s.contains("0 of 6 across nodes"), "{s}");
        assert!(s.contains("Relay: 6 of 6 pairs"), "{s}");
        assert!(s.contains("n3 on 192.168.16.0/20 behind a router"), "{s}");
        // the default report has none of the relay keys
        let plain = report(Ok(mv())).json();
        assert!(plain.get("scenario").is_none() && plain.get("multicastOnly").is_none());
    }

    #[test]
    fn duplicates_only_lists_shared_addresses() {
        let mut m = mv();
        m.addresses
            .push(("n1-pod2".into(), Ipv4Addr::new(192, 168, 1, 161)));
        let d = m.duplicates();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1, ["n1-pod1", "n2-pod1"]);
    }
}
