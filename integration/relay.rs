//! The RTPS relay: pods on nodes whose LAN does not carry multicast (a
//! switch that drops it) discover each other through the agents' unicast
//! relay, exactly once, only from configured peers.

use crate::agent::{exactly_once, receivers, send_and_count, Sender};
use crate::common::*;
use crate::dds::fastdds_pair;
use ros2_cni::lab::probe::{ddsperf_probe, Discovery};
use ros2_cni::lab::testbed::{drain, mcast_receiver, nft_json, ns_sh, udp_in, Testbed, LAPTOP_IP};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const SPDP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
const RELAY_PORT: u16 = 7399;

/// ddsperf probes (10 s each) between the pairs `(name, from, to, domain)`,
/// all at once.
fn probe_pairs(pairs: &[(&str, &String, &String, u32)]) -> Vec<Discovery> {
    std::thread::scope(|s| {
        let hs: Vec<_> = pairs
            .iter()
            .map(|(_, x, y, dom)| {
                s.spawn(move || ddsperf_probe(x, y, *dom, Duration::from_secs(10)).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Makes the LAN switch drop every IPv4 multicast frame between its ports,
/// counting RTPS groups (239.255.0.0/16) and other multicast apart.
pub fn drop_multicast(tb: &Testbed) {
    let rules = "table bridge sw {\n chain drop_mc {\n  type filter hook forward priority 0; policy accept;\n  ip daddr 239.255.0.0/16 counter drop\n  ip daddr 224.0.0.0/4 counter drop\n }\n}\n";
    ros2_cni::lab::testbed::nft_load(&tb.switch, "sw", rules).unwrap();
}

/// Frames to RTPS groups the switch was offered (and dropped).
pub fn switch_rtps_frames(tb: &Testbed) -> u64 {
    switch_drops(tb, "239.255.0.0")
}

/// Frames to other multicast groups (IGMP reports included) the switch was offered.
pub fn switch_other_multicast_frames(tb: &Testbed) -> u64 {
    switch_drops(tb, "224.0.0.0")
}

fn switch_drops(tb: &Testbed, prefix: &str) -> u64 {
    let j = nft_json(&tb.switch, &["table", "bridge", "sw"]).unwrap();
    for item in j["nftables"].as_array().into_iter().flatten() {
        let r = &item["rule"];
        let exprs = r["expr"].as_array().cloned().unwrap_or_default();
        let rtps = exprs
            .iter()
            .any(|e| e["match"]["right"]["prefix"]["addr"] == prefix);
        if rtps {
            return exprs
                .iter()
                .find_map(|e| e["counter"]["packets"].as_u64())
                .unwrap();
        }
    }
    panic!("no rule for {prefix} on the switch: {j}");
}

/// The relay settings of node `i`: every other node is a peer.
pub fn relay_cfg(tb: &Testbed, i: usize, lan: bool) -> Value {
    let peers: Vec<String> = tb
        .nodes
        .iter()
        .filter(|n| n.idx != i)
        .map(|n| n.ip.to_string())
        .collect();
    json!({"peers": peers, "lanMulticast": lan})
}

fn reload(tb: &Testbed, pid: u32, i: usize, cfg: &Value) {
    tb.agent_config(tb.node(i), cfg).unwrap();
    tb.signal(pid, nix::sys::signal::Signal::SIGHUP);
}

fn relay_status(tb: &Testbed, i: usize) -> Value {
    tb.agent_status(tb.node(i)).unwrap()["relay"].clone()
}

fn peer(relay: &Value, ip: Ipv4Addr) -> &Value {
    relay["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == ip.to_string())
        .unwrap_or_else(|| panic!("peer {ip} not in {relay}"))
}

#[test]
fn dds_discovers_through_the_relay_across_a_switch_that_drops_multicast() {
    assert!(
        ros2_cni::lab::probe::have_ddsperf(),
        "ddsperf missing: apt-get install cyclonedds-tools"
    );
    let tb = bed_with(3, |o| o.laptop = false);
    drop_multicast(&tb);
    let pids: Vec<u32> = (1..=3)
        .map(|i| tb.start_agent(tb.node(i), &json!({})).unwrap())
        .collect();
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let c1 = tb.add_pod(&spec("c1", 3)).unwrap();

    // control: no peers, the switch drops the pods' discovery
    let d = ddsperf_probe(&a1.ns, &b1.ns, 30, Duration::from_secs(4)).unwrap();
    assert!(
        !d.discovered(),
        "without peers the switch must keep pods apart:\n{}",
        d.output
    );
    let offered = switch_rtps_frames(&tb);
    assert!(offered > 0, "the control put RTPS multicast on the switch");

    for (i, pid) in pids.iter().enumerate() {
        reload(&tb, *pid, i + 1, &relay_cfg(&tb, i + 1, false));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let before = switch_rtps_frames(&tb);
    let other_before = switch_other_multicast_frames(&tb);
    let pairs = [
        ("a1 -> b1", &a1.ns, &b1.ns, 31),
        ("b1 -> c1", &b1.ns, &c1.ns, 32),
        ("c1 -> a1", &c1.ns, &a1.ns, 33),
    ];
    let results = probe_pairs(&pairs);
    for ((name, ..), d) in pairs.iter().zip(&results) {
        assert!(
            d.discovered(),
            "{name}: no discovery through the relay:\n{}",
            d.output
        );
        eprintln!("{name}: discovered after {:.2} s", d.seconds.unwrap());
    }
    if let Err(out) = fastdds_pair(&tb, &a1.ns, &c1.ns, "34", 6) {
        panic!("Fast DDS (TTL 1) a1 <-> c1 through the relay:\n{out}");
    }
    assert_eq!(
        switch_rtps_frames(&tb),
        before,
        "lanMulticast false: no RTPS multicast offered to the switch"
    );
    assert_eq!(
        switch_other_multicast_frames(&tb),
        other_before,
        "lanMulticast false: no IGMP reports either"
    );
    let r1 = relay_status(&tb, 1);
    for n in [2, 3] {
        let p = peer(&r1, tb.node(n).ip);
        assert!(p["sent"].as_u64().unwrap() > 0, "node 1 -> {n}: {r1}");
        assert!(p["received"].as_u64().unwrap() > 0, "node {n} -> 1: {r1}");
        assert_eq!(p["via"], "relay");
        assert_eq!(p["reachable"], true);
    }
    let metrics =
        ros2_cni::lab::testbed::http_get(&tb.node(1).ns, "127.0.0.1:9741", "/metrics").unwrap();
    let line = format!(
        "ros2cni_relay_received_packets_total{{peer=\"{}\"}}",
        tb.node(2).ip
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
}

#[test]
fn ttl1_datagrams_arrive_exactly_once_in_both_lan_multicast_settings() {
    let tb = bed(3);
    let pids: Vec<u32> = (1..=3)
        .map(|i| {
            tb.start_agent(tb.node(i), &relay_cfg(&tb, i, true))
                .unwrap()
        })
        .collect();
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let a2 = tb.add_pod(&spec("a2", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let c1 = tb.add_pod(&spec("c1", 3)).unwrap();
    let lap = tb.laptop.clone().unwrap();
    let rx = receivers(
        &[
            ("a2", &a2.ns, ip_of(&a2)),
            ("b1", &b1.ns, ip_of(&b1)),
            ("c1", &c1.ns, ip_of(&c1)),
            ("laptop", &lap, LAPTOP_IP),
        ],
        SPDP,
        7400,
    );
    let n = 5;
    // lanMulticast true: every peer is on this subnet, reached by LAN multicast only
    let got = send_and_count(Sender(&a1.ns, ip_of(&a1), 1), (SPDP, 7400), n, &rx, "lan");
    for (name, seen) in &got {
        assert_eq!(seen, &exactly_once(n), "lanMulticast true: {name}");
    }
    let r1 = relay_status(&tb, 1);
    for m in [2, 3] {
        let p = peer(&r1, tb.node(m).ip);
        assert_eq!(p["via"], "lan");
        assert_eq!(p["sent"], 0, "same-subnet peers are not relayed to: {r1}");
    }

    // lanMulticast false: the relay alone carries it; the LAN sees none of it
    for (i, pid) in pids.iter().enumerate() {
        reload(&tb, *pid, i + 1, &relay_cfg(&tb, i + 1, false));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let got = send_and_count(Sender(&a1.ns, ip_of(&a1), 1), (SPDP, 7400), n, &rx, "relay");
    for name in ["a2", "b1", "c1"] {
        assert_eq!(
            got[name],
            exactly_once(n),
            "lanMulticast false: {name}\n{}\n{}",
            relay_status(&tb, 1),
            relay_status(&tb, 2)
        );
    }
    assert!(
        got["laptop"].is_empty(),
        "lanMulticast false: no pod multicast on the LAN: {got:?}"
    );
    let r1 = relay_status(&tb, 1);
    for m in [2, 3] {
        let p = peer(&r1, tb.node(m).ip);
        assert_eq!(p["via"], "relay");
        assert_eq!(p["sent"].as_u64(), Some(n as u64), "{r1}");
    }
    // the uplink is not an outgoing interface any more: the kernel's
    // forwarding state says so
    let st = tb.agent_status(tb.node(1)).unwrap();
    match st["forwarder"]["kind"].as_str() {
        Some("kernel") => {
            let mroute = ns_sh(&tb.node(1).ns, &["ip", "mroute", "show"]).unwrap();
            let line = mroute
                .lines()
                .find(|l| l.contains("239.255.0.1"))
                .unwrap_or_else(|| panic!("no (*,G) entry: {mroute}"));
            let oifs = line.split("Oifs:").nth(1).unwrap_or("");
            assert!(oifs.contains("ros2br0") && !oifs.contains("eth0"), "{line}");
        }
        Some("nftables") => {
            let table = ns_sh(
                &tb.node(1).ns,
                &["nft", "list", "table", "ip", "ros2_cni_fwd"],
            )
            .unwrap();
            assert!(
                table.contains("dup to 239.255.0.1 device \"ros2br0\""),
                "{table}"
            );
            assert!(
                !table.contains("device \"eth0\""),
                "nothing is copied to the uplink: {table}"
            );
        }
        other => panic!("unknown forwarder {other:?}: {st}"),
    }
}

/// A relay datagram as a peer would send it, built by hand.
fn forged(src: Ipv4Addr, sport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 1, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&SPDP.octets());
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&sport.to_be_bytes());
    ip.extend_from_slice(&7400u16.to_be_bytes());
    ip.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    let mut d = b"R2CR\x01\x00\x00\x00".to_vec();
    d.extend_from_slice(&ip);
    d
}

#[test]
fn relay_datagrams_from_a_non_peer_are_dropped_and_counted() {
    let tb = bed(2);
    for i in 1..=2 {
        tb.start_agent(tb.node(i), &relay_cfg(&tb, i, false))
            .unwrap();
    }
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let lap = tb.laptop.clone().unwrap();
    let rx = mcast_receiver(&b1.ns, SPDP, 7400, ip_of(&b1)).unwrap();
    let to = (tb.node(2).ip, RELAY_PORT);
    let d = forged(ip_of(&a1), 41000, b"forged");
    // from the laptop (not a peer): dropped
    let tx = udp_in(&lap, "0.0.0.0:0").unwrap();
    for _ in 0..3 {
        tx.send_to(&d, to).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(drain(&rx).is_empty(), "a non-peer's datagram reached a pod");
    let r2 = relay_status(&tb, 2);
    assert_eq!(r2["notPeer"], 3, "{r2}");
    assert_eq!(r2["lastNotPeer"], LAPTOP_IP.to_string());
    let metrics =
        ros2_cni::lab::testbed::http_get(&tb.node(2).ns, "127.0.0.1:9741", "/metrics").unwrap();
    assert!(
        metrics.contains("ros2cni_relay_not_peer_packets_total 3"),
        "{metrics}"
    );
    // the same datagram from node 1 (a peer): delivered, source and port as sent
    let tx = udp_in(&tb.node(1).ns, "0.0.0.0:0").unwrap();
    tx.send_to(&d, to).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut buf = [0u8; 64];
    let (n, from) = rx
        .recv_from(&mut buf)
        .expect("a peer's datagram reaches the pod");
    assert_eq!(&buf[..n], b"forged");
    assert_eq!(from.to_string(), format!("{}:41000", ip_of(&a1)));
    // a peer may not speak for the receiving node's own pods
    let tx2 = udp_in(&tb.node(1).ns, "0.0.0.0:0").unwrap();
    tx2.send_to(&forged(ip_of(&b1), 41001, b"mine"), to)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(drain(&rx).is_empty());
    let r2 = relay_status(&tb, 2);
    assert_eq!(r2["rejected"]["source"], 1, "{r2}");
}

#[test]
fn a_flooding_peer_is_held_to_its_rate_and_counted() {
    let tb = bed(2);
    for i in 1..=2 {
        let mut cfg = relay_cfg(&tb, i, false);
        cfg["relayPeerRate"] = json!(50);
        cfg["relayPeerBurst"] = json!(100);
        tb.start_agent(tb.node(i), &cfg).unwrap();
    }
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let rx = mcast_receiver(&b1.ns, SPDP, 7400, ip_of(&b1)).unwrap();
    // node 1, a peer, relays 2,000 datagrams in about a second (a broken or
    // compromised peer), in bursts the receiving socket's buffer holds
    let tx = udp_in(&tb.node(1).ns, "0.0.0.0:0").unwrap();
    let to = (tb.node(2).ip, RELAY_PORT);
    let t0 = std::time::Instant::now();
    let n = 2000u64;
    for i in 0..n {
        tx.send_to(&forged(ip_of(&a1), 41000, format!("f{i}").as_bytes()), to)
            .unwrap();
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    // every datagram is either delivered or rejected for its rate
    let mut got = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (received, limited) = loop {
        got += drain(&rx).len() as u64;
        let r2 = relay_status(&tb, 2);
        let limited = r2["rejected"]["rate"].as_u64().unwrap_or(0);
        let received = peer(&r2, tb.node(1).ip)["received"].as_u64().unwrap_or(0);
        if received + limited >= n || std::time::Instant::now() > deadline {
            break (received, limited);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let secs = t0.elapsed().as_secs_f64();
    got += drain(&rx).len() as u64;
    let allowed = 100.0 + 50.0 * secs;
    assert_eq!(received + limited, n, "all accounted for");
    assert!(
        (received as f64) <= allowed + 1.0,
        "{received} delivered in {secs:.2} s: at most the burst and the rate, {allowed:.0}"
    );
    assert!(received >= 100, "the burst passes: {received}");
    assert!(
        got <= received,
        "the pod got {got}, the relay delivered {received}"
    );
    let metrics =
        ros2_cni::lab::testbed::http_get(&tb.node(2).ns, "127.0.0.1:9741", "/metrics").unwrap();
    assert!(
        metrics.contains("ros2cni_relay_dropped_packets_total"),
        "{metrics}"
    );
}

#[test]
fn a_sighup_peer_change_applies_within_2s_and_a_dead_peer_delays_no_one() {
    let tb = bed_with(3, |o| o.laptop = false);
    drop_multicast(&tb);
    let dead = Ipv4Addr::new(192, 168, 0, 99);
    let pid1 = tb
        .start_agent(
            tb.node(1),
            &json!({"peers": [dead.to_string()], "lanMulticast": false}),
        )
        .unwrap();
    for i in 2..=3 {
        tb.start_agent(tb.node(i), &relay_cfg(&tb, i, false))
            .unwrap();
    }
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let c1 = tb.add_pod(&spec("c1", 3)).unwrap();
    let rx = receivers(
        &[("b1", &b1.ns, ip_of(&b1)), ("c1", &c1.ns, ip_of(&c1))],
        SPDP,
        7400,
    );
    let got = send_and_count(
        Sender(&a1.ns, ip_of(&a1), 1),
        (SPDP, 7400),
        3,
        &rx,
        "before",
    );
    assert!(
        got.values().all(|s| s.is_empty()),
        "node 2 and 3 are not node 1's peers yet: {got:?}"
    );
    // the dead peer first: it is sent to before the live ones
    let peers = [dead, tb.node(2).ip, tb.node(3).ip].map(|a| a.to_string());
    reload(
        &tb,
        pid1,
        1,
        &json!({"peers": peers, "lanMulticast": false}),
    );
    let t0 = Instant::now();
    let tx = ros2_cni::lab::testbed::mcast_sender(&a1.ns, ip_of(&a1), 1).unwrap();
    let mut arrived = [false; 2];
    while arrived != [true, true] {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the new peers got nothing within 2 s of SIGHUP: {arrived:?}"
        );
        tx.send_to(b"hup", (SPDP, 7400)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        for (k, name) in ["b1", "c1"].iter().enumerate() {
            arrived[k] |= !drain(&rx[*name]).is_empty();
        }
    }
    eprintln!(
        "peers applied {:.2} s after SIGHUP",
        t0.elapsed().as_secs_f64()
    );
    // latency to the live peers with the dead one listed first
    std::thread::sleep(Duration::from_millis(300));
    for r in rx.values() {
        drain(r);
    }
    let mut worst = Duration::ZERO;
    for i in 0..30 {
        let t = Instant::now();
        tx.send_to(format!("lat:{i}").as_bytes(), (SPDP, 7400))
            .unwrap();
        let mut got = [false; 2];
        while got != [true, true] {
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "datagram {i} lost: {got:?}"
            );
            for (k, name) in ["b1", "c1"].iter().enumerate() {
                got[k] |= !drain(&rx[*name]).is_empty();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        worst = worst.max(t.elapsed());
    }
    eprintln!("worst delivery with a dead peer listed: {worst:?}");
    assert!(worst < Duration::from_millis(250), "{worst:?}");
    // live peers greet every 5 s; the dead one never does
    wait_for(7, "node 1 hears from node 2", || {
        peer(&relay_status(&tb, 1), tb.node(2).ip)["reachable"] == true
    });
    let r1 = relay_status(&tb, 1);
    assert_eq!(peer(&r1, dead)["reachable"], false, "{r1}");
    assert_eq!(peer(&r1, dead)["lastSeen"], Value::Null, "{r1}");
    // doctor names both peers, the dead one as unreachable, and where the
    // relayed participants are (node 1 heard from none: its peers' pods were quiet)
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &tb.node(1).ns, BIN, "doctor", "--config"])
        .arg(tb.node(1).data_dir.join("agent.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("RELAY_PEER_UNREACHABLE") && text.contains(&dead.to_string()),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} (via relay, reachable", tb.node(2).ip)),
        "{text}"
    );
    // node 2 heard a1 only through the relay
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &tb.node(2).ns, BIN, "doctor", "--config"])
        .arg(tb.node(2).data_dir.join("agent.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("RELAY_ONLY_PARTICIPANTS")
            && text.contains(&format!("{} (from {})", ip_of(&a1), tb.node(1).ip)),
        "{text}"
    );
}

#[test]
fn pods_on_two_subnets_behind_a_router_discover_and_reach_each_other_without_nat() {
    // n1 and n2 on 192.168.0.0/20, n3 on 192.168.16.0/20, a router between;
    // the cluster form names each node's address (so all are peers) and subnet
    let tb = bed_with(3, |o| o.second_lan = vec![3]);
    for i in 1..=3 {
        tb.start_agent(tb.node(i), &json!({})).unwrap();
    }
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let a2 = tb.add_pod(&spec("a2", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let c1 = tb.add_pod(&spec("c1", 3)).unwrap();
    assert!(
        routes(&c1.ns).contains(&"192.168.0.0/20 ros0".to_string()),
        "the other subnet through ros0: {:?}",
        routes(&c1.ns)
    );
    assert!(routes(&a1.ns).contains(&"192.168.16.0/20 ros0".to_string()));
    // unicast between every pair, both ways, with the sender's own address
    let pods = [&a1, &b1, &c1];
    for x in pods {
        for y in pods.iter().filter(|y| y.name != x.name) {
            let seen =
                ros2_cni::lab::testbed::udp_seen_source(&x.ns, &y.ns, ip_of(y), 5555).unwrap();
            assert_eq!(
                seen,
                Some(ip_of(x)),
                "{} -> {}: not delivered, or NATed",
                x.name,
                y.name
            );
        }
    }
    // discovery between every pair (Cyclone, no DDS configuration)
    let pairs = [
        ("a1 -> b1 (same subnet)", &a1.ns, &b1.ns, 41),
        ("a1 -> c1 (other subnet)", &a1.ns, &c1.ns, 42),
        ("c1 -> b1 (other subnet)", &c1.ns, &b1.ns, 43),
    ];
    let results = probe_pairs(&pairs);
    for ((name, ..), d) in pairs.iter().zip(&results) {
        assert!(d.discovered(), "{name}: no discovery:\n{}", d.output);
        eprintln!("{name}: discovered after {:.2} s", d.seconds.unwrap());
    }
    // exactly once, same-segment peers by LAN multicast, the other by relay
    let n = 5;
    let rx = receivers(
        &[
            ("a2", &a2.ns, ip_of(&a2)),
            ("b1", &b1.ns, ip_of(&b1)),
            ("c1", &c1.ns, ip_of(&c1)),
        ],
        SPDP,
        7400,
    );
    let got = send_and_count(Sender(&a1.ns, ip_of(&a1), 1), (SPDP, 7400), n, &rx, "a1");
    for (name, seen) in &got {
        assert_eq!(seen, &exactly_once(n), "from a1: {name}");
    }
    let rx = receivers(
        &[
            ("a1", &a1.ns, ip_of(&a1)),
            ("a2", &a2.ns, ip_of(&a2)),
            ("b1", &b1.ns, ip_of(&b1)),
        ],
        SPDP,
        7400,
    );
    let got = send_and_count(Sender(&c1.ns, ip_of(&c1), 1), (SPDP, 7400), n, &rx, "c1");
    for (name, seen) in &got {
        assert_eq!(seen, &exactly_once(n), "from c1: {name}");
    }
    let r1 = relay_status(&tb, 1);
    assert_eq!(peer(&r1, tb.node(2).ip)["via"], "lan", "{r1}");
    assert_eq!(peer(&r1, tb.node(3).ip)["via"], "relay", "{r1}");
}

/// Figures for docs/benchmarks.md (not part of the suite: `cargo test --test
/// integration relay_figures -- --ignored --nocapture`, with
/// ROS2_CNI_AGENT_BIN pointing at a release build to measure that).
#[test]
#[ignore]
fn relay_figures() {
    let bin = std::env::var("ROS2_CNI_AGENT_BIN").unwrap_or(BIN.to_string());
    let runs = 5;
    let mut report = vec![];
    for (label, lan, drop) in [("LAN multicast", true, false), ("relay", false, true)] {
        let tb = bed_with(2, |o| {
            o.laptop = false;
            o.plugin = bin.clone().into();
        });
        if drop {
            drop_multicast(&tb);
        }
        let pids: Vec<u32> = (1..=2)
            .map(|i| {
                let cfg = if lan {
                    json!({})
                } else {
                    relay_cfg(&tb, i, false)
                };
                tb.start_agent(tb.node(i), &cfg).unwrap()
            })
            .collect();
        let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
        let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
        let mut secs = vec![];
        for r in 0..runs {
            let d = ddsperf_probe(&a1.ns, &b1.ns, 50 + r, Duration::from_secs(8)).unwrap();
            secs.push(d.seconds.expect("discovered"));
        }
        secs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        report.push(format!(
            "{label}: ddsperf discovery a1 -> b1 over {runs} runs: median {:.3} s, max {:.3} s",
            secs[runs as usize / 2],
            secs[runs as usize - 1]
        ));
        if !lan {
            // 10,000 datagrams/s of 200 bytes from a1 for 5 s: CPU of both agents
            let ticks = |pid: u32| -> u64 {
                let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
                let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
                f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
            };
            let rx = mcast_receiver(&b1.ns, SPDP, 7400, ip_of(&b1)).unwrap();
            let tx = ros2_cni::lab::testbed::mcast_sender(&a1.ns, ip_of(&a1), 1).unwrap();
            let before: Vec<u64> = pids.iter().map(|p| ticks(*p)).collect();
            let t0 = Instant::now();
            let payload = [0x55u8; 200];
            let (mut sent, mut got) = (0u64, 0u64);
            let secs = 5.0;
            while t0.elapsed().as_secs_f64() < secs {
                let due = (t0.elapsed().as_secs_f64() * 10_000.0) as u64;
                while sent < due {
                    let _ = tx.send_to(&payload, (SPDP, 7400));
                    sent += 1;
                }
                got += drain(&rx).len() as u64;
                std::thread::sleep(Duration::from_millis(1));
            }
            let wall = t0.elapsed().as_secs_f64();
            std::thread::sleep(Duration::from_millis(300));
            got += drain(&rx).len() as u64;
            let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                .unwrap()
                .unwrap() as f64;
            let cpu: Vec<f64> = pids
                .iter()
                .zip(&before)
                .map(|(p, b)| (ticks(*p) - b) as f64 / hz / wall * 100.0)
                .collect();
            report.push(format!(
                "relay at {:.0} datagrams/s for {wall:.1} s: sender agent {:.1}% CPU, receiver agent {:.1}% CPU, {got} of {sent} delivered",
                sent as f64 / wall,
                cpu[0],
                cpu[1]
            ));
        }
    }
    for l in &report {
        eprintln!("FIGURE {l}");
    }
}
