//! `ip ros2_cni_fwd`: the nftables multicast forwarder, for kernels without
//! IPv4 multicast routing (`CONFIG_IP_MROUTE`).
//!
//! One base chain on the prerouting hook, priority -290: after the uplink's
//! discovery limits (-310) and the TTL rule (-300), so a sender over its
//! limit is dropped before it is copied, and Fast DDS's TTL 1 is already 2.
//! Per RTPS group and direction one rule
//!
//! ```text
//! iifname "ros2br0" ether type ip ip protocol udp ip daddr G ip ttl 2-255 counter dup to G device "eth0" accept
//! iifname "eth0"    ether type ip ip protocol udp ip daddr G ip ttl 2-255 counter dup to G device "ros2br0" accept
//! ```
//!
//! `dup` (nft_dup_ipv4) routes a copy to the group out of the named device:
//! the copy leaves with that device's own MAC (a Wi-Fi access point accepts
//! it), the sender's source address, and its TTL lowered by one (the kernel
//! lowers it for copies made in prerouting), as the kernel's multicast
//! router does: TTL-1 discovery raised to 2 arrives with TTL 1 and dies at
//! the next hop. A copy is never copied again: it does not pass prerouting,
//! the bridge does not hand a frame it sends back up to the node, and a
//! copy sent out of the uplink does not come back in, and the copy the
//! kernel loops back to the node when one of its own processes joined the
//! group carries no Ethernet header, which the rules require. So every packet is
//! forwarded once, never back where it came from, however many nodes share
//! the LAN. The rules are fixed by the config: no state per group or per
//! source, whatever arrives. The last rules only count other multicast
//! arriving (224.0.1.0 and up; link-local groups are never forwarded): the
//! multicast-pressure signal the kernel forwarder's catch-all gives.
//!
//! The devices are named by index (as `nft` does): a rule's comment carries
//! the index, so a re-created bridge or uplink gets new rules.

use super::{comment, expr, ifname_key, Forwarded, DIRECTIONS};
use crate::kernel::nft::{
    ChainSpec, DumpedRule, Expr, PayloadBase, RuleSpec, TableSpec, NFPROTO_IPV4, NF_ACCEPT,
    NF_INET_PRE_ROUTING, REG32_00,
};
use std::net::Ipv4Addr;

/// The table's name (family ip).
pub const TABLE: &str = "ros2_cni_fwd";

/// After the uplink limit (-310) and the TTL rule (-300).
pub const PRIORITY: i32 = -290;

/// An interface by name and index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dev<'a> {
    pub name: &'a str,
    pub index: u32,
}

const R0: u32 = REG32_00;
const R1: u32 = REG32_00 + 1;

/// A frame that came in with an Ethernet header: not the kernel's looped-back
/// copy of a packet this node sent itself (a copy out of an interface on
/// which a process of the node joined the group is looped back to the node
/// as if it arrived there, with no link-layer header; nf_tables reads its
/// `meta pkttype` as multicast, so only the missing header tells). Without
/// this, a ROS 2 process in the node's own network that joined the group
/// would have every copy sent back where it came from.
fn received() -> [Expr; 2] {
    expr::ether_type_is([0x08, 0x00])
}

fn dup_rule(g: Ipv4Addr, port: Option<u16>, dir: &str, iif: &Dev, oif: &Dev) -> RuleSpec {
    let mut exprs = expr::iifname_is(&ifname_key(iif.name)).to_vec();
    exprs.extend(received());
    // UDP only: IGMP membership reports are addressed to the group too,
    // and each network keeps its own
    exprs.extend(expr::ip_protocol_is(17));
    if let Some(p) = port {
        exprs.extend([
            expr::udp_dport(),
            Expr::CmpEq {
                sreg: R0,
                data: p.to_be_bytes().to_vec(),
            },
        ]);
    }
    exprs.extend(expr::field_is(PayloadBase::Network, 16, &g.octets()));
    exprs.extend([
        // the kernel router's rule: a TTL above the threshold (1)
        expr::load(PayloadBase::Network, 8, 1),
        Expr::Range {
            sreg: R0,
            from: vec![2],
            to: vec![255],
            neq: false,
        },
        Expr::Counter,
        Expr::Immediate {
            dreg: R0,
            data: g.octets().to_vec(),
        },
        Expr::Immediate {
            dreg: R1,
            data: oif.index.to_ne_bytes().to_vec(),
        },
        Expr::Dup {
            addr_reg: R0,
            dev_reg: R1,
        },
        Expr::Verdict {
            code: NF_ACCEPT,
            chain: None,
        },
    ]);
    let port = port.map(|p| format!(" port {p}")).unwrap_or_default();
    RuleSpec {
        comment: comment(&format!(
            "fwd {g} {dir} {} {} #{}{port}",
            iif.name, oif.name, oif.index
        )),
        exprs,
    }
}

fn other_multicast_rule(iif: &Dev) -> RuleSpec {
    let mut exprs = expr::iifname_is(&ifname_key(iif.name)).to_vec();
    exprs.extend(received());
    exprs.extend([
        expr::ip_daddr(),
        Expr::Range {
            sreg: R0,
            from: vec![224, 0, 1, 0],
            to: vec![239, 255, 255, 255],
            neq: false,
        },
        Expr::Counter,
    ]);
    RuleSpec {
        comment: comment(&format!("other-multicast {}", iif.name)),
        exprs,
    }
}

/// What the table carries: the RTPS `groups` (every port; None when the
/// kernel's multicast routing carries them and this table only the extras)
/// and the `extra` (group, UDP port) pairs (`extraMulticast`: Zenoh's
/// scouting on a link-local group, which no kernel routes).
#[derive(Debug, Clone, Copy)]
pub struct Carry<'a> {
    pub rtps: Option<&'a [Ipv4Addr]>,
    pub extra: &'a [(Ipv4Addr, u16)],
}

/// The table between `uplink` and `bridge`. With `lan` false
/// (`lanMulticast: false`) the pods' multicast is not copied to the uplink
/// (the relay carries it); the LAN's still reaches the pods.
pub fn spec(carry: Carry, uplink: &Dev, bridge: &Dev, lan: bool) -> TableSpec {
    let mut rules = vec![];
    let pairs = carry
        .rtps
        .unwrap_or_default()
        .iter()
        .map(|g| (*g, None))
        .chain(carry.extra.iter().map(|(g, p)| (*g, Some(*p))));
    for (g, port) in pairs {
        for (dir, from_lan) in DIRECTIONS {
            if from_lan {
                rules.push(dup_rule(g, port, dir, uplink, bridge));
            } else if lan {
                rules.push(dup_rule(g, port, dir, bridge, uplink));
            }
        }
    }
    if carry.rtps.is_some() {
        rules.push(other_multicast_rule(uplink));
        rules.push(other_multicast_rule(bridge));
    }
    TableSpec {
        family: NFPROTO_IPV4,
        name: TABLE.into(),
        sets: vec![],
        chains: vec![ChainSpec {
            name: "prerouting".into(),
            hook: Some((NF_INET_PRE_ROUTING, PRIORITY)),
            rules,
        }],
    }
}

/// What the table's counters say: forwarded per (group, direction), and
/// other multicast arriving (packets).
pub fn counted(rules: &[DumpedRule]) -> (Forwarded, u64) {
    let other = comment("other-multicast ");
    let not_rtps = rules
        .iter()
        .filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(&other)))
        .filter_map(|r| r.counter.map(|c| c.0))
        .sum();
    (super::forwarded_of(rules), not_rtps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
    const ZENOH: (Ipv4Addr, u16) = (Ipv4Addr::new(224, 0, 0, 224), 7446);

    fn rtps(groups: &[Ipv4Addr]) -> Carry<'_> {
        Carry {
            rtps: Some(groups),
            extra: &[],
        }
    }

    #[test]
    fn extra_pairs_match_their_port_and_alone_need_no_other_multicast_counters() {
        let (up, br) = devs();
        let extra = [ZENOH];
        let s = spec(
            Carry {
                rtps: None,
                extra: &extra,
            },
            &up,
            &br,
            true,
        );
        assert_eq!(
            comments(&s),
            [
                "ros2-cni v1 fwd 224.0.0.224 pods_to_lan ros2br0 eth0 #2 port 7446",
                "ros2-cni v1 fwd 224.0.0.224 lan_to_pods eth0 ros2br0 #7 port 7446",
            ]
        );
        let r = &s.chains[0].rules[0].exprs;
        assert!(r.windows(2).any(|w| w
            == [
                super::expr::udp_dport(),
                Expr::CmpEq {
                    sreg: R0,
                    data: 7446u16.to_be_bytes().to_vec()
                }
            ]));
        // with the RTPS groups: theirs first, on every port, then the extras
        let g = [G];
        let s = spec(
            Carry {
                rtps: Some(&g),
                extra: &extra,
            },
            &up,
            &br,
            true,
        );
        assert_eq!(s.chains[0].rules.len(), 2 + 2 + 2);
        assert!(!s.chains[0].rules[0].comment.contains("port"));
    }

    fn devs() -> (Dev<'static>, Dev<'static>) {
        (
            Dev {
                name: "eth0",
                index: 2,
            },
            Dev {
                name: "ros2br0",
                index: 7,
            },
        )
    }

    fn comments(s: &TableSpec) -> Vec<&str> {
        s.chains[0]
            .rules
            .iter()
            .map(|r| r.comment.as_str())
            .collect()
    }

    #[test]
    fn one_rule_per_group_and_direction_then_the_other_multicast_counters() {
        let (up, br) = devs();
        let s = spec(rtps(&[G, Ipv4Addr::new(239, 255, 0, 2)]), &up, &br, true);
        assert_eq!(
            comments(&s),
            [
                "ros2-cni v1 fwd 239.255.0.1 pods_to_lan ros2br0 eth0 #2",
                "ros2-cni v1 fwd 239.255.0.1 lan_to_pods eth0 ros2br0 #7",
                "ros2-cni v1 fwd 239.255.0.2 pods_to_lan ros2br0 eth0 #2",
                "ros2-cni v1 fwd 239.255.0.2 lan_to_pods eth0 ros2br0 #7",
                "ros2-cni v1 other-multicast eth0",
                "ros2-cni v1 other-multicast ros2br0",
            ]
        );
        assert_eq!(s.chains[0].hook, Some((NF_INET_PRE_ROUTING, PRIORITY)));
        // a copy goes to the group out of the other device, after the count
        let r = &s.chains[0].rules[0].exprs;
        let n = r.len();
        assert_eq!(
            r[n - 4..n - 1],
            [
                Expr::Immediate {
                    dreg: R0,
                    data: G.octets().to_vec()
                },
                Expr::Immediate {
                    dreg: R1,
                    data: 2u32.to_ne_bytes().to_vec()
                },
                Expr::Dup {
                    addr_reg: R0,
                    dev_reg: R1
                },
            ]
        );
        assert!(r.contains(&Expr::Counter));
        // UDP only: the agents' IGMP reports go to the group address too
        assert!(r.windows(2).any(|w| w == super::expr::ip_protocol_is(17)));
        // received frames only, never the node's own looped-back copies
        assert!(r.windows(2).any(|w| w == received()));
    }

    #[test]
    fn without_lan_multicast_only_the_lan_reaches_the_pods() {
        let (up, br) = devs();
        let s = spec(rtps(&[G]), &up, &br, false);
        assert_eq!(
            comments(&s)[0],
            "ros2-cni v1 fwd 239.255.0.1 lan_to_pods eth0 ros2br0 #7"
        );
        assert_eq!(s.chains[0].rules.len(), 3);
    }

    #[test]
    fn a_new_device_index_changes_the_rules() {
        let (up, br) = devs();
        let moved = Dev {
            name: "ros2br0",
            index: 9,
        };
        assert_ne!(
            comments(&spec(rtps(&[G]), &up, &br, true)),
            comments(&spec(rtps(&[G]), &up, &moved, true))
        );
    }

    #[test]
    fn counters_are_read_per_group_and_direction() {
        let (up, br) = devs();
        let s = spec(rtps(&[G]), &up, &br, true);
        let rules: Vec<DumpedRule> = s.chains[0]
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| DumpedRule {
                chain: "prerouting".into(),
                handle: i as u64,
                comment: Some(r.comment.clone()),
                counter: Some((10 * (i as u64 + 1), 100 * (i as u64 + 1))),
            })
            .collect();
        let (f, other) = counted(&rules);
        assert_eq!(f[&(G, "pods_to_lan")], (10, 100));
        assert_eq!(f[&(G, "lan_to_pods")], (20, 200));
        assert_eq!(other, 30 + 40);
    }
}
