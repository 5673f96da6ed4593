//! The reconcile pass: the kernel work of a period, read from the state
//! under the lock, run without it, and written back ([`Pass`] → [`Done`]).

use super::*;

/// One reconcile pass: re-create what is missing, follow interface changes,
/// expire idle routes, refresh counters. Problems are recorded, not fatal.
pub fn reconcile(st: &mut State) {
    let pass = Pass::take(st);
    let done = pass.run();
    done.apply(st);
}

/// The periodic pass: the kernel reads and repairs run without the state
/// lock, so upcalls (the first packets of a new source, which the kernel
/// queues only four deep while it waits for a route) are not held behind
/// them.
pub fn reconcile_shared(state: &Mutex<State>) {
    let pass = Pass::take(&mut state.lock().unwrap());
    let done = pass.run();
    done.apply(&mut state.lock().unwrap());
}

/// What a reconcile pass needs from the state.
struct Pass {
    cfg: Config,
    records: Vec<crate::ipam::Attachment>,
    routed: bool,
    /// The forwarder whose nf_tables side the pass keeps in step.
    forwarder: Option<forward::Kind>,
    fastpath: crate::fastpath::FastPath,
    /// Interfaces to sample for the sources of a multicast flood.
    sample: Vec<(u32, String)>,
    synced_until: SystemTime,
    limits: limits::LimitState,
    domains: domains::DomainState,
    counts: domains::DiscoveryCounts,
}

/// What it found and did, to be written back.
struct Done {
    node: Result<(Link, Link), String>,
    repairs: Vec<String>,
    pod_problems: Vec<String>,
    fastpath: crate::fastpath::FastPath,
    fastpath_became_unavailable: bool,
    pods: usize,
    spoofed_drops: Option<u64>,
    ttl_raised: Option<u64>,
    seen: Option<Result<forward::Seen, String>>,
    sampled: Option<Vec<pressure::Source>>,
    synced_until: SystemTime,
    limits: limits::LimitState,
    domains: domains::DomainState,
    counts: domains::DiscoveryCounts,
}

impl Pass {
    fn take(st: &mut State) -> Pass {
        refresh_pod_names(st);
        Pass {
            cfg: st.cfg.clone(),
            records: st.records.clone(),
            routed: st.forwarder.is_some(),
            forwarder: st.forwarder_kind(),
            fastpath: st.fastpath.clone(),
            synced_until: st.schedule.synced_until,
            sample: match &st.forwarder {
                Some(f) if st.pressure.sample_due() => f
                    .vifs()
                    .iter()
                    .map(|v| (v.ifindex, v.name.clone()))
                    .collect(),
                _ => vec![],
            },
            limits: st.limits.clone(),
            domains: st.domains.clone(),
            counts: st.counts.clone(),
        }
    }

    /// The kernel work, without the state.
    fn run(mut self) -> Done {
        let synced_until = sync_records(&self.cfg.data_dir, self.synced_until);
        let node = ensure_node(&self.cfg).map_err(|e| e.to_string());
        let (mut repairs, mut pod_problems) = (vec![], vec![]);
        let mut became_unavailable = false;
        if let Ok((uplink, node_dev)) = &node {
            let store = crate::ipam::Store::new(&self.cfg.data_dir);
            reclaim_leftovers(&store);
            // the records, complete, or why not: leftovers are only removed
            // when every record could be read
            let mut fresh = || match store.list() {
                Ok(l) if l.unreadable.is_empty() => {
                    Ok(l.records.into_iter().map(|(_, a)| a).collect())
                }
                Ok(l) => Err(l
                    .unreadable
                    .iter()
                    .map(|(key, why)| format!("unreadable attachment record {key}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")),
                Err(e) => Err(format!("attachment records: {e}")),
            };
            let leased = |ip: std::net::Ipv4Addr| store.lease_owner(ip).is_some();
            (repairs, pod_problems) = pods::reconcile(
                &self.records,
                &mut fresh,
                &leased,
                node_dev,
                uplink,
                self.cfg.pool,
                self.routed,
            );
            if self.routed && self.cfg.fast_path {
                let before = self.fastpath.unavailable.is_some();
                let police = |a: &crate::ipam::Attachment| {
                    self.cfg
                        .domains
                        .as_ref()
                        .is_some_and(|d| d.allowed(&a.pod_namespace).is_some())
                };
                for what in self
                    .fastpath
                    .reconcile(&self.records, uplink, node_dev, &police)
                {
                    tracing::debug!("attached the {what}");
                }
                became_unavailable = !before && self.fastpath.unavailable.is_some();
            }
        }
        let nf = Nfnl::new().ok();
        let (spoofed_drops, ttl_raised, seen) = match nf {
            Some(mut nf) => {
                let seen = match (&node, self.forwarder) {
                    (Ok((uplink, node_dev)), Some(kind)) => Some(
                        forward::sync_tables(&mut nf, kind, &carry(&self.cfg), uplink, node_dev)
                            .map_err(|e| forward::nft_unsupported(kind, e).to_string()),
                    ),
                    _ => None,
                };
                (
                    firewall::spoofed_drops(&mut nf).ok(),
                    firewall::ttl_raised(&mut nf).ok(),
                    seen,
                )
            }
            None => (None, None, None),
        };
        let sampled = (!self.sample.is_empty())
            .then(|| pressure::sample_interfaces(&self.sample, &self.cfg.groups));
        let uplink = node.as_ref().ok().map(|(u, _)| u.name.as_str());
        self.limits
            .reconcile(&self.cfg, &self.records, uplink, self.routed);
        self.domains
            .reconcile(&self.cfg, &self.records, self.routed);
        self.counts
            .reconcile(&self.records, self.routed, &self.cfg.extra_ports());
        Done {
            node,
            repairs,
            pod_problems,
            fastpath: self.fastpath,
            fastpath_became_unavailable: became_unavailable,
            pods: pods_attached(&self.cfg.data_dir),
            spoofed_drops,
            ttl_raised,
            seen,
            sampled,
            synced_until,
            limits: self.limits,
            domains: self.domains,
            counts: self.counts,
        }
    }
}

impl Done {
    fn apply(self, st: &mut State) {
        let mut problems = vec![];
        match self.node {
            Ok((uplink, node_dev)) => {
                if let Some(fwd) = st.forwarder.as_mut() {
                    match fwd.set_interfaces(&uplink, &node_dev) {
                        Ok(true) => {
                            tracing::info!(uplink = %uplink.name, bridge = %node_dev.name, "interfaces changed: multicast routes rebuilt");
                            st.schedule.last_report = None;
                        }
                        Ok(false) => {}
                        Err(e) => problems.push(format!("multicast forwarder interfaces: {e}")),
                    }
                }
                if let Some(r) = &st.relay {
                    r.update(crate::relay::Settings::new(&st.cfg, &uplink, &node_dev));
                }
                st.uplink = uplink;
                st.node_dev = node_dev;
            }
            Err(e) => problems.push(e),
        }
        for r in self.repairs {
            tracing::info!("repaired pod state: {r}");
        }
        problems.extend(self.pod_problems);
        problems.extend(self.limits.problem.clone());
        st.limits = self.limits;
        problems.extend(self.domains.problem.clone());
        st.domains = self.domains;
        problems.extend(self.counts.problem.clone());
        st.counts = self.counts;
        st.fastpath = self.fastpath;
        if self.fastpath_became_unavailable {
            if let Some(why) = &st.fastpath.unavailable {
                tracing::warn!("fast path unavailable, pods use the normal path: {why}");
            }
        }
        let now = Instant::now();
        // twice at start (a report can be lost), then every REPORT_INTERVAL
        let due = match st.schedule.last_report {
            None => true,
            Some(t) => {
                now.duration_since(t) >= REPORT_INTERVAL
                    || (st.counters.reports_sent <= st.cfg.groups.len() as u64)
            }
        };
        if due {
            report_groups(st);
        }
        st.counters.pods = self.pods;
        st.discovery.table.expire(now);
        st.discovery.ifnames.clear();
        st.counters.spoofed_drops = self.spoofed_drops.unwrap_or(st.counters.spoofed_drops);
        st.schedule.synced_until = self.synced_until;
        match self.seen {
            Some(Ok(seen)) => {
                if let Some(f) = st.forwarder.as_mut() {
                    f.observe(&seen);
                }
                st.counters.forwarded = seen.forwarded;
            }
            Some(Err(e)) => problems.push(format!("multicast forwarder: {e}")),
            None => {}
        }
        if let Some(fwd) = &st.forwarder {
            let not_rtps = fwd.dropped().0;
            if let Some(msg) = st.pressure.update(now, not_rtps, self.sampled) {
                tracing::warn!("{msg}");
            }
        }
        st.counters.ttl_raised = self.ttl_raised.unwrap_or(st.counters.ttl_raised);
        if problems != st.problems {
            for p in &problems {
                tracing::warn!("{p}");
            }
            if problems.is_empty() && !st.problems.is_empty() {
                tracing::info!("all problems resolved");
            }
        }
        st.problems = problems;
    }
}

/// Syncs the attachment records and leases changed since `since` to disk
/// and returns the new mark. The plugin does not sync its records (that
/// would cost every pod's start a disk flush): they become durable here,
/// within a period.
fn sync_records(data_dir: &std::path::Path, since: SystemTime) -> SystemTime {
    let started = SystemTime::now();
    match crate::ipam::Store::new(data_dir).sync_changed(since) {
        Ok(n) => {
            if n > 0 {
                tracing::debug!("synced {n} attachment record(s) and lease(s) to disk");
            }
            // a file written while we looked is synced next time
            started - Duration::from_secs(1)
        }
        Err(e) => {
            tracing::warn!("syncing the attachment records: {e}");
            since
        }
    }
}

/// Takes back leases and temporary records left by killed plugin
/// invocations (best effort: a busy pool lock waits for the next pass).
fn reclaim_leftovers(store: &crate::ipam::Store) {
    if !store.may_need_reclaim() {
        return;
    }
    match store
        .lock(Duration::from_millis(200))
        .and_then(|lock| store.reclaim(&lock))
    {
        Ok(r) if !r.is_empty() => {
            tracing::warn!(reclaimed = ?r, "reclaimed leases left by killed plugin invocations")
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("reclaiming leftover leases: {e}"),
    }
}
