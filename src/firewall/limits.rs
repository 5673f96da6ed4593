//! Rate limits on RTPS discovery multicast, so that one pod (or one LAN host)
//! sending discovery datagrams in a loop cannot flood the LAN and every pod.
//!
//! What is limited: UDP to one of the RTPS `groups` whose destination port is
//! an SPDP (participant discovery) port, 7400 + 250·d for domain d in 0..=232.
//! Only discovery has a rate bounded by the graph (a participant announces
//! itself a few times at start and then every few seconds); user data that
//! Cyclone DDS multicasts to 7401 + 250·d by default can legitimately run at
//! any rate, so it is not limited here (docs/architecture.md).
//!
//! Two tables, both owned by the agent and separate from the anti-spoofing
//! table (whose elements the plugin manages and which is never rewritten
//! here):
//! - `bridge ros2_cni_limits`: frames entering the node bridge from a pod's
//!   port. One rule per attached pod (`iifname "r2c…" limit rate over N/second
//!   burst B packets counter drop`) in the chain `per_pod`, reached by a
//!   `goto` for ports in the set `limited`; a port the agent has not listed
//!   yet (a pod attached within the last reconcile period) shares one bucket
//!   with the same rate (`unlisted`). Pod rules are added and removed one by
//!   one, so the other pods' buckets and counters are left alone.
//! - `ip ros2_cni_limits`: one aggregate limit on what enters from the uplink
//!   (`iifname UPLINK ... limit rate over N/second ... counter drop`), before
//!   multicast routing hands it to the pods.

use super::{expr, ifname_key, same_rules, Error, HOST_VETH_PREFIX};
use crate::kernel::nft::{
    ChainSpec, DumpedRule, Edit, Expr, MetaKey, Nfnl, PayloadBase, RuleSpec, SetSpec, TableSpec,
    NFPROTO_BRIDGE, NFPROTO_IPV4, NFT_GOTO, NF_DROP, NF_INET_PRE_ROUTING, REG32_00, TYPE_IFNAME,
    TYPE_INET_SERVICE, TYPE_IPADDR,
};
use std::net::Ipv4Addr;

pub const TABLE: &str = "ros2_cni_limits";
const GROUPS_SET: &str = "groups";
const PORTS_SET: &str = "spdp_ports";
const LIMITED_SET: &str = "limited";
const PER_POD: &str = "per_pod";
const SENDERS_SET: &str = "senders";
/// Bumped whenever the rules change, so old rules get replaced.
const VERSION: &str = "limits-v1";

/// Base-chain priorities: after the anti-spoofing check (bridge, -200), so a
/// spoofed frame is counted as spoofed; before the TTL rule (ip, -300), so a
/// dropped packet is not counted as raised.
const BRIDGE_PRIORITY: i32 = -150;
const UPLINK_PRIORITY: i32 = -310;

/// Defaults of the config keys (docs/config.md says why).
pub const DEFAULT_POD_RATE: u32 = 200;
pub const DEFAULT_POD_BURST: u32 = 1000;
pub const DEFAULT_UPLINK_RATE: u32 = 2000;
pub const DEFAULT_UPLINK_BURST: u32 = 10000;
pub const MAX_RATE: u32 = 10_000_000;
pub const MAX_BURST: u32 = 10_000_000;

/// Highest DDS domain id whose port block fits under 65535.
pub const MAX_DOMAIN: u16 = 232;

/// The SPDP multicast port of every domain: 7400 + 250·d.
pub fn spdp_ports() -> impl Iterator<Item = u16> {
    (0..=MAX_DOMAIN).map(|d| 7400 + 250 * d)
}

/// What the limits and counts police: UDP to `groups` (the RTPS groups and
/// those of `extraMulticast`) on the SPDP ports and the `extra_ports`
/// (`extraMulticast`'s, e.g. Zenoh's scouting port 7446).
#[derive(Debug, Clone, Copy)]
pub struct Discovery<'a> {
    pub groups: &'a [Ipv4Addr],
    pub extra_ports: &'a [u16],
}

impl Discovery<'_> {
    /// The port set's keys: every SPDP port and the extra ports.
    pub fn port_keys(&self) -> Vec<Vec<u8>> {
        let mut p: Vec<u16> = spdp_ports()
            .chain(self.extra_ports.iter().copied())
            .collect();
        p.sort();
        p.dedup();
        p.into_iter().map(|p| p.to_be_bytes().to_vec()).collect()
    }
}

/// Packets per second and burst (packets); rate 0 turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub rate: u32,
    pub burst: u32,
}

impl Limit {
    pub fn is_on(&self) -> bool {
        self.rate > 0
    }

    fn expr(&self) -> Expr {
        Expr::Limit {
            rate: u64::from(self.rate),
            unit_seconds: 1,
            burst: self.burst,
            over: true,
        }
    }

    fn tag(&self) -> String {
        format!("{}/{}", self.rate, self.burst)
    }
}

/// `podDiscoveryRate`/`Burst` and `uplinkDiscoveryRate`/`Burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub pod: Limit,
    pub uplink: Limit,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        pod: Limit {
            rate: DEFAULT_POD_RATE,
            burst: DEFAULT_POD_BURST,
        },
        uplink: Limit {
            rate: DEFAULT_UPLINK_RATE,
            burst: DEFAULT_UPLINK_BURST,
        },
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

const R0: u32 = REG32_00;

fn comment(what: &str) -> String {
    format!("ros2-cni {VERSION} {what}")
}

/// The comment of a pod's rule; parsed back by [`pod_of_comment`].
fn pod_comment(port: &str, l: Limit) -> String {
    comment(&format!("pod {port} {}", l.tag()))
}

/// The host port a per-pod rule is for, from its comment.
pub fn pod_of_comment(c: &str) -> Option<&str> {
    let rest = c.strip_prefix(&comment("pod "))?;
    rest.split(' ').next()
}

fn unlisted_comment(l: Limit) -> String {
    comment(&format!("unlisted {}", l.tag()))
}

fn uplink_comment(uplink: &str, l: Limit) -> String {
    comment(&format!("uplink {uplink} {}", l.tag()))
}

fn uplink_sender_comment(uplink: &str, l: Limit) -> String {
    comment(&format!("uplink-sender {uplink} {}", l.tag()))
}

/// Whether a dumped rule is the shared bucket of ports not listed yet.
pub fn is_unlisted(r: &DumpedRule) -> bool {
    r.comment
        .as_deref()
        .is_some_and(|c| c.starts_with(&comment("unlisted ")))
}

/// Whether a dumped rule is the uplink's limit on all senders together.
pub fn is_uplink(r: &DumpedRule) -> bool {
    r.comment
        .as_deref()
        .is_some_and(|c| c.starts_with(&comment("uplink ")))
}

/// Whether a dumped rule is the uplink's limit per sender.
pub fn is_uplink_sender(r: &DumpedRule) -> bool {
    r.comment
        .as_deref()
        .is_some_and(|c| c.starts_with(&comment("uplink-sender ")))
}

/// UDP to an RTPS group and an SPDP port (IPv4, first fragments only: later
/// fragments carry no UDP header).
fn discovery_match(bridge: bool) -> Vec<Expr> {
    let mut v = expr::ipv4_udp(bridge);
    v.extend([
        expr::ip_daddr(),
        Expr::Lookup {
            sreg: R0,
            set: GROUPS_SET.into(),
        },
        expr::udp_dport(),
        Expr::Lookup {
            sreg: R0,
            set: PORTS_SET.into(),
        },
    ]);
    v
}

fn limit_drop(l: Limit) -> [Expr; 3] {
    [
        l.expr(),
        Expr::Counter,
        Expr::Verdict {
            code: NF_DROP,
            chain: None,
        },
    ]
}

/// A pod's rule: over the limit from its port, counted and dropped.
fn pod_rule(port: &str, l: Limit) -> RuleSpec {
    let mut exprs = expr::iifname_is(&ifname_key(port)).to_vec();
    exprs.extend(limit_drop(l));
    RuleSpec {
        comment: pod_comment(port, l),
        exprs,
    }
}

fn sets(bridge: bool) -> Vec<SetSpec> {
    let mut s = vec![
        SetSpec {
            name: GROUPS_SET.into(),
            key_type: TYPE_IPADDR,
            key_len: 4,
            dynamic_timeout_ms: None,
        },
        SetSpec {
            name: PORTS_SET.into(),
            key_type: TYPE_INET_SERVICE,
            key_len: 2,
            dynamic_timeout_ms: None,
        },
    ];
    if bridge {
        s.push(SetSpec {
            name: LIMITED_SET.into(),
            key_type: TYPE_IFNAME,
            key_len: 16,
            dynamic_timeout_ms: None,
        });
    } else {
        // one bucket per LAN sender, forgotten after a minute of silence
        s.push(SetSpec {
            name: SENDERS_SET.into(),
            key_type: TYPE_IPADDR,
            key_len: 4,
            dynamic_timeout_ms: Some(60_000),
        });
    }
    s
}

/// The bridge table with the given pods' rules.
pub fn pod_limits_spec(l: Limit, ports: &[String]) -> TableSpec {
    let mut listed = discovery_match(true);
    listed.extend([
        Expr::Meta {
            key: MetaKey::IifName,
            dreg: R0,
        },
        Expr::Lookup {
            sreg: R0,
            set: LIMITED_SET.into(),
        },
        Expr::Verdict {
            code: NFT_GOTO,
            chain: Some(PER_POD.into()),
        },
    ]);
    let mut unlisted = discovery_match(true);
    unlisted.extend(expr::iifname_is(HOST_VETH_PREFIX.as_bytes()));
    unlisted.extend(limit_drop(l));
    TableSpec {
        family: NFPROTO_BRIDGE,
        name: TABLE.into(),
        sets: sets(true),
        chains: vec![
            ChainSpec {
                name: PER_POD.into(),
                hook: None,
                rules: ports.iter().map(|p| pod_rule(p, l)).collect(),
            },
            ChainSpec {
                name: "prerouting".into(),
                hook: Some((NF_INET_PRE_ROUTING, BRIDGE_PRIORITY)),
                rules: vec![
                    RuleSpec {
                        comment: comment("listed-pods"),
                        exprs: listed,
                    },
                    RuleSpec {
                        comment: unlisted_comment(l),
                        exprs: unlisted,
                    },
                ],
            },
        ],
    }
}

/// The ip table: from the uplink, each sender (source address) held to
/// `per_sender`, then all of them together to `total` (either may be off).
pub fn uplink_limit_spec(uplink: &str, total: Limit, per_sender: Limit) -> TableSpec {
    let mut rules = vec![];
    if per_sender.is_on() {
        let mut exprs = expr::iifname_is(&ifname_key(uplink)).to_vec();
        exprs.extend(discovery_match(false));
        exprs.extend([
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 12,
                len: 4,
                dreg: R0,
            },
            Expr::DynsetUpdate {
                set: SENDERS_SET.into(),
                sreg: R0,
                expr: Box::new(per_sender.expr()),
            },
            Expr::Counter,
            Expr::Verdict {
                code: NF_DROP,
                chain: None,
            },
        ]);
        rules.push(RuleSpec {
            comment: uplink_sender_comment(uplink, per_sender),
            exprs,
        });
    }
    if total.is_on() {
        let mut exprs = expr::iifname_is(&ifname_key(uplink)).to_vec();
        exprs.extend(discovery_match(false));
        exprs.extend(limit_drop(total));
        rules.push(RuleSpec {
            comment: uplink_comment(uplink, total),
            exprs,
        });
    }
    TableSpec {
        family: NFPROTO_IPV4,
        name: TABLE.into(),
        sets: sets(false),
        chains: vec![ChainSpec {
            name: "prerouting".into(),
            hook: Some((NF_INET_PRE_ROUTING, UPLINK_PRIORITY)),
            rules,
        }],
    }
}

type Result<T> = std::result::Result<T, Error>;

/// Makes a set hold exactly `want`; the edits, if any.
fn set_edits(nl: &mut Nfnl, family: u8, set: &str, want: Vec<Vec<u8>>) -> Result<Vec<Edit>> {
    let have = nl.elements(family, TABLE, set)?;
    let mut edits = vec![];
    let gone: Vec<_> = have.iter().filter(|k| !want.contains(k)).cloned().collect();
    if !gone.is_empty() {
        edits.push(Edit::DeleteElements {
            set: set.into(),
            keys: gone,
        });
    }
    let missing: Vec<_> = want.into_iter().filter(|k| !have.contains(k)).collect();
    if !missing.is_empty() {
        edits.push(Edit::AddElements {
            set: set.into(),
            keys: missing,
        });
    }
    Ok(edits)
}

fn common_set_edits(nl: &mut Nfnl, family: u8, what: Discovery) -> Result<Vec<Edit>> {
    let mut e = set_edits(
        nl,
        family,
        GROUPS_SET,
        what.groups.iter().map(|g| g.octets().to_vec()).collect(),
    )?;
    // inet_service keys are in network byte order
    e.extend(set_edits(nl, family, PORTS_SET, what.port_keys())?);
    Ok(e)
}

fn tables_rules(nl: &mut Nfnl, family: u8) -> Result<Vec<DumpedRule>> {
    nl.rules(family, TABLE)
}

/// Whether the table's sets exist.
fn sets_exist(nl: &mut Nfnl, family: u8, bridge: bool) -> Result<bool> {
    for s in sets(bridge) {
        if !nl.set_exists(family, TABLE, &s.name)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Brings `bridge ros2_cni_limits` to one rule per port in `ports` (or
/// removes the table when the limit is off). Returns the rules as they were
/// before (with their handles and counters), so that the caller can carry
/// the counts of rules it replaced.
pub fn sync_pod_limits(
    nl: &mut Nfnl,
    l: Limit,
    what: Discovery,
    ports: &[String],
) -> Result<Vec<DumpedRule>> {
    let have = tables_rules(nl, NFPROTO_BRIDGE)?;
    if !l.is_on() {
        nl.delete_table(NFPROTO_BRIDGE, TABLE)?;
        return Ok(have);
    }
    let spec = pod_limits_spec(l, ports);
    let mut edits = vec![];
    if !same_rules(&spec, &have, |c| c == PER_POD) || !sets_exist(nl, NFPROTO_BRIDGE, true)? {
        // missing or changed: the whole table in one transaction
        nl.apply_table(&spec)?;
    } else {
        let want: Vec<RuleSpec> = ports.iter().map(|p| pod_rule(p, l)).collect();
        for r in have.iter().filter(|r| r.chain == PER_POD) {
            if !want.iter().any(|w| Some(&w.comment) == r.comment.as_ref()) {
                edits.push(Edit::DeleteRule {
                    chain: PER_POD.into(),
                    handle: r.handle,
                });
            }
        }
        for w in want {
            let present = have
                .iter()
                .any(|r| r.chain == PER_POD && r.comment.as_ref() == Some(&w.comment));
            if !present {
                edits.push(Edit::AppendRule {
                    chain: PER_POD.into(),
                    rule: w,
                });
            }
        }
    }
    edits.extend(common_set_edits(nl, NFPROTO_BRIDGE, what)?);
    edits.extend(set_edits(
        nl,
        NFPROTO_BRIDGE,
        LIMITED_SET,
        ports.iter().map(|p| ifname_key(p)).collect(),
    )?);
    nl.edit(NFPROTO_BRIDGE, TABLE, &edits)?;
    Ok(have)
}

/// Brings `ip ros2_cni_limits` to the uplink's limits: per sender
/// `limits.pod` (every sender is held to what a pod is), all together
/// `limits.uplink`. Removes the table when both are off or `uplink` is None.
/// A change re-creates the table in one transaction, so that no sender keeps
/// a bucket of the old limit. Returns the rules as they were before.
pub fn sync_uplink_limit(
    nl: &mut Nfnl,
    limits: &Limits,
    what: Discovery,
    uplink: Option<&str>,
) -> Result<Vec<DumpedRule>> {
    let have = tables_rules(nl, NFPROTO_IPV4)?;
    let on = limits.uplink.is_on() || limits.pod.is_on();
    let Some(uplink) = uplink.filter(|_| on) else {
        nl.delete_table(NFPROTO_IPV4, TABLE)?;
        return Ok(have);
    };
    let spec = uplink_limit_spec(uplink, limits.uplink, limits.pod);
    let mut want: Vec<_> = spec.chains[0]
        .rules
        .iter()
        .map(|r| Some(r.comment.clone()))
        .collect();
    let mut got: Vec<_> = have.iter().map(|r| r.comment.clone()).collect();
    want.sort();
    got.sort();
    if want != got || !sets_exist(nl, NFPROTO_IPV4, false)? {
        let exists = !have.is_empty() || nl.set_exists(NFPROTO_IPV4, TABLE, GROUPS_SET)?;
        let elements = vec![
            Edit::AddElements {
                set: GROUPS_SET.into(),
                keys: what.groups.iter().map(|g| g.octets().to_vec()).collect(),
            },
            Edit::AddElements {
                set: PORTS_SET.into(),
                keys: what.port_keys(),
            },
        ];
        nl.replace_table(&spec, exists, &elements)?;
    } else {
        let edits = common_set_edits(nl, NFPROTO_IPV4, what)?;
        nl.edit(NFPROTO_IPV4, TABLE, &edits)?;
    }
    Ok(have)
}

/// Removes both tables (macvlan mode: pods are not behind the bridge).
pub fn remove(nl: &mut Nfnl) -> Result<bool> {
    let a = nl.delete_table(NFPROTO_BRIDGE, TABLE)?;
    let b = nl.delete_table(NFPROTO_IPV4, TABLE)?;
    Ok(a || b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdp_ports_are_one_per_domain() {
        let p: Vec<u16> = spdp_ports().collect();
        assert_eq!(p.len(), 233);
        assert_eq!((p[0], p[1], p[232]), (7400, 7650, 65400));
    }

    #[test]
    fn comments_name_the_port_and_change_with_the_limit() {
        let a = Limit {
            rate: 200,
            burst: 1000,
        };
        let b = Limit {
            rate: 100,
            burst: 1000,
        };
        let r = pod_rule("r2c0123456789a", a);
        assert_eq!(pod_of_comment(&r.comment), Some("r2c0123456789a"));
        assert_ne!(r.comment, pod_rule("r2c0123456789a", b).comment);
        assert_eq!(pod_of_comment(&unlisted_comment(a)), None);
        let spec = pod_limits_spec(a, &["r2ca".into(), "r2cb".into()]);
        let mut seen = std::collections::HashSet::new();
        for c in &spec.chains {
            for r in &c.rules {
                assert!(seen.insert(r.comment.clone()), "{}", r.comment);
            }
        }
        assert_eq!(seen.len(), 4);
    }
}
