//! The plugin, run as a container runtime runs it, chained after ptp + host-local.

use crate::common::*;
use ros2_cni::lab::testbed::{
    ip_json, ns_sh, ping, sh, udp_seen_source, PodSpec, Testbed, LAPTOP_IP,
};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Kernel state of an attached pod, read with ip -j / nft -j.
fn assert_attached(tb: &Testbed, pod: &ros2_cni::lab::testbed::Pod) {
    let ip = ip_of(pod);
    let n = tb.node(pod.node);
    assert_eq!(
        addrs(&pod.ns, "ros0"),
        vec![format!("{ip}/20")],
        "ros0 address"
    );
    let flags = link_flags(&pod.ns, "ros0");
    assert!(
        flags.contains(&"UP".to_string()) && flags.contains(&"MULTICAST".to_string()),
        "{flags:?}"
    );
    assert!(
        !link_flags(&pod.ns, "eth0").contains(&"MULTICAST".to_string()),
        "primary interface keeps MULTICAST"
    );
    let r = routes(&pod.ns);
    assert!(r.contains(&"224.0.0.0/4 ros0".to_string()), "{r:?}");
    assert!(r.contains(&"192.168.0.0/20 ros0".to_string()), "{r:?}");
    assert!(
        r.contains(&"default eth0".to_string()),
        "default route untouched: {r:?}"
    );
    let o = ip.octets();
    let mac = format!("0e:2c:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
    let st = node_state(tb, pod.node);
    assert!(
        st.routes.contains(&format!("{ip} ros2br0")),
        "node route: {:?}",
        st.routes
    );
    assert!(
        st.proxies.contains(&format!("{ip} eth0")),
        "proxy ARP: {:?}",
        st.proxies
    );
    assert!(
        st.neighbours.contains(&format!("{ip} ros2br0")),
        "neighbour: {:?}",
        st.neighbours
    );
    assert!(
        st.guard_elements
            .iter()
            .any(|e| e.ends_with(&format!("{mac} {ip}"))),
        "anti-spoofing element: {:?}",
        st.guard_elements
    );
    // node-wide settings routed mode relies on
    for (key, want) in [
        ("net.ipv4.conf.ros2br0.proxy_arp", "1"),
        ("net.ipv4.conf.ros2br0.forwarding", "1"),
        ("net.ipv4.neigh.ros2br0.proxy_delay", "0"),
        ("net.ipv4.neigh.eth0.proxy_delay", "0"),
        ("net.ipv4.conf.eth0.forwarding", "1"),
    ] {
        assert_eq!(
            ns_sh(&n.ns, &["sysctl", "-n", key]).unwrap().trim(),
            want,
            "{key}"
        );
    }
    let br_info = ip_json(&n.ns, &["-d", "link", "show", "ros2br0"]).unwrap();
    assert_eq!(
        br_info[0]["linkinfo"]["info_data"]["mcast_snooping"], 0,
        "snooping off on the node bridge"
    );
    // the host end is a port of the node bridge
    let br = ip_json(&n.ns, &["link", "show", "master", "ros2br0"]).unwrap();
    assert!(br
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["ifname"].as_str().unwrap_or("").starts_with("r2c")));
    // no IPv6 addresses on either end (no DAD or MLD from a pod port)
    let no_v6 = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .all(|l| l["addr_info"].as_array().is_none_or(|a| a.is_empty()))
    };
    let a6 = ip_json(&pod.ns, &["-6", "addr", "show", "dev", "ros0"]).unwrap();
    assert!(no_v6(&a6), "IPv6 addresses on ros0: {a6}");
    let ports = br
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str());
    for p in ports.filter(|n| n.starts_with("r2c")) {
        let a = ip_json(&n.ns, &["-6", "addr", "show", "dev", p]).unwrap();
        assert!(no_v6(&a), "IPv6 addresses on host end {p}: {a}");
    }
    // the result names ros0 with its sandbox and its address with the interface index
    let res = &pod.result;
    let idx = res["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .position(|i| i["name"] == "ros0" && i["sandbox"] == pod.netns_path())
        .expect("ros0 in result");
    assert!(res["ips"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["interface"] == idx && i["address"] == format!("{ip}/20")));
    assert_eq!(res["interfaces"][idx]["mac"], mac);
}

/// The traffic a robot needs, checked with real packets.
fn assert_connectivity(
    tb: &Testbed,
    a1: &ros2_cni::lab::testbed::Pod,
    a2: &ros2_cni::lab::testbed::Pod,
    b1: &ros2_cni::lab::testbed::Pod,
    what: &str,
) {
    let lap = tb.laptop.as_ref().unwrap();
    let (n1, n2) = (tb.node(1), tb.node(2));
    let checks: Vec<(&str, &str, Ipv4Addr)> = vec![
        ("pod a1 -> pod b1 (other node)", &a1.ns, ip_of(b1)),
        ("pod b1 -> pod a1 (other node)", &b1.ns, ip_of(a1)),
        ("pod a1 -> pod a2 (same node)", &a1.ns, ip_of(a2)),
        ("pod a1 -> laptop", &a1.ns, LAPTOP_IP),
        ("laptop -> pod a1", lap, ip_of(a1)),
        ("laptop -> pod b1", lap, ip_of(b1)),
        ("node 1 -> own pod a1", &n1.ns, ip_of(a1)),
        ("pod a1 -> own node 1", &a1.ns, n1.ip),
        ("pod a1 -> node 2", &a1.ns, n2.ip),
        ("node 2 -> pod a1", &n2.ns, ip_of(a1)),
    ];
    for (name, from, to) in checks {
        assert!(ping(from, to), "{what}: {name} ({to}) failed");
    }
    // no NAT either way: each side sees the other's own address
    let port = 17_400;
    assert_eq!(
        udp_seen_source(&a1.ns, lap, LAPTOP_IP, port).unwrap(),
        Some(ip_of(a1)),
        "{what}: laptop sees pod a1"
    );
    assert_eq!(
        udp_seen_source(lap, &a1.ns, ip_of(a1), port + 1).unwrap(),
        Some(LAPTOP_IP),
        "{what}: pod sees laptop"
    );
    assert_eq!(
        udp_seen_source(&b1.ns, &a1.ns, ip_of(a1), port + 2).unwrap(),
        Some(ip_of(b1)),
        "{what}: pod sees pod"
    );
}

/// Reference macvlan + host-local pods (what Multus + macvlan does), one per node.
fn macvlan_pair(tb: &Testbed) -> (String, String, Ipv4Addr) {
    let mut out = vec![];
    for i in 1..=2 {
        let n = tb.node(i);
        let ns = format!("{}mv{i}", tb.opts.prefix);
        tb.add_ns(&ns).unwrap();
        let conf = json!({"cniVersion": "0.3.1", "name": "macvlan", "type": "macvlan", "master": "eth0", "mode": "bridge",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "192.168.0.0/20",
                "rangeStart": format!("192.168.15.{}", 10 * i), "rangeEnd": format!("192.168.15.{}", 10 * i + 9)}]],
                "dataDir": n.data_dir.join("macvlan-ipam")}});
        let netns = format!("/var/run/netns/{ns}");
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", ns.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        let r = tb
            .run_plugin(n, &tb.opts.cni_bin_dir.join("macvlan"), &env, &conf)
            .unwrap();
        assert!(r.success, "macvlan ADD: {}", r.stdout);
        out.push(ns);
    }
    let ip = Ipv4Addr::new(192, 168, 15, 20);
    (out[0].clone(), out[1].clone(), ip)
}

fn connectivity(version: &str) {
    let tb = bed(2);
    let a1 = tb.add_pod(&spec("a1", 1).version(version)).unwrap();
    let a2 = tb.add_pod(&spec("a2", 1).version(version)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2).version(version)).unwrap();
    for p in [&a1, &a2, &b1] {
        assert_attached(&tb, p);
    }
    assert_connectivity(&tb, &a1, &a2, &b1, "wired");

    // The Wi-Fi-like switch: only each node's own MAC may come from its port.
    let (mv1, mv2, mv2_ip) = macvlan_pair(&tb);
    assert!(
        ping(&mv1, mv2_ip),
        "reference macvlan pods talk on a wired switch"
    );
    tb.set_wifi(true).unwrap();
    assert!(
        !ping(&mv1, mv2_ip),
        "the Wi-Fi rule must cut reference macvlan pods off"
    );
    assert!(
        tb.wifi_drops().unwrap() > 0,
        "the rule counted the macvlan frames it dropped"
    );
    for ns in [mv1, mv2] {
        // delete the macvlan first: that is synchronous, while a namespace
        // is torn down in the background and its links may still send
        sh(&["ip", "-n", &ns, "link", "del", "net1"]).unwrap();
        tb.remove_ns(&ns).unwrap();
    }
    tb.set_wifi(true).unwrap(); // reset the counters, with only ros2-cni pods left
    assert_connectivity(&tb, &a1, &a2, &b1, "wi-fi");
    assert_eq!(
        tb.wifi_drops().unwrap(),
        0,
        "ros2-cni traffic never leaves a node with a foreign MAC"
    );
}

#[test]
fn routed_connectivity_cni_0_3_1() {
    connectivity("0.3.1");
}

#[test]
fn routed_connectivity_cni_1_0_0() {
    connectivity("1.0.0");
}

#[test]
fn lifecycle_in_every_cni_version() {
    let tb = bed(1);
    tb.start_agent(tb.node(1), &json!({})).unwrap();
    let before = baseline(&tb, 1);
    for v in VERSIONS {
        let s = spec(&format!("v{}", v.replace('.', "")), 1).version(v);
        let pod = tb.add_pod(&s).unwrap();
        assert_attached(&tb, &pod);
        assert_eq!(pod.result["cniVersion"], v);
        for ip in pod.result["ips"].as_array().unwrap() {
            assert_eq!(
                ip.get("version").is_some(),
                v < "1.0.0",
                "{v}: ips[].version"
            );
        }
        let check = tb.ros2cni_cmd("CHECK", &pod, &s, None, None).unwrap();
        if v >= "0.4.0" {
            assert!(check.success, "{v} CHECK: {}", check.stdout);
            assert!(check.stdout.trim().is_empty());
        } else {
            assert_eq!(check.code(), Some(1), "{v}: CHECK is not in this version");
        }
        let status = tb.ros2cni_cmd("STATUS", &pod, &s, None, None).unwrap();
        assert_eq!(
            status.success,
            v == "1.1.0",
            "{v} STATUS: {}",
            status.stdout
        );
        let ver = tb.ros2cni_cmd("VERSION", &pod, &s, None, None).unwrap();
        assert_eq!(ver.json().unwrap()["supportedVersions"], json!(VERSIONS));
        tb.del_pod(&pod, &s).unwrap();
        // DEL twice
        let again = tb.ros2cni_cmd("DEL", &pod, &s, None, Some("")).unwrap();
        assert!(again.success, "{v}: second DEL: {}", again.stdout);
        // the agent runs here: DEL hands it the link and element deletion
        wait_state(
            &tb,
            1,
            &before,
            3,
            &format!("{v}: DEL leaves nothing behind"),
        );
    }
}

#[test]
fn del_succeeds_in_every_edge_case() {
    let tb = bed(1);
    let before = node_state(&tb, 1);
    // DEL without ADD
    let s = spec("ghost", 1);
    let ghost = ros2_cni::lab::testbed::Pod {
        name: "ghost".into(),
        ns: "none".into(),
        node: 1,
        container_id: "never-added".into(),
        result: json!({"cniVersion": "0.3.1"}),
        ros_ip: None,
    };
    let r = tb
        .ros2cni_cmd("DEL", &ghost, &s, Some(&Value::Null), Some(""))
        .unwrap();
    assert!(
        r.success && r.stdout.trim().is_empty(),
        "DEL without ADD: {}",
        r.stdout
    );

    // DEL when the netns is already gone
    let s = spec("gone", 1);
    let pod = tb.add_pod(&s).unwrap();
    tb.remove_ns(&pod.ns).unwrap();
    let r = tb.ros2cni_cmd("DEL", &pod, &s, None, None).unwrap();
    assert!(r.success, "DEL after netns removal: {}", r.stdout);
    let st = node_state(&tb, 1);
    assert_eq!(st.proxies, before.proxies);
    assert_eq!(st.leases, before.leases);
    assert_eq!(st.guard_elements, before.guard_elements);

    // DEL with CNI_NETNS empty and without prevResult (containerd after a failed ADD)
    let s = spec("empty", 1);
    let pod = tb.add_pod(&s).unwrap();
    let r = tb
        .ros2cni_cmd("DEL", &pod, &s, Some(&Value::Null), Some(""))
        .unwrap();
    assert!(r.success, "DEL with empty CNI_NETNS: {}", r.stdout);
    assert!(
        !pod_has_link(&pod.ns, "ros0"),
        "the pod's ros0 went with its veth"
    );
    assert!(
        link_flags(&pod.ns, "eth0").contains(&"MULTICAST".to_string()),
        "MULTICAST restored on eth0"
    );
    let r = tb
        .ros2cni_cmd("DEL", &pod, &s, Some(&Value::Null), Some(""))
        .unwrap();
    assert!(r.success);
    // the primary's own state is not ours to check; ros2-cni's is gone
    let st = node_state(&tb, 1);
    assert_eq!(st.leases, before.leases);
    assert_eq!(st.attachments, before.attachments);
    assert_eq!(st.guard_elements, before.guard_elements);
    assert_eq!(st.proxies, before.proxies);
    assert!(
        !st.links.iter().any(|l| l.starts_with("r2c")),
        "{:?}",
        st.links
    );
}

#[test]
fn check_names_what_differs() {
    let tb = bed(1);
    let s = spec("chk", 1).version("1.0.0");
    let pod = tb.add_pod(&s).unwrap();
    let ip = ip_of(&pod);
    let n = tb.node(1);
    let check = |want: &str| {
        let r = tb.ros2cni_cmd("CHECK", &pod, &s, None, None).unwrap();
        assert!(!r.success, "CHECK must fail after breaking {want}");
        assert_eq!(r.code(), Some(102));
        assert!(
            r.stdout.contains(want),
            "CHECK should name {want:?}: {}",
            r.stdout
        );
    };
    assert!(
        tb.ros2cni_cmd("CHECK", &pod, &s, None, None)
            .unwrap()
            .success
    );

    sh(&[
        "ip",
        "-n",
        &n.ns,
        "neigh",
        "del",
        "proxy",
        &ip.to_string(),
        "dev",
        "eth0",
    ])
    .unwrap();
    check("proxy neighbour");
    sh(&[
        "ip",
        "-n",
        &n.ns,
        "neigh",
        "add",
        "proxy",
        &ip.to_string(),
        "dev",
        "eth0",
    ])
    .unwrap();

    sh(&[
        "ip",
        "-n",
        &pod.ns,
        "link",
        "set",
        "eth0",
        "multicast",
        "on",
    ])
    .unwrap();
    check("MULTICAST");
    sh(&[
        "ip",
        "-n",
        &pod.ns,
        "link",
        "set",
        "eth0",
        "multicast",
        "off",
    ])
    .unwrap();

    sh(&[
        "ip",
        "-n",
        &pod.ns,
        "route",
        "del",
        "224.0.0.0/4",
        "dev",
        "ros0",
    ])
    .unwrap();
    check("224.0.0.0/4");
    sh(&[
        "ip",
        "-n",
        &pod.ns,
        "route",
        "add",
        "224.0.0.0/4",
        "dev",
        "ros0",
    ])
    .unwrap();

    sh(&[
        "ip",
        "-n",
        &n.ns,
        "route",
        "del",
        &format!("{ip}/32"),
        "dev",
        "ros2br0",
    ])
    .unwrap();
    check(&format!("node route {ip}/32"));
    sh(&[
        "ip",
        "-n",
        &n.ns,
        "route",
        "add",
        &format!("{ip}/32"),
        "dev",
        "ros2br0",
    ])
    .unwrap();

    let el = guard_elements(&n.ns).into_iter().next().unwrap();
    let parts: Vec<&str> = el.split(' ').collect();
    let nft_el = format!("{{ \"{}\" . {} . {} }}", parts[0], parts[1], parts[2]);
    ns_sh(
        &n.ns,
        &[
            "nft", "delete", "element", "bridge", "ros2_cni", "pods", &nft_el,
        ],
    )
    .unwrap();
    check("nft element");
    ns_sh(
        &n.ns,
        &[
            "nft", "add", "element", "bridge", "ros2_cni", "pods", &nft_el,
        ],
    )
    .unwrap();

    let mut prev = pod.result.clone();
    prev["interfaces"]
        .as_array_mut()
        .unwrap()
        .retain(|i| i["name"] != "ros0");
    prev["ips"].as_array_mut().unwrap().truncate(1);
    let r = tb
        .ros2cni_cmd("CHECK", &pod, &s, Some(&prev), None)
        .unwrap();
    assert_eq!(r.code(), Some(102));
    assert!(
        r.stdout.contains("prevResult.interfaces lacks ros0"),
        "{}",
        r.stdout
    );

    assert!(
        tb.ros2cni_cmd("CHECK", &pod, &s, None, None)
            .unwrap()
            .success,
        "all repaired"
    );
    tb.del_pod(&pod, &s).unwrap();
}

#[test]
fn sixty_four_concurrent_adds_then_dels() {
    let tb = bed(1);
    let before = baseline(&tb, 1);
    let specs: Vec<PodSpec> = (0..64).map(|i| spec(&format!("c{i}"), 1)).collect();
    let pods: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = specs.iter().map(|sp| s.spawn(|| tb.add_pod(sp))).collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let ips: std::collections::BTreeSet<_> = pods.iter().map(ip_of).collect();
    assert_eq!(ips.len(), 64, "64 distinct addresses");
    let st = node_state(&tb, 1);
    assert_eq!(st.leases.len(), 64);
    assert_eq!(st.guard_elements.len(), 64);
    assert_eq!(st.proxies.len(), 64);
    assert_eq!(st.links.iter().filter(|l| l.starts_with("r2c")).count(), 64);
    for ip in &ips {
        assert!(
            st.routes.contains(&format!("{ip} ros2br0")),
            "route to {ip}"
        );
        assert!(st.leases.contains(&ip.to_string()));
    }
    std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .zip(&specs)
            .map(|(p, sp)| s.spawn(|| tb.del_pod(p, sp)))
            .collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
    });
    let after = node_state(&tb, 1);
    assert_eq!(after.links, before.links, "no link left");
    assert_eq!(after.routes, before.routes, "no route left");
    assert_eq!(
        after.neighbours, before.neighbours,
        "no neighbour entry left"
    );
    assert_eq!(after.proxies, before.proxies, "no proxy entry left");
    assert_eq!(
        after.guard_elements, before.guard_elements,
        "no nft element left"
    );
    assert!(
        after.leases.is_empty() && after.attachments.is_empty(),
        "no lease left"
    );
}

#[test]
fn opted_out_pods_are_untouched() {
    let tb = bed(1);
    let before = node_state(&tb, 1);
    let mut s = spec("out", 1).opted_out();
    s.chain_ros2cni = false;
    let pod = tb.add_pod(&s).unwrap();
    // run ros2-cni ADD by hand and compare its output with the prevResult it got
    let mut s2 = s.clone();
    s2.chain_ros2cni = true;
    let r = tb.ros2cni_cmd("ADD", &pod, &s2, None, None).unwrap();
    assert!(r.success, "{}", r.stdout);
    assert_eq!(
        r.json().unwrap(),
        pod.result,
        "prevResult printed unchanged"
    );
    assert!(!pod_has_link(&pod.ns, "ros0"));
    assert!(link_flags(&pod.ns, "eth0").contains(&"MULTICAST".to_string()));
    let after = node_state(&tb, 1);
    assert_eq!(after.leases, before.leases);
    assert!(
        !after.links.contains("ros2br0"),
        "no node-wide state for opted-out pods"
    );
    // an annotation "false" wins over a listed namespace
    let mut s3 = spec("nsin", 1)
        .opted_out()
        .extra(json!({"namespaces": ["robots"]}));
    let p3 = tb.add_pod(&s3).unwrap();
    assert!(p3.ros_ip.is_some(), "namespace opt-in");
    tb.del_pod(&p3, &s3).unwrap();
    s3 = spec("nsout", 1).extra(json!({"namespaces": ["robots"]}));
    s3.annotations = vec![("ros2-cni.io/enabled".into(), "false".into())];
    let p4 = tb.add_pod(&s3).unwrap();
    assert!(p4.ros_ip.is_none(), "annotation false opts out");
}

#[test]
fn primary_multicast_and_default_uplink() {
    let tb = bed(1);
    let s = spec("pm", 1).extra(json!({"primaryMulticast": true, "uplink": null}));
    let pod = tb.add_pod(&s).unwrap();
    assert!(
        link_flags(&pod.ns, "eth0").contains(&"MULTICAST".to_string()),
        "primaryMulticast keeps the flag"
    );
    let st = node_state(&tb, 1);
    assert!(
        st.proxies.contains(&format!("{} eth0", ip_of(&pod))),
        "uplink defaults to the default-route interface"
    );
    let check = tb
        .ros2cni_cmd("CHECK", &pod, &s.clone().version("1.0.0"), None, None)
        .unwrap();
    assert!(check.success, "CHECK passes: {}", check.stdout);
    tb.del_pod(&pod, &s).unwrap();
}

#[test]
fn gc_and_status() {
    let tb = bed(1);
    let s1 = spec("keep", 1).version("1.1.0");
    let s2 = spec("drop", 1).version("1.1.0");
    let p1 = tb.add_pod(&s1).unwrap();
    let p2 = tb.add_pod(&s2).unwrap();
    let n = tb.node(1);
    let gc_with = |key: &str, keep: Value| {
        let mut conf = tb.ros2cni_conf(n, "1.1.0", &json!({}));
        conf[key] = keep;
        gc(&tb, 1, &conf)
    };
    let r = gc_with(
        "cni.dev/valid-attachments",
        json!([{"containerID": p1.container_id, "ifname": "eth0"}]),
    );
    assert!(r.success, "GC: {}", r.stdout);
    let st = node_state(&tb, 1);
    assert!(st.leases.contains(&ip_of(&p1).to_string()));
    assert!(
        !st.leases.contains(&ip_of(&p2).to_string()),
        "GC released the unlisted attachment"
    );
    assert!(!st.proxies.contains(&format!("{} eth0", ip_of(&p2))));
    assert!(!pod_has_link(&p2.ns, "ros0"));
    assert!(pod_has_link(&p1.ns, "ros0"));
    // the older key name works too
    let r = gc_with("cni.dev/attachments", json!([]));
    assert!(r.success, "{}", r.stdout);
    assert!(node_state(&tb, 1).leases.is_empty());

    let status = |extra: Value| {
        let conf = tb.ros2cni_conf(n, "1.1.0", &extra);
        tb.run_plugin(
            n,
            &tb.opts.plugin,
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")],
            &conf,
        )
        .unwrap()
    };
    let r = status(json!({}));
    assert_eq!(
        r.code(),
        Some(51),
        "no agent: limited connectivity: {}",
        r.stdout
    );
    assert!(r.stdout.contains("agent is not running"), "{}", r.stdout);
    let agent = tb.start_agent(n, &json!({})).unwrap();
    assert!(status(json!({})).success);
    let r = status(json!({"uplink": "eth9"}));
    assert_eq!(r.code(), Some(50));
    assert!(r.stdout.contains("eth9"), "{}", r.stdout);
    let r = status(json!({"dataDir": "/proc/version/ros2-cni"}));
    assert_eq!(r.code(), Some(50));
    assert!(r.stdout.contains("dataDir"), "{}", r.stdout);
    // a pool of one address, taken
    let one = json!({"podRange": "192.168.1.77-192.168.1.77"});
    let s3 = spec("only", 1).version("1.1.0").extra(one.clone());
    let p3 = tb.add_pod(&s3).unwrap();
    let r = status(one);
    assert_eq!(r.code(), Some(50));
    assert!(r.stdout.contains("exhausted"), "{}", r.stdout);
    tb.del_pod(&p3, &s3).unwrap();
    tb.kill(agent);
    assert_eq!(status(json!({})).code(), Some(51), "agent killed");
}

/// One bad input: how to run it and the code it must produce.
struct Bad {
    name: &'static str,
    code: u64,
    env: Vec<(&'static str, Option<String>)>,
    conf: Box<dyn Fn(&mut Value)>,
    raw_stdin: Option<&'static str>,
}

fn bad(
    name: &'static str,
    code: u64,
    env: Vec<(&'static str, Option<String>)>,
    conf: impl Fn(&mut Value) + 'static,
) -> Bad {
    Bad {
        name,
        code,
        env,
        conf: Box::new(conf),
        raw_stdin: None,
    }
}

#[test]
fn bad_inputs_fail_cleanly_and_leave_nothing_behind() {
    let tb = bed(1);
    let n = tb.node(1).clone();
    // a pod whose pool holds one address, taken, for the exhausted case
    let taken = spec("taken", 1).extra(json!({"podRange": "192.168.1.9-192.168.1.9"}));
    tb.add_pod(&taken).unwrap();
    let set = |k: &'static str, v: Value| move |c: &mut Value| c[k] = v.clone();
    let del = |k: &'static str| {
        move |c: &mut Value| {
            c.as_object_mut().unwrap().remove(k);
        }
    };
    let none = |_: &mut Value| {};
    let cases = vec![
        bad(
            "unknown command",
            4,
            vec![("CNI_COMMAND", Some("FROB".into()))],
            none,
        ),
        bad(
            "no CNI_CONTAINERID",
            4,
            vec![("CNI_CONTAINERID", None)],
            none,
        ),
        bad("no CNI_NETNS", 4, vec![("CNI_NETNS", None)], none),
        bad("no CNI_IFNAME", 4, vec![("CNI_IFNAME", None)], none),
        bad("no CNI_PATH", 4, vec![("CNI_PATH", None)], none),
        bad(
            "netns path missing",
            4,
            vec![("CNI_NETNS", Some("/var/run/netns/r2t-nope".into()))],
            none,
        ),
        bad(
            "netns not a namespace",
            4,
            vec![("CNI_NETNS", Some("/etc/hostname".into()))],
            none,
        ),
        bad(
            "container id with a slash",
            4,
            vec![("CNI_CONTAINERID", Some("../x".into()))],
            none,
        ),
        bad(
            "CNI_ARGS without =",
            4,
            vec![("CNI_ARGS", Some("IgnoreUnknown=1;oops".into()))],
            none,
        ),
        bad(
            "CNI_IFNAME not in pod",
            4,
            vec![("CNI_IFNAME", Some("eth7".into()))],
            none,
        ),
        bad(
            "cniVersion 0.2.0",
            1,
            vec![],
            set("cniVersion", json!("0.2.0")),
        ),
        bad("cniVersion missing", 7, vec![], del("cniVersion")),
        bad("subnet missing", 7, vec![], del("subnet")),
        bad(
            "subnet /33",
            7,
            vec![],
            set("subnet", json!("192.168.0.0/33")),
        ),
        bad("subnet not a string", 7, vec![], set("subnet", json!(20))),
        bad(
            "podRange outside subnet",
            7,
            vec![],
            set("podRange", json!("10.9.0.0/24")),
        ),
        bad(
            "podRange reversed",
            7,
            vec![],
            set("podRange", json!("192.168.1.20-192.168.1.10")),
        ),
        bad(
            "podRange holds the node address",
            7,
            vec![],
            set("podRange", json!("192.168.0.0/24")),
        ),
        bad(
            "unknown key",
            2,
            vec![],
            set("podrange", json!("192.168.1.0/24")),
        ),
        bad(
            "ifName too long",
            7,
            vec![],
            set("ifName", json!("ros0-much-too-long")),
        ),
        bad(
            "ifName equals CNI_IFNAME",
            7,
            vec![],
            set("ifName", json!("eth0")),
        ),
        bad("mode unknown", 7, vec![], set("mode", json!("ipvlan"))),
        bad(
            "bridge is the default-route uplink",
            7,
            vec![],
            |c: &mut Value| {
                c.as_object_mut().unwrap().remove("uplink");
                c["bridge"] = json!("eth0");
            },
        ),
        bad(
            "bridge names a device that is no bridge",
            7,
            vec![],
            set("bridge", json!("lo")),
        ),
        bad("uplink missing", 7, vec![], set("uplink", json!("wlan9"))),
        bad(
            "uplink without LAN address",
            7,
            vec![],
            set("uplink", json!("lo")),
        ),
        bad(
            "dataDir relative",
            7,
            vec![],
            set("dataDir", json!("var/lib/x")),
        ),
        bad(
            "namespaces not a list",
            7,
            vec![],
            set("namespaces", json!("robots")),
        ),
        bad(
            "primaryMulticast not a bool",
            7,
            vec![],
            set("primaryMulticast", json!("yes")),
        ),
        bad("prevResult missing", 7, vec![], del("prevResult")),
        bad("prevResult malformed", 7, vec![], |c: &mut Value| {
            c["prevResult"]["ips"][0]["address"] = json!("nope")
        }),
        bad(
            "pool exhausted",
            101,
            vec![],
            set("podRange", json!("192.168.1.9-192.168.1.9")),
        ),
        bad(
            "panic",
            199,
            vec![("ROS2_CNI_TEST_PANIC", Some("1".into()))],
            none,
        ),
        Bad {
            raw_stdin: Some("{\"cniVersion\": \"0.3.1\", "),
            ..bad("stdin not JSON", 6, vec![], none)
        },
        Bad {
            raw_stdin: Some(""),
            ..bad("stdin empty", 6, vec![], none)
        },
    ];
    assert!(cases.len() >= 20);
    for (i, case) in cases.iter().enumerate() {
        let mut s = spec(&format!("bad{i}"), 1);
        s.chain_ros2cni = false;
        let pod = tb.add_pod(&s).unwrap();
        let before = node_state(&tb, 1);
        let sysctls = |ns: &str| {
            ns_sh(
                ns,
                &[
                    "sysctl",
                    "net.ipv4.conf.eth0.proxy_arp",
                    "net.ipv4.conf.lo.forwarding",
                    "net.ipv4.conf.lo.proxy_arp",
                ],
            )
            .unwrap()
        };
        let sysctls_before = sysctls(&n.ns);
        let mut conf = tb.pod_ros2cni_conf(&spec(&s.name, 1), &pod.result);
        (case.conf)(&mut conf);
        let netns = pod.netns_path();
        let mut env: Vec<(&str, String)> = vec![
            ("CNI_COMMAND", "ADD".into()),
            ("CNI_CONTAINERID", pod.container_id.clone()),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", "/usr/lib/cni".into()),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=robots;K8S_POD_NAME=x".into(),
            ),
        ];
        for (k, v) in &case.env {
            env.retain(|(ek, _)| ek != k);
            if let Some(v) = v {
                env.push((k, v.clone()));
            }
        }
        let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let stdin = case
            .raw_stdin
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_else(|| conf.to_string().into_bytes());
        let r = tb
            .run_plugin_bytes(&n, &tb.opts.plugin, &env_ref, &stdin)
            .unwrap();
        assert!(!r.success, "{}: must fail", case.name);
        let j = r.json().unwrap_or_else(|| {
            panic!(
                "{}: stdout is not a CNI error JSON: {:?}",
                case.name, r.stdout
            )
        });
        assert_eq!(
            j["code"].as_u64(),
            Some(case.code),
            "{}: {}",
            case.name,
            r.stdout
        );
        assert!(
            j["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            case.name
        );
        assert!(j["cniVersion"].is_string());
        assert_eq!(
            r.stdout.trim().lines().count(),
            1,
            "{}: stdout holds only the error JSON",
            case.name
        );
        assert_eq!(
            node_state(&tb, 1),
            before,
            "{}: residue on the node",
            case.name
        );
        assert_eq!(
            sysctls(&n.ns),
            sysctls_before,
            "{}: node sysctls changed",
            case.name
        );
        assert!(
            !pod_has_link(&pod.ns, "ros0"),
            "{}: ros0 left in the pod",
            case.name
        );
        assert!(
            link_flags(&pod.ns, "eth0").contains(&"MULTICAST".to_string()),
            "{}: eth0 changed",
            case.name
        );
    }
}

#[test]
fn errors_name_the_field_or_variable() {
    let tb = bed(1);
    let mut s = spec("names", 1);
    s.chain_ros2cni = false;
    let pod = tb.add_pod(&s).unwrap();
    let n = tb.node(1);
    let run = |edit: &dyn Fn(&mut Value), env: &[(&str, &str)]| {
        let mut conf = tb.pod_ros2cni_conf(&spec("names", 1), &pod.result);
        edit(&mut conf);
        let netns = pod.netns_path();
        let mut e = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", pod.container_id.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        for (k, v) in env {
            e.retain(|(ek, _)| ek != k);
            if !v.is_empty() {
                e.push((k, v));
            }
        }
        tb.run_plugin(n, &tb.opts.plugin, &e, &conf).unwrap().stdout
    };
    assert!(run(&|c| c["podRange"] = json!("1.2.3.4/8"), &[]).contains("podRange"));
    assert!(run(&|c| c["podRange"] = json!("1.2.3.4/8"), &[]).contains("1.2.3.4/8"));
    assert!(run(&|c| c["subnet"] = json!("banana"), &[]).contains("subnet"));
    assert!(run(&|c| c["bogus"] = json!(1), &[]).contains("\\\"bogus\\\""));
    assert!(run(&|_| {}, &[("CNI_NETNS", "")]).contains("CNI_NETNS"));
    assert!(run(&|_| {}, &[("CNI_CONTAINERID", "")]).contains("CNI_CONTAINERID"));
    assert!(run(&|_| {}, &[("CNI_IFNAME", "")]).contains("CNI_IFNAME"));
    assert!(run(&|c| c["ifName"] = json!("a/b"), &[]).contains("ifName"));
    assert!(run(&|c| c["prevResult"]["ips"] = json!({}), &[]).contains("prevResult.ips"));
}

#[test]
fn lock_held_too_long_gives_try_again_later() {
    let tb = bed(1);
    let mut s = spec("locked", 1);
    s.chain_ros2cni = false;
    let pod = tb.add_pod(&s).unwrap();
    let n = tb.node(1);
    let data = n.data_dir.join("ros2-cni");
    std::fs::create_dir_all(&data).unwrap();
    let lock = data.join("lock");
    let holder = std::process::Command::new("flock")
        .args([lock.to_str().unwrap(), "sleep", "30"])
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _holder = Kill(holder);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = node_state(&tb, 1);
    let conf = tb.pod_ros2cni_conf(&spec("locked", 1), &pod.result);
    let netns = pod.netns_path();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", pod.container_id.as_str()),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
        ("ROS2_CNI_LOCK_TIMEOUT_MS", "300"),
    ];
    let r = tb.run_plugin(n, &tb.opts.plugin, &env, &conf).unwrap();
    assert_eq!(r.code(), Some(11), "{}", r.stdout);
    let after = node_state(&tb, 1);
    assert_eq!(after.leases, before.leases);
    assert_eq!(after.guard_elements, before.guard_elements);
    assert!(!after.links.iter().any(|l| l.starts_with("r2c")));
    assert!(!pod_has_link(&pod.ns, "ros0"));
}

#[test]
fn failure_midway_rolls_back_every_step() {
    let tb = bed(1);
    let n = tb.node(1);
    // a `pods` set of the wrong shape makes the last step (anti-spoofing) fail
    ns_sh(
        &n.ns,
        &[
            "nft",
            "add table bridge ros2_cni; add set bridge ros2_cni pods { type ipv4_addr; }",
        ],
    )
    .unwrap();
    let mut s = spec("rb", 1);
    s.chain_ros2cni = false;
    let pod = tb.add_pod(&s).unwrap();
    let before = node_state(&tb, 1);
    let r = tb
        .ros2cni_cmd("ADD", &pod, &spec("rb", 1), None, None)
        .unwrap();
    assert!(!r.success, "ADD must fail: {}", r.stdout);
    assert_eq!(r.code(), Some(100), "{}", r.stdout);
    let after = node_state(&tb, 1);
    assert_eq!(after.routes, before.routes, "route rolled back");
    assert_eq!(after.proxies, before.proxies, "proxy entry rolled back");
    assert_eq!(after.neighbours, before.neighbours, "neighbour rolled back");
    assert_eq!(after.leases, before.leases, "lease released");
    assert!(
        !after.links.iter().any(|l| l.starts_with("r2c")),
        "veth removed: {:?}",
        after.links
    );
    assert!(!pod_has_link(&pod.ns, "ros0"));
    assert!(
        link_flags(&pod.ns, "eth0").contains(&"MULTICAST".to_string()),
        "MULTICAST restored"
    );
    let log = std::fs::read_to_string(n.data_dir.join("ros2-cni.log")).unwrap_or_default();
    assert!(log.contains("undoing"), "the rollback is logged: {log}");
}

#[test]
fn add_refuses_an_attached_pod_and_a_foreign_ros0_with_code_104() {
    let tb = bed(1);
    let before = baseline(&tb, 1);
    // the same container twice: the second ADD changes nothing
    let s = spec("twice", 1);
    let pod = tb.add_pod(&s).unwrap();
    let attached = node_state(&tb, 1);
    let r = tb.ros2cni_cmd("ADD", &pod, &s, None, None).unwrap();
    assert!(!r.success);
    assert_eq!(r.code(), Some(104), "{}", r.stdout);
    assert!(r.stdout.contains(&pod.container_id), "{}", r.stdout);
    assert_eq!(
        node_state(&tb, 1),
        attached,
        "a refused ADD changes nothing"
    );
    assert_eq!(addrs(&pod.ns, "ros0"), vec![format!("{}/20", ip_of(&pod))]);
    tb.del_pod(&pod, &s).unwrap();

    // a pod that already has an interface of that name it did not get from us
    let mut s = spec("foreign", 1);
    s.chain_ros2cni = false;
    let pod = tb.add_pod(&s).unwrap();
    ns_sh(
        &pod.ns,
        &[
            "ip", "link", "add", "ros0", "type", "veth", "peer", "name", "other0",
        ],
    )
    .unwrap();
    s.chain_ros2cni = true;
    let r = tb.ros2cni_cmd("ADD", &pod, &s, None, None).unwrap();
    assert!(!r.success);
    assert_eq!(r.code(), Some(104), "{}", r.stdout);
    assert!(r.stdout.contains("ifName"), "names the key: {}", r.stdout);
    assert!(
        pod_has_link(&pod.ns, "other0"),
        "the pod's own link is left alone"
    );
    // only the primary's DEL: whatever ros2-cni left would show
    s.chain_ros2cni = false;
    tb.del_pod(&pod, &s).unwrap();
    assert_eq!(node_state(&tb, 1), before, "nothing left behind");
}

#[test]
fn del_of_a_stale_record_leaves_the_new_owners_address_entries() {
    // an earlier DEL released the address and was killed before removing its
    // record; the address went to a new pod: a retried DEL must not take the
    // new pod's route, neighbour and proxy entries with it
    let tb = bed(1);
    let s = spec("old", 1);
    let pod = tb.add_pod(&s).unwrap();
    let ip = ip_of(&pod);
    let data = tb.node(1).data_dir.join("ros2-cni");
    // the new owner: its lease and its record (they are always written
    // together; a lease without a record is a leftover that DEL reclaims)
    std::fs::write(data.join(format!("leases/{ip}")), "newpod_eth0").unwrap();
    let old_record = format!("attachments/{}_eth0.json", pod.container_id);
    std::fs::copy(
        data.join(&old_record),
        data.join("attachments/newpod_eth0.json"),
    )
    .unwrap();
    tb.del_pod(&pod, &s).unwrap();
    let st = node_state(&tb, 1);
    assert!(
        st.routes.contains(&format!("{ip} ros2br0")),
        "route kept: {:?}",
        st.routes
    );
    assert!(
        st.neighbours.contains(&format!("{ip} ros2br0")),
        "neighbour kept"
    );
    assert!(
        st.proxies.contains(&format!("{ip} eth0")),
        "proxy entry kept"
    );
    assert!(
        st.leases.contains(&ip.to_string()),
        "the new owner's lease kept"
    );
    assert_eq!(
        st.attachments.iter().collect::<Vec<_>>(),
        ["newpod_eth0.json"],
        "the stale record is gone, the new owner's stays"
    );
    assert!(
        !st.links.iter().any(|l| l.starts_with("r2c")),
        "the old pod's link is gone"
    );
}

#[test]
fn a_second_network_neither_steals_ros0_nor_collects_the_first_ones_pods() {
    let tb = bed(1);
    let n = tb.node(1);
    let s = spec("first", 1).version("1.1.0");
    let pod = tb.add_pod(&s).unwrap();
    let before = node_state(&tb, 1);
    // ADD from another attachment of the same pod (another CNI_IFNAME) that
    // also wants ros0: refused, the live ros0 stays
    let mut conf = tb.pod_ros2cni_conf(
        &s.clone().extra(json!({"primaryMulticast": true})),
        &pod.result,
    );
    conf["name"] = json!("second-net");
    let netns = pod.netns_path();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", pod.container_id.as_str()),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", "/usr/lib/cni"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=robots;K8S_POD_NAME=first",
        ),
    ];
    let r = tb.run_plugin(n, &tb.opts.plugin, &env, &conf).unwrap();
    assert_eq!(r.code(), Some(104), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("{}_eth0", pod.container_id)),
        "names the owner: {}",
        r.stdout
    );
    assert_eq!(node_state(&tb, 1), before, "nothing changed");
    assert_eq!(addrs(&pod.ns, "ros0"), vec![format!("{}/20", ip_of(&pod))]);
    // GC of another network with an empty list leaves this network's pods
    let mut gc_conf = tb.ros2cni_conf(n, "1.1.0", &json!({}));
    gc_conf["name"] = json!("second-net");
    gc_conf["cni.dev/valid-attachments"] = json!([]);
    let r = gc(&tb, 1, &gc_conf);
    assert!(r.success, "{}", r.stdout);
    assert_eq!(
        node_state(&tb, 1),
        before,
        "another network's GC took nothing"
    );
    // this network's GC does
    gc_conf["name"] = json!("k8s-pod-network");
    let r = gc(&tb, 1, &gc_conf);
    assert!(r.success, "{}", r.stdout);
    assert!(
        node_state(&tb, 1).leases.is_empty(),
        "its own network's GC collects it"
    );
}

#[test]
fn a_leftover_ros0_whose_address_moved_to_another_pod_is_still_a_leftover() {
    let tb = bed(1);
    let s = spec("p", 1);
    let p = tb.add_pod(&s).unwrap();
    let q = tb.add_pod(&spec("q", 1)).unwrap();
    // DEL of p (its namespace stays), then a leftover ros0 in p that carries
    // the MAC of q's address, as if p had held it before q
    let r = tb.ros2cni_cmd("DEL", &p, &s, None, None).unwrap();
    assert!(r.success, "{}", r.stdout);
    let q_mac = ip_json(&q.ns, &["link", "show", "ros0"]).unwrap()[0]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    ns_sh(
        &p.ns,
        &[
            "ip", "link", "add", "ros0", "address", &q_mac, "type", "veth", "peer", "name", "tmp0",
        ],
    )
    .unwrap();
    let primary = primary_result(&p);
    let r = tb.ros2cni_cmd("ADD", &p, &s, Some(&primary), None).unwrap();
    assert!(
        r.success,
        "the leftover is replaced: {} {}",
        r.stdout, r.stderr
    );
    assert_ne!(
        ip_json(&p.ns, &["link", "show", "ros0"]).unwrap()[0]["address"],
        serde_json::json!(q_mac)
    );
    assert_eq!(
        addrs(&q.ns, "ros0"),
        vec![format!("{}/20", ip_of(&q))],
        "q untouched"
    );
    assert!(node_state(&tb, 1).leases.contains(&ip_of(&q).to_string()));
}
