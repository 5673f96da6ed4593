//! Anti-spoofing on the normal routed path (no agent, so no fast path): a pod
//! sends on `ros0` only from its own address and MAC; foreign addresses,
//! foreign MACs, forged ARP sender addresses and IPv6 are dropped and counted
//! by the node's `bridge ros2_cni` table.

use crate::common::*;
use ros2_cni::lab::testbed::{ip_json, nft_json, ns_sh, udp_in, Pod, LAPTOP_IP};
use ros2_cni::netlink::Netns;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

/// Packets counted by the drop rules of `bridge ros2_cni`, read with `nft -j`.
fn drops(node_ns: &str) -> u64 {
    let j = nft_json(node_ns, &["table", "bridge", "ros2_cni"]).expect("nft -j list table");
    let mut total = 0;
    let mut drop_rules = 0;
    for item in j["nftables"].as_array().into_iter().flatten() {
        let exprs = item["rule"]["expr"].as_array().cloned().unwrap_or_default();
        if exprs.iter().any(|e| e.get("drop").is_some()) {
            drop_rules += 1;
            for e in &exprs {
                total += e["counter"]["packets"].as_u64().unwrap_or(0);
            }
        }
    }
    assert_eq!(
        drop_rules, 1,
        "one counting drop rule in bridge ros2_cni: {j}"
    );
    total
}

fn mac_of(ns: &str, dev: &str) -> String {
    ip_json(ns, &["link", "show", "dev", dev]).unwrap()[0]["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate() {
        m[i] = u8::from_str_radix(p, 16).unwrap();
    }
    m
}

/// Sends three datagrams from `tx` to `to`; true if `rx` got any within 600 ms.
fn gets(tx: &UdpSocket, rx: &UdpSocket, to: (std::net::IpAddr, u16)) -> bool {
    rx.set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    for _ in 0..3 {
        let _ = tx.send_to(b"probe", to);
    }
    let mut buf = [0u8; 32];
    let got = rx.recv_from(&mut buf).is_ok();
    while rx.recv_from(&mut buf).is_ok() {}
    got
}

/// Sends one ARP request from `pod`'s ros0 with the pod's own Ethernet
/// source, the given sender hardware address, and `target` as the address asked for.
fn raw_arp(pod: &Pod, eth_src: [u8; 6], sender_hw: [u8; 6], target: Ipv4Addr) {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_hw);
    f.extend_from_slice(&ip_of(pod).octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(60, 0);
    let ns = Netns::open(pod.netns_path()).unwrap();
    ns.run(|| {
        // SAFETY: plain socket calls on a socket this closure owns and closes
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                (libc::ETH_P_ARP as u16).to_be() as i32,
            );
            assert!(fd >= 0, "AF_PACKET socket");
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
            sll.sll_ifindex = libc::if_nametoindex(c"ros0".as_ptr()) as i32;
            sll.sll_halen = 6;
            let n = libc::sendto(
                fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            libc::close(fd);
            assert_eq!(n, f.len() as isize, "raw ARP sent");
        }
    })
    .unwrap();
}

/// The MAC `ns` has learnt for `ip` on ros0, if any.
fn learnt(ns: &str, ip: Ipv4Addr) -> Option<String> {
    ip_json(ns, &["neigh", "show", "dev", "ros0", "to", &ip.to_string()])
        .unwrap()
        .as_array()
        .and_then(|a| a.first().cloned())
        .and_then(|e| e["lladdr"].as_str().map(str::to_owned))
}

#[test]
fn pods_send_only_from_their_own_address_and_mac() {
    let tb = bed(1);
    let node = tb.node(1).ns.clone();
    let lap = tb.laptop.clone().expect("laptop");
    let a = tb.add_pod(&spec("a", 1)).unwrap();
    let b = tb.add_pod(&spec("b", 1)).unwrap();
    let (a_ip, b_ip) = (ip_of(&a), ip_of(&b));
    let a_mac = mac_of(&a.ns, "ros0");

    // control: the pod's own address reaches the laptop and the other pod
    let at_lap = udp_in(&lap, "0.0.0.0:17700").unwrap();
    let at_b = udp_in(&b.ns, "0.0.0.0:17700").unwrap();
    let own = udp_in(&a.ns, &format!("{a_ip}:0")).unwrap();
    assert!(gets(&own, &at_lap, (LAPTOP_IP.into(), 17700)), "a → laptop");
    assert!(gets(&own, &at_b, (b_ip.into(), 17700)), "a → b");
    let d0 = drops(&node);

    // a foreign source address
    let spoof = Ipv4Addr::new(192, 168, 15, 99);
    ns_sh(
        &a.ns,
        &["ip", "addr", "add", &format!("{spoof}/32"), "dev", "ros0"],
    )
    .unwrap();
    let forged = udp_in(&a.ns, &format!("{spoof}:0")).unwrap();
    assert!(
        !gets(&forged, &at_lap, (LAPTOP_IP.into(), 17700)),
        "a foreign source address must not reach the LAN"
    );
    assert!(
        !gets(&forged, &at_b, (b_ip.into(), 17700)),
        "a foreign source address must not reach a pod on the same bridge"
    );
    let d1 = drops(&node);
    assert!(
        d1 >= d0 + 6,
        "the spoofed datagrams are counted: {d0} → {d1}"
    );
    assert!(
        gets(&own, &at_lap, (LAPTOP_IP.into(), 17700)),
        "own address still passes"
    );

    // a foreign MAC: static neighbours so the data frames themselves go out
    let bridge_mac = mac_of(&node, "ros2br0");
    let b_mac = mac_of(&b.ns, "ros0");
    for (ip, mac) in [(LAPTOP_IP, &bridge_mac), (b_ip, &b_mac)] {
        ns_sh(
            &a.ns,
            &[
                "ip",
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                mac,
                "dev",
                "ros0",
                "nud",
                "permanent",
            ],
        )
        .unwrap();
    }
    ns_sh(
        &a.ns,
        &["ip", "link", "set", "ros0", "address", "0e:2c:00:00:00:99"],
    )
    .unwrap();
    assert!(
        !gets(&own, &at_lap, (LAPTOP_IP.into(), 17700)),
        "a foreign MAC must not reach the LAN"
    );
    assert!(
        !gets(&own, &at_b, (b_ip.into(), 17700)),
        "a foreign MAC must not reach a pod on the same bridge"
    );
    let d2 = drops(&node);
    assert!(
        d2 >= d1 + 3,
        "the frames with a foreign MAC are counted: {d1} → {d2}"
    );
    ns_sh(&a.ns, &["ip", "link", "set", "ros0", "address", &a_mac]).unwrap();
    assert!(
        gets(&own, &at_lap, (LAPTOP_IP.into(), 17700)),
        "with its own MAC back, a reaches the laptop again"
    );

    // ARP: the Ethernet source is right, the sender hardware address inside is not
    let (real, fake) = (parse_mac(&a_mac), [0x0e, 0x2c, 0, 0, 0, 0x77]);
    ns_sh(&b.ns, &["ip", "neigh", "flush", "dev", "ros0"]).unwrap();
    raw_arp(&a, real, real, b_ip);
    wait_for(3, "b learns a's MAC from an honest ARP request", || {
        learnt(&b.ns, a_ip).as_deref() == Some(a_mac.as_str())
    });
    ns_sh(&b.ns, &["ip", "neigh", "flush", "dev", "ros0"]).unwrap();
    let d3 = drops(&node);
    raw_arp(&a, real, fake, b_ip);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        learnt(&b.ns, a_ip),
        None,
        "an ARP request with a forged sender address must not reach b"
    );
    assert!(drops(&node) > d3, "the forged ARP request is counted");

    // IPv6, even between the pod's own MAC and a neighbour on the same bridge
    for (p, ip6) in [(&a, "fd00:2c::a/64"), (&b, "fd00:2c::b/64")] {
        ns_sh(&p.ns, &["ip", "addr", "add", ip6, "dev", "ros0", "nodad"]).unwrap();
    }
    ns_sh(
        &a.ns,
        &[
            "ip",
            "neigh",
            "replace",
            "fd00:2c::b",
            "lladdr",
            &b_mac,
            "dev",
            "ros0",
            "nud",
            "permanent",
        ],
    )
    .unwrap();
    let at_b6 = udp_in(&b.ns, "[fd00:2c::b]:17701").unwrap();
    let from_a6 = udp_in(&a.ns, "[fd00:2c::a]:0").unwrap();
    let d4 = drops(&node);
    assert!(
        !gets(
            &from_a6,
            &at_b6,
            ("fd00:2c::b".parse::<std::net::IpAddr>().unwrap(), 17701)
        ),
        "IPv6 from a pod port is dropped"
    );
    assert!(drops(&node) >= d4 + 3, "the IPv6 datagrams are counted");
}
