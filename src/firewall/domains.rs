//! Discovery isolation by namespace and ROS domain (`domains`,
//! `defaultDomains`): a pod may send to and receive from only the UDP port
//! blocks of the domains its namespace allows. Domain d owns the ports
//! 7400 + 250·d … 7400 + 250·d + 249; UDP to a port in the RTPS range
//! (7400 … 65535, the blocks of domains 0–232) outside the pod's allowed
//! blocks is counted and dropped at the pod's node, in both directions.
//! UDP to other ports, and everything that is not UDP, is left alone.
//! Unicast to the kernel's ephemeral ports ([`EPHEMERAL`], 32768–60999, in
//! the blocks of domains 102–214) is exempt: DDS binds its unicast sockets
//! there when it lets the kernel choose (Cyclone DDS's default), and those
//! ports say nothing about the domain. Multicast is policed on every block.
//!
//! One table owned by the agent, `bridge ros2_cni_domains`, separate from the
//! anti-spoofing and rate-limit tables:
//! - base chain `prerouting` (priority -175: after the anti-spoofing check at
//!   -200, before the rate limits at -150): unicast to an ephemeral port is
//!   accepted (ends this chain only); IPv4 UDP to the RTPS range entering from a pod port listed in `listed` goes to `from_pod`; from a
//!   pod port not listed yet (attached within the last reconcile period) it
//!   is counted and dropped — a new pod is never unrestricted (the plugin
//!   adds its rules at ADD, see [`pod_edits`], so this only catches pods
//!   added while the plugin could not).
//! - base chain `postrouting` (priority -175): the same for frames leaving
//!   the bridge to a pod port (`oifname`): bridged from pods on this node,
//!   routed in from the LAN or other nodes, multicast routing's copies, and
//!   what the relay puts on the bridge — every frame that reaches a pod
//!   through the bridge passes here. The fast path's LAN program delivers
//!   unicast from the LAN straight into a pod (`bpf_redirect_peer`, past the
//!   bridge) only where this chain has nothing to say: for a restricted pod
//!   it hands UDP to policed ports to the bridge, so it comes through here.
//! - `from_pod` and `to_pod`: one rule per restricted pod:
//!   `iifname "r2c…" udp dport != { allowed blocks } counter drop` (as range
//!   comparisons, adjacent blocks merged). Pods whose namespace may use every
//!   domain are listed without a rule.
//!
//! The tc/BPF fast path hands a restricted pod's UDP to policed ports (the
//! RTPS range less the ephemeral one) to this normal path (`src/fastpath`),
//! both from the pod and from the LAN to it, so it cannot bypass these rules; pods under no policy, and every pod when
//! `domains` is unset, keep the fast path for all their traffic.

use super::{expr, ifname_key, same_rules, Error, HOST_VETH_PREFIX};
use crate::kernel::nft::{
    ChainSpec, DumpedRule, Edit, Expr, MetaKey, Nfnl, PayloadBase, RuleSpec, SetSpec, TableSpec,
    NFPROTO_BRIDGE, NFT_GOTO, NF_ACCEPT, NF_DROP, NF_INET_PRE_ROUTING, REG32_00, TYPE_IFNAME,
    TYPE_INET_SERVICE, TYPE_IPADDR,
};

pub const TABLE: &str = "ros2_cni_domains";
const LISTED_SET: &str = "listed";
/// (source address . destination port) of datagrams a restricted pod sent to
/// a port it may not use, forgotten after five minutes: which domains a pod
/// tried (doctor's `DOMAIN_BLOCKED`), since those datagrams never reach the
/// agent's discovery capture.
pub const BLOCKED_SET: &str = "blocked";
const BLOCKED_TIMEOUT_MS: u64 = 300_000;
pub const FROM_POD: &str = "from_pod";
pub const TO_POD: &str = "to_pod";
/// Bumped whenever the rules change, so old rules get replaced.
const VERSION: &str = "domains-v3";
const PRIORITY: i32 = -175;
/// NF_BR_POST_ROUTING.
const NF_BR_POST_ROUTING: u32 = 4;

/// Highest ROS domain id (its block ends at 65649, cut at 65535).
pub const MAX_DOMAIN: u16 = 232;
/// The first port of the RTPS range (domain 0's SPDP multicast port).
pub const RTPS_FIRST_PORT: u16 = 7400;
pub const PORTS_PER_DOMAIN: u16 = 250;
/// Linux's default ephemeral port range (`net.ipv4.ip_local_port_range`):
/// unicast to these ports is exempt from the policy, multicast is not. DDS
/// implementations bind unicast sockets to kernel-chosen ports (Cyclone DDS
/// does by default), which fall in the blocks of domains 102-214; ROS 2's
/// docs call only domains 0-101 and 215-232 safe on Linux for that reason.
pub const EPHEMERAL: (u16, u16) = (32768, 60999);

/// The UDP ports of domain `d`.
pub fn block(d: u16) -> (u16, u16) {
    let lo = RTPS_FIRST_PORT as u32 + PORTS_PER_DOMAIN as u32 * d as u32;
    let hi = (lo + PORTS_PER_DOMAIN as u32 - 1).min(65535);
    (lo as u16, hi as u16)
}

/// The domain whose block holds `port`, if it is in the RTPS range.
pub fn domain_of_port(port: u16) -> Option<u16> {
    (port >= RTPS_FIRST_PORT).then(|| (port - RTPS_FIRST_PORT) / PORTS_PER_DOMAIN)
}

/// The allowed port ranges of `domains`, adjacent blocks merged.
pub fn allowed_ranges(domains: &[u16]) -> Vec<(u16, u16)> {
    let mut d: Vec<u16> = domains.to_vec();
    d.sort_unstable();
    d.dedup();
    let mut out: Vec<(u16, u16)> = vec![];
    for (lo, hi) in d.into_iter().map(block) {
        match out.last_mut() {
            Some(last) if u32::from(last.1) + 1 == u32::from(lo) => last.1 = hi,
            _ => out.push((lo, hi)),
        }
    }
    out
}

const R0: u32 = REG32_00;

fn comment(what: &str) -> String {
    format!("ros2-cni {VERSION} {what}")
}

/// The tag of an allowed set in a rule's comment: `0,1,2`.
fn tag(domains: &[u16]) -> String {
    let mut d = domains.to_vec();
    d.sort_unstable();
    d.dedup();
    d.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// The comment of a pod's rule in `chain`; parsed back by [`pod_of_comment`].
fn pod_comment(chain: &str, port: &str, domains: &[u16]) -> String {
    comment(&format!("{chain} {port} {}", tag(domains)))
}

/// (chain, host port) a per-pod rule is for, from its comment.
pub fn pod_of_comment(c: &str) -> Option<(&str, &str)> {
    let rest = c.strip_prefix(&comment(""))?;
    let mut it = rest.split(' ');
    let chain = it.next()?;
    if chain != FROM_POD && chain != TO_POD {
        return None;
    }
    Some((chain, it.next()?))
}

/// Whether a dumped rule is one of the default-deny rules for pod ports not
/// listed yet (`from` or `to`).
pub fn is_unlisted(r: &DumpedRule) -> bool {
    r.comment
        .as_deref()
        .is_some_and(|c| c.starts_with(&comment("unlisted-")))
}

fn udp_rtps_match() -> Vec<Expr> {
    let mut v = expr::ipv4_udp(true);
    v.extend([
        expr::udp_dport(),
        Expr::Range {
            sreg: R0,
            from: RTPS_FIRST_PORT.to_be_bytes().to_vec(),
            to: 65535u16.to_be_bytes().to_vec(),
            neq: false,
        },
    ]);
    v
}

fn dev_key(chain: &str) -> MetaKey {
    if chain == FROM_POD {
        MetaKey::IifName
    } else {
        MetaKey::OifName
    }
}

fn counter_drop() -> [Expr; 2] {
    [
        Expr::Counter,
        Expr::Verdict {
            code: NF_DROP,
            chain: None,
        },
    ]
}

/// A restricted pod's rule in `chain` (reached only for UDP to the RTPS
/// range): not to one of its allowed blocks, from/to its port, dropped.
pub fn pod_rule(chain: &str, port: &str, domains: &[u16]) -> RuleSpec {
    let mut exprs = vec![
        Expr::Meta {
            key: dev_key(chain),
            dreg: R0,
        },
        Expr::CmpEq {
            sreg: R0,
            data: ifname_key(port),
        },
    ];
    let ranges = allowed_ranges(domains);
    if !ranges.is_empty() {
        exprs.push(Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: R0,
        });
    }
    for (lo, hi) in ranges {
        exprs.push(Expr::Range {
            sreg: R0,
            from: lo.to_be_bytes().to_vec(),
            to: hi.to_be_bytes().to_vec(),
            neq: true,
        });
    }
    if chain == FROM_POD {
        // update @blocked { ip saddr . udp dport }
        exprs.extend([
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 12,
                len: 4,
                dreg: R0,
            },
            Expr::Payload {
                base: PayloadBase::Transport,
                offset: 2,
                len: 2,
                dreg: R0 + 1,
            },
            Expr::DynsetUpdate {
                set: BLOCKED_SET.into(),
                sreg: R0,
                expr: Box::new(Expr::Counter),
            },
        ]);
    }
    exprs.extend(counter_drop());
    RuleSpec {
        comment: pod_comment(chain, port, domains),
        exprs,
    }
}

/// One pod: its port and the domains it may use (None: every domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPolicy {
    pub port: String,
    pub allowed: Option<Vec<u16>>,
}

fn pod_rules(p: &PodPolicy) -> Vec<(&'static str, RuleSpec)> {
    match &p.allowed {
        None => vec![],
        Some(d) => vec![
            (FROM_POD, pod_rule(FROM_POD, &p.port, d)),
            (TO_POD, pod_rule(TO_POD, &p.port, d)),
        ],
    }
}

/// `ether type ip ip protocol udp udp dport 32768-60999 ip daddr !=
/// 224.0.0.0-239.255.255.255 accept`: unicast to an ephemeral port, exempt
/// (see [`EPHEMERAL`]); ends only this table's base chain.
fn ephemeral_unicast_exempt(dir: &str) -> RuleSpec {
    let mut exprs = udp_rtps_match();
    exprs.pop();
    exprs.extend([
        Expr::Range {
            sreg: R0,
            from: EPHEMERAL.0.to_be_bytes().to_vec(),
            to: EPHEMERAL.1.to_be_bytes().to_vec(),
            neq: false,
        },
        Expr::Payload {
            base: PayloadBase::Network,
            offset: 16,
            len: 4,
            dreg: R0,
        },
        Expr::Range {
            sreg: R0,
            from: vec![224, 0, 0, 0],
            to: vec![239, 255, 255, 255],
            neq: true,
        },
        Expr::Verdict {
            code: NF_ACCEPT,
            chain: None,
        },
    ]);
    RuleSpec {
        comment: comment(&format!("ephemeral-{dir}")),
        exprs,
    }
}

/// The whole table for `pods`.
pub fn spec(pods: &[PodPolicy]) -> TableSpec {
    let base = |name: &str, hook: u32, key: MetaKey, target: &str| {
        let mut listed = udp_rtps_match();
        listed.extend([
            Expr::Meta { key, dreg: R0 },
            Expr::Lookup {
                sreg: R0,
                set: LISTED_SET.into(),
            },
            Expr::Verdict {
                code: NFT_GOTO,
                chain: Some(target.into()),
            },
        ]);
        let mut unlisted = udp_rtps_match();
        unlisted.extend([
            Expr::Meta { key, dreg: R0 },
            Expr::CmpEq {
                sreg: R0,
                data: HOST_VETH_PREFIX.as_bytes().to_vec(),
            },
        ]);
        unlisted.extend(counter_drop());
        let dir = if target == FROM_POD { "from" } else { "to" };
        ChainSpec {
            name: name.into(),
            hook: Some((hook, PRIORITY)),
            rules: vec![
                ephemeral_unicast_exempt(dir),
                RuleSpec {
                    comment: comment(&format!("listed-{dir}")),
                    exprs: listed,
                },
                RuleSpec {
                    comment: comment(&format!("unlisted-{dir}")),
                    exprs: unlisted,
                },
            ],
        }
    };
    let rules = |chain: &str| -> Vec<RuleSpec> {
        pods.iter()
            .flat_map(pod_rules)
            .filter(|(c, _)| *c == chain)
            .map(|(_, r)| r)
            .collect()
    };
    TableSpec {
        family: NFPROTO_BRIDGE,
        name: TABLE.into(),
        sets: vec![
            SetSpec {
                name: LISTED_SET.into(),
                key_type: TYPE_IFNAME,
                key_len: 16,
                dynamic_timeout_ms: None,
            },
            SetSpec {
                name: BLOCKED_SET.into(),
                // ipv4_addr . inet_service, each field in a 32-bit register
                key_type: (TYPE_IPADDR << 6) | TYPE_INET_SERVICE,
                key_len: 8,
                dynamic_timeout_ms: Some(BLOCKED_TIMEOUT_MS),
            },
        ],
        chains: vec![
            ChainSpec {
                name: FROM_POD.into(),
                hook: None,
                rules: rules(FROM_POD),
            },
            ChainSpec {
                name: TO_POD.into(),
                hook: None,
                rules: rules(TO_POD),
            },
            base(
                "prerouting",
                NF_INET_PRE_ROUTING,
                MetaKey::IifName,
                FROM_POD,
            ),
            base("postrouting", NF_BR_POST_ROUTING, MetaKey::OifName, TO_POD),
        ],
    }
}

type Result<T> = std::result::Result<T, Error>;

/// The edits that give one pod its rules and list its port: what the plugin
/// applies at ADD (when the table exists) so that the pod is restricted from
/// its first packet, not only from the agent's next pass.
pub fn pod_edits(p: &PodPolicy) -> Vec<Edit> {
    let mut e: Vec<Edit> = pod_rules(p)
        .into_iter()
        .map(|(chain, rule)| Edit::AppendRule {
            chain: chain.into(),
            rule,
        })
        .collect();
    e.push(Edit::AddElements {
        set: LISTED_SET.into(),
        keys: vec![ifname_key(&p.port)],
    });
    e
}

/// Plugin, at ADD: the pod's rules, if the agent has made the table (a
/// policy is in force). Ok(false) when there is no table.
pub fn add_pod(nl: &mut Nfnl, p: &PodPolicy) -> Result<bool> {
    if !nl.set_exists(NFPROTO_BRIDGE, TABLE, LISTED_SET)? {
        return Ok(false);
    }
    nl.edit(NFPROTO_BRIDGE, TABLE, &pod_edits(p))?;
    Ok(true)
}

/// Whether the table exists (a policy is in force on this node).
pub fn in_force(nl: &mut Nfnl) -> Result<bool> {
    nl.set_exists(NFPROTO_BRIDGE, TABLE, LISTED_SET)
}

/// Brings the table to `pods` (None: no policy, the table is removed).
/// Rules are added and deleted one by one, so the other pods' counters are
/// untouched; a rule whose allowed set changed is replaced. Returns the rules
/// as they were before, with their handles and counters.
pub fn sync(nl: &mut Nfnl, pods: Option<&[PodPolicy]>) -> Result<Vec<DumpedRule>> {
    let have = nl.rules(NFPROTO_BRIDGE, TABLE)?;
    let Some(pods) = pods else {
        nl.delete_table(NFPROTO_BRIDGE, TABLE)?;
        return Ok(have);
    };
    let spec = spec(pods);
    let per_pod = |c: &str| c == FROM_POD || c == TO_POD;
    if !same_rules(&spec, &have, per_pod) || !nl.set_exists(NFPROTO_BRIDGE, TABLE, LISTED_SET)? {
        nl.apply_table(&spec)?;
    }
    let mut edits = vec![];
    let want: Vec<(&str, RuleSpec)> = pods.iter().flat_map(pod_rules).collect();
    let mut kept: Vec<(String, String)> = vec![];
    for r in have.iter().filter(|r| per_pod(&r.chain)) {
        let c = r.comment.clone().unwrap_or_default();
        let wanted = want
            .iter()
            .any(|(chain, w)| *chain == r.chain && w.comment == c);
        // a duplicate (the plugin and a pass both added it) goes too
        let dup = kept.contains(&(r.chain.clone(), c.clone()));
        if wanted && !dup {
            kept.push((r.chain.clone(), c));
        } else {
            edits.push(Edit::DeleteRule {
                chain: r.chain.clone(),
                handle: r.handle,
            });
        }
    }
    for (chain, w) in want {
        if !kept.contains(&(chain.to_owned(), w.comment.clone())) {
            edits.push(Edit::AppendRule {
                chain: chain.into(),
                rule: w,
            });
        }
    }
    let want_keys: Vec<Vec<u8>> = pods.iter().map(|p| ifname_key(&p.port)).collect();
    let have_keys = nl.elements(NFPROTO_BRIDGE, TABLE, LISTED_SET)?;
    let gone: Vec<_> = have_keys
        .iter()
        .filter(|k| !want_keys.contains(k))
        .cloned()
        .collect();
    if !gone.is_empty() {
        edits.push(Edit::DeleteElements {
            set: LISTED_SET.into(),
            keys: gone,
        });
    }
    let missing: Vec<_> = want_keys
        .into_iter()
        .filter(|k| !have_keys.contains(k))
        .collect();
    if !missing.is_empty() {
        edits.push(Edit::AddElements {
            set: LISTED_SET.into(),
            keys: missing,
        });
    }
    nl.edit(NFPROTO_BRIDGE, TABLE, &edits)?;
    Ok(have)
}

/// (source address, domain) of what restricted pods sent to ports they may
/// not use within the last five minutes.
pub fn blocked(nl: &mut Nfnl) -> Result<Vec<(std::net::Ipv4Addr, u16)>> {
    Ok(nl
        .elements(NFPROTO_BRIDGE, TABLE, BLOCKED_SET)?
        .iter()
        .filter(|k| k.len() >= 6)
        .filter_map(|k| {
            let ip = std::net::Ipv4Addr::new(k[0], k[1], k[2], k[3]);
            domain_of_port(u16::from_be_bytes([k[4], k[5]])).map(|d| (ip, d))
        })
        .collect())
}

/// Removes the table (macvlan mode, or no policy).
pub fn remove(nl: &mut Nfnl) -> Result<bool> {
    nl.delete_table(NFPROTO_BRIDGE, TABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_ranges() {
        assert_eq!(block(0), (7400, 7649));
        assert_eq!(block(1), (7650, 7899));
        assert_eq!(block(232), (65400, 65535));
        assert_eq!(domain_of_port(7410), Some(0));
        assert_eq!(domain_of_port(7650), Some(1));
        assert_eq!(domain_of_port(5000), None);
        assert_eq!(domain_of_port(65535), Some(232));
        assert_eq!(allowed_ranges(&[2, 1, 5]), vec![(7650, 8149), (8650, 8899)]);
        assert_eq!(allowed_ranges(&[]), vec![]);
    }

    #[test]
    fn comments_name_chain_port_and_domains() {
        let r = pod_rule(FROM_POD, "r2c0123456789a", &[1, 0]);
        assert_eq!(
            pod_of_comment(&r.comment),
            Some((FROM_POD, "r2c0123456789a"))
        );
        assert!(r.comment.ends_with(" 0,1"), "{}", r.comment);
        assert_ne!(
            r.comment,
            pod_rule(FROM_POD, "r2c0123456789a", &[0]).comment
        );
        let s = spec(&[
            PodPolicy {
                port: "r2ca".into(),
                allowed: Some(vec![0]),
            },
            PodPolicy {
                port: "r2cb".into(),
                allowed: None,
            },
        ]);
        let n: usize = s.chains.iter().map(|c| c.rules.len()).sum();
        assert_eq!(n, 2 + 6, "two per restricted pod, six fixed");
        for c in &s.chains {
            for r in &c.rules {
                if c.hook.is_some() {
                    assert_eq!(pod_of_comment(&r.comment), None);
                }
            }
        }
    }
}
