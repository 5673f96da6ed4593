//! The node agent: RTPS multicast between pods, robot computers and the LAN.

use crate::common::*;
use ros2_cni::lab::testbed::{
    drain, http_get, mcast_receiver, mcast_sender, Pod, Testbed, LAPTOP_IP,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

const SPDP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);

/// Receivers keyed by name, each with the local address they joined on.
pub fn receivers(
    list: &[(&str, &str, Ipv4Addr)],
    group: Ipv4Addr,
    port: u16,
) -> BTreeMap<String, UdpSocket> {
    list.iter()
        .map(|(name, ns, local)| {
            (
                name.to_string(),
                mcast_receiver(ns, group, port, *local).unwrap(),
            )
        })
        .collect()
}

/// Sends `n` numbered datagrams and returns, per receiver, how often each number arrived.
/// Where numbered datagrams come from: a namespace, the local address to
/// send from, and the TTL.
pub struct Sender<'a>(pub &'a str, pub Ipv4Addr, pub u32);

pub fn send_and_count(
    from: Sender,
    to: (Ipv4Addr, u16),
    n: u32,
    rx: &BTreeMap<String, UdpSocket>,
    tag: &str,
) -> BTreeMap<String, BTreeMap<u32, u32>> {
    send_and_count_within(from, to, n, rx, tag, Duration::from_secs(5))
}

/// [`send_and_count`] waiting at most `patience` for every receiver to
/// have all `n` (for tests that retry in rounds).
pub fn send_and_count_within(
    Sender(from_ns, local, ttl): Sender,
    (group, port): (Ipv4Addr, u16),
    n: u32,
    rx: &BTreeMap<String, UdpSocket>,
    tag: &str,
    patience: Duration,
) -> BTreeMap<String, BTreeMap<u32, u32>> {
    let tx = mcast_sender(from_ns, local, ttl).unwrap();
    for i in 0..n {
        tx.send_to(format!("{tag}:{i}").as_bytes(), (group, port))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen: BTreeMap<String, BTreeMap<u32, u32>> =
        rx.keys().map(|k| (k.clone(), BTreeMap::new())).collect();
    let take = |seen: &mut BTreeMap<String, BTreeMap<u32, u32>>| {
        for (name, s) in rx {
            for p in drain(s) {
                let p = String::from_utf8_lossy(&p).to_string();
                if let Some(i) = p
                    .strip_prefix(&format!("{tag}:"))
                    .and_then(|i| i.parse().ok())
                {
                    *seen.get_mut(name).unwrap().entry(i).or_default() += 1;
                }
            }
        }
    };
    // until every receiver has all n (or `patience`: a receiver that should
    // get nothing waits it out), then 300 ms more for duplicates
    let deadline = std::time::Instant::now() + patience;
    loop {
        take(&mut seen);
        if seen.values().all(|m| m.len() as u32 >= n) || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    take(&mut seen);
    seen
}

pub fn exactly_once(n: u32) -> BTreeMap<u32, u32> {
    (0..n).map(|i| (i, 1)).collect()
}

pub fn three_nodes_with_agents(wifi: bool) -> (Testbed, Vec<Pod>) {
    let tb = bed_with(3, |o| o.wifi = wifi);
    for i in 1..=3 {
        tb.start_agent(tb.node(i), &json!({})).unwrap();
    }
    let pods = vec![
        tb.add_pod(&spec("a1", 1)).unwrap(),
        tb.add_pod(&spec("a2", 1)).unwrap(),
        tb.add_pod(&spec("b1", 2)).unwrap(),
        tb.add_pod(&spec("c1", 3)).unwrap(),
    ];
    (tb, pods)
}

#[test]
fn a_member_in_the_nodes_own_network_gets_each_datagram_once_and_nothing_echoes() {
    // a ROS 2 process in node 1's own network (host network) joined the
    // group on the uplink: the kernel loops the forwarder's copies back to
    // the node; they must not be forwarded again
    let (tb, p) = three_nodes_with_agents(false);
    let lap = tb.laptop.clone().unwrap();
    let (a1, a2, b1) = (&p[0], &p[1], &p[2]);
    let n1 = tb.node(1);
    for (from, from_ip, tag) in [(&a1.ns, ip_of(a1), "pod"), (&lap, LAPTOP_IP, "lan")] {
        let rx = receivers(
            &[
                ("host-n1", &n1.ns, n1.ip),
                ("a2", &a2.ns, ip_of(a2)),
                ("b1", &b1.ns, ip_of(b1)),
            ],
            SPDP,
            7400,
        );
        let got = send_and_count(Sender(from, from_ip, 1), (SPDP, 7400), 5, &rx, tag);
        for (name, seen) in &got {
            assert_eq!(seen, &exactly_once(5), "{tag} -> {name}: {got:?}");
        }
    }
}

#[test]
fn ttl1_rtps_arrives_exactly_once_everywhere_and_other_groups_stay_local() {
    let (tb, p) = three_nodes_with_agents(true);
    let lap = tb.laptop.clone().unwrap();
    let (a1, a2, b1, c1) = (&p[0], &p[1], &p[2], &p[3]);
    let port = 7400;
    let rx = receivers(
        &[
            ("a2", &a2.ns, ip_of(a2)),
            ("b1", &b1.ns, ip_of(b1)),
            ("c1", &c1.ns, ip_of(c1)),
            ("laptop", &lap, LAPTOP_IP),
        ],
        SPDP,
        port,
    );
    let got = send_and_count(
        Sender(&a1.ns, ip_of(a1), 1),
        (SPDP, port),
        5,
        &rx,
        "from-a1",
    );
    for (name, seen) in &got {
        assert_eq!(
            seen,
            &exactly_once(5),
            "pod a1 -> {name}: each TTL-1 SPDP datagram exactly once"
        );
    }

    let rx = receivers(
        &[
            ("a1", &a1.ns, ip_of(a1)),
            ("a2", &a2.ns, ip_of(a2)),
            ("b1", &b1.ns, ip_of(b1)),
            ("c1", &c1.ns, ip_of(c1)),
        ],
        SPDP,
        port,
    );
    let got = send_and_count(
        Sender(&lap, LAPTOP_IP, 1),
        (SPDP, port),
        5,
        &rx,
        "from-laptop",
    );
    for (name, seen) in &got {
        assert_eq!(seen, &exactly_once(5), "laptop -> {name}: exactly once");
    }

    // another group stays where it was sent, TTL 1 or not
    for ttl in [1, 32] {
        let rx = receivers(
            &[
                ("a2", &a2.ns, ip_of(a2)),
                ("b1", &b1.ns, ip_of(b1)),
                ("c1", &c1.ns, ip_of(c1)),
                ("laptop", &lap, LAPTOP_IP),
            ],
            OTHER,
            port,
        );
        let got = send_and_count(
            Sender(&a1.ns, ip_of(a1), ttl),
            (OTHER, port),
            3,
            &rx,
            &format!("other-{ttl}"),
        );
        assert_eq!(got["a2"], exactly_once(3), "same node: L2 delivery");
        for name in ["b1", "c1", "laptop"] {
            assert!(
                got[name].is_empty(),
                "{OTHER} with TTL {ttl} must not reach {name}: {:?}",
                got[name]
            );
        }
    }

    // the agent's own account of it: the TTL and forward counters (and the
    // nftables forwarder's count of other groups) are read at the next
    // reconcile (every 2 s): a1's 5 and the laptop's 5; a1's 6 to OTHER
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = tb.agent_status(tb.node(1)).unwrap();
        let raised = st["ttlRaised"].as_u64().unwrap_or(0);
        let other = st["dropped"]["notRtps"].as_u64().unwrap_or(0);
        if raised >= 10 && other >= 6 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "TTL rule counted {raised} packets, expected >= 10; other groups {other}, expected >= 6"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = tb.agent_status(tb.node(1)).unwrap();
    let fwd = st["forwarded"].as_array().unwrap();
    assert!(
        fwd.iter()
            .any(|f| f["direction"] == "pods_to_lan" && f["packets"].as_u64() >= Some(5)),
        "{st}"
    );
    assert!(
        fwd.iter()
            .any(|f| f["direction"] == "lan_to_pods" && f["packets"].as_u64() >= Some(5)),
        "{st}"
    );
    assert!(st["dropped"]["notRtps"].as_u64() >= Some(6), "{st}");
    let metrics = http_get(&tb.node(1).ns, "127.0.0.1:9741", "/metrics").unwrap();
    for want in [
        "ros2cni_forwarded_packets_total{group=\"239.255.0.1\",direction=\"pods_to_lan\"} 5",
        "ros2cni_forwarded_packets_total{group=\"239.255.0.1\",direction=\"lan_to_pods\"} 5",
        "ros2cni_pods_attached 2",
        "ros2cni_multicast_routes ",
        "ros2cni_dropped_packets_total{reason=\"not_rtps\"}",
        "ros2cni_agent_restarts_total 0",
    ] {
        assert!(metrics.contains(want), "metrics lack {want:?}:\n{metrics}");
    }
    // values, not just names
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no series {series}:\n{metrics}"))
    };
    for dir in ["pods_to_lan", "lan_to_pods"] {
        let bytes = value(&format!(
            "ros2cni_forwarded_bytes_total{{group=\"239.255.0.1\",direction=\"{dir}\"}}"
        ));
        assert!(bytes >= 5.0 * 28.0, "{dir}: 5 datagrams, {bytes} bytes");
    }
    assert!(value("ros2cni_ttl_raised_packets_total") >= 10.0);
    // one entry for the group, and the kernel forwarder's catch-all
    let entries = match st["forwarder"]["kind"].as_str() {
        Some("kernel") => 2.0,
        Some("nftables") => 1.0,
        other => panic!("unknown forwarder {other:?}"),
    };
    assert_eq!(value("ros2cni_multicast_routes"), entries);
    assert!(
        value("ros2cni_dropped_packets_total{reason=\"not_rtps\"}") >= 1.0,
        "{OTHER} with TTL 32 reached the router and was not forwarded"
    );
    assert_eq!(value("ros2cni_healthy"), 1.0);
    assert_eq!(
        tb.wifi_drops().unwrap(),
        0,
        "nothing left a node with a foreign MAC"
    );
}

/// A raw IGMP socket in `ns`: sees every IGMP packet there.
fn igmp_socket(ns: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let n = ros2_cni::kernel::netns::Netns::open(format!("/var/run/netns/{ns}")).unwrap();
    n.run(|| {
        // SAFETY: a raw socket we own; the options are plain ints.
        unsafe {
            let fd = libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                libc::IPPROTO_IGMP,
            );
            assert!(
                fd >= 0,
                "raw IGMP socket: {}",
                std::io::Error::last_os_error()
            );
            std::os::fd::OwnedFd::from_raw_fd(fd)
        }
    })
    .unwrap()
}

/// (source, IGMP type, group) of the IGMP packets received so far.
fn igmp_seen(fd: &std::os::fd::OwnedFd) -> Vec<(Ipv4Addr, u8, Ipv4Addr)> {
    use std::os::fd::AsRawFd;
    let mut out = vec![];
    let mut buf = [0u8; 1500];
    loop {
        // SAFETY: recv into a stack buffer.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 28 {
            return out;
        }
        let ihl = ((buf[0] & 0x0f) as usize) * 4;
        let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        let g = &buf[ihl + 4..ihl + 8];
        out.push((src, buf[ihl], Ipv4Addr::new(g[0], g[1], g[2], g[3])));
    }
}

#[test]
fn agent_reports_membership_on_the_uplink_and_answers_queries() {
    let tb = bed(1);
    let lap = tb.laptop.clone().unwrap();
    // the laptop's stack hands IGMP for a group to raw sockets only if it is a member
    let _member = mcast_receiver(&lap, SPDP, 7400, LAPTOP_IP).unwrap();
    let sock = igmp_socket(&lap);
    let node = tb.node(1);
    tb.start_agent(node, &json!({"logFormat": "json"})).unwrap();
    // the health socket is root's alone
    use std::os::unix::fs::PermissionsExt;
    let health = node.data_dir.join("ros2-cni/agent.sock");
    assert_eq!(
        std::fs::metadata(&health).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // logFormat json: every log line is a JSON object
    let log = tb.log("agent-n1");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["fields"]["message"].is_string(), "{l}");
    }
    // two unsolicited reports at start (reconcile period 2 s), then none for a minute
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while tb.agent_status(node).unwrap()["igmpReportsSent"].as_u64() < Some(2) {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not report twice"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(100));
    let reports: Vec<_> = igmp_seen(&sock)
        .into_iter()
        .filter(|(s, t, g)| *s == node.ip && *t == 0x16 && *g == SPDP)
        .collect();
    assert!(
        reports.len() >= 2,
        "IGMPv2 reports for {SPDP} from {}: {reports:?}",
        node.ip
    );
    // a general query from the laptop is answered at once
    let q = ros2_cni::kernel::mroute::igmp_v2(0x11, Ipv4Addr::UNSPECIFIED);
    {
        use std::os::fd::AsRawFd;
        let ifaddr = libc::in_addr {
            s_addr: u32::from_ne_bytes(LAPTOP_IP.octets()),
        };
        // SAFETY: setsockopt with an in_addr on our raw socket.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                &ifaddr as *const _ as *const libc::c_void,
                4,
            )
        };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([224, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto on our raw socket.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                q.as_ptr() as *const libc::c_void,
                8,
                0,
                &addr as *const _ as *const libc::sockaddr,
                16,
            )
        };
        assert_eq!(
            n,
            8,
            "sending the query: {}",
            std::io::Error::last_os_error()
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        tb.agent_status(node).unwrap()["igmpReportsSent"].as_u64(),
        Some(3),
        "one answer to the query"
    );
    let answers: Vec<_> = igmp_seen(&sock)
        .into_iter()
        .filter(|(s, t, _)| *s == node.ip && *t == 0x16)
        .collect();
    assert!(!answers.is_empty(), "the agent answers a general query");
    // the node itself is not a member: nothing it forwards comes back to it
    let members =
        ros2_cni::lab::testbed::ns_sh(&node.ns, &["ip", "maddr", "show", "dev", "eth0"]).unwrap();
    assert!(!members.contains("239.255.0.1"), "{members}");
}

/// Seconds until the first TTL-1 SPDP datagram sent every 100 ms from `from`
/// reaches `to`, or None within `limit`.
fn first_arrival(from: &Pod, to: &Pod, limit: Duration) -> Option<f64> {
    let rx = mcast_receiver(&to.ns, SPDP, 7400, ip_of(to)).unwrap();
    let tx = mcast_sender(&from.ns, ip_of(from), 1).unwrap();
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        tx.send_to(b"probe", (SPDP, 7400)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        if !drain(&rx).is_empty() {
            return Some(start.elapsed().as_secs_f64());
        }
    }
    None
}

fn plugin_status(tb: &Testbed, node: usize) -> ros2_cni::lab::testbed::PluginRun {
    let n = tb.node(node);
    let conf = tb.ros2cni_conf(n, "1.1.0", &json!({}));
    tb.run_plugin(
        n,
        &tb.opts.plugin,
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")],
        &conf,
    )
    .unwrap()
}

#[test]
fn kill_9_and_restart_keeps_unicast_and_restores_multicast_within_2s() {
    let tb = bed(2);
    let agent1 = tb.start_agent(tb.node(1), &json!({})).unwrap();
    tb.start_agent(tb.node(2), &json!({})).unwrap();
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    assert!(
        first_arrival(&a1, &b1, Duration::from_secs(2)).is_some(),
        "multicast works before the kill"
    );
    assert!(plugin_status(&tb, 1).success);
    let forwarder = tb.agent_status(tb.node(1)).unwrap()["forwarder"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // unicast a1 -> b1, 20 pings a second, across the kill and the restart
    let pinger = tb
        .spawn(
            &a1.ns,
            &[
                "ping",
                "-n",
                "-q",
                "-i",
                "0.05",
                "-c",
                "80",
                "-W",
                "1",
                &ip_of(&b1).to_string(),
            ],
            "unicast",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    tb.kill(agent1);
    let st = plugin_status(&tb, 1);
    assert_eq!(
        st.code(),
        Some(51),
        "STATUS reports the dead agent: {}",
        st.stdout
    );
    match forwarder.as_str() {
        // the kernel flushes a dead router's routes with its socket
        "kernel" => {
            let mroutes =
                ros2_cni::lab::testbed::ns_sh(&tb.node(1).ns, &["ip", "mroute", "show"]).unwrap();
            assert!(
                mroutes.trim().is_empty(),
                "the kernel flushed the dead agent's routes: {mroutes}"
            );
            assert!(
                first_arrival(&a1, &b1, Duration::from_millis(800)).is_none(),
                "no multicast routing while the agent is down"
            );
        }
        // the nftables forwarder's rules are the kernel's: they outlive the agent
        "nftables" => assert!(
            first_arrival(&a1, &b1, Duration::from_secs(2)).is_some(),
            "the nftables forwarder keeps forwarding while the agent is down"
        ),
        other => panic!("unknown forwarder {other:?}"),
    }

    let t0 = std::time::Instant::now();
    tb.start_agent(tb.node(1), &json!({})).unwrap();
    let up = t0.elapsed().as_secs_f64();
    first_arrival(&a1, &b1, Duration::from_secs(5)).expect("multicast comes back");
    let total = t0.elapsed().as_secs_f64();
    eprintln!("agent answering {up:.2} s after restart; first forwarded datagram {total:.2} s after restart");
    let bound = 2.0 * time_scale();
    assert!(
        total <= bound,
        "multicast must be back within {bound} s of the restart (took {total:.2} s)"
    );
    assert!(plugin_status(&tb, 1).success, "STATUS healthy again");
    assert_eq!(tb.agent_status(tb.node(1)).unwrap()["restarts"], 1);

    let _ = tb.wait_exit(pinger, Duration::from_secs(10));
    let out = tb.log("unicast");
    assert!(
        out.contains("80 packets transmitted, 80 received"),
        "unicast never broke:\n{out}"
    );
}

#[test]
fn sighup_reloads_and_sigterm_keeps_pods_connected() {
    let tb = bed(2);
    let agent1 = tb.start_agent(tb.node(1), &json!({})).unwrap();
    tb.start_agent(tb.node(2), &json!({})).unwrap();
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let n1 = tb.node(1);
    let groups = |ns: &str| -> Vec<String> {
        let j = ros2_cni::lab::testbed::nft_json(ns, &["set", "ip", "ros2_cni", "groups"]).unwrap();
        let mut out = vec![];
        for item in j["nftables"].as_array().unwrap() {
            for e in item["set"]["elem"].as_array().into_iter().flatten() {
                out.push(e.as_str().unwrap_or_default().to_owned());
            }
        }
        out
    };
    // the RTPS group and Zenoh's scouting group (extraMulticast's default)
    let mut g = groups(&n1.ns);
    g.sort();
    assert_eq!(g, vec!["224.0.0.224", "239.255.0.1"]);
    // add a group and reload
    tb.agent_config(n1, &json!({"groups": ["239.255.0.1", "239.255.0.2"]}))
        .unwrap();
    tb.signal(agent1, nix::sys::signal::Signal::SIGHUP);
    wait_for(3, "reload applied the new group to the TTL rule", || {
        let mut g = groups(&n1.ns);
        g.sort();
        g == ["224.0.0.224", "239.255.0.1", "239.255.0.2"]
    });
    let st = tb.agent_status(n1).unwrap();
    assert_eq!(st["reloads"], 1);
    assert_eq!(st["groups"], json!(["239.255.0.1", "239.255.0.2"]));
    // a broken config file is refused and the agent keeps running
    std::fs::write(n1.data_dir.join("agent.json"), b"{not json").unwrap();
    tb.signal(agent1, nix::sys::signal::Signal::SIGHUP);
    wait_for(3, "the failed reload in the log", || {
        tb.log("agent-n1")
            .contains("reload failed, keeping the running configuration")
    });
    assert_eq!(
        tb.agent_status(n1).unwrap()["reloads"],
        1,
        "bad reload ignored"
    );
    // raiseTtl and fastPath switched off by a reload: the TTL table and the
    // tc programs go
    // whole lines: `table ip ros2_cni_limits` is another table
    let tables = |ns: &str| {
        ros2_cni::lab::testbed::ns_sh(ns, &["nft", "list", "tables"])
            .unwrap()
            .lines()
            .map(|l| format!("{}\n", l.trim()))
            .collect::<String>()
    };
    let lan_filters = |ns: &str| {
        ros2_cni::lab::testbed::ns_sh(ns, &["tc", "filter", "show", "dev", "eth0", "ingress"])
            .unwrap_or_default()
    };
    assert!(tables(&n1.ns).contains("table ip ros2_cni\n"));
    wait_for(5, "the fast path on the uplink", || {
        lan_filters(&n1.ns).contains("r2c_lan")
    });
    tb.agent_config(n1, &json!({"raiseTtl": false, "fastPath": false}))
        .unwrap();
    tb.signal(agent1, nix::sys::signal::Signal::SIGHUP);
    wait_for(3, "the reload", || {
        tb.agent_status(n1).unwrap()["reloads"] == 2
    });
    assert!(
        !tables(&n1.ns).lines().any(|l| l == "table ip ros2_cni"),
        "raiseTtl false removes the TTL table: {}",
        tables(&n1.ns)
    );
    assert!(
        !lan_filters(&n1.ns).contains("r2c_lan"),
        "fastPath false removes the programs: {}",
        lan_filters(&n1.ns)
    );
    assert_eq!(tb.agent_status(n1).unwrap()["fastPath"]["enabled"], false);
    assert!(
        ros2_cni::lab::testbed::ping(&b1.ns, ip_of(&a1)),
        "unicast on the normal path"
    );
    // a mode change needs a restart: refused, the running config kept
    tb.agent_config(n1, &json!({"mode": "macvlan"})).unwrap();
    tb.signal(agent1, nix::sys::signal::Signal::SIGHUP);
    wait_for(3, "the refusal in the log", || {
        tb.log("agent-n1")
            .contains("reload refused: the mode changed")
    });
    let st = tb.agent_status(n1).unwrap();
    assert_eq!(st["reloads"], 2, "mode change refused");
    assert_eq!(st["mode"], "routed");
    // back to the defaults: both return
    tb.agent_config(n1, &json!({})).unwrap();
    tb.signal(agent1, nix::sys::signal::Signal::SIGHUP);
    wait_for(5, "TTL table and fast path back", || {
        tables(&n1.ns).contains("table ip ros2_cni\n") && lan_filters(&n1.ns).contains("r2c_lan")
    });

    tb.signal(agent1, nix::sys::signal::Signal::SIGTERM);
    let exit = tb
        .wait_exit(agent1, Duration::from_secs(3))
        .expect("the agent exits on SIGTERM");
    assert!(
        exit.success(),
        "clean exit: {exit:?}\n{}",
        tb.log("agent-n1")
    );
    let tables = tables(&n1.ns);
    assert!(
        !tables.contains("table ip ros2_cni\n"),
        "the agent-only TTL table is gone: {tables}"
    );
    for forwarder_table in ["table ip ros2_cni_fwd\n", "table ip ros2_cni_count\n"] {
        assert!(
            !tables.contains(forwarder_table),
            "the forwarder's tables are gone: {tables}"
        );
    }
    assert!(
        tables.contains("table bridge ros2_cni\n"),
        "pod-facing anti-spoofing stays: {tables}"
    );
    assert!(
        !n1.data_dir.join("ros2-cni/agent.sock").exists(),
        "socket removed"
    );
    let st = node_state(&tb, 1);
    assert!(
        st.proxies.contains(&format!("{} eth0", ip_of(&a1))),
        "proxy ARP entry stays"
    );
    assert!(
        ros2_cni::lab::testbed::ping(&b1.ns, ip_of(&a1)),
        "unicast to the pod still works without the agent"
    );
}

#[test]
fn start_order_does_not_matter_and_lost_state_comes_back() {
    let tb = bed(2);
    // node 1: the agent first, on a node that has never seen a pod
    let n1 = tb.node(1);
    tb.start_agent(n1, &json!({})).unwrap();
    let tables = ros2_cni::lab::testbed::ns_sh(&n1.ns, &["nft", "list", "tables"]).unwrap();
    assert!(
        tables.contains("table bridge ros2_cni") && tables.contains("table ip ros2_cni"),
        "{tables}"
    );
    assert!(
        node_state(&tb, 1).links.contains("ros2br0"),
        "the agent made the bridge"
    );
    // node 2: the plugin first, the agent later
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    tb.start_agent(tb.node(2), &json!({})).unwrap();
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    assert!(
        first_arrival(&a1, &b1, Duration::from_secs(2)).is_some(),
        "a1 -> b1"
    );
    assert!(
        first_arrival(&b1, &a1, Duration::from_secs(2)).is_some(),
        "b1 -> a1"
    );
    // someone flushes our tables: the agent puts them back within a reconcile period
    ros2_cni::lab::testbed::ns_sh(&n1.ns, &["nft", "delete", "table", "ip", "ros2_cni"]).unwrap();
    ros2_cni::lab::testbed::ns_sh(
        &n1.ns,
        &["nft", "flush", "chain", "bridge", "ros2_cni", "pod_in"],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let rules = ros2_cni::lab::testbed::ns_sh(&n1.ns, &["nft", "list", "ruleset"]).unwrap();
    assert!(
        rules.contains("ros2-cni v1 rtps-ttl") && rules.contains("ros2-cni v1 pod-drop"),
        "{rules}"
    );
    assert!(
        guard_elements(&n1.ns)
            .iter()
            .any(|e| e.ends_with(&ip_of(&a1).to_string())),
        "pod elements survive a rule repair"
    );
    assert!(
        first_arrival(&a1, &b1, Duration::from_secs(2)).is_some(),
        "TTL-1 forwarding works again"
    );
}

#[test]
fn two_hundred_fifty_pods_on_one_node_all_receive_discovery() {
    let tb = bed(1);
    tb.start_agent(tb.node(1), &json!({})).unwrap();
    let specs: Vec<_> = (0..250).map(|i| spec(&format!("m{i}"), 1)).collect();
    let pods: Vec<Pod> = std::thread::scope(|s| {
        let chunks: Vec<_> = specs
            .chunks(32)
            .map(|c| {
                s.spawn(|| {
                    c.iter()
                        .map(|sp| tb.add_pod(sp).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(pods.len(), 250);
    // ADD returns before the kernel's link watcher has run for the newest
    // veths: until it does, their bridge port is not forwarding and a frame
    // flooded to it is lost. Wait for all 250 ports, not for a while.
    let node_ns = tb.node(1).ns.clone();
    wait_for(30, "250 bridge ports forwarding", || {
        let ports =
            ros2_cni::lab::testbed::ip_json(&node_ns, &["-d", "link", "show", "master", "ros2br0"])
                .unwrap_or_default();
        ports
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["linkinfo"]["info_slave_data"]["state"] == "forwarding")
            .count()
            >= 250
    });
    let rx: Vec<UdpSocket> = pods
        .iter()
        .map(|p| mcast_receiver(&p.ns, SPDP, 7400, ip_of(p)).unwrap())
        .collect();
    let lap = tb.laptop.clone().unwrap();
    let tx = mcast_sender(&lap, LAPTOP_IP, 1).unwrap();
    for i in 0..3 {
        tx.send_to(format!("spdp-{i}").as_bytes(), (SPDP, 7400))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    // every pod gets each datagram exactly once: wait (up to 5 s, for a
    // loaded machine) until all have 3, then look once more for extras
    let mut got = vec![0usize; pods.len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        for (n, s) in got.iter_mut().zip(&rx) {
            *n += drain(s).len();
        }
        if got.iter().all(|&n| n >= 3) || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    for (n, s) in got.iter_mut().zip(&rx) {
        *n += drain(s).len();
    }
    let wrong: Vec<(&str, usize)> = pods
        .iter()
        .zip(&got)
        .filter(|(_, &n)| n != 3)
        .map(|(p, &n)| (p.name.as_str(), n))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of 250 pods did not get the 3 datagrams exactly once (pod, count): {wrong:?}",
        wrong.len()
    );
    assert_eq!(
        tb.agent_status(tb.node(1)).unwrap()["vifs"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "one bridge VIF serves them all"
    );
}

#[test]
fn the_agent_puts_back_pod_state_that_a_firewall_reload_or_route_flush_removed() {
    let tb = bed(2);
    for i in 1..=2 {
        tb.start_agent(tb.node(i), &json!({})).unwrap();
    }
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let n1 = tb.node(1);
    assert!(ros2_cni::lab::testbed::ping(&b1.ns, ip_of(&a1)));
    // what `nft flush ruleset` and a route/neighbour flush do to a node
    let ip = ip_of(&a1).to_string();
    ros2_cni::lab::testbed::ns_sh(&n1.ns, &["nft", "flush", "ruleset"]).unwrap();
    for args in [
        vec!["ip", "route", "del", &format!("{ip}/32"), "dev", "ros2br0"],
        vec!["ip", "neigh", "del", "proxy", &ip, "dev", "eth0"],
        vec!["ip", "neigh", "del", &ip, "dev", "ros2br0"],
    ] {
        let mut full = vec!["ip", "-n", &n1.ns];
        full.extend(&args[1..]);
        ros2_cni::lab::testbed::sh(&full).unwrap();
    }
    let before = node_state(&tb, 1);
    assert!(before.guard_elements.is_empty() && !before.proxies.iter().any(|p| p.starts_with(&ip)));
    wait_for(
        5,
        "the pod's element, route, proxy and neighbour entries come back",
        || {
            let st = node_state(&tb, 1);
            st.guard_elements.iter().any(|e| e.ends_with(&ip))
                && st.routes.contains(&format!("{ip} ros2br0"))
                && st.proxies.contains(&format!("{ip} eth0"))
                && st.neighbours.contains(&format!("{ip} ros2br0"))
        },
    );
    // a few tries: the other node's neighbour entry for the pod may be
    // re-resolving (on a loaded machine one ping of 2 s was sometimes short)
    wait_for(8, "the pod is reachable again", || {
        ros2_cni::lab::testbed::ping(&b1.ns, ip_of(&a1))
    });
    // the pass logs its repairs when it writes its results back, after the
    // kernel work the checks above saw
    wait_for(3, "the repair in the agent's log", || {
        tb.log("agent-n1")
            .contains("repaired pod state: anti-spoofing element for robots/a1")
    });
}

#[test]
fn del_hands_the_slow_teardown_to_the_agent_and_an_immediate_re_add_works() {
    let tb = bed(1);
    tb.start_agent(tb.node(1), &json!({})).unwrap();
    let before = baseline(&tb, 1);
    let s = spec("again", 1);
    let pod = tb.add_pod(&s).unwrap();
    // DEL only (the pod's namespace stays), then ADD the same container at once
    let r = tb.ros2cni_cmd("DEL", &pod, &s, None, None).unwrap();
    assert!(r.success, "{}", r.stdout);
    // as a runtime does it: the chain runs again, so prevResult is the
    // primary's result, without the ros0 of the first ADD
    let primary = primary_result(&pod);
    let r = tb
        .ros2cni_cmd("ADD", &pod, &s, Some(&primary), None)
        .unwrap();
    assert!(
        r.success,
        "re-ADD right after DEL: {} {}",
        r.stdout, r.stderr
    );
    let res = r.json().unwrap();
    let ip = ros2_cni::lab::testbed::ros_ip_of(&res, &pod.netns_path()).unwrap();
    let st = node_state(&tb, 1);
    assert!(
        st.guard_elements
            .iter()
            .any(|e| e.ends_with(&ip.to_string())),
        "re-ADD got {ip}: {st:?}"
    );
    assert!(
        ros2_cni::lab::testbed::ping(&pod.ns, tb.node(1).ip),
        "the re-added pod works"
    );
    // and a plain DEL leaves nothing once the agent finished
    let r = tb.ros2cni_cmd("DEL", &pod, &s, Some(&res), None).unwrap();
    assert!(r.success);
    tb.remove_ns(&pod.ns).unwrap();
    wait_state(&tb, 1, &before, 3, "DEL + agent leave nothing");
    assert!(
        tb.log("agent-n1").contains("handed-over teardown done"),
        "DEL handed the link deletion to the agent:\n{}",
        tb.log("agent-n1")
    );
    // the orphan sweep: a host end without a record is removed by the agent
    ros2_cni::lab::testbed::ns_sh(
        &tb.node(1).ns,
        &[
            "ip",
            "link",
            "add",
            "r2cdeadbeef000",
            "type",
            "veth",
            "peer",
            "name",
            "x0",
        ],
    )
    .unwrap();
    wait_for(5, "leftover r2c link removed", || {
        !node_state(&tb, 1).links.contains("r2cdeadbeef000")
    });
}

/// `tc -j filter show dev DEV ingress` names in `ns`.
fn ping_ttl(from: &str, to: Ipv4Addr) -> Option<u32> {
    let out =
        ros2_cni::lab::testbed::ns_sh(from, &["ping", "-c", "2", "-W", "2", "-n", &to.to_string()])
            .ok()?;
    out.lines()
        .rev()
        .filter_map(|l| {
            l.split("ttl=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .next()
}

fn forwarded(ns: &str) -> u64 {
    ros2_cni::lab::testbed::nft_table_packets(ns, "ip", "r2ctest").unwrap()
}

#[test]
fn the_fast_path_forwards_pod_unicast_past_the_node_and_still_enforces_anti_spoofing() {
    let tb = bed(2);
    let mut agents = vec![];
    for i in 1..=2 {
        agents.push(tb.start_agent(tb.node(i), &json!({})).unwrap());
    }
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let lap = tb.laptop.clone().unwrap();
    let n1 = tb.node(1);
    wait_for(6, "both agents attach the fast path", || {
        (1..=2).all(|i| {
            let st = tb.agent_status(tb.node(i)).unwrap();
            st["fastPath"]["lan"] == true && st["fastPath"]["pods"] == 1
        })
    });
    let host_if = node_state(&tb, 1)
        .links
        .into_iter()
        .find(|l| l.starts_with("r2c"))
        .unwrap();
    assert!(
        bpf_filters(&n1.ns, &host_if)
            .iter()
            .any(|n| n.starts_with("r2c_pod_")),
        "pod program on {host_if}"
    );
    assert!(
        bpf_filters(&n1.ns, "eth0")
            .iter()
            .any(|n| n.starts_with("r2c_lan_")),
        "LAN program on the uplink"
    );

    // count what still goes through node 1's forwarding path
    ros2_cni::lab::testbed::ns_sh(&n1.ns, &["nft", "add table ip r2ctest; add chain ip r2ctest forwarded { type filter hook forward priority 0; }; add rule ip r2ctest forwarded counter"]).unwrap();
    assert!(ros2_cni::lab::testbed::ping(&a1.ns, LAPTOP_IP)); // resolves the neighbours
    let before = forwarded(&n1.ns);
    let out = ros2_cni::lab::testbed::ns_sh(
        &a1.ns,
        &[
            "ping",
            "-c",
            "50",
            "-i",
            "0.01",
            "-q",
            "-n",
            &LAPTOP_IP.to_string(),
        ],
    )
    .unwrap();
    assert!(out.contains("50 received"), "{out}");
    let via_forward = forwarded(&n1.ns) - before;
    assert!(
        via_forward < 5,
        "100 packets each way, {via_forward} through the node's forwarding path"
    );
    // a router's TTL: one hop to the laptop, two to a pod on another node
    assert_eq!(ping_ttl(&lap, ip_of(&a1)), Some(63));
    assert_eq!(ping_ttl(&a1.ns, ip_of(&b1)), Some(62));
    assert_eq!(ping_ttl(&b1.ns, ip_of(&a1)), Some(62));
    assert_eq!(
        ros2_cni::lab::testbed::udp_seen_source(&a1.ns, &lap, LAPTOP_IP, 17600).unwrap(),
        Some(ip_of(&a1)),
        "no NAT on the fast path"
    );

    // a pod sending from an address that is not its own is dropped by the
    // program, before the bridge's nft drop rule ever sees it
    let spoof = "192.168.15.99";
    ros2_cni::lab::testbed::ns_sh(
        &a1.ns,
        &["ip", "addr", "add", &format!("{spoof}/32"), "dev", "ros0"],
    )
    .unwrap();
    let drops_before = tb.agent_status(n1).unwrap()["dropped"]["spoofed"]
        .as_u64()
        .unwrap();
    let rx = ros2_cni::lab::testbed::udp_in(&lap, "0.0.0.0:17601").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let tx = ros2_cni::lab::testbed::udp_in(&a1.ns, &format!("{spoof}:0")).unwrap();
    for _ in 0..3 {
        tx.send_to(b"spoofed", (LAPTOP_IP, 17601)).unwrap();
    }
    let mut buf = [0u8; 64];
    assert!(
        rx.recv_from(&mut buf).is_err(),
        "a spoofed source must not reach the LAN"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        tb.agent_status(n1).unwrap()["dropped"]["spoofed"]
            .as_u64()
            .unwrap(),
        drops_before,
        "dropped by the fast-path program, not by the bridge rule"
    );

    // SIGTERM takes the programs away; traffic carries on on the normal path
    tb.signal(agents[0], nix::sys::signal::Signal::SIGTERM);
    tb.wait_exit(agents[0], Duration::from_secs(3))
        .expect("agent exits");
    assert!(
        bpf_filters(&n1.ns, "eth0").is_empty() && bpf_filters(&n1.ns, &host_if).is_empty(),
        "programs removed"
    );
    assert!(ros2_cni::lab::testbed::ping(&a1.ns, LAPTOP_IP));
    assert_eq!(ping_ttl(&lap, ip_of(&a1)), Some(63));
}

#[test]
fn the_fast_path_delivers_lan_unicast_straight_into_each_pod_as_pods_come_and_go() {
    let tb = bed(1);
    tb.start_agent(tb.node(1), &json!({})).unwrap();
    let n1 = tb.node(1).ns.clone();
    let lap = tb.laptop.clone().unwrap();
    let a1_spec = spec("a1", 1);
    let a1 = tb.add_pod(&a1_spec).unwrap();
    wait_for(6, "the LAN program delivers into a1", || {
        let st = tb.agent_status(tb.node(1)).unwrap();
        st["fastPath"]["pods"] == 1 && st["fastPath"]["intoPods"] == 1
    });
    let a1_if = node_state(&tb, 1)
        .links
        .into_iter()
        .find(|l| l.starts_with("r2c"))
        .unwrap();
    let names = bpf_filters(&n1, "eth0");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("r2c_lan_") && n.contains("_p1_")),
        "{names:?}"
    );
    // the node learns a1's MAC, the laptop the node's (the fast path waits for neighbours)
    assert!(ros2_cni::lab::testbed::ping(&lap, ip_of(&a1)));
    let n = 200;
    let (got, via_veth) = laptop_to_pod(&tb, 1, &a1, &a1_if, 17700, n);
    assert_eq!(got, n, "laptop -> a1: every datagram arrives");
    assert!(
        via_veth < 20,
        "{n} datagrams into a1, {via_veth} packets transmitted by its host veth {a1_if}: \
         they should enter ros0 from the uplink, past the bridge"
    );
    // still a router's hop, and no NAT the other way
    assert_eq!(ping_ttl(&lap, ip_of(&a1)), Some(63));

    // a second pod: the program is rebuilt for both
    let a2 = tb.add_pod(&spec("a2", 1)).unwrap();
    wait_for(6, "the LAN program delivers into a1 and a2", || {
        tb.agent_status(tb.node(1)).unwrap()["fastPath"]["intoPods"] == 2
    });
    let a2_if = node_state(&tb, 1)
        .links
        .into_iter()
        .find(|l| l.starts_with("r2c") && *l != a1_if)
        .unwrap();
    assert!(ros2_cni::lab::testbed::ping(&lap, ip_of(&a2)));
    for (pod, port_if) in [(&a1, &a1_if), (&a2, &a2_if)] {
        let (got, via_veth) = laptop_to_pod(&tb, 1, pod, port_if, 17701, n);
        assert_eq!(got, n, "laptop -> {}", pod.ns);
        assert!(via_veth < 20, "{} via its host veth: {via_veth}", pod.ns);
    }

    // a1 leaves: the program forgets it, a2 keeps its delivery
    tb.del_pod(&a1, &a1_spec).unwrap();
    wait_for(6, "the LAN program delivers into a2 only", || {
        tb.agent_status(tb.node(1)).unwrap()["fastPath"]["intoPods"] == 1
    });
    assert!(bpf_filters(&n1, "eth0").iter().any(|n| n.contains("_p1_")));
    let (got, via_veth) = laptop_to_pod(&tb, 1, &a2, &a2_if, 17702, n);
    assert_eq!(got, n, "laptop -> a2 after a1 left");
    assert!(via_veth < 20, "a2 via its host veth: {via_veth}");
}

#[test]
fn a_damaged_attachment_record_costs_nothing_but_its_own_pod() {
    // a power cut can leave a record empty; the agent must not take every
    // pod for a leftover, and DEL/GC must not fail forever or leak addresses
    let tb = bed(2);
    let agent = tb.start_agent(tb.node(1), &json!({})).unwrap();
    tb.start_agent(tb.node(2), &json!({})).unwrap();
    let s_a = spec("a1", 1).version("1.1.0");
    let s_b = spec("b1", 1).version("1.1.0");
    let s_c = spec("c1", 1).version("1.1.0");
    let a1 = tb.add_pod(&s_a).unwrap();
    let b1 = tb.add_pod(&s_b).unwrap();
    let c1 = tb.add_pod(&s_c).unwrap();
    let far = tb.add_pod(&spec("far", 2)).unwrap();
    let n1 = tb.node(1);
    let records = n1.data_dir.join("ros2-cni/attachments");
    let record =
        |p: &ros2_cni::lab::testbed::Pod| records.join(format!("{}_eth0.json", p.container_id));
    for p in [&a1, &b1, &c1] {
        assert!(record(p).exists(), "{}", record(p).display());
    }
    // b1's and c1's records are cut to nothing; the agent must not remove a
    // thing: a1, b1 and c1 stay reachable, their node state stays
    std::fs::write(record(&b1), b"").unwrap();
    std::fs::write(record(&c1), b"{\"containerId\": \"").unwrap();
    let before = node_state(&tb, 1);
    wait_for(6, "the agent reports the unreadable records", || {
        tb.agent_status(n1).unwrap()["problems"]
            .as_array()
            .is_some_and(|p| {
                p.iter().any(|x| {
                    x.as_str()
                        .unwrap_or("")
                        .contains("unreadable attachment record")
                })
            })
    });
    std::thread::sleep(Duration::from_millis(2500)); // one more reconcile
    assert_eq!(
        node_state(&tb, 1),
        before,
        "nothing removed while records are unreadable"
    );
    for p in [&a1, &b1, &c1] {
        assert!(
            ros2_cni::lab::testbed::ping(&far.ns, ip_of(p)),
            "{} reachable",
            p.name
        );
    }
    assert!(
        tb.wait_exit(agent, Duration::from_millis(1)).is_none(),
        "agent still runs"
    );

    // DEL with the damaged record succeeds, and releases b1's address and link
    let r = tb.ros2cni_cmd("DEL", &b1, &s_b, None, None).unwrap();
    assert!(
        r.success,
        "DEL with an unreadable record: {} {}",
        r.stdout, r.stderr
    );
    let r = tb.ros2cni_cmd("DEL", &b1, &s_b, None, None).unwrap();
    assert!(r.success, "and again: {}", r.stdout);
    let st = node_state(&tb, 1);
    assert!(
        !st.leases.contains(&ip_of(&b1).to_string()),
        "b1's lease released"
    );
    assert!(!st
        .attachments
        .contains(&format!("{}_eth0.json", b1.container_id)));
    assert!(!pod_has_link(&b1.ns, "ros0"), "b1's link deleted");

    // GC with c1 not listed: its damaged record and lease go too
    let mut conf = tb.ros2cni_conf(n1, "1.1.0", &json!({}));
    conf["cni.dev/valid-attachments"] = json!([{"containerID": a1.container_id, "ifname": "eth0"}]);
    let r = gc(&tb, 1, &conf);
    assert!(r.success, "GC: {} {}", r.stdout, r.stderr);
    let st = node_state(&tb, 1);
    assert!(
        !st.leases.contains(&ip_of(&c1).to_string()),
        "c1's lease released"
    );
    assert!(st.leases.contains(&ip_of(&a1).to_string()), "a1 kept");
    // with every record readable again the agent clears what b1 and c1 left
    let (b_ip, c_ip) = (ip_of(&b1).to_string(), ip_of(&c1).to_string());
    wait_for(6, "leftovers of b1 and c1 removed", || {
        let st = node_state(&tb, 1);
        !st.routes
            .iter()
            .any(|r| r.starts_with(&format!("{b_ip} ")) || r.starts_with(&format!("{c_ip} ")))
            && !st
                .proxies
                .iter()
                .any(|r| r.starts_with(&format!("{b_ip} ")) || r.starts_with(&format!("{c_ip} ")))
            && !st
                .guard_elements
                .iter()
                .any(|e| e.ends_with(&format!(" {b_ip}")) || e.ends_with(&format!(" {c_ip}")))
            && !pod_has_link(&c1.ns, "ros0")
    });
    assert!(
        ros2_cni::lab::testbed::ping(&far.ns, ip_of(&a1)),
        "a1 untouched"
    );
    // DEL and GC may have cleared the kernel state before the agent's next
    // pass; the problem is cleared by that pass (one reconcile interval)
    wait_for(6, "the agent clears the unreadable-record problem", || {
        !tb.agent_status(n1).unwrap()["problems"]
            .to_string()
            .contains("unreadable")
    });
}
