//! The relay's datagram: an 8-byte header and the pod's original IPv4
//! packet (IP header, UDP header, RTPS payload), unchanged.
//!
//! ```text
//!  0      4        5        6        8
//!  | R2CR | version| flags  | 0 0    | original IPv4 packet ...
//! ```
//!
//! Hand-written: the format is ours and a dozen lines; no crate describes it.

use std::net::Ipv4Addr;

pub const MAGIC: &[u8; 4] = b"R2CR";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 8;
/// The largest original packet that fits one relay datagram
/// (65535 − 20 IP − 8 UDP − 8 header).
pub const MAX_INNER: usize = 65_499;

/// Why a received datagram was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not our header, or an unknown version.
    Header,
    /// The inner packet is not a well-formed IPv4 UDP packet.
    Packet,
    /// The inner packet is not addressed to one of the relayed groups.
    Group,
    /// The inner source is not a unicast address, or is one of this node's
    /// own pods (a peer may not speak for them).
    Source,
    /// The peer sent more than `relayPeerRate` allows.
    Rate,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Header => "header",
            Reject::Packet => "packet",
            Reject::Group => "group",
            Reject::Source => "source",
            Reject::Rate => "rate",
        }
    }
}

/// The header of a datagram carrying a packet (the packet follows).
pub const HEADER: [u8; HEADER_LEN] = [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, 0, 0, 0];

/// Wraps an original IPv4 packet into `out` (cleared first).
pub fn encode(ip: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&HEADER);
    out.extend_from_slice(ip);
}

/// A checked inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner<'a> {
    pub ip: &'a [u8],
    pub src: Ipv4Addr,
    pub group: Ipv4Addr,
}

/// Checks an IPv4 packet to one of `groups` (fragments included: a later
/// fragment carries no UDP header, the first one must).
pub fn check_ip<'a>(ip: &'a [u8], groups: &[Ipv4Addr]) -> Result<Inner<'a>, Reject> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return Err(Reject::Packet);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || total != ip.len() || total < ihl || total > MAX_INNER {
        return Err(Reject::Packet);
    }
    let first = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
    if first {
        if total < ihl + 8 {
            return Err(Reject::Packet);
        }
        let ulen = usize::from(u16::from_be_bytes([ip[ihl + 4], ip[ihl + 5]]));
        let more = u16::from_be_bytes([ip[6], ip[7]]) & 0x2000 != 0;
        if ulen < 8 || (!more && ulen != total - ihl) {
            return Err(Reject::Packet);
        }
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let group = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    if !groups.contains(&group) {
        return Err(Reject::Group);
    }
    if src.is_multicast() || src.is_unspecified() || src.is_broadcast() || src.is_loopback() {
        return Err(Reject::Source);
    }
    Ok(Inner { ip, src, group })
}

/// Unwraps and checks a received relay datagram.
pub fn decode<'a>(dgram: &'a [u8], groups: &[Ipv4Addr]) -> Result<Inner<'a>, Reject> {
    if dgram.len() < HEADER_LEN || &dgram[..4] != MAGIC || dgram[4] != VERSION {
        return Err(Reject::Header);
    }
    check_ip(&dgram[HEADER_LEN..], groups)
}

/// The IPv4 header checksum of `hdr` (its checksum field taken as zero).
pub fn header_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (i, c) in hdr.chunks(2).enumerate() {
        if i == 5 {
            continue;
        }
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The packet as it is put on the bridge: TTL 1 (it goes to the pods and
/// no further), header checksum fixed; addresses and ports unchanged.
pub fn for_pods(ip: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(ip);
    make_for_pods(out);
}

/// [`for_pods`] in place, on a packet [`check_ip`] accepted.
pub fn make_for_pods(ip: &mut [u8]) {
    ip[8] = 1;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let c = header_checksum(&ip[..ihl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

fn sum16(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Recomputes the UDP checksum of an unfragmented IPv4/UDP packet in place.
///
/// A packet captured as the pod sent it may carry only a partial checksum
/// (the veth left checksumming to "hardware" that never runs); delivered
/// elsewhere as is, the receiver's stack would drop it. A zero checksum
/// (none) and fragments (checksummed before fragmentation) are left alone.
pub fn fix_udp_checksum(ip: &mut [u8]) {
    if ip.len() < 28 {
        return;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x3fff != 0 || ip.len() < ihl + 8 {
        return;
    }
    if ip[ihl + 6] == 0 && ip[ihl + 7] == 0 {
        return;
    }
    let udp_len = ip.len() - ihl;
    ip[ihl + 6] = 0;
    ip[ihl + 7] = 0;
    let mut sum = sum16(&ip[12..20], 0);
    sum += 17 + udp_len as u32;
    sum = sum16(&ip[ihl..], sum);
    let c = match fold(sum) {
        0 => 0xffff,
        c => c,
    };
    ip[ihl + 6..ihl + 8].copy_from_slice(&c.to_be_bytes());
}

/// The Ethernet multicast address of an IPv4 group (RFC 1112).
pub fn group_mac(g: Ipv4Addr) -> [u8; 6] {
    let o = g.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// Builds an IPv4/UDP packet (tests and the lab's forger); UDP checksum 0.
pub fn udp_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, ttl, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = header_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
    const POD: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 5);

    #[test]
    fn round_trip_keeps_the_packet() {
        let ip = udp_packet(POD, G, 40000, 7400, 1, b"RTPS....");
        let mut d = vec![];
        encode(&ip, &mut d);
        assert_eq!(d.len(), ip.len() + HEADER_LEN);
        let inner = decode(&d, &[G]).unwrap();
        assert_eq!(inner.ip, &ip[..]);
        assert_eq!((inner.src, inner.group), (POD, G));
    }

    #[test]
    fn for_pods_sets_ttl_1_with_a_valid_checksum() {
        let ip = udp_packet(POD, G, 40000, 7400, 32, b"x");
        let mut out = vec![];
        for_pods(&ip, &mut out);
        assert_eq!(out[8], 1);
        assert_eq!(&out[12..20], &ip[12..20], "addresses unchanged");
        assert_eq!(&out[20..], &ip[20..], "ports and payload unchanged");
        // a header with its checksum sums to 0xffff
        let mut sum: u32 = out[..20]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }

    #[test]
    fn rejects_what_is_not_a_relayed_rtps_packet() {
        let ok = udp_packet(POD, G, 1, 7400, 1, b"abc");
        let mut d = vec![];
        encode(&ok, &mut d);
        let mut bad = d.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad, &[G]), Err(Reject::Header));
        let mut bad = d.clone();
        bad[4] = 2;
        assert_eq!(decode(&bad, &[G]), Err(Reject::Header));
        assert_eq!(decode(&d[..HEADER_LEN + 10], &[G]), Err(Reject::Packet));
        let mut bad = d.clone();
        bad.push(0); // total length no longer matches
        assert_eq!(decode(&bad, &[G]), Err(Reject::Packet));
        let mut bad = d.clone();
        bad[HEADER_LEN + 9] = 6; // TCP
        assert_eq!(decode(&bad, &[G]), Err(Reject::Packet));
        let other = Ipv4Addr::new(239, 1, 1, 1);
        assert_eq!(decode(&d, &[other]), Err(Reject::Group));
        let spoof = udp_packet(Ipv4Addr::new(224, 0, 0, 1), G, 1, 7400, 1, b"");
        encode(&spoof, &mut d);
        assert_eq!(decode(&d, &[G]), Err(Reject::Source));
        assert_eq!(decode(b"R2CR", &[G]), Err(Reject::Header));
    }

    #[test]
    fn later_fragments_pass_without_a_udp_header() {
        let mut ip = udp_packet(POD, G, 1, 7400, 1, &[0u8; 100]);
        ip[6] = 0x00;
        ip[7] = 0xb9; // offset 185*8, last fragment
        assert!(check_ip(&ip, &[G]).is_ok());
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 1;
        for len in 0..200usize {
            let mut d: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = decode(&d, &[G]);
            if d.len() > 8 {
                d[..4].copy_from_slice(MAGIC);
                d[4] = VERSION;
                let _ = decode(&d, &[G]);
            }
        }
    }

    #[test]
    fn udp_checksum_is_recomputed() {
        // a known packet: checksum computed independently (RFC 768 by hand)
        let mut ip = udp_packet(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            0x1234,
            0x5678,
            64,
            b"ab",
        );
        ip[26] = 0xde; // a partial checksum left by offload
        ip[27] = 0xad;
        fix_udp_checksum(&mut ip);
        // pseudo: 0a00+0001+0a00+0002+0011+000a; udp: 1234+5678+000a+6162
        let sum: u32 =
            0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 0x0011 + 0x000a + 0x1234 + 0x5678 + 0x000a + 0x6162;
        let want = !(((sum & 0xffff) + (sum >> 16)) as u16);
        assert_eq!(u16::from_be_bytes([ip[26], ip[27]]), want);
        // zero (no checksum) stays zero
        let mut z = udp_packet(POD, G, 1, 2, 1, b"x");
        fix_udp_checksum(&mut z);
        assert_eq!(&z[26..28], &[0, 0]);
    }

    #[test]
    fn group_mac_maps_the_low_23_bits() {
        assert_eq!(group_mac(G), [1, 0, 0x5e, 0x7f, 0, 1]);
    }
}
