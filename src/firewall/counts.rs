//! Per-pod counts of RTPS discovery datagrams (metrics): UDP to an IPv4
//! multicast group on an SPDP port (7400 + 250·d, d in 0..=232, the same
//! definition as the discovery rate limits) sent by each pod and delivered
//! to each pod, counted by nf_tables rules rather than read from the agent's
//! capture, which sees neither what the node drops from a pod nor what the
//! bridge delivers to one.
//!
//! One table owned by the agent, `bridge ros2_cni_counts`, counting only
//! (no rule has a verdict):
//! - base chain `prerouting` (priority -190: after the anti-spoofing check at
//!   -200, so spoofed frames are not counted, before the domain policy and
//!   the rate limits, so what they drop is counted as sent): discovery
//!   entering the bridge goes to `sent`, one `iifname "r2c…" counter` rule
//!   per pod.
//! - base chain `postrouting` (priority 0: after the domain policy at -175):
//!   discovery leaving the bridge to a port goes to `received`, one
//!   `oifname "r2c…" counter` rule per pod: what the pod was handed.
//!
//! A frame that is not IPv4 UDP to an SPDP port leaves the table after a few
//! compares. The agent adds a pod's rules in the pass after its ADD (the
//! plugin does not, so ADD does no extra work), so the first reconcile
//! period of a pod's discovery is not counted.

use super::{expr, ifname_key, Error};
use crate::kernel::nft::{
    ChainSpec, DumpedRule, Edit, Expr, MetaKey, Nfnl, RuleSpec, SetSpec, TableSpec, NFPROTO_BRIDGE,
    NFT_GOTO, NF_INET_PRE_ROUTING, REG32_00, TYPE_INET_SERVICE,
};

pub const TABLE: &str = "ros2_cni_counts";
const PORTS_SET: &str = "spdp_ports";
pub const SENT: &str = "sent";
pub const RECEIVED: &str = "received";
const VERSION: &str = "counts-v1";
const SENT_PRIORITY: i32 = -190;
const RECEIVED_PRIORITY: i32 = 0;
/// NF_BR_POST_ROUTING.
const NF_BR_POST_ROUTING: u32 = 4;
const R0: u32 = REG32_00;

type Result<T> = std::result::Result<T, Error>;

fn comment(what: &str) -> String {
    format!("ros2-cni {VERSION} {what}")
}

/// (chain, host port) of a per-pod rule, from its comment.
pub fn pod_of_comment(c: &str) -> Option<(&str, &str)> {
    let rest = c.strip_prefix(&comment(""))?;
    let (chain, port) = rest.split_once(' ')?;
    (chain == SENT || chain == RECEIVED).then_some((chain, port))
}

fn pod_rule(chain: &str, port: &str) -> RuleSpec {
    let key = if chain == SENT {
        MetaKey::IifName
    } else {
        MetaKey::OifName
    };
    RuleSpec {
        comment: comment(&format!("{chain} {port}")),
        exprs: vec![
            Expr::Meta { key, dreg: R0 },
            Expr::CmpEq {
                sreg: R0,
                data: ifname_key(port),
            },
            Expr::Counter,
        ],
    }
}

/// IPv4 UDP to a multicast group on an SPDP port (first fragments only).
fn discovery_match() -> Vec<Expr> {
    let mut v = expr::ipv4_udp(true);
    v.extend([
        expr::ip_daddr(),
        Expr::Range {
            sreg: R0,
            from: vec![224, 0, 0, 0],
            to: vec![239, 255, 255, 255],
            neq: false,
        },
        expr::udp_dport(),
        Expr::Lookup {
            sreg: R0,
            set: PORTS_SET.into(),
        },
    ]);
    v
}

/// The whole table for the pods' host ports.
pub fn spec(ports: &[String]) -> TableSpec {
    let base = |name: &str, hook: u32, prio: i32, target: &str| {
        let mut e = discovery_match();
        e.push(Expr::Verdict {
            code: NFT_GOTO,
            chain: Some(target.into()),
        });
        ChainSpec {
            name: name.into(),
            hook: Some((hook, prio)),
            rules: vec![RuleSpec {
                comment: comment(&format!("discovery-{target}")),
                exprs: e,
            }],
        }
    };
    let rules = |chain: &str| ports.iter().map(|p| pod_rule(chain, p)).collect();
    TableSpec {
        family: NFPROTO_BRIDGE,
        name: TABLE.into(),
        sets: vec![SetSpec {
            name: PORTS_SET.into(),
            key_type: TYPE_INET_SERVICE,
            key_len: 2,
            dynamic_timeout_ms: None,
        }],
        chains: vec![
            ChainSpec {
                name: SENT.into(),
                hook: None,
                rules: rules(SENT),
            },
            ChainSpec {
                name: RECEIVED.into(),
                hook: None,
                rules: rules(RECEIVED),
            },
            base("prerouting", NF_INET_PRE_ROUTING, SENT_PRIORITY, SENT),
            base(
                "postrouting",
                NF_BR_POST_ROUTING,
                RECEIVED_PRIORITY,
                RECEIVED,
            ),
        ],
    }
}

/// Brings the table to `ports` (per-pod rules added and deleted one by one,
/// so the other pods' counters are untouched). Returns the rules as they
/// were before, with their handles and counters.
pub fn sync(nl: &mut Nfnl, ports: &[String], extra_ports: &[u16]) -> Result<Vec<DumpedRule>> {
    let port_keys = super::limits::Discovery {
        groups: &[],
        extra_ports,
    }
    .port_keys();
    let have = nl.rules(NFPROTO_BRIDGE, TABLE)?;
    let spec = spec(ports);
    let fixed_ok = spec
        .chains
        .iter()
        .filter(|c| c.hook.is_some())
        .flat_map(|c| c.rules.iter().map(move |r| (c.name.as_str(), &r.comment)))
        .all(|(c, want)| {
            have.iter()
                .any(|r| r.chain == c && r.comment.as_deref() == Some(want.as_str()))
        });
    let mut edits = vec![];
    let mut kept: Vec<(String, String)> = vec![];
    if !fixed_ok || !nl.set_exists(NFPROTO_BRIDGE, TABLE, PORTS_SET)? {
        nl.apply_table(&spec)?;
        edits.push(Edit::AddElements {
            set: PORTS_SET.into(),
            keys: port_keys,
        });
        nl.edit(NFPROTO_BRIDGE, TABLE, &edits)?;
        return Ok(have);
    }
    // the ports follow extraMulticast
    let have_keys = nl.elements(NFPROTO_BRIDGE, TABLE, PORTS_SET)?;
    let stale: Vec<Vec<u8>> = have_keys
        .iter()
        .filter(|k| !port_keys.contains(k))
        .cloned()
        .collect();
    let missing: Vec<Vec<u8>> = port_keys
        .into_iter()
        .filter(|k| !have_keys.contains(k))
        .collect();
    if !stale.is_empty() {
        edits.push(Edit::DeleteElements {
            set: PORTS_SET.into(),
            keys: stale,
        });
    }
    if !missing.is_empty() {
        edits.push(Edit::AddElements {
            set: PORTS_SET.into(),
            keys: missing,
        });
    }
    for r in have
        .iter()
        .filter(|r| r.chain == SENT || r.chain == RECEIVED)
    {
        let c = r.comment.clone().unwrap_or_default();
        let wanted = pod_of_comment(&c).is_some_and(|(_, port)| ports.iter().any(|p| p == port));
        if wanted && !kept.contains(&(r.chain.clone(), c.clone())) {
            kept.push((r.chain.clone(), c));
        } else {
            edits.push(Edit::DeleteRule {
                chain: r.chain.clone(),
                handle: r.handle,
            });
        }
    }
    for port in ports {
        for chain in [SENT, RECEIVED] {
            let rule = pod_rule(chain, port);
            if !kept.contains(&(chain.to_owned(), rule.comment.clone())) {
                edits.push(Edit::AppendRule {
                    chain: chain.into(),
                    rule,
                });
            }
        }
    }
    nl.edit(NFPROTO_BRIDGE, TABLE, &edits)?;
    Ok(have)
}

/// Removes the table (macvlan mode).
pub fn remove(nl: &mut Nfnl) -> Result<bool> {
    nl.delete_table(NFPROTO_BRIDGE, TABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_per_pod_and_direction_named_by_its_comment() {
        let s = spec(&["r2ca".into(), "r2cb".into()]);
        let n: usize = s.chains.iter().map(|c| c.rules.len()).sum();
        assert_eq!(n, 4 + 2);
        let r = pod_rule(SENT, "r2c0123456789a");
        assert_eq!(pod_of_comment(&r.comment), Some((SENT, "r2c0123456789a")));
        assert_eq!(pod_of_comment(&comment("discovery-sent")), None);
        // counting only: no verdict in any rule but the base chains' goto
        for c in &s.chains {
            for r in &c.rules {
                let verdicts = r
                    .exprs
                    .iter()
                    .filter(|e| matches!(e, Expr::Verdict { .. }))
                    .count();
                assert_eq!(verdicts, usize::from(c.hook.is_some()), "{}", r.comment);
            }
        }
    }
}
