//! The matches the node's tables share, as nf_tables expressions: each one
//! loads a field into register R0 and compares it there, so they can be
//! chained in any order.

use crate::kernel::nft::{Expr, MetaKey, PayloadBase, REG32_00};

/// The register every shared match loads into.
pub const R0: u32 = REG32_00;

/// Loads `len` bytes at `offset` from `base` into R0.
pub fn load(base: PayloadBase, offset: u32, len: u32) -> Expr {
    Expr::Payload {
        base,
        offset,
        len,
        dreg: R0,
    }
}

/// The field at `offset` from `base` is `data` (else the rule stops here).
pub fn field_is(base: PayloadBase, offset: u32, data: &[u8]) -> [Expr; 2] {
    [
        load(base, offset, data.len() as u32),
        Expr::CmpEq {
            sreg: R0,
            data: data.to_vec(),
        },
    ]
}

/// The input interface's name is `name` (an `ifname` key, or a prefix of
/// one: the comparison is over `name`'s bytes).
pub fn iifname_is(name: &[u8]) -> [Expr; 2] {
    [
        Expr::Meta {
            key: MetaKey::IifName,
            dreg: R0,
        },
        Expr::CmpEq {
            sreg: R0,
            data: name.to_vec(),
        },
    ]
}

/// The frame's Ethernet type is `t` (bridge tables).
pub fn ether_type_is(t: [u8; 2]) -> [Expr; 2] {
    field_is(PayloadBase::Link, 12, &t)
}

/// The IPv4 header's protocol is `p`.
pub fn ip_protocol_is(p: u8) -> [Expr; 2] {
    field_is(PayloadBase::Network, 9, &[p])
}

/// IPv4 UDP: on a bridge the Ethernet type is checked first (`bridge`).
/// First fragments only, once a rule goes on to load the UDP header: later
/// fragments carry none, and a transport payload load does not match them.
pub fn ipv4_udp(bridge: bool) -> Vec<Expr> {
    let mut v = vec![];
    if bridge {
        v.extend(ether_type_is([0x08, 0x00]));
    }
    v.extend(ip_protocol_is(17));
    v
}

/// Loads the IPv4 destination address into R0.
pub fn ip_daddr() -> Expr {
    load(PayloadBase::Network, 16, 4)
}

/// Loads the UDP destination port into R0.
pub fn udp_dport() -> Expr {
    load(PayloadBase::Transport, 2, 2)
}
