//! The agent's side of the discovery rate limits (`src/firewall/limits.rs`):
//! one rule per attached pod, kept in step with the attachment records on
//! every reconcile pass, and the counts of what the rules dropped.
//!
//! The kernel's counters live in the rules: a rule that is replaced (its
//! limit changed on reload, or the table was re-created after someone flushed
//! it) starts again from zero. The agent therefore keeps, per rule, what the
//! rules it replaced had counted, so the totals in the status and the metrics
//! only ever grow while the agent runs.

use crate::api;
use crate::api::unix_now;
use crate::config::Config;
use crate::firewall::limits::{self as fw, Limit};
use crate::ipam::Attachment;
use crate::kernel::nft::{DumpedRule, Nfnl};
use std::collections::BTreeMap;
use std::time::Instant;

/// Packets one limit rule dropped, carried across replacements of the rule.
#[derive(Debug, Clone, Default)]
pub struct Drops {
    /// The rule's handle when last read (0: none).
    handle: u64,
    /// Its counter then.
    last: u64,
    /// What replaced rules had counted.
    base: u64,
    /// `base + last`: every packet dropped since the agent started.
    pub total: u64,
    /// Drops per second between the last two reads.
    pub per_second: f64,
    /// Unix time of the read that saw the total grow.
    pub last_increase: Option<u64>,
    read_at: Option<Instant>,
}

impl Drops {
    /// Takes in the rule's (handle, packets) as just read, or None when the
    /// rule is not there (yet, or any more).
    pub fn observe(&mut self, rule: Option<(u64, u64)>, now: Instant, wall: u64) {
        let before = self.total;
        match rule {
            Some((handle, packets)) if handle == self.handle && packets >= self.last => {
                self.last = packets
            }
            Some((handle, packets)) => {
                // a new rule (first read, or it was replaced): what the old
                // one counted stays in the total
                self.base += self.last;
                self.handle = handle;
                self.last = packets;
            }
            None => {
                self.base += self.last;
                self.handle = 0;
                self.last = 0;
            }
        }
        self.total = self.base + self.last;
        if let Some(t) = self.read_at {
            let dt = now.duration_since(t).as_secs_f64();
            if dt > 0.0 {
                self.per_second = (self.total - before) as f64 / dt;
            }
        }
        if self.total > before {
            self.last_increase = Some(wall);
        }
        self.read_at = Some(now);
    }
}

/// One attached pod's limit.
#[derive(Debug, Clone, Default)]
pub struct PodLimit {
    pub namespace: String,
    pub pod: String,
    pub ip: String,
    pub drops: Drops,
}

/// What the agent knows about the limits.
#[derive(Debug, Clone, Default)]
pub struct LimitState {
    /// By host port (`r2c…`).
    pub pods: BTreeMap<String, PodLimit>,
    /// The shared bucket of ports not listed yet.
    pub unlisted: Drops,
    /// From the uplink: all senders together, and per sender.
    pub uplink: Drops,
    pub uplink_senders: Drops,
    pub uplink_name: Option<String>,
    pub pod_limit: Option<Limit>,
    pub uplink_limit: Option<Limit>,
    /// Why the rules could not be brought up to date, if they could not.
    pub problem: Option<String>,
}

/// The handle and packet counter of the first rule `f` picks (the agent's
/// per-pod tables: limits, domains, counts).
pub(super) fn rule_of(rules: &[DumpedRule], f: impl Fn(&DumpedRule) -> bool) -> Option<(u64, u64)> {
    rules
        .iter()
        .find(|r| f(r))
        .map(|r| (r.handle, r.counter.map_or(0, |c| c.0)))
}

impl LimitState {
    /// One reconcile pass: the rules for `records`' pods and the uplink, and
    /// the counters as they were just before. Kernel work; no agent lock held.
    pub fn reconcile(
        &mut self,
        cfg: &Config,
        records: &[Attachment],
        uplink: Option<&str>,
        routed: bool,
    ) {
        let (now, wall) = (Instant::now(), unix_now());
        let mut nf = match Nfnl::new() {
            Ok(n) => n,
            Err(e) => {
                self.problem = Some(format!("discovery limits: {e}"));
                return;
            }
        };
        if !routed {
            // macvlan: pods are on the wire, not behind the bridge
            let _ = fw::remove(&mut nf);
            *self = LimitState::default();
            return;
        }
        let mut problems = vec![];
        let mut pods: BTreeMap<String, PodLimit> = BTreeMap::new();
        for a in records.iter().filter(|a| !a.host_if.is_empty()) {
            let mut p = self.pods.remove(&a.host_if).unwrap_or_default();
            p.namespace = a.pod_namespace.clone();
            p.pod = a.pod_label();
            p.ip = a.ip.to_string();
            pods.insert(a.host_if.clone(), p);
        }
        let ports: Vec<String> = pods.keys().cloned().collect();
        let l = cfg.limits;
        let groups = cfg.discovery_groups();
        let extra_ports = cfg.extra_ports();
        let what = fw::Discovery {
            groups: &groups,
            extra_ports: &extra_ports,
        };
        match fw::sync_pod_limits(&mut nf, l.pod, what, &ports) {
            Ok(before) => {
                for (port, p) in pods.iter_mut() {
                    let rule = rule_of(&before, |r| {
                        r.comment.as_deref().and_then(fw::pod_of_comment) == Some(port.as_str())
                    });
                    p.drops.observe(rule, now, wall);
                }
                self.unlisted
                    .observe(rule_of(&before, fw::is_unlisted), now, wall);
            }
            Err(e) => problems.push(format!("discovery limits for pods: {e}")),
        }
        self.pods = pods;
        match fw::sync_uplink_limit(&mut nf, &l, what, uplink) {
            Ok(before) => {
                self.uplink
                    .observe(rule_of(&before, fw::is_uplink), now, wall);
                self.uplink_senders
                    .observe(rule_of(&before, fw::is_uplink_sender), now, wall);
            }
            Err(e) => problems.push(format!("discovery limit on the uplink: {e}")),
        }
        self.uplink_name = uplink.map(str::to_owned);
        self.pod_limit = Some(l.pod).filter(Limit::is_on);
        self.uplink_limit = Some(l.uplink).filter(Limit::is_on);
        self.problem = (!problems.is_empty()).then(|| problems.join("; "));
    }

    /// `discoveryLimits` in the status document.
    pub fn to_api(&self) -> api::DiscoveryLimits {
        let limit = |l: Option<Limit>| {
            l.map(|l| api::Limit {
                rate: l.rate,
                burst: l.burst,
            })
        };
        let tenths = |x: f64| (x * 10.0).round() / 10.0;
        let pods = self
            .pods
            .iter()
            .map(|(port, p)| api::PodLimited {
                namespace: p.namespace.clone(),
                pod: p.pod.clone(),
                port: port.clone(),
                ip: p.ip.clone(),
                limited_packets: p.drops.total,
                limited_per_second: tenths(p.drops.per_second),
                last_limited: p.drops.last_increase,
            })
            .collect();
        api::DiscoveryLimits {
            pod: limit(self.pod_limit),
            uplink: limit(self.uplink_limit),
            uplink_interface: self.uplink_name.clone(),
            pods,
            unlisted_limited_packets: self.unlisted.total,
            uplink_limited_packets: self.uplink.total,
            uplink_limited_per_second: tenths(self.uplink.per_second),
            uplink_last_limited: self.uplink.last_increase,
            uplink_sender_limited_packets: self.uplink_senders.total,
            uplink_sender_last_limited: self.uplink_senders.last_increase,
        }
    }

    /// The counters on the metrics page.
    pub fn encode_metrics(
        &self,
        enc: &mut prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use super::metrics::{counter, l};
        let pods: Vec<_> = self
            .pods
            .values()
            .map(|p| {
                (
                    l(&[("namespace", p.namespace.clone()), ("pod", p.pod.clone())]),
                    p.drops.total,
                )
            })
            .collect();
        counter(
            enc,
            "ros2cni_pod_rate_limited_packets",
            "RTPS discovery datagrams from a pod dropped because it sent more than podDiscoveryRate allows",
            &pods,
        )?;
        counter(
            enc,
            "ros2cni_unlisted_pod_rate_limited_packets",
            "RTPS discovery datagrams dropped from pods attached too recently to have a limit of their own (one shared bucket)",
            &[(vec![], self.unlisted.total)],
        )?;
        counter(
            enc,
            "ros2cni_uplink_rate_limited_packets",
            "RTPS discovery datagrams from the uplink dropped: one sender sent more than podDiscoveryRate allows (limit=\"sender\"), or all together more than uplinkDiscoveryRate (limit=\"total\")",
            &[
                (l(&[("limit", "sender".into())]), self.uplink_senders.total),
                (l(&[("limit", "total".into())]), self.uplink.total),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn totals_survive_replaced_rules_and_only_grow() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut d = Drops::default();
        d.observe(None, at(0), 100);
        assert_eq!((d.total, d.last_increase), (0, None));
        d.observe(Some((7, 10)), at(2), 102);
        assert_eq!(d.total, 10);
        assert_eq!(d.last_increase, Some(102));
        assert!((d.per_second - 5.0).abs() < 1e-9);
        d.observe(Some((7, 30)), at(4), 104);
        assert_eq!(d.total, 30);
        // replaced (new handle): counts from zero again in the kernel
        d.observe(Some((9, 5)), at(6), 106);
        assert_eq!(d.total, 35);
        // gone, then back
        d.observe(None, at(8), 108);
        assert_eq!(d.total, 35);
        assert_eq!(d.per_second, 0.0);
        d.observe(Some((11, 1)), at(10), 110);
        assert_eq!(d.total, 36);
        // same handle but a smaller counter (reset under us): never backwards
        d.observe(Some((11, 0)), at(12), 112);
        assert_eq!(d.total, 36);
        d.observe(Some((11, 4)), at(14), 114);
        assert_eq!(d.total, 40);
        assert_eq!(d.last_increase, Some(114));
    }
}
