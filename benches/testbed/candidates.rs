//! Section 6b's two candidates: ways to forward RTPS multicast without the
//! kernel's multicast routing that issue 18 asked to measure beside the
//! nftables forwarder the agent ships. They live here, in the benchmark,
//! not in the agent: they were built to be measured, and the figures
//! (docs/benchmarks.md, "Two multicast forwarders") decided against
//! shipping them.
//!
//! - [`Candidate::BpfClone`]: a tc/BPF program (the fast path's assembler)
//!   on the uplink's ingress clones every UDP datagram to a carried group
//!   into the bridge (`bpf_clone_redirect`, egress: the bridge floods it to
//!   the pods), and one on the bridge's ingress (what the bridge passes up to
//!   the node from its pods) clones it out of the uplink. Each copy carries
//!   the out device's own MAC as source (what a Wi-Fi access point wants)
//!   and TTL − 1 (TTL 1 stays 1, as the agent's TTL rule and a forwarder
//!   make of Fast DDS's TTL 1); the original is put back as it came and goes
//!   on to the node (`TC_ACT_UNSPEC`: the fast path's filter, later in the
//!   chain, still sees it). Runs before netfilter: the agent's discovery
//!   limits and domain policy (nf_tables) never see what it copies.
//! - [`Candidate::Packet`]: the agent's kind of packet sockets (as the relay
//!   and the discovery capture use), one per interface with the capture's
//!   classic BPF filter (UDP to the carried groups, never what this node
//!   sent), read one frame per syscall on one thread, and sent out of the
//!   other interface with TTL − 1 and the out device's own MAC
//!   (SOCK_DGRAM). Also before netfilter on the way in, and after it (none)
//!   on the way out.
//!
//! Neither keeps state per group or per source, and neither copies a copy:
//! a copy into the bridge is flooded to its ports, never passed up to the
//! node; a copy out of the uplink does not come back in; packet sockets drop
//! what this node sent (PACKET_OUTGOING).

use ros2_cni::fastpath::asm::{
    helper, Alu, Asm, Cond, Insn, Size, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9,
};
use ros2_cni::kernel::netns::Netns;
use ros2_cni::kernel::packet;
use ros2_cni::kernel::rtnl::{Handle, Link};
use ros2_cni::relay::wire::fix_udp_checksum;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

/// tc priority of the candidate's filters: before the fast path's (0x2c2c).
const PRIO: u16 = 0x2c2b;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    BpfClone,
    Packet,
}

impl Candidate {
    pub fn name(self) -> &'static str {
        match self {
            Candidate::BpfClone => "tc/BPF clone_redirect",
            Candidate::Packet => "packet sockets",
        }
    }

    /// Starts forwarding `groups` between `uplink` and `bridge` in node
    /// namespace `ns`; stops when the result is dropped.
    pub fn install(
        self,
        ns: &str,
        uplink: &str,
        bridge: &str,
        groups: &[Ipv4Addr],
    ) -> Result<Installed, String> {
        let netns = Netns::open(format!("/var/run/netns/{ns}")).map_err(|e| e.to_string())?;
        let mut h = Handle::open_in(&netns).map_err(|e| e.to_string())?;
        let link = |h: &mut Handle, name: &str| -> Result<Link, String> {
            h.link_by_name(name)
                .map_err(|e| e.to_string())?
                .filter(|l| l.mac.is_some())
                .ok_or_else(|| format!("no link {name} with a MAC in {ns}"))
        };
        let (up, br) = (link(&mut h, uplink)?, link(&mut h, bridge)?);
        match self {
            Candidate::BpfClone => {
                // LAN → pods on the uplink, pods → LAN on the bridge
                for (on, out) in [(&up, &br), (&br, &up)] {
                    let insns = clone_program(out.index, out.mac.unwrap(), groups);
                    let encoded: Vec<[u8; 8]> = insns.iter().map(|i| i.to_bytes()).collect();
                    let fd = ros2_cni::kernel::bpf::load(
                        ros2_cni::kernel::bpf::PROG_TYPE_SCHED_CLS,
                        &encoded,
                        "r2c_clone",
                    )
                    .map_err(|e| e.to_string())?;
                    h.ensure_clsact(on.index).map_err(|e| e.to_string())?;
                    h.attach_ingress_bpf(on.index, PRIO, fd.as_fd(), "r2c_clone")
                        .map_err(|e| e.to_string())?;
                }
                Ok(Installed::Bpf {
                    handle: h,
                    links: vec![up.index, br.index],
                })
            }
            Candidate::Packet => PacketForwarder::start(&netns, &up, &br, groups)
                .map(Installed::Packet)
                .map_err(|e| format!("packet sockets in {ns}: {e}")),
        }
    }
}

/// A candidate forwarding until dropped.
pub enum Installed {
    Bpf { handle: Handle, links: Vec<u32> },
    Packet(PacketForwarder),
}

impl Installed {
    /// CPU seconds the candidate's own thread spent so far (the packet
    /// forwarder's); None for a tc program, which has none: its cost is in
    /// the softirq time.
    pub fn cpu_seconds(&self) -> Option<f64> {
        match self {
            Installed::Bpf { .. } => None,
            Installed::Packet(p) => Some(p.cpu_seconds()),
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Installed::Bpf { handle, links } = self {
            for l in links.iter() {
                let _ = handle.delete_ingress_filter(*l, PRIO);
            }
        }
    }
}

// struct __sk_buff offsets (as in src/fastpath)
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
// stack: the copy's source MAC, the original's, one TTL byte
const MAC_NEW: i16 = -8;
const MAC_OLD: i16 = -16;
const TTL_BYTE: i16 = -24;
const TC_ACT_UNSPEC: i32 = -1;

/// `r0 = helper(skb, r2, r10 + from, len, 0)` for SKB_STORE_BYTES.
fn store(a: &mut Asm, to: i32, from: i16, len: i32) -> &mut Asm {
    a.mov_x(R1, R6)
        .mov_k(R2, to)
        .mov_x(R3, R10)
        .alu_k(Alu::Add, R3, from as i32)
        .mov_k(R4, len)
        .mov_k(R5, 0)
        .call(helper::SKB_STORE_BYTES)
}

/// `l3_csum_replace` of the (TTL, protocol) word from `from` to `to`.
fn ttl_csum(a: &mut Asm, from_minus_one: bool) -> &mut Asm {
    a.mov_x(R1, R6)
        .mov_k(R2, 14 + 10)
        .mov_x(R3, R8)
        .mov_x(R4, R8);
    if from_minus_one {
        a.alu_k(Alu::Sub, R3, 1);
    } else {
        a.alu_k(Alu::Sub, R4, 1);
    }
    a.mov_k(R5, 2).call(helper::L3_CSUM_REPLACE)
}

/// The candidate's program: clone plain IPv4 UDP to one of `groups` out of
/// `out` (egress) with `out_mac` as source and TTL − 1 (1 stays 1), then
/// put the original back; everything goes on (TC_ACT_UNSPEC).
pub fn clone_program(out: u32, out_mac: [u8; 6], groups: &[Ipv4Addr]) -> Vec<Insn> {
    let mut a = Asm::new();
    a.mov_x(R6, R1)
        .ldx(Size::W, R5, R6, SKB_VLAN_PRESENT)
        .jmp_k(Cond::Ne, R5, 0, "pass")
        .ldx(Size::W, R2, R6, SKB_DATA)
        .ldx(Size::W, R3, R6, SKB_DATA_END)
        .mov_x(R4, R2)
        .alu_k(Alu::Add, R4, 34)
        .jmp_x(Cond::Gt, R4, R3, "pass")
        .ldx(Size::H, R5, R2, 12)
        .jmp_k(Cond::Ne, R5, 0x0008, "pass")
        .ldx(Size::B, R5, R2, 23)
        .jmp_k(Cond::Ne, R5, 17, "pass")
        .ldx(Size::W, R5, R2, 30);
    for g in groups {
        a.jmp32_k(Cond::Eq, R5, u32::from_le_bytes(g.octets()), "ours");
    }
    a.ja("pass")
        .label("ours")
        .ldx(Size::B, R7, R2, 22)
        .jmp_k(Cond::Eq, R7, 0, "pass")
        .ldx(Size::H, R8, R2, 22)
        .ldx(Size::W, R5, R2, 6)
        .stx(Size::W, R10, MAC_OLD, R5)
        .ldx(Size::H, R5, R2, 10)
        .stx(Size::H, R10, MAC_OLD + 4, R5)
        .st(
            Size::W,
            R10,
            MAC_NEW,
            u32::from_le_bytes([out_mac[0], out_mac[1], out_mac[2], out_mac[3]]) as i32,
        )
        .st(
            Size::H,
            R10,
            MAC_NEW + 4,
            i32::from(u16::from_le_bytes([out_mac[4], out_mac[5]])),
        );
    store(&mut a, 6, MAC_NEW, 6).jmp_k(Cond::Ne, R0, 0, "pass");
    // R9: the TTL was lowered (and must be raised again)
    a.mov_k(R9, 0).jmp_k(Cond::Le, R7, 1, "clone");
    ttl_csum(&mut a, false).jmp_k(Cond::Ne, R0, 0, "restore_mac");
    a.mov_k(R9, 1)
        .mov_x(R5, R7)
        .alu_k(Alu::Sub, R5, 1)
        .stx(Size::B, R10, TTL_BYTE, R5);
    store(&mut a, 22, TTL_BYTE, 1).jmp_k(Cond::Ne, R0, 0, "restore");
    a.label("clone")
        .mov_x(R1, R6)
        .mov_k(R2, out as i32)
        .mov_k(R3, 0)
        .call(helper::CLONE_REDIRECT)
        .jmp_k(Cond::Eq, R9, 0, "restore_mac")
        .stx(Size::B, R10, TTL_BYTE, R7);
    store(&mut a, 22, TTL_BYTE, 1);
    a.label("restore");
    ttl_csum(&mut a, true);
    a.label("restore_mac");
    store(&mut a, 6, MAC_OLD, 6);
    a.label("pass").mov_k(R0, TC_ACT_UNSPEC).exit();
    a.finish()
}

/// The packet-socket candidate: one thread, two capture sockets, one
/// sending socket, all opened in the node's namespace (the thread itself
/// never enters it).
pub struct PacketForwarder {
    stop: Arc<AtomicBool>,
    tid: Arc<AtomicI32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PacketForwarder {
    fn start(
        ns: &Netns,
        up: &Link,
        br: &Link,
        groups: &[Ipv4Addr],
    ) -> std::io::Result<PacketForwarder> {
        let open = |ifindex: u32| -> std::io::Result<OwnedFd> {
            let fd = packet::packet_socket(libc::SOCK_RAW)?;
            packet::attach_filter(fd.as_raw_fd(), groups)?;
            packet::bind_packet(fd.as_raw_fd(), ifindex)?;
            packet::set_receive_buffer(&fd, 4 << 20)?;
            Ok(fd)
        };
        let (up_fd, br_fd, tx) = ns
            .run(|| -> std::io::Result<_> {
                Ok((
                    open(up.index)?,
                    open(br.index)?,
                    packet::packet_socket(libc::SOCK_DGRAM)?,
                ))
            })
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicI32::new(0));
        let (s, t) = (stop.clone(), tid.clone());
        // LAN → the bridge (and so the pods), the pods → the LAN
        let routes = [(up_fd, br.index), (br_fd, up.index)];
        let up_index = up.index;
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            t.store(unsafe { libc::gettid() }, Ordering::Relaxed);
            let mut buf = vec![0u8; 9216];
            while !s.load(Ordering::Relaxed) {
                let mut fds: Vec<libc::pollfd> = routes
                    .iter()
                    .map(|(fd, _)| libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: poll on descriptors we own, with their count.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
                for (fd, out) in &routes {
                    while let Ok(Some(r)) = packet::recv(fd.as_raw_fd(), &mut buf) {
                        if r.outgoing || r.truncated(buf.len()) || r.len < 34 {
                            continue;
                        }
                        let dst: [u8; 6] = buf[..6].try_into().unwrap();
                        let ip = &mut buf[14..r.len];
                        if !lower_ttl(ip) {
                            continue;
                        }
                        if *out == up_index {
                            // from a pod: its veth may have left the UDP
                            // checksum partial (offload that never runs);
                            // a copy made from the bytes must complete it,
                            // as the relay does
                            fix_udp_checksum(ip);
                        }
                        let _ = packet::send(tx.as_raw_fd(), *out, dst, ip);
                    }
                }
            }
        });
        Ok(PacketForwarder {
            stop,
            tid,
            thread: Some(thread),
        })
    }

    fn cpu_seconds(&self) -> f64 {
        let tid = self.tid.load(Ordering::Relaxed);
        crate::agent::thread_cpu_seconds(tid)
    }
}

impl Drop for PacketForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// TTL − 1 with the header checksum updated (RFC 1624); TTL 1 stays 1 (the
/// agent's TTL rule raises Fast DDS's 1 to 2 before a forwarder lowers it).
/// False for TTL 0 or a header that is not plain IPv4.
pub fn lower_ttl(ip: &mut [u8]) -> bool {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[8] == 0 {
        return false;
    }
    if ip[8] >= 2 {
        ip[8] -= 1;
        let c = u32::from(u16::from_be_bytes([ip[10], ip[11]])) + 0x0100;
        let c = (c + (c >> 16)) as u16;
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    true
}
