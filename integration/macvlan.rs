//! Macvlan mode on a wired LAN, and mixed with a routed node.

use crate::agent::{send_and_count, Sender};
use crate::common::*;
use ros2_cni::lab::probe::ddsperf_probe;
use ros2_cni::lab::testbed::{
    ip_json, mcast_receiver, ns_sh, ping, udp_seen_source, PodSpec, Testbed, LAPTOP_IP,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

const SPDP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);

fn macvlan_bed(nodes: usize, macvlan_nodes: &[usize]) -> Testbed {
    let tb = bed(nodes);
    for i in macvlan_nodes {
        tb.set_node_config(*i, json!({"mode": "macvlan"}));
    }
    tb
}

fn kind_of(ns: &str, dev: &str) -> String {
    let j = ip_json(ns, &["-d", "link", "show", dev]).unwrap();
    j[0]["linkinfo"]["info_kind"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn macvlan_nodes_discover_each_other_a_routed_node_and_the_laptop() {
    let tb = macvlan_bed(3, &[1, 2]);
    for i in 1..=3 {
        tb.start_agent(tb.node(i), &json!({})).unwrap();
    }
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let a2 = tb.add_pod(&spec("a2", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let c1 = tb.add_pod(&spec("c1", 3)).unwrap();
    assert_eq!(kind_of(&a1.ns, "ros0"), "macvlan");
    assert_eq!(kind_of(&c1.ns, "ros0"), "veth", "node 3 stays routed");
    assert!(
        !link_flags(&a1.ns, "eth0").contains(&"MULTICAST".to_string()),
        "primary MULTICAST cleared as in routed mode"
    );
    assert!(routes(&a1.ns).contains(&"224.0.0.0/4 ros0".to_string()));
    // a macvlan node routes no multicast: L2 already carries it
    let n1 = tb.node(1);
    let st = tb.agent_status(n1).unwrap();
    assert_eq!(st["routing"], false, "{st}");
    assert_eq!(st["mode"], "macvlan");
    assert!(ns_sh(&n1.ns, &["ip", "mroute", "show"])
        .unwrap()
        .trim()
        .is_empty());
    assert!(
        !ns_sh(&n1.ns, &["nft", "list", "tables"])
            .unwrap()
            .contains("table ip ros2_cni"),
        "no TTL rule on a macvlan node"
    );

    // TTL-1 discovery datagrams arrive exactly once everywhere: nothing is forwarded twice
    let lap = tb.laptop.clone().unwrap();
    let rx: BTreeMap<String, std::net::UdpSocket> = [
        ("a2", &a2.ns, ip_of(&a2)),
        ("b1", &b1.ns, ip_of(&b1)),
        ("c1", &c1.ns, ip_of(&c1)),
        ("laptop", &lap, LAPTOP_IP),
    ]
    .into_iter()
    .map(|(n, ns, ip)| (n.to_string(), mcast_receiver(ns, SPDP, 7400, ip).unwrap()))
    .collect();
    let got = send_and_count(Sender(&a1.ns, ip_of(&a1), 1), (SPDP, 7400), 5, &rx, "mv");
    for (name, seen) in &got {
        assert_eq!(
            seen,
            &(0..5).map(|i| (i, 1)).collect::<BTreeMap<u32, u32>>(),
            "a1 -> {name}"
        );
    }

    for (name, from, to, dom) in [
        ("macvlan a1 -> macvlan b1 (other node)", &a1.ns, &b1.ns, 10),
        ("macvlan a1 -> routed c1 (third node)", &a1.ns, &c1.ns, 11),
        ("routed c1 -> macvlan b1", &c1.ns, &b1.ns, 12),
        ("macvlan b1 -> laptop", &b1.ns, &lap, 13),
    ] {
        let d = ddsperf_probe(from, to, dom, Duration::from_secs(10)).unwrap();
        assert!(d.discovered(), "{name}:\n{}", d.output);
    }
}

#[test]
fn macvlan_pods_reach_their_own_node_and_the_lan_without_nat() {
    let tb = macvlan_bed(2, &[1, 2]);
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let a2 = tb.add_pod(&spec("a2", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let n1 = tb.node(1);
    let lap = tb.laptop.clone().unwrap();
    for (name, from, to) in [
        (
            "node 1 -> own pod (the macvlan trap)",
            n1.ns.as_str(),
            ip_of(&a1),
        ),
        ("own pod -> node 1", a1.ns.as_str(), n1.ip),
        ("pod -> pod, same node", a1.ns.as_str(), ip_of(&a2)),
        ("pod -> pod, other node", a1.ns.as_str(), ip_of(&b1)),
        ("laptop -> pod", lap.as_str(), ip_of(&a1)),
        ("pod -> laptop", a1.ns.as_str(), LAPTOP_IP),
        (
            "node 2 -> pod on node 1",
            tb.node(2).ns.as_str(),
            ip_of(&a1),
        ),
    ] {
        assert!(ping(from, to), "{name} ({to})");
    }
    assert_eq!(
        udp_seen_source(&a1.ns, &lap, LAPTOP_IP, 17500).unwrap(),
        Some(ip_of(&a1)),
        "LAN sees the pod's address"
    );
    assert_eq!(
        udp_seen_source(&n1.ns, &a1.ns, ip_of(&a1), 17501).unwrap(),
        Some(n1.ip),
        "pod sees its node's address"
    );
    // the shim answers the pods, never the LAN: the laptop has the node's address at eth0's MAC
    assert!(ping(&lap, n1.ip));
    let neigh = ip_json(&lap, &["neigh", "show", &n1.ip.to_string()]).unwrap();
    assert_eq!(
        neigh[0]["lladdr"].as_str(),
        Some(n1.mac.as_str()),
        "no ARP flux from the shim: {neigh}"
    );
}

#[test]
fn macvlan_lifecycle_check_and_64_concurrent_adds_and_dels() {
    let tb = macvlan_bed(1, &[1]);
    let before = baseline(&tb, 1);
    assert!(
        before.links.contains("ros2shim"),
        "node shim made: {:?}",
        before.links
    );
    // CHECK, in a version that has it, and what it names when something is off
    let s = spec("chk", 1).version("1.0.0");
    let pod = tb.add_pod(&s).unwrap();
    assert!(
        tb.ros2cni_cmd("CHECK", &pod, &s, None, None)
            .unwrap()
            .success
    );
    let ip = ip_of(&pod);
    ns_sh(
        &tb.node(1).ns,
        &["ip", "route", "del", &format!("{ip}/32"), "dev", "ros2shim"],
    )
    .unwrap();
    let r = tb.ros2cni_cmd("CHECK", &pod, &s, None, None).unwrap();
    assert_eq!(r.code(), Some(102));
    assert!(
        r.stdout
            .contains(&format!("node route {ip}/32 dev ros2shim is missing")),
        "{}",
        r.stdout
    );
    tb.del_pod(&pod, &s).unwrap();
    assert_eq!(node_state(&tb, 1), before, "DEL leaves nothing");

    let specs: Vec<PodSpec> = (0..64).map(|i| spec(&format!("c{i}"), 1)).collect();
    let pods: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = specs.iter().map(|sp| sc.spawn(|| tb.add_pod(sp))).collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let ips: std::collections::BTreeSet<_> = pods.iter().map(ip_of).collect();
    assert_eq!(ips.len(), 64, "64 distinct addresses");
    let st = node_state(&tb, 1);
    assert_eq!(st.leases.len(), 64);
    assert_eq!(
        st.routes.iter().filter(|r| r.ends_with("ros2shim")).count(),
        64
    );
    assert!(
        st.proxies.is_empty() && st.guard_elements.is_empty(),
        "no proxy ARP or bridge filter in macvlan mode"
    );
    std::thread::scope(|sc| {
        for h in pods
            .iter()
            .zip(&specs)
            .map(|(p, sp)| sc.spawn(|| tb.del_pod(p, sp)))
            .collect::<Vec<_>>()
        {
            h.join().unwrap().unwrap();
        }
    });
    assert_eq!(
        node_state(&tb, 1),
        before,
        "64 DELs leave no route, neighbour or lease"
    );
}

#[test]
fn macvlan_on_a_wireless_uplink_is_refused_unless_forced() {
    let tb = macvlan_bed(1, &[1]);
    let n = tb.node(1).clone();
    // sysfs says "wireless" for eth0: bind a directory with that entry over
    // eth0's sysfs node, in a mount namespace of the plugin's own
    let fake = tb.dir.join("fake-wlan");
    std::fs::create_dir_all(fake.join("wireless")).unwrap();
    let script = format!(
        "mount --bind {} /sys/devices/virtual/net/eth0 && exec \"$0\"",
        fake.display()
    );
    let wrapper = ["unshare", "-m", "sh", "-c", script.as_str()];
    let mut s = spec("wl", 1);
    s.chain_ros2cni = false;
    let pod = tb.add_pod(&s).unwrap();
    let before = node_state(&tb, 1);
    let run = |cmd: &str, extra: serde_json::Value| {
        let mut conf =
            tb.pod_ros2cni_conf(&spec("wl", 1).version("1.1.0").extra(extra), &pod.result);
        conf["cniVersion"] = json!("1.1.0");
        let netns = pod.netns_path();
        let env = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", pod.container_id.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        tb.run_plugin_wrapped(
            &n,
            &wrapper,
            &tb.opts.plugin,
            &env,
            conf.to_string().as_bytes(),
        )
        .unwrap()
    };
    let r = run("ADD", json!({}));
    assert_eq!(
        r.code(),
        Some(103),
        "ADD refused: {} {}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.contains("wireless") && r.stdout.contains("\\\"routed\\\""),
        "names routed mode as the fix: {}",
        r.stdout
    );
    assert_eq!(node_state(&tb, 1), before, "nothing made");
    let r = run("STATUS", json!({}));
    assert_eq!(r.code(), Some(50), "STATUS refuses: {}", r.stdout);
    assert!(r.stdout.contains("routed"), "{}", r.stdout);
    // "force" overrides the refusal
    let r = run("ADD", json!({"force": true}));
    assert!(r.success, "force overrides: {} {}", r.stdout, r.stderr);
    assert_eq!(kind_of(&pod.ns, "ros0"), "macvlan");
}

#[test]
fn macvlan_gc_and_bad_inputs_behave_as_in_routed_mode() {
    let tb = macvlan_bed(1, &[1]);
    let before = baseline(&tb, 1);
    let keep = spec("keep", 1).version("1.1.0");
    let gone = spec("gone", 1).version("1.1.0");
    let pk = tb.add_pod(&keep).unwrap();
    let pg = tb.add_pod(&gone).unwrap();
    let n = tb.node(1);
    let mut conf = tb.ros2cni_conf(n, "1.1.0", &json!({}));
    conf["cni.dev/valid-attachments"] = json!([{"containerID": pk.container_id, "ifname": "eth0"}]);
    let r = gc(&tb, 1, &conf);
    assert!(r.success, "GC: {}", r.stdout);
    assert!(
        !pod_has_link(&pg.ns, "ros0"),
        "GC removed the unlisted pod's macvlan"
    );
    assert!(pod_has_link(&pk.ns, "ros0"));
    let st = node_state(&tb, 1);
    assert!(
        !st.leases.contains(&ip_of(&pg).to_string()) && st.leases.contains(&ip_of(&pk).to_string())
    );
    assert!(!st.routes.contains(&format!("{} ros2shim", ip_of(&pg))));
    tb.del_pod(&pk, &keep).unwrap();
    tb.del_pod(&pg, &gone).unwrap();
    assert_eq!(node_state(&tb, 1), before);

    // errors leave nothing behind in this mode too
    for (what, extra, code) in [
        ("uplink missing", json!({"uplink": "eth9"}), 7),
        ("pool outside subnet", json!({"podRange": "10.9.0.0/24"}), 7),
        ("ifName taken by the primary", json!({"ifName": "eth0"}), 7),
    ] {
        let mut s = spec(&format!("bad-{}", what.len()), 1);
        s.chain_ros2cni = false;
        let pod = tb.add_pod(&s).unwrap();
        let before = node_state(&tb, 1);
        let r = tb
            .ros2cni_cmd("ADD", &pod, &spec(&s.name, 1).extra(extra), None, None)
            .unwrap();
        assert_eq!(r.code(), Some(code), "{what}: {}", r.stdout);
        assert_eq!(node_state(&tb, 1), before, "{what}: residue");
        assert!(!pod_has_link(&pod.ns, "ros0"), "{what}");
    }
}
