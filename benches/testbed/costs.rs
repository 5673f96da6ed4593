//! Section 4b: where the routed data path's cost goes. The same iperf3 run
//! through `ros0` with parts of the node's packet path switched off, on a
//! test bed of its own (the switches are in its namespaces only).

use crate::pods::{production_extra, ros0_ip, Lab};
use crate::report::Section;
use crate::Plan;
use ros2_cni::lab::testbed::{ip_json, ns_sh, sh, PodSpec, Testbed};
use std::net::Ipv4Addr;
use std::time::Duration;

fn mac_of(ns: &str, dev: &str) -> String {
    ip_json(ns, &["link", "show", dev]).expect("ip link")[0]["address"]
        .as_str()
        .expect("mac")
        .to_owned()
}

fn gbps(tb: &Testbed, a: &str, b: &str, ip: Ipv4Addr, secs: u64) -> f64 {
    crate::datapath::iperf(tb, a, b, ip, secs)
        .map(|x| x.0)
        .unwrap_or(f64::NAN)
}

struct Bed<'a> {
    tb: &'a Testbed,
    nodes: [String; 2],
    /// `nft list table bridge ros2_cni` per node, to put back.
    tables: [String; 2],
    pods: [(String, Ipv4Addr, String); 2],
    host_veths: [String; 2],
    uplink_macs: [String; 2],
}

impl Bed<'_> {
    fn each(&self, args: &[&str]) {
        for n in &self.nodes {
            ns_sh(n, args).unwrap_or_else(|e| panic!("{n}: {args:?}: {e}"));
        }
    }

    /// Puts everything back as the plugin made it.
    fn restore(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            let _ = ns_sh(n, &["nft", "delete", "table", "bridge", "ros2_cni"]);
            let f = self.tb.dir.join(format!("bridge-table-{i}.nft"));
            std::fs::write(&f, &self.tables[i]).expect("write");
            ns_sh(n, &["nft", "-f", f.to_str().unwrap()]).expect("restore table");
            let _ = ns_sh(n, &["nft", "delete", "table", "ip", "r2bnotrack"]);
            ns_sh(
                n,
                &[
                    "sysctl",
                    "-qw",
                    "net.bridge.bridge-nf-call-iptables=1",
                    "net.bridge.bridge-nf-call-arptables=1",
                ],
            )
            .expect("sysctl");
            for dev in ["eth0", self.host_veths[i].as_str()] {
                let _ = sh(&["ip", "-n", n, "link", "show", dev])
                    .and_then(|_| sh(&["tc", "-n", n, "qdisc", "del", "dev", dev, "clsact"]));
            }
        }
        for (i, (ns, _, mac)) in self.pods.iter().enumerate() {
            sh(&["ip", "-n", ns, "link", "set", "ros0", "address", mac]).expect("mac back");
            let other = self.pods[1 - i].1.to_string();
            let _ = sh(&["ip", "-n", ns, "neigh", "del", &other, "dev", "ros0"]);
        }
    }

    fn no_table(&self) {
        self.each(&["nft", "delete", "table", "bridge", "ros2_cni"]);
    }

    fn no_br_netfilter(&self) {
        self.each(&[
            "sysctl",
            "-qw",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ]);
    }

    fn no_conntrack(&self) {
        self.each(&[
            "nft",
            "add table ip r2bnotrack; \
             add chain ip r2bnotrack pre { type filter hook prerouting priority -300; }; \
             add rule ip r2bnotrack pre ip saddr 192.168.0.0/20 notrack; \
             add rule ip r2bnotrack pre ip daddr 192.168.0.0/20 notrack",
        ]);
    }

    /// What a tc/BPF redirect fast path would do, built from what this
    /// kernel has (u32 + mirred; no pedit, no flower): each pod takes its
    /// node's uplink MAC and a static neighbour entry with the other node's
    /// MAC, so frames need no rewrite; tc on the pod's host veth redirects
    /// straight to the uplink and back. Bridge, routing and netfilter of both
    /// nodes are bypassed; the veths and the switch stay.
    fn tc_redirect(&self) {
        for i in 0..2 {
            let (ns, _, _) = &self.pods[i];
            let other_ip = self.pods[1 - i].1.to_string();
            sh(&[
                "ip",
                "-n",
                ns,
                "link",
                "set",
                "ros0",
                "address",
                &self.uplink_macs[i],
            ])
            .expect("pod mac");
            sh(&[
                "ip",
                "-n",
                ns,
                "neigh",
                "replace",
                &other_ip,
                "lladdr",
                &self.uplink_macs[1 - i],
                "dev",
                "ros0",
                "nud",
                "permanent",
            ])
            .expect("neigh");
            let n = &self.nodes[i];
            let v = &self.host_veths[i];
            let own = self.pods[i].1.to_string();
            for dev in ["eth0", v.as_str()] {
                sh(&["tc", "-n", n, "qdisc", "add", "dev", dev, "clsact"]).expect("clsact");
            }
            for (dev, dst, to) in [
                (v.as_str(), other_ip.as_str(), "eth0"),
                ("eth0", own.as_str(), v.as_str()),
            ] {
                sh(&[
                    "tc",
                    "-n",
                    n,
                    "filter",
                    "add",
                    "dev",
                    dev,
                    "ingress",
                    "protocol",
                    "ip",
                    "prio",
                    "1",
                    "u32",
                    "match",
                    "ip",
                    "dst",
                    &format!("{dst}/32"),
                    "action",
                    "mirred",
                    "egress",
                    "redirect",
                    "dev",
                    to,
                ])
                .expect("tc filter");
            }
        }
    }
}

pub fn costs(plan: &Plan) -> Section {
    let mut s = Section::new(
        "4b",
        "Where the routed data path's cost goes",
        &format!(
            "A test bed of its own (two nodes, no agents: unicast needs none), pod A on node 1, \
             pod B on node 2, reference macvlan pods beside them. One iperf3 TCP run A → B of \
             {} s per configuration and repetition, the configurations one after another in each \
             of {} repetitions, one macvlan run per repetition for the ratio. Configurations, \
             applied on both nodes and undone after each repetition: **as built**; **no \
             anti-spoofing table** (`nft delete table bridge ros2_cni`); **no br_netfilter** \
             (`bridge-nf-call-iptables/arptables=0`: bridged IPv4 no longer goes through \
             iptables hooks in the bridge); **no conntrack for the LAN** (`notrack` for \
             192.168.0.0/20 in a raw-priority prerouting chain; the Calico stand-in's NAT table \
             otherwise tracks every forwarded flow); **all three**; **tc redirect**: the \
             potential of a tc/BPF fast path, emulated with u32 + mirred (this kernel has no \
             pedit or flower): each pod takes its node's uplink MAC and a static neighbour \
             entry for the other pod with the other node's MAC, and tc on the host veth and \
             on eth0 redirects between them, so bridge, routing and netfilter of both nodes are \
             bypassed (TTL is not decremented; a real fast path would use bpf_redirect_neigh / \
             bpf_redirect_peer).",
            plan.iperf_secs, plan.costs_reps
        ),
    );
    if crate::cni::which("iperf3").is_none() {
        s.note("iperf3 is not installed (apt-get install iperf3): nothing measured");
        return s;
    }
    let tb = plan.bed(2, false);
    let a = tb
        .add_pod(&PodSpec::new("a", 1).extra(production_extra()))
        .expect("pod a");
    let b = tb
        .add_pod(&PodSpec::new("b", 2).extra(production_extra()))
        .expect("pod b");
    let lab = Lab::new(&tb);
    let (mv1, _) = lab.macvlan_only_pod("a", 1);
    let (mv2, mv2_ip) = lab.macvlan_only_pod("b", 2);
    let nodes = [tb.node(1).ns.clone(), tb.node(2).ns.clone()];
    let tables = nodes
        .clone()
        .map(|n| ns_sh(&n, &["nft", "list", "table", "bridge", "ros2_cni"]).expect("list table"));
    let pods = [&a, &b].map(|p| {
        (
            p.ns.clone(),
            ros0_ip(&p.result, &p.netns_path()).expect("ros0"),
            mac_of(&p.ns, "ros0"),
        )
    });
    let host_veths = [&a, &b].map(|p| ros2_cni::dataplane::host_veth_name(&p.container_id, "eth0"));
    let uplink_macs = nodes.clone().map(|n| mac_of(&n, "eth0"));
    let bed = Bed {
        tb: &tb,
        nodes,
        tables,
        pods,
        host_veths,
        uplink_macs,
    };
    type Apply = fn(&Bed);
    let configs: Vec<(&str, Apply)> = vec![
        ("as built", |_| {}),
        ("no anti-spoofing table", |b| b.no_table()),
        ("no br_netfilter", |b| b.no_br_netfilter()),
        ("no conntrack for the LAN", |b| b.no_conntrack()),
        ("all three off", |b| {
            b.no_table();
            b.no_br_netfilter();
            b.no_conntrack();
        }),
        ("tc redirect (fast-path potential)", |b| b.tc_redirect()),
    ];
    // the smoke run keeps the two that exercise the most commands
    let configs: Vec<(&str, Apply)> = if plan.smoke {
        vec![configs[0], configs[5]]
    } else {
        configs
    };
    let mut thr = vec![vec![f64::NAN; plan.costs_reps]; configs.len()];
    let mut mv = vec![f64::NAN; plan.costs_reps];
    let (b_ns, b_ip) = (bed.pods[1].0.clone(), bed.pods[1].1);
    for rep in 0..plan.costs_reps {
        mv[rep] = gbps(&tb, &mv1, &mv2, mv2_ip, plan.iperf_secs);
        for (i, (_, apply)) in configs.iter().enumerate() {
            apply(&bed);
            std::thread::sleep(Duration::from_millis(100));
            thr[i][rep] = gbps(&tb, &a.ns, &b_ns, b_ip, plan.iperf_secs);
            bed.restore();
        }
    }
    s.value("reference macvlan pod ↔ pod", "Gbit/s", &mv);
    for (i, (name, _)) in configs.iter().enumerate() {
        s.value(&format!("ros2-cni, {name}"), "Gbit/s", &thr[i]);
    }
    for (i, (name, _)) in configs.iter().enumerate() {
        s.ratio(&format!("ros2-cni, {name} / macvlan"), &thr[i], &mv);
    }
    for (i, (name, _)) in configs.iter().enumerate().skip(1) {
        s.ratio(&format!("{name} / as built"), &thr[i], &thr[0]);
    }
    s
}
