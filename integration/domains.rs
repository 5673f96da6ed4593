//! Discovery isolation by namespace and ROS domain (`domains`): team-a's pods
//! may use domain 0, team-b's domain 1; UDP to another domain's port block is
//! dropped at the pod's node, both ways, and counted per pod.

use crate::agent::{exactly_once, receivers, send_and_count, send_and_count_within, Sender};
use crate::common::*;
use crate::dds::fastdds_pair;
use ros2_cni::lab::probe::ddsperf_probe;
use ros2_cni::lab::testbed::{http_get, ns_sh, Pod, Testbed, LAPTOP_IP};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const SPDP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);

fn policy() -> Value {
    json!({"domains": {"team-a": [0], "team-b": [1]}})
}

fn pod_in(tb: &Testbed, name: &str, node: usize, ns: &str, extra: &Value) -> Pod {
    let mut s = spec(name, node).extra(extra.clone());
    s.k8s_namespace = ns.into();
    tb.add_pod(&s).unwrap()
}

/// Two nodes with agents under `extra`; a1, a3 (team-a) and b1 (team-b) on
/// node 1, a2 (team-a) and b2 (team-b) on node 2.
fn teams(extra: &Value) -> (Testbed, Vec<u32>, BTreeMap<&'static str, Pod>) {
    let tb = bed(2);
    let agents = (1..=2)
        .map(|i| tb.start_agent(tb.node(i), extra).unwrap())
        .collect();
    let mut pods = BTreeMap::new();
    for (name, node, ns) in [
        ("a1", 1, "team-a"),
        ("a3", 1, "team-a"),
        ("b1", 1, "team-b"),
        ("a2", 2, "team-a"),
        ("b2", 2, "team-b"),
    ] {
        pods.insert(name, pod_in(&tb, name, node, ns, extra));
    }
    // the agents count each pod's discovery from their next pass on
    wait_for(6, "both agents count their pods' discovery", || {
        [(1, 3), (2, 2)].iter().all(|(i, n)| {
            tb.agent_status(tb.node(*i)).unwrap()["discoveryDatagrams"]
                .as_array()
                .map_or(0, Vec::len)
                == *n
        })
    });
    (tb, agents, pods)
}

fn metric(tb: &Testbed, node: usize, series: &str) -> Option<f64> {
    let m = http_get(&tb.node(node).ns, "127.0.0.1:9741", "/metrics").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn counts(got: &BTreeMap<String, BTreeMap<u32, u32>>) -> BTreeMap<String, u32> {
    got.iter()
        .map(|(k, v)| (k.clone(), v.values().sum()))
        .collect()
}

#[test]
fn datagrams_cross_only_within_a_domain_both_ways_and_sighup_applies_in_2s() {
    let (tb, agents, p) = teams(&policy());
    let lap = tb.laptop.clone().unwrap();
    let rx_all = |port: u16, names: &[&str]| {
        let list: Vec<(&str, &str, Ipv4Addr)> = names
            .iter()
            .map(|n| (*n, p[n].ns.as_str(), ip_of(&p[n])))
            .collect();
        receivers(&list, SPDP, port)
    };
    let n = 5;
    // domain 0 discovery from a team-a pod: the other team-a pods, exactly
    // once (same node and the other node); no team-b pod
    let rx = rx_all(7400, &["a2", "a3", "b1", "b2"]);
    let got = send_and_count(
        Sender(&p["a1"].ns, ip_of(&p["a1"]), 1),
        (SPDP, 7400),
        n,
        &rx,
        "a1-d0",
    );
    for name in ["a2", "a3"] {
        assert_eq!(got[name], exactly_once(n), "a1 -> {name} on 7400: {got:?}");
    }
    for name in ["b1", "b2"] {
        assert!(
            got[name].is_empty(),
            "a1 -> {name} on 7400 must be dropped: {got:?}"
        );
    }
    // domain 1's port from a team-a pod: nowhere
    let rx = rx_all(7650, &["a2", "a3", "b1", "b2"]);
    let got = send_and_count(
        Sender(&p["a1"].ns, ip_of(&p["a1"]), 1),
        (SPDP, 7650),
        n,
        &rx,
        "a1-d1",
    );
    assert!(
        counts(&got).values().all(|c| *c == 0),
        "a1 -> 7650: {got:?}"
    );
    // unicast to a team-b pod on a domain-0 unicast port: dropped, from the
    // same node, the other node and the LAN; on team-b's own port it passes
    let rx = rx_all(7410, &["b1"]);
    for (from, local) in [
        (p["a1"].ns.as_str(), ip_of(&p["a1"])),
        (p["a2"].ns.as_str(), ip_of(&p["a2"])),
        (lap.as_str(), LAPTOP_IP),
    ] {
        let got = send_and_count(
            Sender(from, local, 64),
            (ip_of(&p["b1"]), 7410),
            n,
            &rx,
            "u7410",
        );
        assert!(
            got["b1"].is_empty(),
            "{from} -> b1:7410 must be dropped: {got:?}"
        );
    }
    let rx = rx_all(7660, &["b1"]);
    let got = send_and_count(
        Sender(&p["b2"].ns, ip_of(&p["b2"]), 64),
        (ip_of(&p["b1"]), 7660),
        n,
        &rx,
        "u7660",
    );
    assert_eq!(
        got["b1"],
        exactly_once(n),
        "b2 -> b1:7660 (domain 1) passes"
    );
    // a port outside the RTPS range is not affected, across teams and nodes
    let rx = rx_all(5000, &["b1", "b2"]);
    let got = send_and_count(
        Sender(&p["a1"].ns, ip_of(&p["a1"]), 64),
        (ip_of(&p["b1"]), 5000),
        n,
        &rx,
        "u5000-b1",
    );
    assert_eq!(got["b1"], exactly_once(n), "a1 -> b1:5000 passes");
    let got = send_and_count(
        Sender(&p["a1"].ns, ip_of(&p["a1"]), 64),
        (ip_of(&p["b2"]), 5000),
        n,
        &rx,
        "u5000-b2",
    );
    assert_eq!(got["b2"], exactly_once(n), "a1 -> b2:5000 passes");
    // from the LAN: domain-0 discovery reaches team-a's pods only
    let rx = rx_all(7400, &["a1", "a2", "a3", "b1", "b2"]);
    let got = send_and_count(Sender(&lap, LAPTOP_IP, 1), (SPDP, 7400), n, &rx, "lap-d0");
    for name in ["a1", "a2", "a3"] {
        assert_eq!(got[name], exactly_once(n), "laptop -> {name}: {got:?}");
    }
    for name in ["b1", "b2"] {
        assert!(got[name].is_empty(), "laptop -> {name}: {got:?}");
    }

    // the agent counts per pod: status and metrics
    std::thread::sleep(Duration::from_millis(2500));
    let sent = metric(&tb, 1, "ros2cni_pod_domain_dropped_packets_total{namespace=\"team-a\",pod=\"a1\",direction=\"sent\"}")
        .expect("a1's series");
    assert!(sent >= f64::from(n), "a1 sent to 7650: {sent}");
    let recv = metric(&tb, 1, "ros2cni_pod_domain_dropped_packets_total{namespace=\"team-b\",pod=\"b1\",direction=\"received\"}")
        .expect("b1's series");
    assert!(
        recv >= f64::from(4 * n),
        "b1 received (7400 from a1, laptop; 7410 x3): {recv}"
    );
    eprintln!("metrics: a1 sent-dropped {sent}, b1 received-dropped {recv}");
    // discovery datagrams per pod: a1 sent 2n (7400, 7650: the policy drops
    // the latter after counting); a3 and a2 were handed a1's and the
    // laptop's domain-0 ones; b1 and b2 nothing
    let disc = |node: usize, ns: &str, pod: &str, dir: &str| {
        metric(&tb, node, &format!("ros2cni_pod_discovery_datagrams_total{{namespace=\"{ns}\",pod=\"{pod}\",direction=\"{dir}\"}}"))
            .unwrap_or_else(|| panic!("{pod} {dir} series"))
    };
    assert_eq!(disc(1, "team-a", "a1", "sent"), f64::from(2 * n));
    assert_eq!(disc(1, "team-a", "a3", "received"), f64::from(2 * n));
    assert_eq!(disc(2, "team-a", "a2", "received"), f64::from(2 * n));
    assert_eq!(disc(1, "team-b", "b1", "received"), 0.0);
    assert_eq!(disc(2, "team-b", "b2", "received"), 0.0);
    assert_eq!(disc(1, "team-b", "b1", "sent"), 0.0);

    // SIGHUP: team-b may use domain 0 too; applies to the running pods in 2 s
    let mut wider = policy();
    wider["domains"]["team-b"] = json!([0, 1]);
    for (i, pid) in agents.iter().enumerate() {
        tb.agent_config(tb.node(i + 1), &wider).unwrap();
        unsafe { libc::kill(*pid as i32, libc::SIGHUP) };
    }
    let t0 = Instant::now();
    let rx = rx_all(7400, &["b1", "b2"]);
    let mut round = 0;
    loop {
        round += 1;
        let got = send_and_count_within(
            Sender(&lap, LAPTOP_IP, 1),
            (SPDP, 7400),
            3,
            &rx,
            &format!("hup{round}"),
            Duration::from_millis(300),
        );
        if got["b1"] == exactly_once(3) && got["b2"] == exactly_once(3) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2) + Duration::from_millis(600),
            "not applied 2 s after SIGHUP: {got:?}"
        );
    }
    eprintln!(
        "SIGHUP applied: laptop's domain-0 discovery reaches team-b within {:?}",
        t0.elapsed()
    );
}

#[test]
fn dds_discovers_within_a_team_and_a_stray_domain_is_blocked_and_named() {
    let (tb, _agents, p) = teams(&policy());
    // ddsperf (Cyclone DDS) in domain 0 between team-a's pods on two nodes
    let d = ddsperf_probe(&p["a1"].ns, &p["a2"].ns, 0, Duration::from_secs(5)).unwrap();
    assert!(
        d.seconds.is_some(),
        "team-a across nodes, domain 0: {}",
        d.output
    );
    eprintln!(
        "team-a a1 <-> a2 (domain 0) discovered in {:?} s",
        d.seconds
    );
    // a team-b pod started in domain 0 finds no team-a pod
    let d = ddsperf_probe(&p["b1"].ns, &p["a2"].ns, 0, Duration::from_secs(4)).unwrap();
    assert!(
        d.seconds.is_none(),
        "team-b pod in domain 0 must not discover team-a: {}",
        d.output
    );
    // ... and doctor names it; a team-a participant stays up meanwhile for
    // the participant table (ddsperf's clean exit disposes its participant)
    let pong = tb
        .spawn(
            &p["a1"].ns,
            &["timeout", "20", "ddsperf", "pong"],
            "a1-pong",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let (_, report) = doctor(&tb, 1);
    let f = finding(&report, "DOMAIN_BLOCKED");
    let msg = f["message"].as_str().unwrap_or_default().to_owned()
        + f["detail"].as_str().unwrap_or_default();
    assert!(msg.contains("team-b/b1"), "{f}");
    assert!(msg.contains("for domain 0"), "names the domain: {f}");
    assert!(
        msg.contains(" datagrams dropped so far"),
        "gives the count: {f}"
    );
    assert!(!msg.contains("team-a/"), "{f}");
    // the participant table names each participant's namespace and pod
    let pods: Vec<&str> = report["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["pod"].as_str())
        .collect();
    // (b1's announcements are dropped before the agent's capture sees them;
    // its domain comes from the policy's own record)
    assert!(
        pods.contains(&"team-a/a1"),
        "team-a/a1 in the participant table: {pods:?}"
    );
    unsafe { libc::kill(pong as i32, libc::SIGTERM) };
    eprintln!("doctor: {f}");
    // Fast DDS (TTL 1) in domain 1 within team-b across nodes
    fastdds_pair(&tb, &p["b1"].ns, &p["b2"].ns, "1", 4).unwrap();
}

/// The tc/BPF filter names at ingress of the host port of `pod` on `node`
/// (the port read from the agent's status: `domainPolicy` when a policy is
/// in force, else the node's only `r2c` link).
fn host_port(tb: &Testbed, node: usize, pod: &str) -> Option<String> {
    let st = tb.agent_status(tb.node(node)).ok()?;
    st["domainPolicy"]["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["pod"] == pod)
        .and_then(|p| p["port"].as_str().map(str::to_owned))
}

/// A counting table in a node (nft CLI, test side only): UDP from `src` to
/// `port` entering the bridge from `iif`, before any of the agent's tables.
fn bridge_count(ns: &str, tag: &str, iif: &str, src: Ipv4Addr, port: u16) {
    let rules = format!(
        "table bridge r2t_{tag} {{\n chain pre {{\n  type filter hook prerouting priority -400; policy accept;\n  iifname \"{iif}\" ip saddr {src} udp dport {port} counter\n }}\n}}\n"
    );
    ros2_cni::lab::testbed::nft_load(ns, tag, &rules).unwrap();
}

fn bridge_counted(ns: &str, tag: &str) -> u64 {
    ros2_cni::lab::testbed::nft_table_packets(ns, "bridge", &format!("r2t_{tag}")).unwrap()
}

#[test]
fn the_fast_path_is_unchanged_without_a_policy_and_cannot_bypass_one() {
    let tb = bed(1);
    let agent = tb.start_agent(tb.node(1), &json!({})).unwrap();
    let a1 = pod_in(&tb, "a1", 1, "team-a", &json!({}));
    let lap = tb.laptop.clone().unwrap();
    let n1 = tb.node(1).ns.clone();
    wait_for(6, "the agent attaches the fast path", || {
        let st = tb.agent_status(tb.node(1)).unwrap();
        st["fastPath"]["lan"] == true && st["fastPath"]["pods"] == 1
    });
    let port = node_state(&tb, 1)
        .links
        .into_iter()
        .find(|l| l.starts_with("r2c"))
        .unwrap();
    let rx = |p: u16| receivers(&[("laptop", lap.as_str(), LAPTOP_IP)], SPDP, p);
    let n = 20;
    let from_a1 = || Sender(&a1.ns, ip_of(&a1), 64);
    // the node learns the laptop's MAC (the fast path waits for a neighbour)
    send_and_count(from_a1(), (LAPTOP_IP, 5000), 3, &rx(5000), "warm");

    // no policy: no table, the pod's program has no port check, and UDP to
    // a domain-1 port reaches the LAN without entering the bridge
    assert!(
        ns_sh(&n1, &["nft", "list", "table", "bridge", "ros2_cni_domains"]).is_err(),
        "no domains: no table"
    );
    assert_eq!(
        tb.agent_status(tb.node(1)).unwrap()["domainPolicy"],
        Value::Null
    );
    let names = bpf_filters(&n1, &port);
    assert!(
        names
            .iter()
            .any(|f| f.starts_with("r2c_pod_") && !f.ends_with("_d")),
        "{names:?}"
    );
    bridge_count(&n1, "nopol", &port, ip_of(&a1), 7660);
    let got = send_and_count(from_a1(), (LAPTOP_IP, 7660), n, &rx(7660), "nopol");
    assert_eq!(
        got["laptop"],
        exactly_once(n),
        "no policy: a1 -> laptop:7660"
    );
    assert_eq!(
        bridge_counted(&n1, "nopol"),
        0,
        "no policy: a1's UDP to 7660 takes the fast path, as before"
    );

    // a policy (team-a: domain 0), by SIGHUP: the pod's program is replaced
    // by one that hands its UDP to policed ports to the bridge
    tb.agent_config(tb.node(1), &policy()).unwrap();
    unsafe { libc::kill(agent as i32, libc::SIGHUP) };
    // the program is replaced during the agent's pass, the status lists the
    // policy when the pass is done: wait for both
    wait_for(3, "the policed program replaces the pod's", || {
        bpf_filters(&n1, &port).iter().any(|f| f.ends_with("_d"))
            && host_port(&tb, 1, "a1").is_some()
    });
    assert_eq!(host_port(&tb, 1, "a1").as_deref(), Some(port.as_str()));
    bridge_count(&n1, "pol", &port, ip_of(&a1), 7660);
    let got = send_and_count(from_a1(), (LAPTOP_IP, 7660), n, &rx(7660), "pol");
    assert!(
        got["laptop"].is_empty(),
        "policy: a1 -> laptop:7660 {got:?}"
    );
    assert_eq!(
        bridge_counted(&n1, "pol"),
        u64::from(n),
        "policy: a1's UDP to 7660 enters the bridge (and is dropped there)"
    );
    // its own domain's ports and unicast to ephemeral ports still pass;
    // the ephemeral ones keep the fast path
    let got = send_and_count(from_a1(), (LAPTOP_IP, 7410), n, &rx(7410), "own");
    assert_eq!(got["laptop"], exactly_once(n), "policy: a1 -> laptop:7410");
    bridge_count(&n1, "eph", &port, ip_of(&a1), 45000);
    let got = send_and_count(from_a1(), (LAPTOP_IP, 45000), n, &rx(45000), "eph");
    assert_eq!(got["laptop"], exactly_once(n), "policy: a1 -> laptop:45000");
    assert_eq!(bridge_counted(&n1, "eph"), 0, "ephemeral: fast path");
    // and multicast to an ephemeral port of another domain's block is policed
    let got = send_and_count(
        Sender(&a1.ns, ip_of(&a1), 1),
        (SPDP, 45000),
        n,
        &rx(45000),
        "eph-mc",
    );
    assert!(
        got["laptop"].is_empty(),
        "policy: a1 -> 239.255.0.1:45000 {got:?}"
    );
}

#[test]
fn lan_unicast_enters_a_policed_pod_straight_only_where_its_policy_has_nothing_to_say() {
    let tb = bed(1);
    tb.start_agent(tb.node(1), &policy()).unwrap();
    let a1 = pod_in(&tb, "a1", 1, "team-a", &json!({}));
    let lap = tb.laptop.clone().unwrap();
    wait_for(6, "the LAN program delivers into a1", || {
        let st = tb.agent_status(tb.node(1)).unwrap();
        st["fastPath"]["intoPods"] == 1 && host_port(&tb, 1, "a1").is_some()
    });
    let port = host_port(&tb, 1, "a1").unwrap();
    // the node learns a1's MAC (the fast path waits for a neighbour)
    assert!(ros2_cni::lab::testbed::ping(&lap, ip_of(&a1)));
    let n = 100;
    // another domain's port: through the bridge, where the policy drops it
    let (got, _) = laptop_to_pod(&tb, 1, &a1, &port, 7660, n);
    assert_eq!(got, 0, "laptop -> a1:7660 (domain 1) must be dropped");
    // its own domain's port: a policed port, so through the bridge too
    let (got, via_veth) = laptop_to_pod(&tb, 1, &a1, &port, 7410, n);
    assert_eq!(got, n, "laptop -> a1:7410 (domain 0)");
    assert!(
        via_veth >= n as u64,
        "a policed port goes through the bridge to {port}: {via_veth} transmitted"
    );
    // ports the policy does not police: straight into ros0
    for p in [5000, 45000] {
        let (got, via_veth) = laptop_to_pod(&tb, 1, &a1, &port, p, n);
        assert_eq!(got, n, "laptop -> a1:{p}");
        assert!(via_veth < 20, "a1:{p} via {port}: {via_veth} transmitted");
    }
}

#[test]
fn a_teams_ddsperf_pair_discovers_as_fast_under_the_policy_as_without() {
    let tb = bed(2);
    let agents: Vec<u32> = (1..=2)
        .map(|i| tb.start_agent(tb.node(i), &json!({})).unwrap())
        .collect();
    let a1 = pod_in(&tb, "a1", 1, "team-a", &json!({}));
    let a2 = pod_in(&tb, "a2", 2, "team-a", &json!({}));
    let probe = || {
        let d = ddsperf_probe(&a1.ns, &a2.ns, 0, Duration::from_secs(10)).unwrap();
        d.seconds
            .unwrap_or_else(|| panic!("a1 <-> a2 (domain 0): {}", d.output))
    };
    let without = probe();
    for (i, pid) in agents.iter().enumerate() {
        tb.agent_config(tb.node(i + 1), &policy()).unwrap();
        unsafe { libc::kill(*pid as i32, libc::SIGHUP) };
    }
    wait_for(3, "the policy is in force on both nodes", || {
        host_port(&tb, 1, "a1").is_some() && host_port(&tb, 2, "a2").is_some()
    });
    let with = probe();
    eprintln!("ddsperf a1 <-> a2 discovery: {without:.3} s without a policy, {with:.3} s with");
    // Cyclone DDS's unicast goes to kernel-chosen (ephemeral) ports: none of
    // it may be dropped, or discovery waits for the next multicast round
    std::thread::sleep(Duration::from_millis(2500));
    for (node, pod) in [(1, "a1"), (2, "a2")] {
        for dir in ["sent", "received"] {
            let v = metric(&tb, node, &format!("ros2cni_pod_domain_dropped_packets_total{{namespace=\"team-a\",pod=\"{pod}\",direction=\"{dir}\"}}"))
                .expect("the pod's series");
            assert_eq!(v, 0.0, "{pod} {dir}: team-a's own discovery dropped");
        }
    }
    // the comparison, not a time: within the spread of the unpoliced probe
    // plus one SPDP period (what a dropped unicast costs)
    assert!(
        with <= 2.0 * without + 1.0,
        "with the policy {with:.3} s, without {without:.3} s"
    );
}
