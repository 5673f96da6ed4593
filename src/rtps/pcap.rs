//! A minimal reader of classic pcap files (what `tcpdump -w` writes): UDP
//! datagrams over IPv4/IPv6 on Ethernet (with VLAN tags), Linux cooked
//! capture v1/v2 (`tcpdump -i any`), raw IP or BSD loopback. IP fragments and
//! IPv6 extension headers are skipped. pcapng is not supported.

use super::{ErrorKind, ParseError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One UDP datagram of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<'a> {
    /// 1-based frame number, as Wireshark counts.
    pub frame: usize,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub payload: &'a [u8],
    /// The capture cut the datagram short.
    pub truncated: bool,
}

const LINKTYPE_NULL: u32 = 0;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW_OLD: u32 = 12;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
const LINKTYPE_LINUX_SLL2: u32 = 276;

fn bad(offset: usize, why: &'static str) -> ParseError {
    ParseError::new(offset, ErrorKind::BadCapture(why))
}

/// Every UDP datagram in a classic pcap file, in capture order. Frames that
/// are not UDP (or not parseable) are skipped but still counted.
pub fn udp_packets(file: &[u8]) -> Result<Vec<UdpPacket<'_>>, ParseError> {
    if file.len() < 24 {
        return Err(bad(0, "shorter than a pcap file header"));
    }
    let magic = [file[0], file[1], file[2], file[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            return Err(bad(
                0,
                "pcapng is not supported; use tcpdump -w or editcap -F pcap",
            ))
        }
        _ => return Err(bad(0, "unknown pcap magic")),
    };
    let u32_at = |b: &[u8], o: usize| -> Option<u32> {
        let a: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    };
    let linktype = u32_at(file, 20).ok_or_else(|| bad(20, "truncated header"))? & 0x0fff_ffff;
    let mut out = Vec::new();
    let mut pos = 24;
    let mut frame = 0;
    while pos < file.len() {
        let incl =
            u32_at(file, pos + 8).ok_or_else(|| bad(pos, "truncated record header"))? as usize;
        let orig =
            u32_at(file, pos + 12).ok_or_else(|| bad(pos, "truncated record header"))? as usize;
        let start = pos + 16;
        let data = file
            .get(start..start.saturating_add(incl))
            .ok_or_else(|| bad(pos, "record runs past the end of the file"))?;
        frame += 1;
        pos = start + incl;
        if let Some(p) = link(linktype, data, frame, orig > incl) {
            out.push(p);
        }
    }
    Ok(out)
}

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn link(linktype: u32, d: &[u8], frame: usize, cut: bool) -> Option<UdpPacket<'_>> {
    let (ethertype, rest) = match linktype {
        LINKTYPE_ETHERNET => {
            let mut off = 12;
            let mut et = be16(d, off)?;
            while et == 0x8100 || et == 0x88a8 {
                off += 4;
                et = be16(d, off)?;
            }
            (et, d.get(off + 2..)?)
        }
        LINKTYPE_LINUX_SLL => (be16(d, 14)?, d.get(16..)?),
        LINKTYPE_LINUX_SLL2 => (be16(d, 0)?, d.get(20..)?),
        LINKTYPE_RAW | LINKTYPE_RAW_OLD | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            (if d.first()? >> 4 == 6 { 0x86dd } else { 0x0800 }, d)
        }
        LINKTYPE_NULL => {
            let fam = u32::from_le_bytes(d.get(..4)?.try_into().ok()?);
            let fam = if fam > 0xffff { fam.swap_bytes() } else { fam };
            (if fam == 2 { 0x0800 } else { 0x86dd }, d.get(4..)?)
        }
        _ => return None,
    };
    match ethertype {
        0x0800 => ipv4(rest, frame, cut),
        0x86dd => ipv6(rest, frame, cut),
        _ => None,
    }
}

fn ipv4(d: &[u8], frame: usize, cut: bool) -> Option<UdpPacket<'_>> {
    if d.first()? >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(d[0] & 0x0f) * 4;
    let total = usize::from(be16(d, 2)?);
    let frag = be16(d, 6)?;
    if frag & 0x3fff != 0 || *d.get(9)? != 17 || ihl < 20 {
        return None; // fragment, or not UDP
    }
    let ttl = *d.get(8)?;
    let src: [u8; 4] = d.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = d.get(16..20)?.try_into().ok()?;
    let end = total.min(d.len());
    udp(
        d.get(ihl..end)?,
        IpAddr::V4(Ipv4Addr::from(src)),
        IpAddr::V4(Ipv4Addr::from(dst)),
        ttl,
        frame,
        cut || total > d.len(),
    )
}

fn ipv6(d: &[u8], frame: usize, cut: bool) -> Option<UdpPacket<'_>> {
    if d.first()? >> 4 != 6 || *d.get(6)? != 17 {
        return None;
    }
    let plen = usize::from(be16(d, 4)?);
    let ttl = *d.get(7)?;
    let src: [u8; 16] = d.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = d.get(24..40)?.try_into().ok()?;
    let end = 40usize.saturating_add(plen).min(d.len());
    udp(
        d.get(40..end)?,
        IpAddr::V6(Ipv6Addr::from(src)),
        IpAddr::V6(Ipv6Addr::from(dst)),
        ttl,
        frame,
        cut || 40 + plen > d.len(),
    )
}

fn udp(
    d: &[u8],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    frame: usize,
    cut: bool,
) -> Option<UdpPacket<'_>> {
    let sport = be16(d, 0)?;
    let dport = be16(d, 2)?;
    let len = usize::from(be16(d, 4)?);
    if len < 8 {
        return None;
    }
    let end = len.min(d.len());
    Some(UdpPacket {
        frame,
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        ttl,
        payload: d.get(8..end)?,
        truncated: cut || len > d.len(),
    })
}

/// Writes a classic little-endian pcap (LINKTYPE_RAW) holding IPv4/UDP
/// datagrams: for tests and for saving what the lab's SPDP listener saw.
pub fn write_ipv4_udp(packets: &[(SocketAddr, SocketAddr, u8, &[u8])]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65_535u32.to_le_bytes());
    f.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    for (src, dst, ttl, payload) in packets {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
            continue;
        };
        let Ok(total) = u16::try_from(28 + payload.len()) else {
            continue;
        };
        let mut ip = Vec::with_capacity(usize::from(total));
        ip.extend_from_slice(&[0x45, 0]);
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, *ttl, 17, 0, 0]);
        ip.extend_from_slice(&s.octets());
        ip.extend_from_slice(&d.octets());
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend_from_slice(&src.port().to_be_bytes());
        ip.extend_from_slice(&dst.port().to_be_bytes());
        ip.extend_from_slice(&(total - 20).to_be_bytes());
        ip.extend_from_slice(&[0, 0]); // no UDP checksum
        ip.extend_from_slice(payload);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        f.extend_from_slice(&ip);
    }
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
