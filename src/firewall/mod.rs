//! nftables state owned by ros2-cni, applied read-compare-write over netlink.
//!
//! Two tables:
//! - `bridge ros2_cni` (pod-facing, kept across agent restarts): frames entering
//!   the node bridge from a pod's port (host veth names start with
//!   [`HOST_VETH_PREFIX`]) pass only if (port, source MAC, source IPv4) — and for
//!   ARP also the sender hardware address — is in the set `pods`. One element
//!   per attached pod; everything else from pod ports (IPv6, spoofed frames) is
//!   counted and dropped.
//! - `ip ros2_cni` (agent-owned): for packets entering from `uplink` or the
//!   bridge addressed to an RTPS group, TTL 1 becomes 2, so the multicast router
//!   forwards Fast DDS / Connext discovery (sent with TTL 1) one hop.
//! - `ip ros2_cni_count` (agent-owned, kernel forwarder): counters on the
//!   forward hook, one per RTPS group and direction, for what the multicast
//!   router forwarded (its (*,G) entries count both directions together).
//! - `ip ros2_cni_fwd` (agent-owned, nftables forwarder): the forwarder for
//!   kernels without multicast routing ([`dup`]).

pub mod counts;
pub mod domains;
pub mod dup;
pub mod expr;
pub mod limits;

use crate::kernel::nft::{
    concat_type, ChainSpec, DumpedRule, Expr, MetaKey, Nfnl, PayloadBase, RuleSpec, SetSpec,
    TableSpec, NFPROTO_BRIDGE, NFPROTO_IPV4, NFT_JUMP, NF_ACCEPT, NF_DROP, NF_INET_FORWARD,
    NF_INET_PRE_ROUTING, REG32_00, TYPE_ETHERADDR, TYPE_IFNAME, TYPE_IPADDR,
};
use expr::ether_type_is;
use std::net::Ipv4Addr;

use crate::kernel::Error;

pub const TABLE: &str = "ros2_cni";
pub const PODS_SET: &str = "pods";
pub const GROUPS_SET: &str = "groups";
pub const IFACES_SET: &str = "ifaces";
/// Host-side veth names start with this (see `dataplane::host_veth_name`).
pub const HOST_VETH_PREFIX: &str = "r2c";
/// Bumped whenever the rules change, so old rules get replaced.
const RULES_VERSION: &str = "v1";

type Result<T> = std::result::Result<T, Error>;

const R0: u32 = REG32_00;
/// ifname takes 4 registers, a MAC 2 (padded), then the IPv4 address.
const R_MAC: u32 = REG32_00 + 4;
const R_IP: u32 = REG32_00 + 6;

fn comment(name: &str) -> String {
    format!("ros2-cni {RULES_VERSION} {name}")
}

/// The anti-spoofing table for pod ports on the node bridge: the set of
/// allowed (port, MAC, IPv4), a hook that sends every frame from a pod port
/// to `pod_in`, and `pod_in`, which accepts IPv4 and ARP frames whose key is
/// in the set and counts and drops everything else.
pub fn pod_guard_spec() -> TableSpec {
    TableSpec {
        family: NFPROTO_BRIDGE,
        name: TABLE.into(),
        sets: vec![pods_set()],
        chains: vec![
            ChainSpec {
                name: "pod_in".into(),
                hook: None,
                rules: vec![pod_ip_rule(), pod_arp_rule(), pod_drop_rule()],
            },
            ChainSpec {
                name: "prerouting".into(),
                hook: Some((NF_INET_PRE_ROUTING, -200)),
                rules: vec![pod_ports_rule()],
            },
        ],
    }
}

/// The `pods` set; its key layout is [`pod_key`]'s.
fn pods_set() -> SetSpec {
    SetSpec {
        name: PODS_SET.into(),
        key_type: concat_type(&[TYPE_IFNAME, TYPE_ETHERADDR, TYPE_IPADDR]),
        key_len: 28,
        dynamic_timeout_ms: None,
    }
}

/// IPv4 from a pod port: accepted if (port, source MAC, source address) is
/// in `pods`.
fn pod_ip_rule() -> RuleSpec {
    let mut exprs = ether_type_is([0x08, 0x00]).to_vec();
    exprs.extend(load_pod_key(12));
    exprs.extend([in_pods(), accept()]);
    RuleSpec {
        comment: comment("pod-ip"),
        exprs,
    }
}

/// ARP from a pod port: accepted if (port, source MAC, sender protocol
/// address) is in `pods` and so is (port, sender hardware address, sender
/// protocol address): the ARP body may not claim another MAC than the frame.
fn pod_arp_rule() -> RuleSpec {
    let mut exprs = ether_type_is([0x08, 0x06]).to_vec();
    exprs.extend(load_pod_key(14));
    exprs.push(in_pods());
    // the sender hardware address inside the ARP body must match too
    exprs.extend([
        Expr::Payload {
            base: PayloadBase::Network,
            offset: 8,
            len: 6,
            dreg: R_MAC,
        },
        in_pods(),
        accept(),
    ]);
    RuleSpec {
        comment: comment("pod-arp"),
        exprs,
    }
}

/// Whatever else comes from a pod port (IPv6, spoofed frames): counted
/// (the spoofed-drops figure) and dropped.
fn pod_drop_rule() -> RuleSpec {
    RuleSpec {
        comment: comment("pod-drop"),
        exprs: vec![
            Expr::Counter,
            Expr::Verdict {
                code: NF_DROP,
                chain: None,
            },
        ],
    }
}

/// Frames entering the bridge from a pod port (host veth names start with
/// [`HOST_VETH_PREFIX`]) go to `pod_in`.
fn pod_ports_rule() -> RuleSpec {
    RuleSpec {
        comment: comment("pod-ports"),
        exprs: vec![
            Expr::Meta {
                key: MetaKey::IifName,
                dreg: R0,
            },
            Expr::CmpEq {
                sreg: R0,
                data: HOST_VETH_PREFIX.as_bytes().to_vec(),
            },
            Expr::Verdict {
                code: NFT_JUMP,
                chain: Some("pod_in".into()),
            },
        ],
    }
}

/// Loads a `pods` key into the registers from R0 on: the input port's
/// name, the frame's source MAC, and the IPv4 address at `ip_offset` in the
/// network header (12: IPv4 source; 14: ARP sender protocol address).
fn load_pod_key(ip_offset: u32) -> [Expr; 3] {
    [
        Expr::Meta {
            key: MetaKey::IifName,
            dreg: R0,
        },
        Expr::Payload {
            base: PayloadBase::Link,
            offset: 6,
            len: 6,
            dreg: R_MAC,
        },
        Expr::Payload {
            base: PayloadBase::Network,
            offset: ip_offset,
            len: 4,
            dreg: R_IP,
        },
    ]
}

/// The key loaded from R0 on is in `pods` (else the rule stops here).
fn in_pods() -> Expr {
    Expr::Lookup {
        sreg: R0,
        set: PODS_SET.into(),
    }
}

fn accept() -> Expr {
    Expr::Verdict {
        code: NF_ACCEPT,
        chain: None,
    }
}

/// The TTL rule's name (its comment). "rtps-ttl" was the rule before it
/// required an Ethernet header: a node that still has it gets the new one.
const TTL_RULE: &str = "rtps-ttl-received";

/// The TTL 1 → 2 rule for RTPS groups entering from the given interfaces.
pub fn ttl_spec() -> TableSpec {
    let mut exprs = vec![
        Expr::Meta {
            key: MetaKey::IifName,
            dreg: R0,
        },
        Expr::Lookup {
            sreg: R0,
            set: IFACES_SET.into(),
        },
    ];
    // frames that came in with an Ethernet header: never the copy the
    // kernel loops back to the node when one of its own processes joined
    // the group (a forwarded copy with TTL 1, which raised to 2 would be
    // forwarded again, back where it came from, by either forwarder)
    exprs.extend(ether_type_is([0x08, 0x00]));
    exprs.extend([
        Expr::Payload {
            base: PayloadBase::Network,
            offset: 16,
            len: 4,
            dreg: R0,
        },
        Expr::Lookup {
            sreg: R0,
            set: GROUPS_SET.into(),
        },
        Expr::Payload {
            base: PayloadBase::Network,
            offset: 8,
            len: 1,
            dreg: R0,
        },
        Expr::CmpEq {
            sreg: R0,
            data: vec![1],
        },
        Expr::Counter,
        Expr::Immediate {
            dreg: R0,
            data: vec![2],
        },
        Expr::PayloadWrite {
            base: PayloadBase::Network,
            offset: 8,
            len: 1,
            sreg: R0,
            csum_offset: 10,
        },
    ]);
    TableSpec {
        family: NFPROTO_IPV4,
        name: TABLE.into(),
        sets: vec![
            SetSpec {
                name: GROUPS_SET.into(),
                key_type: TYPE_IPADDR,
                key_len: 4,
                dynamic_timeout_ms: None,
            },
            SetSpec {
                name: IFACES_SET.into(),
                key_type: TYPE_IFNAME,
                key_len: 16,
                dynamic_timeout_ms: None,
            },
        ],
        chains: vec![ChainSpec {
            name: "prerouting".into(),
            hook: Some((NF_INET_PRE_ROUTING, -300)),
            rules: vec![RuleSpec {
                comment: comment(TTL_RULE),
                exprs,
            }],
        }],
    }
}

/// Whether the kernel's rules `have` are exactly `spec`'s, compared by
/// chain and comment, leaving out the chains `per_pod` names (those a sync
/// edits rule by rule).
fn same_rules(spec: &TableSpec, have: &[DumpedRule], per_pod: impl Fn(&str) -> bool) -> bool {
    let mut want: Vec<(&str, Option<&str>)> = spec
        .chains
        .iter()
        .filter(|c| !per_pod(&c.name))
        .flat_map(|c| {
            c.rules
                .iter()
                .map(|r| (c.name.as_str(), Some(r.comment.as_str())))
        })
        .collect();
    let mut have: Vec<(&str, Option<&str>)> = have
        .iter()
        .filter(|r| !per_pod(&r.chain))
        .map(|r| (r.chain.as_str(), r.comment.as_deref()))
        .collect();
    want.sort();
    have.sort();
    want == have
}

/// Applies `spec` unless the kernel already holds exactly its rules and sets.
/// Returns whether anything was written.
pub fn ensure_table(nl: &mut Nfnl, spec: &TableSpec) -> Result<bool> {
    let have = nl.rules(spec.family, &spec.name)?;
    let rules_ok = same_rules(spec, &have, |_| false);
    let sets_ok = spec
        .sets
        .iter()
        .map(|s| nl.set_exists(spec.family, &spec.name, &s.name))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .all(|b| b);
    if rules_ok && sets_ok {
        return Ok(false);
    }
    nl.apply_table(spec)?;
    Ok(true)
}

/// The `pods` set key: port name (16 bytes), MAC (6 + 2 padding), IPv4.
pub fn pod_key(port: &str, mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut k = vec![0u8; 28];
    let n = port.len().min(15);
    k[..n].copy_from_slice(&port.as_bytes()[..n]);
    k[16..22].copy_from_slice(&mac);
    k[24..28].copy_from_slice(&ip.octets());
    k
}

/// Decodes a `pods` key back into (port, MAC, IPv4).
pub fn parse_pod_key(k: &[u8]) -> Option<(String, [u8; 6], Ipv4Addr)> {
    if k.len() != 28 {
        return None;
    }
    let end = k[..16].iter().position(|c| *c == 0).unwrap_or(16);
    let name = String::from_utf8_lossy(&k[..end]).into_owned();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&k[16..22]);
    Some((name, mac, Ipv4Addr::new(k[24], k[25], k[26], k[27])))
}

/// Lets a pod's port send from its own MAC and address. Creates the table
/// first if it is missing (first pod on the node, or the agent never ran).
pub fn allow_pod(nl: &mut Nfnl, port: &str, mac: [u8; 6], ip: Ipv4Addr) -> Result<()> {
    let key = pod_key(port, mac, ip);
    match nl.add_elements(NFPROTO_BRIDGE, TABLE, PODS_SET, std::slice::from_ref(&key)) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(libc::ENOENT) => {
            ensure_table(nl, &pod_guard_spec())?;
            nl.add_elements(NFPROTO_BRIDGE, TABLE, PODS_SET, &[key])
        }
        Err(e) => Err(e),
    }
}

pub fn forget_pod(nl: &mut Nfnl, port: &str, mac: [u8; 6], ip: Ipv4Addr) -> Result<bool> {
    nl.delete_element(NFPROTO_BRIDGE, TABLE, PODS_SET, &pod_key(port, mac, ip))
}

pub fn allowed_pods(nl: &mut Nfnl) -> Result<Vec<(String, [u8; 6], Ipv4Addr)>> {
    Ok(nl
        .elements(NFPROTO_BRIDGE, TABLE, PODS_SET)?
        .iter()
        .filter_map(|k| parse_pod_key(k))
        .collect())
}

/// Interface name as an `ifname` set key.
pub fn ifname_key(name: &str) -> Vec<u8> {
    let mut k = vec![0u8; 16];
    let n = name.len().min(15);
    k[..n].copy_from_slice(&name.as_bytes()[..n]);
    k
}

/// Makes the TTL rule's sets hold exactly `ifaces` and `groups`.
pub fn ensure_ttl_rule(nl: &mut Nfnl, ifaces: &[&str], groups: &[Ipv4Addr]) -> Result<bool> {
    let mut changed = ensure_table(nl, &ttl_spec())?;
    let want_if: Vec<Vec<u8>> = ifaces.iter().map(|i| ifname_key(i)).collect();
    let want_g: Vec<Vec<u8>> = groups.iter().map(|g| g.octets().to_vec()).collect();
    for (set, want) in [(IFACES_SET, want_if), (GROUPS_SET, want_g)] {
        let have = nl.elements(NFPROTO_IPV4, TABLE, set)?;
        for k in have.iter().filter(|k| !want.contains(k)) {
            nl.delete_element(NFPROTO_IPV4, TABLE, set, k)?;
            changed = true;
        }
        let missing: Vec<_> = want.into_iter().filter(|k| !have.contains(k)).collect();
        if !missing.is_empty() {
            nl.add_elements(NFPROTO_IPV4, TABLE, set, &missing)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Packets counted by the rule whose comment ends with `name` (e.g. "pod-drop").
pub fn rule_packets(nl: &mut Nfnl, family: u8, name: &str) -> Result<u64> {
    let want = comment(name);
    Ok(nl
        .rules(family, TABLE)?
        .into_iter()
        .filter(|r| r.comment.as_deref() == Some(want.as_str()))
        .filter_map(|r| r.counter.map(|c| c.0))
        .sum())
}

/// Frames from pod ports dropped by the anti-spoofing rules.
pub fn spoofed_drops(nl: &mut Nfnl) -> Result<u64> {
    rule_packets(nl, NFPROTO_BRIDGE, "pod-drop")
}

/// RTPS packets whose TTL was raised from 1 to 2.
pub fn ttl_raised(nl: &mut Nfnl) -> Result<u64> {
    rule_packets(nl, NFPROTO_IPV4, TTL_RULE)
}

/// Removes the agent-only table.
pub fn remove_ttl_rule(nl: &mut Nfnl) -> Result<bool> {
    nl.delete_table(NFPROTO_IPV4, TABLE)
}

/// The table of forward counters.
pub const COUNT_TABLE: &str = "ros2_cni_count";

/// Which way a forwarded packet went, by the interface it came in on.
pub const DIRECTIONS: [(&str, bool); 2] = [("pods_to_lan", false), ("lan_to_pods", true)];

/// Counters of forwarded RTPS multicast: one rule per group and direction
/// (in on the bridge and out of the uplink: pods → LAN; the reverse: LAN →
/// pods). A unicast packet fails the first comparison.
pub fn count_spec(groups: &[Ipv4Addr], uplink: &str, bridge: &str) -> TableSpec {
    let mut rules = vec![];
    for g in groups {
        for (dir, from_lan) in DIRECTIONS {
            let (iif, oif) = if from_lan {
                (uplink, bridge)
            } else {
                (bridge, uplink)
            };
            rules.push(RuleSpec {
                comment: comment(&format!("fwd {g} {dir} {iif} {oif}")),
                exprs: vec![
                    Expr::Payload {
                        base: PayloadBase::Network,
                        offset: 16,
                        len: 4,
                        dreg: R0,
                    },
                    Expr::CmpEq {
                        sreg: R0,
                        data: g.octets().to_vec(),
                    },
                    Expr::Meta {
                        key: MetaKey::IifName,
                        dreg: R0,
                    },
                    Expr::CmpEq {
                        sreg: R0,
                        data: ifname_key(iif),
                    },
                    // and out of the other one: frames bridged between pods
                    // also meet this hook when br_netfilter is loaded, with
                    // the bridge as both interfaces
                    Expr::Meta {
                        key: MetaKey::OifName,
                        dreg: R0,
                    },
                    Expr::CmpEq {
                        sreg: R0,
                        data: ifname_key(oif),
                    },
                    Expr::Counter,
                ],
            });
        }
    }
    TableSpec {
        family: NFPROTO_IPV4,
        name: COUNT_TABLE.into(),
        sets: vec![],
        chains: vec![ChainSpec {
            name: "forward".into(),
            hook: Some((NF_INET_FORWARD, -300)),
            rules,
        }],
    }
}

/// (group, direction) -> (packets, bytes) forwarded.
pub type Forwarded = std::collections::BTreeMap<(Ipv4Addr, &'static str), (u64, u64)>;

/// What the kernel forwarder forwarded, from the counters of `ip ros2_cni_count`.
pub fn forwarded(nl: &mut Nfnl) -> Result<Forwarded> {
    Ok(forwarded_of(&nl.rules(NFPROTO_IPV4, COUNT_TABLE)?))
}

/// (group, direction) -> (packets, bytes) from rules whose comments read
/// `fwd GROUP DIRECTION ...` (the count table's and the nftables forwarder's).
fn forwarded_of(rules: &[DumpedRule]) -> Forwarded {
    let prefix = comment("fwd ");
    let mut out = std::collections::BTreeMap::new();
    for r in rules {
        let Some(rest) = r.comment.as_deref().and_then(|c| c.strip_prefix(&prefix)) else {
            continue;
        };
        let mut it = rest.split(' ');
        let (Some(g), Some(d)) = (it.next().and_then(|g| g.parse().ok()), it.next()) else {
            continue;
        };
        let Some((dir, _)) = DIRECTIONS.iter().find(|(n, _)| *n == d) else {
            continue;
        };
        let (p, b) = r.counter.unwrap_or_default();
        let t = out.entry((g, *dir)).or_insert((0, 0));
        t.0 += p;
        t.1 += b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_key_layout() {
        let k = pod_key(
            "r2c0123456789a",
            [0x0e, 0x2c, 1, 2, 3, 4],
            Ipv4Addr::new(192, 168, 1, 160),
        );
        assert_eq!(k.len(), 28);
        assert_eq!(&k[..14], b"r2c0123456789a");
        assert_eq!(&k[14..16], &[0, 0]);
        assert_eq!(&k[22..24], &[0, 0]);
        let (p, m, ip) = parse_pod_key(&k).unwrap();
        assert_eq!(
            (p.as_str(), m[0], ip.octets()[3]),
            ("r2c0123456789a", 0x0e, 160)
        );
    }

    #[test]
    fn specs_have_unique_comments() {
        let count = count_spec(
            &[Ipv4Addr::new(239, 255, 0, 1), Ipv4Addr::new(239, 255, 0, 2)],
            "eth0",
            "ros2br0",
        );
        for spec in [pod_guard_spec(), ttl_spec(), count] {
            let mut seen = std::collections::HashSet::new();
            for c in &spec.chains {
                for r in &c.rules {
                    assert!(seen.insert(r.comment.clone()), "{}", r.comment);
                }
            }
        }
    }
}
