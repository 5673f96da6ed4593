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
fn receivers(
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
    Sender(from_ns, local, ttl): Sender,
    (group, port): (Ipv4Addr, u16),
    n: u32,
    rx: &BTreeMap<String, UdpSocket>,
    tag: &str,
) -> BTreeMap<String, BTreeMap<u32, u32>> {
    let tx = mcast_sender(from_ns, local, ttl).unwrap();
    for i in 0..n {
        tx.send_to(format!("{tag}:{i}").as_bytes(), (group, port))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    rx.iter()
        .map(|(name, s)| {
            let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
            for p in drain(s) {
                let p = String::from_utf8_lossy(&p).to_string();
                if let Some(i) = p
                    .strip_prefix(&format!("{tag}:"))
                    .and_then(|i| i.parse().ok())
                {
                    *seen.entry(i).or_default() += 1;
                }
            }
            (name.clone(), seen)
        })
        .collect()
}

fn exactly_once(n: u32) -> BTreeMap<u32, u32> {
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

    // the agent's own account of it
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
    // the TTL counter is read at the next reconcile (every 2 s): a1's 5 and the laptop's 5
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let raised = tb.agent_status(tb.node(1)).unwrap()["ttlRaised"]
            .as_u64()
            .unwrap_or(0);
        if raised >= 10 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "TTL rule counted {raised} packets, expected >= 10"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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
    assert_eq!(
        tb.wifi_drops().unwrap(),
        0,
        "nothing left a node with a foreign MAC"
    );
}

/// A raw IGMP socket in `ns`: sees every IGMP packet there.
fn igmp_socket(ns: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let n = ros2_cni::netlink::Netns::open(format!("/var/run/netns/{ns}")).unwrap();
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
    tb.start_agent(node, &json!({})).unwrap();
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
    let q = ros2_cni::mroute::socket::igmp_v2(0x11, Ipv4Addr::UNSPECIFIED);
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
