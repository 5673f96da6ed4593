//! The agent's side of the domain policy (`src/firewall/domains.rs`): the
//! rules for the attached pods, kept in step with the attachment records and
//! the config every reconcile pass (and at once on SIGHUP), and the counts of
//! what they dropped, carried across replaced rules as for the rate limits.

use super::limits::{rule_of, Drops};
use crate::api;
use crate::api::unix_now;
use crate::config::Config;
use crate::firewall::domains::{self as fw, PodPolicy, FROM_POD, TO_POD};
use crate::ipam::Attachment;
use crate::kernel::nft::Nfnl;
use std::collections::BTreeMap;
use std::time::Instant;

/// One attached pod under the policy.
#[derive(Debug, Clone, Default)]
pub struct PodDomains {
    pub namespace: String,
    pub pod: String,
    pub ip: String,
    /// None: every domain.
    pub allowed: Option<Vec<u16>>,
    /// Datagrams from the pod to other domains' ports, dropped.
    pub sent: Drops,
    /// Datagrams to the pod on other domains' ports, dropped.
    pub received: Drops,
    /// The domains it sent to and may not use (last five minutes).
    pub blocked_domains: Vec<u16>,
}

#[derive(Debug, Clone, Default)]
pub struct DomainState {
    /// By host port (`r2c…`).
    pub pods: BTreeMap<String, PodDomains>,
    /// Default-deny of pod ports not listed yet, both directions.
    pub unlisted_from: Drops,
    pub unlisted_to: Drops,
    pub in_force: bool,
    pub problem: Option<String>,
}

/// The policy of each record's pod under `cfg` (routed pods only).
pub fn policies(cfg: &Config, records: &[Attachment]) -> Vec<PodPolicy> {
    let Some(d) = &cfg.domains else { return vec![] };
    records
        .iter()
        .filter(|a| !a.host_if.is_empty())
        .map(|a| PodPolicy {
            port: a.host_if.clone(),
            allowed: d.allowed(&a.pod_namespace).map(<[u16]>::to_vec),
        })
        .collect()
}

impl DomainState {
    /// One reconcile pass (kernel work; no agent lock held).
    pub fn reconcile(&mut self, cfg: &Config, records: &[Attachment], routed: bool) {
        let (now, wall) = (Instant::now(), unix_now());
        let mut nf = match Nfnl::new() {
            Ok(n) => n,
            Err(e) => {
                self.problem = Some(format!("domain policy: {e}"));
                return;
            }
        };
        if !routed || cfg.domains.is_none() {
            let _ = fw::remove(&mut nf);
            *self = DomainState::default();
            return;
        }
        let want = policies(cfg, records);
        let mut pods = BTreeMap::new();
        for a in records.iter().filter(|a| !a.host_if.is_empty()) {
            let mut p: PodDomains = self.pods.remove(&a.host_if).unwrap_or_default();
            p.namespace = a.pod_namespace.clone();
            p.pod = a.pod_label();
            p.ip = a.ip.to_string();
            p.allowed = want
                .iter()
                .find(|w| w.port == a.host_if)
                .and_then(|w| w.allowed.clone());
            pods.insert(a.host_if.clone(), p);
        }
        self.problem = None;
        match fw::sync(&mut nf, Some(&want)) {
            Ok(before) => {
                for (port, p) in pods.iter_mut() {
                    let of = |chain: &str| {
                        rule_of(&before, |r| {
                            r.comment.as_deref().and_then(fw::pod_of_comment)
                                == Some((chain, port.as_str()))
                        })
                    };
                    p.sent.observe(of(FROM_POD), now, wall);
                    p.received.observe(of(TO_POD), now, wall);
                }
                let unl = |dir: &str| {
                    rule_of(&before, |r| {
                        fw::is_unlisted(r) && r.comment.as_deref().is_some_and(|c| c.ends_with(dir))
                    })
                };
                let blocked = fw::blocked(&mut nf).unwrap_or_default();
                for p in pods.values_mut() {
                    let mut d: Vec<u16> = blocked
                        .iter()
                        .filter(|(ip, _)| ip.to_string() == p.ip)
                        .map(|(_, d)| *d)
                        .collect();
                    d.sort_unstable();
                    d.dedup();
                    p.blocked_domains = d;
                }
                self.unlisted_from.observe(unl("unlisted-from"), now, wall);
                self.unlisted_to.observe(unl("unlisted-to"), now, wall);
            }
            Err(e) => self.problem = Some(format!("domain policy: {e}")),
        }
        self.pods = pods;
        self.in_force = true;
    }

    /// `domainPolicy` in the status document (None when no policy).
    pub fn to_api(&self) -> Option<api::DomainPolicy> {
        if !self.in_force {
            return None;
        }
        let pods = self
            .pods
            .iter()
            .map(|(port, p)| api::PodDomains {
                namespace: p.namespace.clone(),
                pod: p.pod.clone(),
                port: port.clone(),
                ip: p.ip.clone(),
                allowed_domains: p.allowed.clone(),
                blocked_domains: p.blocked_domains.clone(),
                sent_dropped: p.sent.total,
                received_dropped: p.received.total,
                last_sent_dropped: p.sent.last_increase,
                last_received_dropped: p.received.last_increase,
            })
            .collect();
        Some(api::DomainPolicy {
            pods,
            unlisted_sent_dropped: self.unlisted_from.total,
            unlisted_received_dropped: self.unlisted_to.total,
        })
    }

    pub fn encode_metrics(
        &self,
        enc: &mut prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use super::metrics::counter;
        if !self.in_force {
            return Ok(());
        }
        let rows = per_direction(
            self.pods
                .values()
                .map(|p| (&p.namespace, &p.pod, &p.sent, &p.received)),
        );
        counter(
            enc,
            "ros2cni_pod_domain_dropped_packets",
            "UDP datagrams to another ROS domain's ports than the pod's namespace allows (domains), dropped: sent by the pod (direction=\"sent\") or on their way to it (direction=\"received\")",
            &rows,
        )?;
        counter(
            enc,
            "ros2cni_unlisted_pod_domain_dropped_packets",
            "UDP datagrams to the RTPS port range from or to pods attached too recently to have rules of their own, dropped (default deny while a domain policy is in force)",
            &[(vec![], self.unlisted_from.total + self.unlisted_to.total)],
        )
    }
}

/// Metric series per pod and direction (labels namespace, pod, direction
/// "sent" / "received") from each pod's two counters.
fn per_direction<'a>(
    pods: impl Iterator<Item = (&'a String, &'a String, &'a Drops, &'a Drops)>,
) -> Vec<(super::metrics::Labels, u64)> {
    let mut rows = vec![];
    for (namespace, pod, sent, received) in pods {
        for (dir, d) in [("sent", sent), ("received", received)] {
            rows.push((
                super::metrics::l(&[
                    ("namespace", namespace.clone()),
                    ("pod", pod.clone()),
                    ("direction", dir.into()),
                ]),
                d.total,
            ));
        }
    }
    rows
}

/// One pod's discovery datagrams (`src/firewall/counts.rs`).
#[derive(Debug, Clone, Default)]
pub struct PodCount {
    pub namespace: String,
    pub pod: String,
    pub sent: Drops,
    pub received: Drops,
}

/// Per-pod discovery counts, kept in step with the attachment records every
/// pass (routed mode; with or without a domain policy).
#[derive(Debug, Clone, Default)]
pub struct DiscoveryCounts {
    /// By host port.
    pub pods: BTreeMap<String, PodCount>,
    pub problem: Option<String>,
}

impl DiscoveryCounts {
    pub fn reconcile(&mut self, records: &[Attachment], routed: bool, extra_ports: &[u16]) {
        use crate::firewall::counts as fc;
        let (now, wall) = (Instant::now(), unix_now());
        let mut nf = match Nfnl::new() {
            Ok(n) => n,
            Err(e) => {
                self.problem = Some(format!("discovery counts: {e}"));
                return;
            }
        };
        if !routed {
            let _ = fc::remove(&mut nf);
            *self = DiscoveryCounts::default();
            return;
        }
        let live: Vec<&Attachment> = records.iter().filter(|a| !a.host_if.is_empty()).collect();
        let ports: Vec<String> = live.iter().map(|a| a.host_if.clone()).collect();
        self.problem = None;
        let before = match fc::sync(&mut nf, &ports, extra_ports) {
            Ok(b) => b,
            Err(e) => {
                self.problem = Some(format!("discovery counts: {e}"));
                vec![]
            }
        };
        let mut pods = BTreeMap::new();
        for a in live {
            let mut p = self.pods.remove(&a.host_if).unwrap_or_default();
            p.namespace = a.pod_namespace.clone();
            p.pod = a.pod_label();
            let of = |chain: &str| {
                rule_of(&before, |r| {
                    r.comment.as_deref().and_then(fc::pod_of_comment)
                        == Some((chain, a.host_if.as_str()))
                })
            };
            p.sent.observe(of(fc::SENT), now, wall);
            p.received.observe(of(fc::RECEIVED), now, wall);
            pods.insert(a.host_if.clone(), p);
        }
        self.pods = pods;
    }

    pub fn to_api(&self) -> Vec<api::PodDiscovery> {
        self.pods
            .values()
            .map(|p| api::PodDiscovery {
                namespace: p.namespace.clone(),
                pod: p.pod.clone(),
                sent: p.sent.total,
                received: p.received.total,
            })
            .collect()
    }

    pub fn encode_metrics(
        &self,
        enc: &mut prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use super::metrics::counter;
        let rows = per_direction(
            self.pods
                .values()
                .map(|p| (&p.namespace, &p.pod, &p.sent, &p.received)),
        );
        counter(
            enc,
            "ros2cni_pod_discovery_datagrams",
            "RTPS discovery datagrams (UDP to a multicast group on an SPDP port) sent by the pod (direction=\"sent\", counted before the domain policy and the rate limits) or handed to it (direction=\"received\")",
            &rows,
        )
    }
}
