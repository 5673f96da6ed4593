//! The routed data path's fast path: two small tc/BPF programs that move
//! unicast IPv4 between a pod's veth and the uplink without the bridge, the
//! node's routing and netfilter — the same forwarding decision, taken by the
//! kernel's FIB (`bpf_fib_lookup`), a router's TTL decrement, and the
//! anti-spoofing check, in a few dozen instructions.
//!
//! Both take only plain, untagged IPv4: a frame with a VLAN tag (802.1Q or
//! 802.1ad, in the packet data or in the skb's metadata, where the kernel's
//! receive path puts an outer tag before tc ingress — seen on the test bed's
//! veths) or another ethertype is never redirected; it continues on the
//! normal path, which decides it exactly as without the programs (see
//! `forwarder`).
//!
//! - `r2c_pod` on each pod's host veth (tc ingress): an IPv4 frame that does
//!   not carry the pod's own MAC and address is dropped (the same check as the
//!   bridge's nft set). Unicast whose route leaves through the uplink, with a
//!   resolved neighbour, TTL > 1, no IP options or fragments and a size the
//!   uplink takes, gets TTL − 1, the next hop's MACs and goes straight out of
//!   the uplink — except, for a pod held to a domain policy (`domains`),
//!   UDP to a policed port (7400 and up, less the kernel's ephemeral range),
//!   which takes the normal path so that the policy
//!   (`src/firewall/domains.rs`) sees it; pods under no policy get a program
//!   without that check. Everything else (tagged frames, ARP, multicast, other pods
//!   on the node, the node itself, unresolved neighbours) continues to the
//!   bridge as before.
//! - `r2c_lan` on the uplink (tc ingress): unicast to one of this node's pods
//!   (its route leads to the bridge) gets TTL − 1 and the pod's and the
//!   bridge's MACs, skipping the node's routing and netfilter. For the pods
//!   the program lists (`LanPod`, the node's attached pods at the last
//!   reconcile) it goes with `bpf_redirect_peer` straight into the pod's
//!   `ros0` (no backlog pass through the host veth, no bridge) — except, for
//!   a pod held to a domain policy, UDP to a policed port, which is handed to
//!   the bridge's transmit path so that the policy's `postrouting` chain sees
//!   it. A pod not (yet) listed takes the bridge's transmit path too; a kernel
//!   that refuses `bpf_redirect_peer` (before 5.10) gets the program without
//!   the list (`into_pods_refused`). Everything else continues normally.
//!
//! The agent attaches them (routed mode, `fastPath`, needs CAP_BPF) and removes
//! them on SIGTERM; without them every packet takes the normal path, which is
//! complete on its own. Pod-to-LAN unicast then no longer passes the node's
//! FORWARD netfilter hooks (and is never conntracked, so never NATed).

pub mod asm;

use crate::ipam::Attachment;
use crate::kernel::rtnl::{parse_mac, Handle, Link};
use asm::{helper, Alu, Asm, Cond, Insn, Size, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

/// tc priority of our filters (kept clear of the common 1, 49152).
pub const PRIO: u16 = 0x2c2c;

// struct __sk_buff offsets
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
// struct bpf_fib_lookup on the stack at r10 - 64
const FIB: i16 = -64;
const FIB_SIZE: i32 = 64;
const FIB_IFINDEX: i16 = FIB + 8;
const FIB_TOS: i16 = FIB + 12;
const FIB_SRC: i16 = FIB + 16;
const FIB_DST: i16 = FIB + 32;
const FIB_SMAC: i16 = FIB + 52;
const FIB_DMAC: i16 = FIB + 58;
const SCRATCH: i16 = -72;
/// 1 when the packet is UDP to a policed port (LAN program, policed pods).
const POLICED: i16 = -80;

const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

/// The anti-spoofing identity a pod program enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodId {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
}

/// A pod the LAN program delivers straight into (`bpf_redirect_peer`): its
/// address, its host veth (whose peer is the pod's `ros0`) and whether a
/// domain policy holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LanPod {
    pub ip: Ipv4Addr,
    pub veth: u32,
    pub police: bool,
}

/// Both programs: forward eligible unicast arriving here (FIB lookup as if
/// it arrived on `fib_in`) to `out` when the FIB agrees; `pod` adds the
/// anti-spoofing check.
fn forwarder(
    fib_in: u32,
    out: u32,
    pod: Option<PodId>,
    police: bool,
    into: &[LanPod],
) -> Vec<Insn> {
    let mut a = Asm::new();
    // Only plain, untagged IPv4 is ours; every other frame goes to the normal
    // path unchanged and is never redirected, because a redirect keeps what
    // the frame carries besides its IPv4 packet. A VLAN tag above all: the
    // kernel's receive path (skb_vlan_untag, before tc ingress) has already
    // moved an outer 802.1Q or 802.1ad tag out of the packet data into the
    // skb's metadata — on the pod veths and the uplink alike (tested: the
    // data then starts with the inner ethertype, 0x0800) — and a redirect out
    // of the uplink transmits that tag again: a pod would choose the VLAN and
    // priority its packets leave the node with, and a LAN host the tag its
    // frames reach a pod with. The normal path decides such frames as it
    // does without the fast path: the bridge's anti-spoofing table drops
    // (and counts) every tagged frame from a pod port; on the uplink the
    // kernel hands a tagged frame to a VLAN device if the node has one,
    // takes a priority-only tag (VLAN 0) as untagged, and drops the rest.
    a.mov_x(R6, R1)
        .ldx(Size::W, R5, R6, SKB_VLAN_PRESENT)
        .jmp_k(Cond::Ne, R5, 0, "pass")
        .ldx(Size::W, R2, R6, SKB_DATA)
        .ldx(Size::W, R3, R6, SKB_DATA_END)
        .mov_x(R4, R2)
        .alu_k(Alu::Add, R4, 34)
        .jmp_x(Cond::Gt, R4, R3, "pass")
        // IPv4 only, by the ethertype in the data: a tag still there (one
        // under the outer tag in the metadata, or an outer one a path left in
        // the data: 0x8100, 0x88a8), ARP, IPv6 and every other ethertype go
        // to the normal path
        .ldx(Size::H, R5, R2, 12)
        .jmp_k(Cond::Ne, R5, 0x0008, "pass");
    if let Some(p) = pod {
        drop_unless_from(&mut a, &p);
    }
    // plain unicast only: no IP options, no fragments, not multicast/broadcast, TTL > 1
    a.ldx(Size::B, R5, R2, 14)
        .jmp_k(Cond::Ne, R5, 0x45, "pass")
        .ldx(Size::H, R5, R2, 20)
        .alu_k(Alu::And, R5, 0xff3f)
        .jmp_k(Cond::Ne, R5, 0, "pass")
        .ldx(Size::B, R5, R2, 30)
        .jmp_k(Cond::Ge, R5, 224, "pass")
        .ldx(Size::B, R7, R2, 22)
        .jmp_k(Cond::Le, R7, 1, "pass")
        .ldx(Size::H, R8, R2, 22);
    if police {
        jump_if_policed_port(&mut a, "pass");
    }
    if !into.is_empty() {
        // the destination, kept across the helper calls (R9 is callee-saved)
        a.ldx(Size::W, R9, R2, 30);
    }
    if into.iter().any(|p| p.police) {
        // whether this is UDP to a policed port, on the stack: a policed
        // pod gets such a packet through the bridge, where its domain
        // policy's postrouting chain sees it
        jump_if_policed_port(&mut a, "policed");
        a.st(Size::DW, R10, POLICED, 0)
            .ja("flagged")
            .label("policed")
            .st(Size::DW, R10, POLICED, 1)
            .label("flagged");
    }
    for off in (0..8).map(|i| FIB + 8 * i) {
        a.st(Size::DW, R10, off, 0);
    }
    a.st(Size::B, R10, FIB, libc::AF_INET)
        .ldx(Size::B, R5, R2, 23)
        .stx(Size::B, R10, FIB + 1, R5)
        .st(Size::W, R10, FIB_IFINDEX, fib_in as i32)
        .ldx(Size::B, R5, R2, 15)
        .stx(Size::B, R10, FIB_TOS, R5)
        .ldx(Size::W, R5, R2, 26)
        .stx(Size::W, R10, FIB_SRC, R5)
        .ldx(Size::W, R5, R2, 30)
        .stx(Size::W, R10, FIB_DST, R5)
        .mov_x(R1, R6)
        .mov_x(R2, R10)
        .alu_k(Alu::Add, R2, FIB as i32)
        .mov_k(R3, FIB_SIZE)
        .mov_k(R4, 0)
        .call(helper::FIB_LOOKUP)
        // no route, not forwarded, no neighbour yet, too big: the normal path
        .jmp_k(Cond::Ne, R0, 0, "pass")
        .ldx(Size::W, R5, R10, FIB_IFINDEX)
        .jmp32_k(Cond::Ne, R5, out, "pass")
        // TTL - 1, the header checksum fixed for the (TTL, protocol) word
        .mov_x(R1, R6)
        .mov_k(R2, 14 + 10)
        .mov_x(R3, R8)
        .mov_x(R4, R8)
        .alu_k(Alu::Sub, R4, 1)
        .mov_k(R5, 2)
        .call(helper::L3_CSUM_REPLACE)
        .jmp_k(Cond::Ne, R0, 0, "pass")
        .alu_k(Alu::Sub, R7, 1)
        .stx(Size::B, R10, SCRATCH, R7);
    // from here the packet is changed: a failure drops it rather than
    // letting it be routed a second time
    for (to, from, len) in [(22, SCRATCH, 1), (0, FIB_DMAC, 6), (6, FIB_SMAC, 6)] {
        a.mov_x(R1, R6)
            .mov_k(R2, to)
            .mov_x(R3, R10)
            .alu_k(Alu::Add, R3, from as i32)
            .mov_k(R4, len)
            .mov_k(R5, 0)
            .call(helper::SKB_STORE_BYTES)
            .jmp_k(Cond::Ne, R0, 0, "drop");
    }
    // straight into a pod's ros0: ingress to ingress, past the bridge and
    // the host veth's backlog pass (a pod not listed, or a policed pod's
    // packet to a policed port, goes on to the bridge)
    for (i, p) in (0u32..).zip(into) {
        a.label(("pod", i)).jmp32_k(
            Cond::Ne,
            R9,
            u32::from_le_bytes(p.ip.octets()),
            ("pod", i + 1),
        );
        if p.police {
            a.ldx(Size::DW, R5, R10, POLICED)
                .jmp_k(Cond::Ne, R5, 0, "out");
        }
        a.mov_k(R1, p.veth as i32)
            .mov_k(R2, 0)
            .call(helper::REDIRECT_PEER)
            .exit();
    }
    a.label(("pod", into.len() as u32))
        .label("out")
        .mov_k(R1, out as i32)
        .mov_k(R2, 0)
        .call(helper::REDIRECT)
        .exit()
        .label("pass")
        .mov_k(R0, TC_ACT_OK)
        .exit()
        .label("drop")
        .mov_k(R0, TC_ACT_SHOT)
        .exit();
    a.finish()
}

/// Drops a frame whose source MAC or IPv4 source is not the pod's (R2: the
/// packet data, checked long enough by the caller).
fn drop_unless_from(a: &mut Asm, p: &PodId) {
    a.ldx(Size::W, R5, R2, 6)
        .jmp32_k(
            Cond::Ne,
            R5,
            u32::from_le_bytes([p.mac[0], p.mac[1], p.mac[2], p.mac[3]]),
            "drop",
        )
        .ldx(Size::H, R5, R2, 10)
        .jmp_k(
            Cond::Ne,
            R5,
            u16::from_le_bytes([p.mac[4], p.mac[5]]) as i32,
            "drop",
        )
        .ldx(Size::W, R5, R2, 26)
        .jmp32_k(Cond::Ne, R5, u32::from_le_bytes(p.ip.octets()), "drop");
}

/// Jumps to `policed` for UDP to a policed port (the RTPS range 7400 and
/// up, less the kernel's ephemeral range, see src/firewall/domains.rs); a
/// packet too short to hold the ports goes to "pass". Everything else falls
/// through. A policed pod's program leaves such packets to the normal path
/// ("pass"), where the bridge's domain policy sees them; a redirect would
/// skip it. Pods under no policy (and every pod when `domains` is unset) get
/// no such check. R2, R3: the packet data and its end.
fn jump_if_policed_port(a: &mut Asm, policed: &'static str) {
    let (eph_lo, eph_hi) = crate::firewall::domains::EPHEMERAL;
    a.ldx(Size::B, R5, R2, 23)
        .jmp_k(Cond::Ne, R5, 17, ("unpoliced", 0))
        .mov_x(R4, R2)
        .alu_k(Alu::Add, R4, 38)
        .jmp_x(Cond::Gt, R4, R3, "pass")
        // the destination port, big-endian in the data (IHL is 5 here)
        .ldx(Size::B, R5, R2, 36)
        .alu_k(Alu::Lsh, R5, 8)
        .ldx(Size::B, R4, R2, 37)
        .alu_x(Alu::Or, R5, R4)
        .jmp_k(
            Cond::Lt,
            R5,
            i32::from(crate::firewall::domains::RTPS_FIRST_PORT),
            ("unpoliced", 0),
        )
        .jmp_k(Cond::Lt, R5, i32::from(eph_lo), policed)
        .jmp_k(Cond::Gt, R5, i32::from(eph_hi), policed)
        .label(("unpoliced", 0));
}

/// The program for a pod's host veth; `police`: the pod is held to a domain
/// policy, so its UDP to policed ports is left to the normal path.
pub fn pod_program(pod: PodId, bridge: u32, uplink: u32, police: bool) -> Vec<Insn> {
    forwarder(bridge, uplink, Some(pod), police, &[])
}

/// The program for the uplink: unicast for this node's pods goes to the
/// bridge, or, for a pod in `into`, straight into its `ros0`.
pub fn lan_program(uplink: u32, bridge: u32, into: &[LanPod]) -> Vec<Insn> {
    forwarder(uplink, bridge, None, false, into)
}

/// Filter names carry the interface indexes the program was built for, so
/// a re-created bridge or uplink is noticed and the program rebuilt.
/// A policed pod's program has its own name, so a policy change (SIGHUP)
/// replaces the program.
pub fn pod_filter_name(bridge: u32, uplink: u32, police: bool) -> String {
    let p = if police { "_d" } else { "" };
    format!("r2c_pod_{bridge}_{uplink}{p}")
}

/// The LAN program's name also carries a digest of the pods it delivers
/// into, so a pod added or removed gets the program rebuilt.
pub fn lan_filter_name(uplink: u32, bridge: u32, into: &[LanPod]) -> String {
    if into.is_empty() {
        return format!("r2c_lan_{uplink}_{bridge}");
    }
    // FNV-1a: stable across builds, so a restarted agent adopts the program
    let mut h: u32 = 0x811c_9dc5;
    for p in into {
        let bytes = p.ip.octets().into_iter().chain(p.veth.to_le_bytes());
        for b in bytes.chain([u8::from(p.police)]) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    format!("r2c_lan_{uplink}_{bridge}_p{}_{h:08x}", into.len())
}

/// The fast path on one node: which programs are attached where.
#[derive(Debug, Default, Clone)]
pub struct FastPath {
    /// The LAN program's filter name and how many pods it delivers straight into.
    lan: Option<(String, usize)>,
    /// Pod host veths (by index) with their program's filter name.
    pods: HashMap<u32, String>,
    /// Why it is off, once it failed (not retried until the next reload).
    pub unavailable: Option<String>,
    /// Why the LAN program does not deliver straight into pods (a kernel
    /// before 5.10 has no `bpf_redirect_peer`): it hands their unicast to
    /// the bridge instead. Not retried until the next reload.
    pub into_pods_refused: Option<String>,
}

/// Why a program could not be put on a device; keeps the kernel's errno.
#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error(transparent)]
    Load(#[from] crate::kernel::bpf::LoadError),
    #[error(transparent)]
    Tc(#[from] crate::kernel::Error),
}

impl AttachError {
    fn errno(&self) -> Option<i32> {
        match self {
            AttachError::Load(e) => e.source.raw_os_error(),
            AttachError::Tc(e) => e.errno(),
        }
    }

    /// The kernel refuses BPF here (no CAP_BPF/CAP_NET_ADMIN, or a kernel
    /// without the helpers): the fast path stays off for good.
    fn is_refused(&self) -> bool {
        matches!(self.errno(), Some(libc::EPERM) | Some(libc::EINVAL))
    }
}

fn load_and_attach(
    node: &mut Handle,
    dev: &Link,
    insns: &[Insn],
    prog: &str,
    filter: &str,
) -> Result<(), AttachError> {
    let encoded: Vec<[u8; 8]> = insns.iter().map(|i| i.to_bytes()).collect();
    let fd = crate::kernel::bpf::load(crate::kernel::bpf::PROG_TYPE_SCHED_CLS, &encoded, prog)?;
    node.ensure_clsact(dev.index)?;
    node.attach_ingress_bpf(dev.index, PRIO, fd.as_fd(), filter)?;
    // the filter holds the program; our descriptor closes here
    Ok(())
}

/// Whether `dev` already carries our filter `name` (an agent restart adopts it).
fn carries(node: &mut Handle, dev: &Link, name: &str) -> bool {
    node.ingress_bpf_filters(dev.index)
        .map(|fs| fs.iter().any(|f| f.prio == PRIO && f.name == name))
        .unwrap_or(false)
}

impl FastPath {
    /// Attaches what is missing: the LAN program on `uplink`, a pod program on
    /// the host veth of every pod in `records`. Returns what it attached.
    pub fn reconcile(
        &mut self,
        records: &[Attachment],
        uplink: &Link,
        bridge: &Link,
        police: &dyn Fn(&Attachment) -> bool,
    ) -> Vec<String> {
        let mut done = vec![];
        if self.unavailable.is_some() {
            return done;
        }
        let Ok(mut node) = Handle::new() else {
            return done;
        };
        let Ok(links) = node.links() else { return done };
        let by_name: HashMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
        // this node's pods on the bridge whose host veth exists
        let pods: Vec<(&Attachment, &Link, [u8; 6], bool)> = records
            .iter()
            .filter(|a| !a.host_if.is_empty() && a.node_dev == bridge.name)
            .filter_map(|a| {
                let dev = by_name.get(a.host_if.as_str())?;
                Some((a, *dev, parse_mac(&a.mac)?, police(a)))
            })
            .collect();
        let mut into: Vec<LanPod> = match self.into_pods_refused {
            Some(_) => vec![],
            None => pods
                .iter()
                .map(|(a, dev, _, police)| LanPod {
                    ip: a.ip,
                    veth: dev.index,
                    police: *police,
                })
                .collect(),
        };
        into.sort();
        into.dedup_by_key(|p| p.ip);
        if !self.attach_lan(&mut node, uplink, bridge, into, &mut done) {
            return done;
        }
        let mut live = std::collections::HashSet::new();
        for (a, dev, mac, policed) in pods {
            live.insert(dev.index);
            let pod_name = pod_filter_name(bridge.index, uplink.index, policed);
            if self.pods.get(&dev.index) == Some(&pod_name) {
                continue;
            }
            if !carries(&mut node, dev, &pod_name) {
                let insns =
                    pod_program(PodId { mac, ip: a.ip }, bridge.index, uplink.index, policed);
                if let Err(e) = load_and_attach(&mut node, dev, &insns, "r2c_pod", &pod_name) {
                    if e.is_refused() {
                        self.unavailable = Some(e.to_string());
                        return done;
                    }
                    // the veth went away meanwhile: try again next time
                    continue;
                }
                done.push(format!("fast path for {} ({})", a.host_if, a.ip));
            }
            self.pods.insert(dev.index, pod_name.clone());
        }
        self.pods.retain(|i, _| live.contains(i));
        done
    }

    /// Puts the LAN program for `into` on the uplink unless it is there;
    /// when the kernel refuses delivery straight into pods, the program
    /// without it. False when the fast path is unavailable.
    fn attach_lan(
        &mut self,
        node: &mut Handle,
        uplink: &Link,
        bridge: &Link,
        mut into: Vec<LanPod>,
        done: &mut Vec<String>,
    ) -> bool {
        loop {
            let name = lan_filter_name(uplink.index, bridge.index, &into);
            if self.lan.as_ref().is_some_and(|(n, _)| *n == name) {
                return true;
            }
            if !carries(node, uplink, &name) {
                let insns = lan_program(uplink.index, bridge.index, &into);
                if let Err(e) = load_and_attach(node, uplink, &insns, "r2c_lan", &name) {
                    if into.is_empty() {
                        self.unavailable = Some(e.to_string());
                        return false;
                    }
                    tracing::info!(
                        "fast path: LAN unicast for pods goes through the bridge, \
                         not straight into them (bpf_redirect_peer: {e})"
                    );
                    self.into_pods_refused = Some(e.to_string());
                    into.clear();
                    continue;
                }
                done.push(format!(
                    "fast path for the LAN on {} ({} pods straight in)",
                    uplink.name,
                    into.len()
                ));
            }
            self.lan = Some((name, into.len()));
            return true;
        }
    }

    /// Removes every program this node's agent attached.
    pub fn remove(&mut self, uplink: &Link) {
        let Ok(mut node) = Handle::new() else { return };
        self.lan = None;
        let ours = node
            .ingress_bpf_filters(uplink.index)
            .map(|fs| {
                fs.iter()
                    .any(|f| f.prio == PRIO && f.name.starts_with("r2c_lan"))
            })
            .unwrap_or(false);
        if ours {
            let _ = node.delete_ingress_filter(uplink.index, PRIO);
        }
        for (index, _) in self.pods.drain() {
            let _ = node.delete_ingress_filter(index, PRIO);
        }
    }

    pub fn attached_pods(&self) -> usize {
        self.pods.len()
    }

    pub fn lan_attached(&self) -> bool {
        self.lan.is_some()
    }

    /// Pods the LAN program delivers straight into.
    pub fn into_pods(&self) -> usize {
        self.lan.as_ref().map_or(0, |(_, n)| *n)
    }

    /// Forgets the failure (config reload): try again.
    pub fn reset(&mut self) {
        self.unavailable = None;
        self.into_pods_refused = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: PodId = PodId {
        mac: [0x0e, 0x2c, 192, 168, 1, 10],
        ip: Ipv4Addr::new(192, 168, 1, 10),
    };

    #[test]
    fn programs_end_every_path_and_jumps_stay_inside() {
        let pod = POD;
        for p in [
            pod_program(pod, 5, 2, false),
            pod_program(pod, 5, 2, true),
            lan_program(2, 5, &[]),
            lan_program(2, 5, &INTO),
        ] {
            assert!(p.len() < 200);
            for (i, ins) in p.iter().enumerate() {
                let class = ins.code & 0x07;
                let op = ins.code & 0xf0;
                if (class == 0x05 || class == 0x06) && op != 0x80 && op != 0x90 {
                    let to = i as isize + 1 + ins.off as isize;
                    assert!(
                        to > i as isize && (to as usize) < p.len(),
                        "jump at {i} to {to}"
                    );
                }
            }
            assert_eq!(p.last().unwrap().code, 0x95, "ends with exit");
        }
    }

    const INTO: [LanPod; 2] = [
        LanPod {
            ip: Ipv4Addr::new(192, 168, 1, 10),
            veth: 7,
            police: false,
        },
        LanPod {
            ip: Ipv4Addr::new(192, 168, 1, 11),
            veth: 9,
            police: true,
        },
    ];

    #[test]
    fn the_lan_program_delivers_listed_pods_straight_in_and_the_rest_to_the_bridge() {
        let p = lan_program(2, 5, &INTO);
        let calls = |id: i32| {
            p.iter()
                .enumerate()
                .filter(|(_, i)| i.code == 0x85 && i.imm == id)
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        let peers = calls(helper::REDIRECT_PEER);
        assert_eq!(peers.len(), 2, "one redirect_peer per pod");
        for (at, pod) in peers.iter().zip(INTO) {
            // mov r1, veth; mov r2, 0; call; exit
            assert_eq!((p[at - 2].code, p[at - 2].imm), (0xb7, pod.veth as i32));
            assert_eq!(p[at + 1].code, 0x95);
        }
        // each pod's block is entered only for its own address (jne32 on
        // the destination kept in r9)
        for pod in INTO {
            let ip = u32::from_le_bytes(pod.ip.octets());
            assert!(p
                .iter()
                .any(|i| i.code == 0x56 && i.regs & 0x0f == 9 && i.imm as u32 == ip));
        }
        // anything else: bpf_redirect to the bridge, as without pods
        let plain = calls(helper::REDIRECT);
        assert_eq!(plain.len(), 1);
        assert_eq!((p[plain[0] - 2].code, p[plain[0] - 2].imm), (0xb7, 5));
        assert!(plain[0] > peers[1]);
        // the policed pod's block first asks whether the port is policed:
        // only it, and only because of it, reads the UDP destination port
        let reads_dport = |p: &[Insn]| p.iter().any(|i| i.code == 0x71 && i.off == 36);
        assert!(reads_dport(&p));
        assert!(!reads_dport(&lan_program(2, 5, &INTO[..1])));
        let checks_flag = |from: usize, to: usize| {
            p[from..to]
                .iter()
                .any(|i| i.code == 0x79 && i.off == POLICED)
        };
        assert!(checks_flag(peers[0] + 1, peers[1]), "policed pod checks");
        assert!(!checks_flag(0, peers[0]), "unpoliced pod does not");
        // the program sets the flag on both ways before it is read
        assert_eq!(
            p.iter()
                .filter(|i| i.code == 0x7a && i.off == POLICED)
                .count(),
            2
        );
    }

    #[test]
    fn the_lan_filter_name_follows_the_pods_it_delivers_into() {
        let none = lan_filter_name(2, 5, &[]);
        assert_eq!(none, "r2c_lan_2_5");
        let both = lan_filter_name(2, 5, &INTO);
        assert!(both.starts_with("r2c_lan_2_5_p2_"), "{both}");
        assert_eq!(both, lan_filter_name(2, 5, &INTO), "stable");
        assert_ne!(both, lan_filter_name(2, 5, &INTO[..1]));
        let mut moved = INTO;
        moved[0].veth = 8;
        assert_ne!(both, lan_filter_name(2, 5, &moved), "a re-created veth");
        moved = INTO;
        moved[1].police = false;
        assert_ne!(both, lan_filter_name(2, 5, &moved), "a policy change");
    }

    #[test]
    fn only_a_policed_pods_program_leaves_rtps_range_udp_to_the_normal_path() {
        let pod = POD;
        // a load of the UDP destination port's bytes (offsets 36, 37)
        let reads_dport = |p: &[Insn]| p.iter().any(|i| i.code == 0x71 && i.off == 36);
        assert!(
            !reads_dport(&pod_program(pod, 5, 2, false)),
            "no policy: UDP to any port may take the fast path"
        );
        assert!(!reads_dport(&lan_program(2, 5, &[])));
        let p = pod_program(pod, 5, 2, true);
        assert!(reads_dport(&p));
        let (lo, hi) = crate::firewall::domains::EPHEMERAL;
        for port in [7400, i32::from(lo), i32::from(hi)] {
            assert!(
                p.iter().any(|i| i.code & 0x07 == 0x05 && i.imm == port),
                "compares against {port}"
            );
        }
        assert_ne!(pod_filter_name(5, 2, true), pod_filter_name(5, 2, false));
        assert!(pod_program(pod, 5, 2, false).len() < p.len());
    }

    #[test]
    fn frames_with_a_vlan_tag_in_the_metadata_or_not_ipv4_in_the_data_pass() {
        let pod = POD;
        for p in [
            pod_program(pod, 5, 2, false),
            pod_program(pod, 5, 2, true),
            lan_program(2, 5, &[]),
        ] {
            let target = |i: usize| (i as isize + 1 + p[i].off as isize) as usize;
            let passes = |i: usize| {
                let t = target(i);
                // mov r0, TC_ACT_OK; exit
                p[t].code == 0xb7
                    && p[t].regs & 0x0f == 0
                    && p[t].imm == TC_ACT_OK
                    && p[t + 1].code == 0x95
            };
            // r6 = ctx; r5 = ctx->vlan_present (u32); if r5 != 0 goto pass
            assert_eq!((p[1].code, p[1].regs, p[1].off), (0x61, 0x65, 20));
            assert_eq!((p[2].code, p[2].regs & 0x0f, p[2].imm), (0x55, 5, 0));
            assert!(passes(2), "a tagged frame passes");
            // the ethertype in the data: anything but 0x0800 passes
            let et = p
                .iter()
                .position(|i| i.code == 0x69 && i.off == 12)
                .expect("ethertype load");
            assert_eq!((p[et + 1].code, p[et + 1].imm), (0x55, 0x0008));
            assert!(passes(et + 1), "not IPv4 passes");
            let redirect = p
                .iter()
                .position(|i| i.code == 0x85 && i.imm == helper::REDIRECT)
                .unwrap();
            assert!(1 < et && et < redirect);
        }
    }

    #[test]
    fn the_pod_program_checks_mac_and_address_with_32_bit_compares() {
        let pod = POD;
        let p = pod_program(pod, 5, 2, false);
        // the MAC's first 4 bytes have the top bit set as a little-endian u32
        let mac_lo = u32::from_le_bytes([0x0e, 0x2c, 0xc0, 0xa8]);
        assert!(
            p.iter().any(|i| i.code == 0x56 && i.imm as u32 == mac_lo),
            "jne32 on the MAC"
        );
        assert!(p
            .iter()
            .any(|i| i.code == 0x56 && i.imm as u32 == u32::from_le_bytes([192, 168, 1, 10])));
        assert!(!lan_program(2, 5, &[])
            .iter()
            .any(|i| i.code == 0x56 && i.imm as u32 == mac_lo));
    }
}
