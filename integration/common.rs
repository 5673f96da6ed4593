//! Shared helpers for the namespace tests. Assertions read kernel state with
//! `ip -j` / `nft -j` and files on disk, never through ros2-cni's own code.

#![allow(dead_code)]

use ros2_cni::lab::testbed::{
    ip_json, nft_json, sweep_stale, unique_prefix, Options, PluginRun, Pod, PodSpec, Testbed,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Once;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_ros2-cni");

pub fn require_root() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!(
            "the integration tests build network namespaces and need root (CI runs them as root)"
        );
    }
}

static SWEEP: Once = Once::new();

/// A test bed with `nodes` robot computers and a laptop.
pub fn bed(nodes: usize) -> Testbed {
    bed_with(nodes, |_| {})
}

pub fn bed_with(nodes: usize, f: impl FnOnce(&mut Options)) -> Testbed {
    require_root();
    SWEEP.call_once(|| sweep_stale("r2t"));
    let mut o = Options::new(&unique_prefix("r2t"), nodes, BIN);
    f(&mut o);
    Testbed::new(o).expect("build test bed")
}

/// Everything ros2-cni could leave behind on a node, read from the kernel and disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub links: BTreeSet<String>,
    pub routes: BTreeSet<String>,
    pub neighbours: BTreeSet<String>,
    pub proxies: BTreeSet<String>,
    pub guard_elements: BTreeSet<String>,
    pub leases: BTreeSet<String>,
    pub attachments: BTreeSet<String>,
}

fn set_of(v: &Value, f: impl Fn(&Value) -> Option<String>) -> BTreeSet<String> {
    v.as_array().into_iter().flatten().filter_map(f).collect()
}

fn dir_entries(p: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The elements of `bridge ros2_cni pods` as "port mac ip" strings.
pub fn guard_elements(ns: &str) -> BTreeSet<String> {
    let Ok(j) = nft_json(ns, &["set", "bridge", "ros2_cni", "pods"]) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for item in j["nftables"].as_array().into_iter().flatten() {
        for e in item["set"]["elem"].as_array().into_iter().flatten() {
            let parts: Vec<String> = e["concat"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    p.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| p.to_string())
                })
                .collect();
            out.insert(parts.join(" "));
        }
    }
    out
}

/// The node's state once node-wide ros2-cni state (bridge, nft table,
/// sysctls) exists: one pod attached and detached. Per-pod residue is
/// measured against this.
pub fn baseline(tb: &Testbed, node: usize) -> NodeState {
    let s = PodSpec::new(&format!("warm{node}"), node);
    let pod = tb.add_pod(&s).expect("warm-up pod");
    tb.del_pod(&pod, &s).expect("warm-up pod DEL");
    let st = node_state(tb, node);
    assert!(
        st.links.contains("ros2br0") || st.links.contains("ros2shim"),
        "node-wide state stays: the bridge (routed) or the shim (macvlan)"
    );
    st
}

pub fn node_state(tb: &Testbed, node: usize) -> NodeState {
    let n = tb.node(node);
    let links = ip_json(&n.ns, &["link", "show"]).unwrap();
    let routes = ip_json(&n.ns, &["route", "show"]).unwrap();
    let neigh = ip_json(&n.ns, &["neigh", "show", "nud", "permanent"]).unwrap();
    let proxy = ip_json(&n.ns, &["neigh", "show", "proxy"]).unwrap();
    let data = n.data_dir.join("ros2-cni");
    NodeState {
        links: set_of(&links, |l| l["ifname"].as_str().map(str::to_owned)),
        routes: set_of(&routes, |r| {
            Some(format!("{} {}", r["dst"].as_str()?, r["dev"].as_str()?))
        }),
        neighbours: set_of(&neigh, |r| {
            Some(format!("{} {}", r["dst"].as_str()?, r["dev"].as_str()?))
        }),
        proxies: set_of(&proxy, |r| {
            Some(format!("{} {}", r["dst"].as_str()?, r["dev"].as_str()?))
        }),
        guard_elements: guard_elements(&n.ns),
        leases: dir_entries(&data.join("leases")),
        attachments: dir_entries(&data.join("attachments")),
    }
}

/// Waits up to `secs` for the node to reach `want` (DEL hands its link and
/// element deletion to the agent, which finishes them shortly after).
pub fn wait_state(tb: &Testbed, node: usize, want: &NodeState, secs: u64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let st = node_state(tb, node);
        if &st == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}:\n  now:  {st:?}\n  want: {want:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Polls `cond` every 50 ms for up to `secs`.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Links in a pod, by name, with their flags.
pub fn pod_links(pod_ns: &str) -> Vec<(String, Vec<String>)> {
    let j = ip_json(pod_ns, &["link", "show"]).unwrap();
    j.as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap_or("").to_owned(),
                l["flags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect(),
            )
        })
        .collect()
}

pub fn pod_has_link(pod_ns: &str, name: &str) -> bool {
    pod_links(pod_ns).iter().any(|(n, _)| n == name)
}

pub fn link_flags(pod_ns: &str, name: &str) -> Vec<String> {
    pod_links(pod_ns)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, f)| f)
        .unwrap_or_default()
}

/// IPv4 addresses with prefix on a link in `ns`.
pub fn addrs(ns: &str, dev: &str) -> Vec<String> {
    let j = ip_json(ns, &["-4", "addr", "show", "dev", dev]).unwrap_or(Value::Null);
    let mut out = vec![];
    for l in j.as_array().into_iter().flatten() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            out.push(format!(
                "{}/{}",
                a["local"].as_str().unwrap_or(""),
                a["prefixlen"]
            ));
        }
    }
    out
}

pub fn routes(ns: &str) -> Vec<String> {
    let j = ip_json(ns, &["route", "show"]).unwrap();
    set_of(&j, |r| {
        Some(format!(
            "{} {}",
            r["dst"].as_str()?,
            r["dev"].as_str().unwrap_or("-")
        ))
    })
    .into_iter()
    .collect()
}

pub fn ip_of(pod: &Pod) -> Ipv4Addr {
    pod.ros_ip
        .unwrap_or_else(|| panic!("pod {} has no ros0 address", pod.name))
}

pub fn spec(name: &str, node: usize) -> PodSpec {
    PodSpec::new(name, node)
}

/// The pod's chain result without ros0: what the primary alone returned, the
/// prevResult a runtime passes when it runs the chain again.
pub fn primary_result(pod: &Pod) -> Value {
    let mut primary = pod.result.clone();
    let ros = primary["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .position(|i| i["name"] == "ros0")
        .expect("ros0 in the chain's result");
    primary["interfaces"].as_array_mut().unwrap().remove(ros);
    primary["ips"]
        .as_array_mut()
        .unwrap()
        .retain(|i| i["interface"] != ros);
    primary
}

/// Runs ros2-cni GC on a node with `conf` (its entry, the attachment list set).
pub fn gc(tb: &Testbed, node: usize, conf: &Value) -> PluginRun {
    tb.run_plugin(
        tb.node(node),
        &tb.opts.plugin,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")],
        conf,
    )
    .expect("run GC")
}

/// Names of the BPF programs attached at tc ingress of `dev` in `ns`.
pub fn bpf_filters(ns: &str, dev: &str) -> Vec<String> {
    let out =
        ros2_cni::lab::testbed::ns_sh(ns, &["tc", "-j", "filter", "show", "dev", dev, "ingress"])
            .unwrap_or_default();
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["options"]["bpf_name"].as_str().map(str::to_owned))
        .collect()
}

/// Runs `ros2-cni doctor --json` inside a node; returns (exit code, report).
pub fn doctor(tb: &Testbed, node: usize) -> (i32, Value) {
    let n = tb.node(node);
    let cfg = n.data_dir.join("agent.json");
    if !cfg.exists() {
        tb.agent_config(n, &serde_json::json!({})).unwrap();
    }
    // a conf dir of the bed's own (empty): the machine's /etc/cni/net.d
    // may hold other runtimes' conflists (podman's), which are not ours
    let conf_dir = n.data_dir.join("cni-conf-empty");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &n.ns,
            BIN,
            "doctor",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
            "--cni-conf-dir",
            conf_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// How much slower than this machine the tests may run: the time bounds
/// that are product claims (multicast back within 2 s of a restart,
/// discovery within 2 s under a flood) are measured natively at 1; under
/// the second kernel in an emulated VM (docs/kernels.md), where everything
/// runs several times slower, `ROS2_CNI_TEST_TIME_SCALE` stretches them (and
/// lowers by as much the rates a flood test requires of its own flooder) so
/// that the VM run checks the behaviour, not the emulator's speed.
pub fn time_scale() -> f64 {
    std::env::var("ROS2_CNI_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v >= 1.0)
        .unwrap_or(1.0)
}

/// The findings of a doctor `--json` report with `code`.
pub fn findings_with<'a>(report: &'a Value, code: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code)
        .collect()
}

/// The first finding with `code`; panics, showing the report, without one.
pub fn finding<'a>(report: &'a Value, code: &str) -> &'a Value {
    findings_with(report, code)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no {code} finding in doctor's report: {report:#}"))
}

/// `tx_packets` of `dev` in `ns`.
pub fn tx_packets(ns: &str, dev: &str) -> u64 {
    let j = ros2_cni::lab::testbed::ip_json(ns, &["-s", "link", "show", "dev", dev]).unwrap();
    j[0]["stats64"]["tx"]["packets"].as_u64().unwrap()
}

/// How many of `n` datagrams from the laptop to `pod` arrive, and how many
/// packets the pod's host veth (`host_if`, on node `node`) transmitted
/// meanwhile.
pub fn laptop_to_pod(
    tb: &Testbed,
    node: usize,
    pod: &Pod,
    host_if: &str,
    port: u16,
    n: usize,
) -> (usize, u64) {
    let lap = tb.laptop.clone().unwrap();
    let rx = ros2_cni::lab::testbed::udp_in(&pod.ns, &format!("0.0.0.0:{port}")).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let tx = ros2_cni::lab::testbed::udp_in(&lap, "0.0.0.0:0").unwrap();
    let before = tx_packets(&tb.node(node).ns, host_if);
    for i in 0..n {
        tx.send_to(format!("{i}").as_bytes(), (ip_of(pod), port))
            .unwrap();
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2)); // no queue overflows
        }
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < n && rx.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    (got, tx_packets(&tb.node(node).ns, host_if) - before)
}
