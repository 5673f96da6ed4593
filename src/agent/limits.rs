//! The agent's side of the discovery rate limits (`src/firewall/limits.rs`):
//! one rule per attached pod, kept in step with the attachment records on
//! every reconcile pass, and the counts of what the rules dropped.
//!
//! The kernel's counters live in the rules: a rule that is replaced (its
//! limit changed on reload, or the table was re-created after someone flushed
//! it) starts again from zero. The agent therefore keeps, per rule, what the
//! rules it replaced had counted, so the totals in the status and the metrics
//! only ever grow while the agent runs.

use crate::config::Config;
use crate::firewall::limits::{self as fw, Limit};
use crate::firewall::nfnl::{DumpedRule, Nfnl};
use crate::ipam::Attachment;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long after its last drop a pod still counts as "being limited".
pub const RECENT: Duration = Duration::from_secs(300);

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

fn rule_of(rules: &[DumpedRule], f: impl Fn(&DumpedRule) -> bool) -> Option<(u64, u64)> {
    rules
        .iter()
        .find(|r| f(r))
        .map(|r| (r.handle, r.counter.map_or(0, |c| c.0)))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
            p.pod = if a.pod_name.is_empty() {
                a.container_id.chars().take(12).collect()
            } else {
                a.pod_name.clone()
            };
            p.ip = a.ip.to_string();
            pods.insert(a.host_if.clone(), p);
        }
        let ports: Vec<String> = pods.keys().cloned().collect();
        let l = cfg.limits;
        match fw::sync_pod_limits(&mut nf, l.pod, &cfg.groups, &ports) {
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
        match fw::sync_uplink_limit(&mut nf, &l, &cfg.groups, uplink) {
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
    pub fn status_json(&self) -> Value {
        let limit = |l: Option<Limit>| l.map(|l| json!({"rate": l.rate, "burst": l.burst}));
        let pods: Vec<Value> = self
            .pods
            .iter()
            .map(|(port, p)| {
                json!({"namespace": p.namespace, "pod": p.pod, "port": port, "ip": p.ip,
                       "limitedPackets": p.drops.total,
                       "limitedPerSecond": (p.drops.per_second * 10.0).round() / 10.0,
                       "lastLimited": p.drops.last_increase})
            })
            .collect();
        json!({
            "pod": limit(self.pod_limit),
            "uplink": limit(self.uplink_limit),
            "uplinkInterface": self.uplink_name,
            "pods": pods,
            "unlistedLimitedPackets": self.unlisted.total,
            "uplinkLimitedPackets": self.uplink.total,
            "uplinkLimitedPerSecond": (self.uplink.per_second * 10.0).round() / 10.0,
            "uplinkLastLimited": self.uplink.last_increase,
            "uplinkSenderLimitedPackets": self.uplink_senders.total,
            "uplinkSenderLastLimited": self.uplink_senders.last_increase,
        })
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

/// Doctor's findings from the status document's `discoveryLimits` at unix
/// time `now`: (code, message) of each pod, and of the uplink, whose limit
/// dropped something within [`RECENT`].
pub fn findings(status: &Value, now: u64) -> Vec<(&'static str, String)> {
    let lim = &status["discoveryLimits"];
    let recent = |v: &Value| {
        v.as_u64()
            .is_some_and(|t| now.saturating_sub(t) <= RECENT.as_secs())
    };
    let ago = |v: &Value| now.saturating_sub(v.as_u64().unwrap_or(now));
    let limit = |l: &Value| format!("{}/s, burst {}", l["rate"], l["burst"]);
    let mut out = vec![];
    for p in lim["pods"].as_array().into_iter().flatten() {
        if !recent(&p["lastLimited"]) {
            continue;
        }
        let name = match p["namespace"].as_str().filter(|n| !n.is_empty()) {
            Some(ns) => format!("{ns}/{}", p["pod"].as_str().unwrap_or("?")),
            None => p["pod"].as_str().unwrap_or("?").to_owned(),
        };
        out.push((
            "POD_RATE_LIMITED",
            format!(
                "Pod {name} ({}) sends RTPS discovery multicast faster than podDiscoveryRate allows ({}): \
                 {} datagrams dropped so far, {} per second lately, the last {} s ago. Its own discovery \
                 suffers (its announcements are dropped in the same proportion); the LAN and the other pods \
                 do not. Cause: something in the pod sends to the SPDP port in a loop (a crash-looping \
                 participant, a tool, a misconfigured DDS). Fix: stop it; if the rate is real (hundreds of \
                 participants in one pod), raise podDiscoveryRate and podDiscoveryBurst in the agent's config \
                 (SIGHUP applies it).",
                p["ip"].as_str().unwrap_or("?"),
                limit(&lim["pod"]),
                p["limitedPackets"],
                p["limitedPerSecond"],
                ago(&p["lastLimited"]),
            ),
        ));
    }
    let iface = lim["uplinkInterface"].as_str().unwrap_or("?");
    if recent(&lim["uplinkSenderLastLimited"]) {
        out.push((
            "UPLINK_RATE_LIMITED",
            format!(
                "A sender on the LAN sends RTPS discovery multicast into the uplink {iface} faster than \
                 podDiscoveryRate allows one sender ({}): {} datagrams dropped so far, the last {} s ago. \
                 Other senders are not affected. Cause: a host on the LAN that does not run ros2-cni sends \
                 discovery in a loop (computers running ros2-cni limit their own pods). Fix: find it \
                 (tcpdump -ni {iface} udp port 7400) and stop it; if its traffic is real (one host running \
                 hundreds of participants), raise podDiscoveryRate and podDiscoveryBurst.",
                limit(&lim["pod"]),
                lim["uplinkSenderLimitedPackets"],
                ago(&lim["uplinkSenderLastLimited"]),
            ),
        ));
    }
    if recent(&lim["uplinkLastLimited"]) {
        out.push((
            "UPLINK_RATE_LIMITED",
            format!(
                "More RTPS discovery multicast arrives on the uplink {iface}, all senders together, than \
                 uplinkDiscoveryRate allows ({}): {} datagrams dropped so far, the last {} s ago. While it \
                 lasts, discovery from other computers reaches this node's pods only in part. Cause: many \
                 senders at once (a fleet booting), or many flooding hosts. Fix: find the senders \
                 (tcpdump -ni {iface} udp port 7400); if the traffic is real, raise uplinkDiscoveryRate and \
                 uplinkDiscoveryBurst.",
                limit(&lim["uplink"]),
                lim["uplinkLimitedPackets"],
                ago(&lim["uplinkLastLimited"]),
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_name_recently_limited_pods_and_the_key() {
        let st = json!({"discoveryLimits": {
            "pod": {"rate": 200, "burst": 1000},
            "uplink": {"rate": 2000, "burst": 10000},
            "pods": [
                {"namespace": "robots", "pod": "flooder", "ip": "192.168.1.5", "limitedPackets": 4711,
                 "limitedPerSecond": 900.0, "lastLimited": 1000},
                {"namespace": "robots", "pod": "old", "ip": "192.168.1.6", "limitedPackets": 5,
                 "limitedPerSecond": 0.0, "lastLimited": 100},
                {"namespace": "robots", "pod": "quiet", "ip": "192.168.1.7", "limitedPackets": 0,
                 "limitedPerSecond": 0.0, "lastLimited": null}],
            "uplinkLimitedPackets": 0, "uplinkLastLimited": null}});
        let f = findings(&st, 1010);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "POD_RATE_LIMITED");
        for want in [
            "robots/flooder",
            "4711",
            "podDiscoveryRate",
            "200/s, burst 1000",
            "10 s ago",
        ] {
            assert!(f[0].1.contains(want), "{want}: {}", f[0].1);
        }
        let mut st = st;
        st["discoveryLimits"]["uplinkLastLimited"] = json!(1005);
        st["discoveryLimits"]["uplinkLimitedPackets"] = json!(99);
        st["discoveryLimits"]["uplinkInterface"] = json!("eth0");
        let f = findings(&st, 1010);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[1].0, "UPLINK_RATE_LIMITED");
        assert!(
            f[1].1.contains("eth0") && f[1].1.contains("uplinkDiscoveryRate"),
            "{}",
            f[1].1
        );
        st["discoveryLimits"]["uplinkSenderLastLimited"] = json!(1009);
        let f = findings(&st, 1010);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(
            f[1].1.contains("one sender") && f[1].1.contains("podDiscoveryRate"),
            "{}",
            f[1].1
        );
        assert!(
            findings(&json!({}), 0).is_empty(),
            "an older agent's status"
        );
    }

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
