//! Anti-spoofing: a pod sends on `ros0` only from its own address and MAC;
//! foreign addresses, foreign MACs, forged ARP sender addresses and IPv6 are
//! dropped and counted by the node's `bridge ros2_cni` table (the normal
//! routed path, no agent, so no fast path). With the agent's fast path on or
//! off, none of those frames, and no VLAN-tagged frame (802.1Q, 802.1ad,
//! priority-tagged), leaves the node, and no tagged frame from the LAN reaches
//! a pod.

use crate::common::*;
use ros2_cni::kernel::netns::Netns;
use ros2_cni::lab::testbed::{ip_json, nft_json, ns_sh, udp_in, Pod, LAPTOP_IP};
use serde_json::json;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    let body = arp_request(sender_hw, ip_of(pod), target);
    send_raw(
        &pod.ns,
        "ros0",
        &[eth(BROADCAST, eth_src, &[], 0x0806, &body)],
    );
}

const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame (padded to the 60-byte minimum); `tags` are (TPID, TCI)
/// pairs, outermost first.
fn eth(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// The body of an ARP request (Ethernet/IPv4).
fn arp_request(sender_hw: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    b.extend_from_slice(&sender_hw);
    b.extend_from_slice(&sender_ip.octets());
    b.extend_from_slice(&[0; 6]);
    b.extend_from_slice(&target.octets());
    b
}

/// An IPv4 UDP datagram, DF set, TTL 64, header checksum right, no UDP checksum.
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((20 + 8 + data.len()) as u16).to_be_bytes());
    // id, flags (DF), TTL, protocol, checksum (below)
    p.extend_from_slice(&[0x2c, 0x2c, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let mut sum: u32 = p
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(data);
    p
}

/// An IPv6 UDP datagram (the UDP checksum left 0: only counted, never received).
fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(data);
    p
}

/// Sends `frames` as they are out of `dev` in `ns` with a packet socket.
fn send_raw(ns: &str, dev: &str, frames: &[Vec<u8>]) {
    let netns = Netns::open(format!("/var/run/netns/{ns}")).unwrap();
    let name = std::ffi::CString::new(dev).unwrap();
    netns
        .run(|| {
            // SAFETY: plain socket calls on a socket this closure owns and
            // closes; `sll` and the frames outlive each call
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
                assert!(fd >= 0, "AF_PACKET socket");
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
                assert!(sll.sll_ifindex > 0, "{dev} in {ns}");
                sll.sll_halen = 6;
                for f in frames {
                    sll.sll_protocol = u16::from_be_bytes([f[12], f[13]]).to_be();
                    let n = libc::sendto(
                        fd,
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        (&sll as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                    assert_eq!(
                        n,
                        f.len() as isize,
                        "raw frame sent on {dev} in {ns}: {}",
                        std::io::Error::last_os_error()
                    );
                }
                libc::close(fd);
            }
        })
        .unwrap();
}

/// A frame a tap saw arrive.
#[derive(Debug)]
struct Seen {
    data: Vec<u8>,
    /// The outer VLAN tag the kernel holds in the skb's metadata (TPID, TCI),
    /// reported through PACKET_AUXDATA; a tag still in the data is in `data`.
    meta_tag: Option<(u16, u16)>,
}

impl Seen {
    fn data_ethertype(&self) -> u16 {
        u16::from_be_bytes([self.data[12], self.data[13]])
    }

    fn tagged(&self) -> bool {
        self.meta_tag.is_some() || matches!(self.data_ethertype(), 0x8100 | 0x88a8)
    }

    fn carries(&self, marker: &[u8]) -> bool {
        self.data.windows(marker.len()).any(|w| w == marker)
    }

    fn src_mac(&self) -> [u8; 6] {
        self.data[6..12].try_into().unwrap()
    }
}

/// A packet socket that sees every frame arriving on one interface, at the
/// point where tc ingress sees it too (after the kernel's receive path has
/// moved an outer VLAN tag out of the data into the skb's metadata, if it does).
struct Tap(OwnedFd);

impl Tap {
    fn open(ns: &str, dev: &str) -> Tap {
        let netns = Netns::open(format!("/var/run/netns/{ns}")).unwrap();
        let name = std::ffi::CString::new(dev).unwrap();
        netns
            .run(|| {
                // SAFETY: socket calls on a new socket whose descriptor is
                // owned by the returned OwnedFd; pointers are to locals alive
                // for each call
                unsafe {
                    // protocol 0 until bound: no frames from other interfaces
                    let fd = libc::socket(
                        libc::AF_PACKET,
                        libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        0,
                    );
                    assert!(fd >= 0, "AF_PACKET socket");
                    let owned = OwnedFd::from_raw_fd(fd);
                    let one: libc::c_int = 1;
                    let r = libc::setsockopt(
                        fd,
                        libc::SOL_PACKET,
                        libc::PACKET_AUXDATA,
                        (&one as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as u32,
                    );
                    assert_eq!(r, 0, "PACKET_AUXDATA");
                    let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                    sll.sll_family = libc::AF_PACKET as u16;
                    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                    sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
                    assert!(sll.sll_ifindex > 0, "{dev} in {ns}");
                    let r = libc::bind(
                        fd,
                        (&sll as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                    assert_eq!(r, 0, "bind to {dev}");
                    Tap(owned)
                }
            })
            .unwrap()
    }

    /// The frames that arrived since the last call (not those sent out of it).
    fn drain(&self) -> Vec<Seen> {
        let mut out = vec![];
        loop {
            let mut buf = [0u8; 2048];
            let mut ctl = [0u64; 16];
            // SAFETY: recvmsg into buffers that live for the call; the
            // control messages are read within `ctl` with the CMSG macros
            unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                let mut iov = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                };
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
                msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = ctl.as_mut_ptr().cast();
                msg.msg_controllen = std::mem::size_of_val(&ctl);
                let n = libc::recvmsg(self.0.as_raw_fd(), &mut msg, 0);
                if n < 0 {
                    break;
                }
                if sll.sll_pkttype == libc::PACKET_OUTGOING || n < 14 {
                    continue;
                }
                let mut meta_tag = None;
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA
                    {
                        // struct tpacket_auxdata: status u32, len u32, snaplen u32,
                        // mac u16, net u16, vlan_tci u16, vlan_tpid u16
                        let d = std::slice::from_raw_parts(libc::CMSG_DATA(c), 20);
                        let status = u32::from_ne_bytes(d[0..4].try_into().unwrap());
                        let tci = u16::from_ne_bytes(d[16..18].try_into().unwrap());
                        let tpid = u16::from_ne_bytes(d[18..20].try_into().unwrap());
                        // TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID
                        if status & 0x10 != 0 {
                            let tpid = if status & 0x40 != 0 { tpid } else { 0x8100 };
                            meta_tag = Some((tpid, tci));
                        }
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
                out.push(Seen {
                    data: buf[..n as usize].to_vec(),
                    meta_tag,
                });
            }
        }
        out
    }
}

/// How a tagged frame looked at a tap, for the report.
fn how_tagged(s: &Seen) -> String {
    match s.meta_tag {
        Some((tpid, tci)) => format!(
            "tag {tpid:#06x} VLAN {} priority {} in the skb's metadata, the data's ethertype {:#06x}",
            tci & 0xfff,
            tci >> 13,
            s.data_ethertype()
        ),
        None => format!("tag in the data (ethertype {:#06x})", s.data_ethertype()),
    }
}

const Q: u16 = 0x8100;
const AD: u16 = 0x88a8;
/// VLAN 5, priority 7.
const V5P7: u16 = (7 << 13) | 5;
const COPIES: usize = 10;

fn sent_tagged(f: &[u8]) -> bool {
    matches!(u16::from_be_bytes([f[12], f[13]]), Q | AD)
}

/// Frames of every kind, tagged or forged, from a pod with its own MAC and
/// address (where not forged), and tagged frames from the LAN: none crosses
/// the node, with the fast path on (`fast`) or off.
fn nothing_tagged_or_forged_crosses_the_node(fast: bool) {
    let tb = bed(1);
    let n1 = tb.node(1).clone();
    let lap = tb.laptop.clone().expect("laptop");
    tb.start_agent(&n1, &json!({ "fastPath": fast })).unwrap();
    let a = tb.add_pod(&spec("a", 1)).unwrap();
    let a_ip = ip_of(&a);
    let a_mac = parse_mac(&mac_of(&a.ns, "ros0"));
    let bridge_mac = parse_mac(&mac_of(&n1.ns, "ros2br0"));
    let node_mac = parse_mac(&n1.mac);
    let lap_mac = parse_mac(&mac_of(&lap, "eth0"));
    let host_if = node_state(&tb, 1)
        .links
        .into_iter()
        .find(|l| l.starts_with("r2c"))
        .expect("the pod's host veth");
    wait_for(6, "the agent's fast path state", || {
        let st = tb.agent_status(&n1).unwrap();
        if fast {
            st["fastPath"]["lan"] == true && st["fastPath"]["pods"] == 1
        } else {
            st["fastPath"]["enabled"] == false
        }
    });
    let programs = (bpf_filters(&n1.ns, "eth0"), bpf_filters(&n1.ns, &host_if));
    if fast {
        assert!(
            programs.0.iter().any(|p| p.starts_with("r2c_lan"))
                && programs.1.iter().any(|p| p.starts_with("r2c_pod")),
            "fast path programs attached: {programs:?}"
        );
    } else {
        assert_eq!(programs, (vec![], vec![]), "no fast path programs");
    }

    // both directions once through sockets: the neighbours are resolved, as
    // on any running node (the fast path forwards only to resolved ones)
    let at_lap = udp_in(&lap, "0.0.0.0:17800").unwrap();
    let from_a = udp_in(&a.ns, &format!("{a_ip}:0")).unwrap();
    assert!(
        gets(&from_a, &at_lap, (LAPTOP_IP.into(), 17800)),
        "a → laptop"
    );
    let at_a = udp_in(&a.ns, "0.0.0.0:17801").unwrap();
    let from_lap = udp_in(&lap, &format!("{LAPTOP_IP}:0")).unwrap();
    assert!(gets(&from_lap, &at_a, (a_ip.into(), 17801)), "laptop → a");

    let nonce = format!("{:08x}", std::process::id() ^ (fast as u32) << 31);
    let marker = |kind: &str| format!("r2c-leak-{kind}-{nonce}").into_bytes();
    let report = |seen: &[Seen], kind: &str| -> (usize, usize, Vec<String>) {
        let m = marker(kind);
        let hits: Vec<&Seen> = seen.iter().filter(|s| s.carries(&m)).collect();
        let tagged = hits.iter().filter(|s| s.tagged()).count();
        let mut how: Vec<String> = hits.iter().map(|s| how_tagged(s)).collect();
        how.sort();
        how.dedup();
        (hits.len(), tagged, how)
    };

    // ---- pod → LAN: counted where the node's uplink meets the switch ----
    let to_lap = |kind: &str| ipv4_udp(a_ip, LAPTOP_IP, 17800, &marker(kind));
    let spoof_ip = Ipv4Addr::new(192, 168, 15, 99);
    let spoof_mac = [0x0e, 0x2c, 0, 0, 0, 0x99];
    let out_kinds: Vec<(&str, Vec<u8>)> = vec![
        (
            "plain",
            eth(bridge_mac, a_mac, &[], 0x0800, &to_lap("plain")),
        ),
        (
            "802.1Q",
            eth(bridge_mac, a_mac, &[(Q, V5P7)], 0x0800, &to_lap("802.1Q")),
        ),
        (
            "802.1ad",
            eth(bridge_mac, a_mac, &[(AD, V5P7)], 0x0800, &to_lap("802.1ad")),
        ),
        (
            "QinQ",
            eth(
                bridge_mac,
                a_mac,
                &[(AD, V5P7), (Q, (7 << 13) | 6)],
                0x0800,
                &to_lap("QinQ"),
            ),
        ),
        (
            "priority-tagged",
            eth(
                bridge_mac,
                a_mac,
                &[(Q, 7 << 13)],
                0x0800,
                &to_lap("priority-tagged"),
            ),
        ),
        (
            "foreign-address",
            eth(
                bridge_mac,
                a_mac,
                &[],
                0x0800,
                &ipv4_udp(spoof_ip, LAPTOP_IP, 17800, &marker("foreign-address")),
            ),
        ),
        (
            "foreign-MAC",
            eth(bridge_mac, spoof_mac, &[], 0x0800, &to_lap("foreign-MAC")),
        ),
        ("forged-ARP", {
            let mut body = arp_request(spoof_mac, a_ip, LAPTOP_IP);
            body.extend_from_slice(&marker("forged-ARP"));
            eth(BROADCAST, a_mac, &[], 0x0806, &body)
        }),
        (
            "IPv6",
            eth(
                bridge_mac,
                a_mac,
                &[],
                0x86dd,
                &ipv6_udp(
                    "fd00:2c::a".parse().unwrap(),
                    "fd00:2c::200".parse().unwrap(),
                    17800,
                    &marker("IPv6"),
                ),
            ),
        ),
        (
            "other-ethertype",
            eth(bridge_mac, a_mac, &[], 0x88b5, &marker("other-ethertype")),
        ),
    ];
    let switch_port = Tap::open(&tb.switch, &n1.port);
    let host_veth = Tap::open(&n1.ns, &host_if);
    let d0 = drops(&n1.ns);
    for (_, f) in &out_kinds {
        send_raw(&a.ns, "ros0", &vec![f.clone(); COPIES]);
    }
    std::thread::sleep(Duration::from_millis(600));
    let (at_veth, left) = (host_veth.drain(), switch_port.drain());
    let mut leaks = vec![];
    for (kind, f) in &out_kinds {
        let (arrived, tagged, how) = report(&at_veth, kind);
        assert_eq!(arrived, COPIES, "{kind}: every frame reaches the host veth");
        if sent_tagged(f) {
            // the frames are really tagged where the fast path sees them
            assert_eq!(tagged, COPIES, "{kind} arrives tagged: {how:?}");
            eprintln!("{kind} at the host veth (as tc sees it): {how:?}");
        }
        let (out, tagged, how) = report(&left, kind);
        if *kind == "plain" {
            assert_eq!(
                (out, tagged),
                (COPIES, 0),
                "the untagged frames from the pod's own MAC and address are routed out"
            );
            let srcs: Vec<[u8; 6]> = left
                .iter()
                .filter(|s| s.carries(&marker(kind)))
                .map(Seen::src_mac)
                .collect();
            assert!(srcs.iter().all(|m| *m == node_mac), "with the node's MAC");
        } else if out > 0 {
            let node_src = left
                .iter()
                .filter(|s| s.carries(&marker(kind)) && s.src_mac() == node_mac)
                .count();
            leaks.push(format!(
                "pod → LAN, {kind}: {out} of {COPIES} left the node ({tagged} tagged: {how:?}; {node_src} with the node's MAC)"
            ));
        }
    }
    let d1 = drops(&n1.ns);

    // ---- LAN → pod: counted on the pod's ros0 ----
    let to_a = |kind: &str| ipv4_udp(LAPTOP_IP, a_ip, 17801, &marker(kind));
    let in_kinds: Vec<(&str, Vec<u8>)> = vec![
        (
            "plain-in",
            eth(node_mac, lap_mac, &[], 0x0800, &to_a("plain-in")),
        ),
        (
            "802.1Q-in",
            eth(node_mac, lap_mac, &[(Q, V5P7)], 0x0800, &to_a("802.1Q-in")),
        ),
        (
            "802.1ad-in",
            eth(
                node_mac,
                lap_mac,
                &[(AD, V5P7)],
                0x0800,
                &to_a("802.1ad-in"),
            ),
        ),
        (
            "QinQ-in",
            eth(
                node_mac,
                lap_mac,
                &[(AD, V5P7), (Q, (7 << 13) | 6)],
                0x0800,
                &to_a("QinQ-in"),
            ),
        ),
        (
            "priority-tagged-in",
            eth(
                node_mac,
                lap_mac,
                &[(Q, 7 << 13)],
                0x0800,
                &to_a("priority-tagged-in"),
            ),
        ),
    ];
    let uplink = Tap::open(&n1.ns, "eth0");
    let pod_if = Tap::open(&a.ns, "ros0");
    for (_, f) in &in_kinds {
        send_raw(&lap, "eth0", &vec![f.clone(); COPIES]);
    }
    std::thread::sleep(Duration::from_millis(600));
    let (at_uplink, inside) = (uplink.drain(), pod_if.drain());
    for (kind, f) in &in_kinds {
        let (arrived, tagged, how) = report(&at_uplink, kind);
        assert_eq!(arrived, COPIES, "{kind}: every frame reaches the uplink");
        if sent_tagged(f) {
            assert_eq!(tagged, COPIES, "{kind} arrives tagged: {how:?}");
            eprintln!("{kind} at the uplink (as tc sees it): {how:?}");
        }
        let (got, tagged, how) = report(&inside, kind);
        eprintln!("{kind}: {got} of {COPIES} reached the pod, {tagged} tagged");
        match *kind {
            "plain-in" => assert_eq!((got, tagged), (COPIES, 0), "plain frames reach the pod"),
            // VLAN 0 only carries a priority: the node's normal path takes
            // such a frame as untagged and routes it; it must not reach the
            // pod with its tag
            "priority-tagged-in" if tagged == 0 => {}
            _ if got == 0 => {}
            _ => leaks.push(format!(
                "LAN → pod, {kind}: {got} of {COPIES} reached the pod ({tagged} tagged: {how:?})"
            )),
        }
    }
    assert!(
        leaks.is_empty(),
        "fast path {}: frames crossed the node:\n  {}",
        if fast { "on" } else { "off" },
        leaks.join("\n  ")
    );
    // the tagged and non-IPv4 kinds from the pod were judged by the normal
    // path's anti-spoofing rule (with the fast path on, the foreign address
    // and MAC are dropped by the pod program before it and not counted there)
    assert!(
        d1 >= d0 + 7 * COPIES as u64,
        "the bridge's drop rule counted the tagged and non-IPv4 frames: {d0} → {d1}"
    );
}

#[test]
fn with_the_fast_path_no_tagged_or_forged_frame_crosses_the_node() {
    nothing_tagged_or_forged_crosses_the_node(true);
}

#[test]
fn without_the_fast_path_no_tagged_or_forged_frame_crosses_the_node() {
    nothing_tagged_or_forged_crosses_the_node(false);
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
