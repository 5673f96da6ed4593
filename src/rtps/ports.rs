//! The well-known RTPS UDP ports (DDS-RTPS 9.6.1.1, default parameters
//! PB=7400, DG=250, PG=2, d0=0, d1=10, d2=1, d3=11).

use std::net::Ipv4Addr;

pub const PORT_BASE: u32 = 7400;
pub const DOMAIN_GAIN: u32 = 250;
pub const PARTICIPANT_GAIN: u32 = 2;

/// The default SPDP multicast group.
pub const SPDP_MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);

/// What a port is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortRole {
    /// 7400 + 250d.
    SpdpMulticast { domain: u32 },
    /// 7401 + 250d.
    UserMulticast { domain: u32 },
    /// 7410 + 250d + 2p.
    SpdpUnicast { domain: u32, participant: u32 },
    /// 7411 + 250d + 2p.
    UserUnicast { domain: u32, participant: u32 },
}

impl PortRole {
    pub fn domain(self) -> u32 {
        match self {
            PortRole::SpdpMulticast { domain }
            | PortRole::UserMulticast { domain }
            | PortRole::SpdpUnicast { domain, .. }
            | PortRole::UserUnicast { domain, .. } => domain,
        }
    }
}

fn port(v: u32) -> Option<u16> {
    u16::try_from(v).ok()
}

/// 7400 + 250d, if it fits in a port (d <= 232).
pub fn spdp_multicast_port(domain: u32) -> Option<u16> {
    port(PORT_BASE.checked_add(DOMAIN_GAIN.checked_mul(domain)?)?)
}

/// 7401 + 250d.
pub fn user_multicast_port(domain: u32) -> Option<u16> {
    port(spdp_multicast_port(domain)? as u32 + 1)
}

/// 7410 + 250d + 2p.
pub fn spdp_unicast_port(domain: u32, participant: u32) -> Option<u16> {
    let off = 10u32.checked_add(PARTICIPANT_GAIN.checked_mul(participant)?)?;
    if off >= DOMAIN_GAIN {
        return None;
    }
    port(u32::from(spdp_multicast_port(domain)?) + off)
}

/// 7411 + 250d + 2p.
pub fn user_unicast_port(domain: u32, participant: u32) -> Option<u16> {
    port(u32::from(spdp_unicast_port(domain, participant)?) + 1)
}

/// What a UDP port would be for under the default mapping; `None` for ports
/// that cannot be RTPS ports (below 7400, or offsets 2..=9 within a domain).
///
/// Only a guess for unicast ports: Cyclone DDS listens on ephemeral ports by
/// default, and e.g. 44864 reads as "SPDP unicast, domain 149" (seen in the
/// mixed-d3 fixture; Wireshark makes the same guess).
pub fn classify_port(p: u16) -> Option<PortRole> {
    let p = u32::from(p).checked_sub(PORT_BASE)?;
    let domain = p / DOMAIN_GAIN;
    let off = p % DOMAIN_GAIN;
    Some(match off {
        0 => PortRole::SpdpMulticast { domain },
        1 => PortRole::UserMulticast { domain },
        2..=9 => return None,
        o if o % 2 == 0 => PortRole::SpdpUnicast {
            domain,
            participant: (o - 10) / 2,
        },
        o => PortRole::UserUnicast {
            domain,
            participant: (o - 11) / 2,
        },
    })
}

/// The domain whose SPDP multicast port is `p` (7400 + 250d); `None` for any
/// other port. Unicast ports are left out on purpose: see [`classify_port`].
pub fn domain_from_spdp_port(p: u16) -> Option<u32> {
    match classify_port(p)? {
        PortRole::SpdpMulticast { domain } => Some(domain),
        _ => None,
    }
}

/// The domain of an SPDP announcement from where it was sent: a multicast
/// group and the port 7400 + 250d. `None` for unicast destinations, whose
/// ports do not reliably tell the domain.
pub fn domain_from_destination(dst: std::net::SocketAddr) -> Option<u32> {
    if dst.ip().is_multicast() {
        domain_from_spdp_port(dst.port())
    } else {
        None
    }
}
