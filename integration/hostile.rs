//! Hostile pods and LAN hosts (issue 12): floods of other multicast groups
//! and of spoofed sources cannot use up the multicast routes or freeze
//! discovery, and the agent and doctor name the pressure.

use crate::common::*;
use crate::dds::fastdds_pair;
use ros2_cni::lab::probe::ddsperf_probe;
use ros2_cni::lab::testbed::{http_get, Testbed, LAPTOP_IP};
use serde_json::json;
use std::time::Duration;

fn flood_script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/integration/hostile/flood.py").to_owned()
}

/// Starts flood.py in `ns` (as `uid` when given) for `secs`.
fn flood(
    tb: &Testbed,
    ns: &str,
    uid: Option<u32>,
    mode: &str,
    secs: u32,
    local: &str,
    log: &str,
) -> u32 {
    let script = flood_script();
    let secs = secs.to_string();
    let mut args: Vec<String> = vec![];
    if let Some(u) = uid {
        args.extend(
            [
                "setpriv",
                "--reuid",
                &u.to_string(),
                "--regid",
                &u.to_string(),
                "--clear-groups",
            ]
            .map(String::from),
        );
    }
    // Debian's python3: an unprivileged user cannot run one under /root
    args.extend(["/usr/bin/python3", &script, mode, &secs, local].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tb.spawn(ns, &args, log).unwrap()
}

fn pressure_finding(tb: &Testbed, node: usize) -> Option<String> {
    let (_, report) = doctor(tb, node);
    findings_with(&report, "MULTICAST_PRESSURE")
        .first()
        .and_then(|f| f["message"].as_str().map(str::to_owned))
}

/// Routes stay what the config asks for (one (*,G) for the one group, and
/// the catch-all) and no upcall was needed.
fn routes_bounded(tb: &Testbed, what: &str) {
    for i in 1..=2 {
        let st = tb.agent_status(tb.node(i)).unwrap();
        assert_eq!(
            st["routes"].as_array().map(Vec::len),
            Some(1),
            "{what}: node {i}: {}",
            st["routes"]
        );
        assert_eq!(st["upcalls"], 0, "{what}: node {i} needed upcalls");
        let m = http_get(
            &tb.node(i).ns,
            &format!("127.0.0.1:{}", 9750 + i),
            "/metrics",
        )
        .unwrap();
        // the kernel forwarder: the (*,G) and its catch-all; the nftables
        // forwarder: one rule pair for the group
        let entries = match st["forwarder"]["kind"].as_str() {
            Some("kernel") => 2,
            Some("nftables") => 1,
            other => panic!("{what}: node {i}: unknown forwarder {other:?}"),
        };
        assert!(
            m.contains(&format!("ros2cni_multicast_routes {entries}\n")),
            "{what}: node {i}:\n{m}"
        );
    }
}

/// A new ddsperf pair across the nodes, and a Fast DDS pair, discover
/// within 2 s.
fn discovery_still_works(tb: &Testbed, a: &str, b: &str, fa: &str, fb: &str, dom: u32, what: &str) {
    let d = ddsperf_probe(a, b, dom, Duration::from_secs_f64(6.0 * time_scale())).unwrap();
    assert!(
        d.discovered(),
        "{what}: ddsperf did not discover:\n{}",
        d.output
    );
    let s = d.seconds.unwrap();
    eprintln!("{what}: ddsperf across nodes matched after {s:.3} s");
    let bound = 2.0 * time_scale();
    assert!(s < bound, "{what}: ddsperf matched only after {s:.2} s");
    // 10 samples at 10 Hz within a 3 s run: matched within about 2 s
    fastdds_pair(tb, fa, fb, &(dom + 1).to_string(), 3)
        .unwrap_or_else(|e| panic!("{what}: Fast DDS pair failed:\n{e}"));
}

#[test]
fn floods_of_other_groups_and_spoofed_sources_cannot_freeze_discovery() {
    let tb = bed(2);
    for i in 1..=2 {
        let port = 9750 + i;
        tb.start_agent(
            tb.node(i),
            &json!({"metricsAddress": format!("127.0.0.1:{port}")}),
        )
        .unwrap();
    }
    let f1 = tb.add_pod(&spec("flood", 1)).unwrap();
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b2 = tb.add_pod(&spec("b2", 2)).unwrap();
    let c1 = tb.add_pod(&spec("c1", 1)).unwrap();
    let d2 = tb.add_pod(&spec("d2", 2)).unwrap();
    let lap = tb.laptop.clone().unwrap();

    // 1. a pod without privileges, one byte to each of 5,000 groups
    let pid = flood(
        &tb,
        &f1.ns,
        Some(65534),
        "groups",
        8,
        &ip_of(&f1).to_string(),
        "flood-pod",
    );
    std::thread::sleep(Duration::from_secs(1));
    discovery_still_works(
        &tb,
        &a1.ns,
        &b2.ns,
        &c1.ns,
        &d2.ns,
        10,
        "pod flooding 5,000 groups",
    );
    routes_bounded(&tb, "pod flooding 5,000 groups");
    let mut named = None;
    wait_for(8, "doctor names the flooding pod", || {
        named = pressure_finding(&tb, 1);
        named
            .as_deref()
            .is_some_and(|m| m.contains(&ip_of(&f1).to_string()))
    });
    let m = named.unwrap();
    assert!(m.contains("ros2br0") && m.contains("robots/flood"), "{m}");
    assert!(
        tb.wait_exit(pid, Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "{}",
        tb.log("flood-pod")
    );
    let sent: u64 = tb.log("flood-pod").trim().parse().unwrap_or(0);
    assert!(sent > 20_000, "the flood really ran: {sent} datagrams");

    // 2. a LAN host, the same 5,000 groups: every node at once
    let pid = flood(
        &tb,
        &lap,
        None,
        "groups",
        30,
        &LAPTOP_IP.to_string(),
        "flood-lan",
    );
    std::thread::sleep(Duration::from_secs(1));
    discovery_still_works(
        &tb,
        &a1.ns,
        &b2.ns,
        &c1.ns,
        &d2.ns,
        20,
        "LAN host flooding 5,000 groups",
    );
    routes_bounded(&tb, "LAN host flooding 5,000 groups");
    for node in 1..=2 {
        let mut named = None;
        wait_for(15, "doctor names the flooding LAN host", || {
            named = pressure_finding(&tb, node);
            named
                .as_deref()
                .is_some_and(|m| m.contains(&LAPTOP_IP.to_string()))
        });
        assert!(named.unwrap().contains("eth0"), "the uplink is named");
    }
    tb.kill(pid);

    // 3. a LAN host spoofing 1,000 sources on the SPDP group itself
    let pid = flood(
        &tb,
        &lap,
        None,
        "spoof",
        6,
        &LAPTOP_IP.to_string(),
        "spoof-lan",
    );
    std::thread::sleep(Duration::from_secs(1));
    discovery_still_works(
        &tb,
        &a1.ns,
        &b2.ns,
        &c1.ns,
        &d2.ns,
        30,
        "LAN host spoofing 1,000 sources",
    );
    routes_bounded(&tb, "LAN host spoofing 1,000 sources");
    assert!(
        tb.wait_exit(pid, Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "{}",
        tb.log("spoof-lan")
    );
    let spoofed: u64 = tb.log("spoof-lan").trim().parse().unwrap_or(0);
    // the flood was a flood (an emulated VM sends fewer per second)
    let least = 10_000.0 / time_scale();
    assert!(
        spoofed as f64 >= least,
        "1,000 sources, many times: {spoofed}"
    );
}
