//! The node agent: `ros2-cni agent --config FILE [--node NAME]`.
//!
//! One per robot computer. On a routed-mode node it runs the multicast
//! forwarder for the RTPS groups between the uplink and the node bridge
//! (`src/forward`: the kernel's multicast routing where the kernel has it,
//! else nftables dup rules), the TTL 1 → 2 rule for those groups and group
//! membership on the uplink (for IGMP-snooping switches). On a macvlan-mode node pods are on the wire and L2
//! already carries their multicast, so it routes nothing (forwarding as well
//! would duplicate every packet) and serves health, status and metrics. Either
//! way it re-creates whatever node-wide state the plugin relies on if it goes
//! missing.
//!
//! Restart-safe: everything is derived from the config, the kernel and the
//! data dir. Killed with -9, the kernel drops its multicast routes (the routing
//! socket closes; the nftables forwarder's rules stay) but leaves pods, the
//! bridge, proxy entries and the anti-spoofing table alone, so unicast never
//! stops; on restart multicast routes come back as it starts (they are
//! static: one per RTPS group).
//!
//! SIGHUP reloads the config; SIGTERM/SIGINT remove only what the agent alone
//! needs (TTL rule, multicast routes, its socket) and keep pod-facing state.

pub mod domains;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod pods;
pub mod pressure;
pub mod status;

use crate::api;
use crate::config::{Config, Mode};
use crate::dataplane::macvlan::{ensure_shim, refuse_wireless};
use crate::dataplane::routed::{ensure_bridge, resolve_uplink};
use crate::firewall;
use crate::forward::{self, Forwarder};
use crate::kernel::mroute::Incoming;
use crate::kernel::nft::Nfnl;
use crate::kernel::rtnl::{Handle, Link};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    // The layers' errors are kept whole (variant, errno) but not chained
    // as `source`: their messages already carry their cause, and the
    // command line prints the whole chain.
    #[error("{0}")]
    Config(crate::config::Error),
    /// The cluster config the install hook keeps the conflist entry of.
    #[error("{0}")]
    Install(crate::install::InstallError),
    /// Node-wide setup the plugin relies on too (uplink, bridge, shim).
    #[error("{0}")]
    Node(crate::dataplane::Error),
    /// A kernel operation (rtnetlink, tc or nf_tables).
    #[error("{0}")]
    Kernel(crate::kernel::Error),
    #[error("{0}")]
    Setup(String),
    /// No multicast forwarder could start.
    #[error("{0}")]
    Forward(crate::forward::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

macro_rules! agent_error_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for AgentError {
            fn from(e: $t) -> Self {
                AgentError::$v(e)
            }
        }
    )*};
}
agent_error_from!(
    crate::config::Error => Config,
    crate::install::InstallError => Install,
    crate::dataplane::Error => Node,
    crate::kernel::Error => Kernel
);

/// Command-line options of `ros2-cni agent`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub config: PathBuf,
    pub node: Option<String>,
    /// Reconcile period (default 2 s).
    pub period: Option<Duration>,
    /// Keep the conflist entry (and the binary) installed while running.
    pub install: Option<InstallHook>,
}

/// `--cni-conf-dir`, `--cni-bin-dir`, `--uninstall-on-exit`.
#[derive(Debug, Clone, Default)]
pub struct InstallHook {
    pub conf_dir: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub uninstall_on_exit: bool,
}

impl InstallHook {
    /// Starts the watcher that re-applies the entry whenever the conflist's
    /// owner (calico-node's install-cni) rewrites it.
    fn watch(&self, opts: &Options) -> Result<crate::install::Watcher, AgentError> {
        use crate::install::{Entry, Target, WatchOptions, Watcher};
        let entry = Entry::from_config_file(&opts.config, opts.node.as_deref())?;
        let mut target = Target::new(&self.conf_dir, entry);
        if let Some(bin) = &self.bin_dir {
            let exe = std::env::current_exe().map_err(|e| AgentError::Io {
                what: "locating the running binary".into(),
                source: e,
            })?;
            target = target.with_binary(bin, exe);
        }
        Ok(Watcher::spawn(target, WatchOptions::default())?)
    }

    fn uninstall(&self, data_dir: &Path) {
        let u = crate::install::Uninstall {
            conf_dir: self.conf_dir.clone(),
            bin_dir: self.bin_dir.clone(),
            data_dir: Some(data_dir.to_owned()),
        };
        match crate::install::uninstall(&u) {
            Ok(done) => {
                for w in &done.warnings {
                    tracing::warn!("uninstall: {w}");
                }
                tracing::info!(
                    files = done.files.len(),
                    binary = done.binary_removed,
                    "uninstalled the CNI entry"
                );
            }
            Err(e) => tracing::error!("uninstall on exit failed: {e}"),
        }
    }
}

/// Everything the agent knows, behind one lock: what it was configured
/// with, the kernel objects it owns, and one part per concern.
pub struct State {
    pub cfg: Config,
    pub config_path: PathBuf,
    pub node: Option<String>,
    /// The multicast forwarder (routed mode only).
    pub forwarder: Option<Box<dyn Forwarder>>,
    /// Why that forwarder (or none) runs.
    pub forwarder_reason: String,
    pub uplink: Link,
    /// The node device pods are reached through: bridge or macvlan shim.
    pub node_dev: Link,
    /// What the status and the metrics report as counts.
    pub counters: Counters,
    /// When the periodic work of the reconcile pass was last done.
    schedule: Schedule,
    /// SPDP capture on every interface, and what it saw.
    pub discovery: Discovery,
    /// Multicast to other groups arriving now, and where from.
    pub pressure: pressure::Pressure,
    /// The problems of the last reconcile pass (empty: healthy).
    pub problems: Vec<String>,
    /// Counters of the conflist watcher, when the agent keeps the entry installed.
    pub install: Option<Arc<crate::install::WatchStats>>,
    attachments_mtime: Option<SystemTime>,
    /// The attachment records, re-read when their directory changes.
    pub records: Vec<crate::ipam::Attachment>,
    /// The tc/BPF fast path (routed mode).
    pub fastpath: crate::fastpath::FastPath,
    /// The discovery rate limits and what they dropped.
    pub limits: limits::LimitState,
    /// The domain policy and what it dropped.
    pub domains: domains::DomainState,
    /// Per-pod discovery datagrams sent and received.
    pub counts: domains::DiscoveryCounts,
    /// The RTPS relay to the peers (routed mode).
    pub relay: Option<crate::relay::Relay>,
    /// `dataDir/agent.lock`, held while this agent runs: one agent per node.
    _instance: Option<std::fs::File>,
}

/// The agent's counts, as the status and the metrics report them.
#[derive(Debug)]
pub struct Counters {
    pub started: SystemTime,
    pub restarts: u64,
    pub reloads: u64,
    /// Pods attached (records).
    pub pods: usize,
    pub spoofed_drops: u64,
    pub ttl_raised: u64,
    /// RTPS multicast forwarded, per (group, direction), from the counters
    /// of `ip ros2_cni_count`.
    pub forwarded: firewall::Forwarded,
    pub reports_sent: u64,
}

/// When the reconcile pass last did its periodic work.
struct Schedule {
    /// Records and leases changed before this are durable (synced).
    synced_until: SystemTime,
    last_report: Option<Instant>,
}

/// What the agent sees of discovery: the capture socket, the participant
/// table it fills, and the interface names it has looked up.
#[derive(Default)]
pub struct Discovery {
    pub capture: Option<observe::Capture>,
    pub table: observe::Table,
    ifnames: std::collections::HashMap<u32, String>,
}

impl State {
    pub fn mroute_fd(&self) -> Option<RawFd> {
        self.forwarder
            .as_ref()
            .and_then(|f| f.socket())
            .map(|s| s.raw_fd())
    }

    fn forwarder_kind(&self) -> Option<forward::Kind> {
        self.forwarder.as_ref().map(|f| f.kind())
    }
}

/// Loads the config the agent runs with.
pub fn load_config(path: &Path, node: Option<&str>) -> Result<Config, AgentError> {
    Ok(Config::from_file(path, node)?)
}

/// Node-wide state the plugin relies on, created if missing; returns
/// (uplink, node device).
fn ensure_node(cfg: &Config) -> Result<(Link, Link), AgentError> {
    let mut nl = Handle::new()?;
    let uplink = resolve_uplink(&mut nl, cfg)?;
    let mut nf = Nfnl::new()?;
    if cfg.mode == Mode::Macvlan {
        let shim = ensure_shim(&mut nl, &uplink)?;
        // a node switched from routed mode must not keep raising TTLs
        if firewall::remove_ttl_rule(&mut nf)? {
            tracing::info!("macvlan mode: removed the RTPS TTL rule");
        }
        let _ = forward::remove_tables(&mut nf);
        refuse_wireless(cfg, &uplink.name)?;
        return Ok((uplink, shim));
    }
    let bridge = ensure_bridge(&mut nl, &cfg.bridge, &uplink.name)?;
    if firewall::ensure_table(&mut nf, &firewall::pod_guard_spec())? {
        tracing::info!("created the anti-spoofing table bridge {}", firewall::TABLE);
    }
    if !cfg.raise_ttl {
        if firewall::remove_ttl_rule(&mut nf)? {
            tracing::info!("raiseTtl is false: removed the RTPS TTL rule");
        }
    } else if firewall::ensure_ttl_rule(
        &mut nf,
        &[&uplink.name, &cfg.bridge],
        &cfg.discovery_groups(),
    )? {
        tracing::info!(groups = ?cfg.discovery_groups(), "applied the RTPS TTL rule (ip {})", firewall::TABLE);
    }
    Ok((uplink, bridge))
}

/// Counts agent starts in `dataDir/agent.starts`; returns previous starts.
fn count_start(data_dir: &Path) -> u64 {
    let p = data_dir.join("agent.starts");
    let prev: u64 = std::fs::read_to_string(&p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let _ = std::fs::create_dir_all(data_dir);
    let _ = std::fs::write(&p, (prev + 1).to_string());
    prev
}

fn pods_attached(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("attachments"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// How long a starting agent waits for another one on the node to exit
/// (a restart while the old process is still going away).
pub const INSTANCE_WAIT: Duration = Duration::from_secs(5);

/// Takes `dataDir/agent.lock` (waiting up to [`INSTANCE_WAIT`]) and writes
/// our pid into it. Of agents started together, exactly one gets it.
fn lock_instance(data_dir: &Path) -> Result<std::fs::File, AgentError> {
    use std::io::{Seek, Write};
    let _ = std::fs::create_dir_all(data_dir);
    let path = data_dir.join("agent.lock");
    let io_err = |source| AgentError::Io {
        what: format!("agent lock {}", path.display()),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err)?;
    let start = Instant::now();
    loop {
        match f.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < INSTANCE_WAIT => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(AgentError::Setup(format!(
                    "another ros2-cni agent (pid {}) is running on this node: it holds {}",
                    holder.trim(),
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
    }
    f.set_len(0).map_err(io_err)?;
    f.rewind().map_err(io_err)?;
    write!(f, "{}", std::process::id()).map_err(io_err)?;
    Ok(f)
}

/// What the forwarder carries, from the config.
fn carry(cfg: &Config) -> forward::Carry {
    forward::Carry {
        groups: cfg.groups.clone(),
        extra: cfg.extra_multicast.clone(),
        lan_multicast: cfg.lan_multicast,
    }
}

/// Starts the multicast forwarder `cfg` asks for (routed mode): the kernel's
/// or nftables', with the reason; its nf_tables side is made at once.
fn start_forwarder(
    cfg: &Config,
    uplink: &Link,
    node_dev: &Link,
) -> Result<(Box<dyn Forwarder>, String), AgentError> {
    let (mut fwd, why) = forward::open(cfg.multicast_forwarder, &cfg.groups, INSTANCE_WAIT)
        .map_err(AgentError::Forward)?;
    let kernel = |e| AgentError::Forward(forward::Error::Kernel(e));
    fwd.set_lan_multicast(cfg.lan_multicast).map_err(kernel)?;
    fwd.set_interfaces(uplink, node_dev).map_err(kernel)?;
    let seen = forward::sync_tables(&mut Nfnl::new()?, fwd.kind(), &carry(cfg), uplink, node_dev)
        .map_err(|e| AgentError::Forward(forward::nft_unsupported(fwd.kind(), e)))?;
    fwd.observe(&seen);
    tracing::info!(groups = ?cfg.groups, forwarder = fwd.kind().as_str(), "forwarding RTPS multicast between {} and {}: {why}", uplink.name, node_dev.name);
    Ok((fwd, why))
}

/// Builds the state: node-wide setup, multicast routing, group membership.
pub fn start(opts: &Options) -> Result<State, AgentError> {
    let cfg = load_config(&opts.config, opts.node.as_deref())?;
    cfg.pool()?;
    let instance = lock_instance(&cfg.data_dir)?;
    let (uplink, node_dev) = ensure_node(&cfg)?;
    let (forwarder, forwarder_reason) = match cfg.mode {
        Mode::Routed => {
            let (f, why) = start_forwarder(&cfg, &uplink, &node_dev)?;
            (Some(f), why)
        }
        Mode::Macvlan => {
            tracing::info!("macvlan mode: pods are on the wire, multicast needs no routing here");
            (
                None,
                "macvlan mode: the pods are on the wire, L2 carries their multicast".into(),
            )
        }
    };
    let relay = forwarder
        .as_ref()
        .map(|_| crate::relay::Relay::start(crate::relay::Settings::new(&cfg, &uplink, &node_dev)));
    let restarts = count_start(&cfg.data_dir);
    tracing::info!(uplink = %uplink.name, node_dev = %node_dev.name, restarts, "agent started");
    Ok(State {
        counters: Counters {
            started: SystemTime::now(),
            restarts,
            reloads: 0,
            pods: pods_attached(&cfg.data_dir),
            spoofed_drops: 0,
            ttl_raised: 0,
            forwarded: Default::default(),
            reports_sent: 0,
        },
        cfg,
        config_path: opts.config.clone(),
        node: opts.node.clone(),
        forwarder,
        forwarder_reason,
        uplink,
        node_dev,
        schedule: Schedule {
            synced_until: UNIX_EPOCH,
            last_report: None,
        },
        discovery: Discovery::default(),
        pressure: Default::default(),
        problems: vec![],
        install: None,
        attachments_mtime: None,
        records: vec![],
        fastpath: Default::default(),
        limits: Default::default(),
        domains: Default::default(),
        counts: Default::default(),
        relay,
        _instance: Some(instance),
    })
    .map(|mut st| {
        match observe::Capture::open(&st.cfg.groups) {
            Ok(c) => st.discovery.capture = Some(c),
            Err(e) => st
                .problems
                .push(format!("cannot watch discovery traffic (AF_PACKET): {e}")),
        }
        st
    })
}

/// Reads captured discovery traffic into the participant table.
pub fn handle_capture(st: &mut State) {
    let Some(cap) = st.discovery.capture.take() else {
        return;
    };
    let names = &mut st.discovery.ifnames;
    let mut lookup = |i: u32| -> Option<String> {
        if let Some(n) = names.get(&i) {
            return Some(n.clone());
        }
        let n = Handle::new().ok()?.link_by_index(i).ok()??.name;
        names.insert(i, n.clone());
        Some(n)
    };
    cap.drain(&mut st.discovery.table, &mut lookup);
    st.discovery.capture = Some(cap);
}

/// The attachment records and which pod an address or host port belongs to
/// (re-read only when the directory changes).
fn refresh_pod_names(st: &mut State) {
    let dir = st.cfg.data_dir.join("attachments");
    let mtime = std::fs::metadata(&dir).and_then(|m| m.modified()).ok();
    // directory timestamps are coarse: two changes within one tick keep the
    // same mtime, so a recent one is never trusted
    let recent = mtime
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_none_or(|age| age < Duration::from_secs(5));
    if mtime.is_some() && mtime == st.attachments_mtime && !recent {
        return;
    }
    let Ok(list) = crate::ipam::Store::new(&st.cfg.data_dir).list() else {
        return;
    };
    if list.unreadable.is_empty() {
        st.attachments_mtime = mtime;
    }
    st.discovery.table.pods_by_ip.clear();
    st.discovery.table.pods_by_port.clear();
    st.records = list.records.iter().map(|(_, a)| a.clone()).collect();
    for (_, a) in list.records {
        let name = if a.pod_name.is_empty() {
            a.container_id.chars().take(12).collect()
        } else {
            format!("{}/{}", a.pod_namespace, a.pod_name)
        };
        st.discovery.table.pods_by_ip.insert(a.ip, name.clone());
        for ip in &a.primary_ips {
            if let Some(ip) = ip.split('/').next().and_then(|s| s.parse().ok()) {
                st.discovery.table.pods_by_ip.insert(ip, name.clone());
            }
        }
        if !a.host_if.is_empty() {
            st.discovery
                .table
                .pods_by_port
                .insert(a.host_if.clone(), name);
        }
    }
}

/// How often the agent repeats its IGMP membership reports on the uplink
/// (switches forget a membership after about 260 s without one).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// Announces membership of the RTPS groups on the uplink so IGMP-snooping
/// switches deliver them to this node.
pub fn report_groups(st: &mut State) {
    let Some(sock) = st.forwarder.as_ref().and_then(|f| f.socket()) else {
        return;
    };
    if !st.cfg.lan_multicast {
        return; // the node takes no part in LAN multicast
    }
    for g in st.cfg.groups.clone() {
        match sock.send_report(st.uplink.index, g) {
            Ok(()) => st.counters.reports_sent += 1,
            Err(e) => tracing::warn!(group = %g, "IGMP report on {}: {e}", st.uplink.name),
        }
    }
    st.schedule.last_report = Some(Instant::now());
}

/// Reads and applies every pending upcall.
pub fn handle_upcalls(st: &mut State) {
    loop {
        let Some(sock) = st.forwarder.as_ref().and_then(|f| f.socket()) else {
            return;
        };
        match sock.read() {
            Ok(Some(Incoming::Query { ifindex, group })) => {
                let answer = ifindex == st.uplink.index
                    && (group.is_unspecified() || st.cfg.groups.contains(&group));
                if answer {
                    tracing::debug!(%group, "IGMP query on the uplink: reporting");
                    report_groups(st);
                }
            }
            Ok(Some(Incoming::Upcall(up))) => match st
                .forwarder
                .as_mut()
                .map(|f| f.handle_upcall(up))
                .unwrap_or(Ok(crate::mroute::Decision::Ignore("no forwarder")))
            {
                Ok(d) => {
                    tracing::debug!(src = %up.src, group = %up.group, vif = up.vif, "unexpected multicast upcall: {d:?}")
                }
                Err(e) => {
                    tracing::warn!(src = %up.src, group = %up.group, "re-installing the multicast routes failed: {e}")
                }
            },
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("reading multicast upcalls: {e}");
                return;
            }
        }
    }
}

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

/// SIGHUP: re-read the config and apply it; on error keep the running one.
pub fn reload(st: &mut State) {
    if reload_config(st) {
        reconcile(st);
    }
}

/// SIGHUP with the state shared: the config is switched under the lock, the
/// reconcile pass (the kernel work) runs without it. True if reloaded.
pub fn reload_shared(state: &Mutex<State>) -> bool {
    let reloaded = reload_config(&mut state.lock().unwrap());
    if reloaded {
        reconcile_shared(state);
    }
    reloaded
}

/// Re-reads the config and switches to it (no reconcile); true if it did.
fn reload_config(st: &mut State) -> bool {
    match load_config(&st.config_path, st.node.as_deref()) {
        Ok(cfg) if cfg.mode != st.cfg.mode => {
            tracing::error!(
                "reload refused: the mode changed from {} to {}; restart the agent to switch modes",
                st.cfg.mode.as_str(),
                cfg.mode.as_str()
            );
            false
        }
        Ok(cfg) => {
            if cfg.multicast_forwarder != st.cfg.multicast_forwarder {
                tracing::warn!(
                    "multicastForwarder changed: it takes effect when the agent restarts (running: {})",
                    st.forwarder_kind().map_or("none", |k| k.as_str())
                );
            }
            if let Some(r) = st.forwarder.as_mut() {
                if let Err(e) = r.set_groups(&cfg.groups) {
                    tracing::error!("multicast routes for the new groups: {e}");
                }
                if let Err(e) = r.set_lan_multicast(cfg.lan_multicast) {
                    tracing::error!("multicast routes for lanMulticast: {e}");
                }
            }
            if let Some(r) = &st.relay {
                r.update(crate::relay::Settings::new(&cfg, &st.uplink, &st.node_dev));
            }
            if !cfg.fast_path && st.cfg.fast_path {
                st.fastpath.remove(&st.uplink);
            }
            st.fastpath.reset();
            if let Some(c) = &st.discovery.capture {
                if let Err(e) = c.set_filter(&cfg.groups) {
                    tracing::warn!("capture filter for the new groups: {e}");
                }
            }
            st.cfg = cfg;
            st.counters.reloads += 1;
            st.schedule.last_report = None; // report the (new) groups at once
            tracing::info!(groups = ?st.cfg.groups, "configuration reloaded");
            true
        }
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e}");
            false
        }
    }
}

/// SIGTERM: remove what only the agent needs; keep pod-facing state.
pub fn shutdown(st: &mut State) {
    st.fastpath.remove(&st.uplink);
    if let Some(r) = st.relay.as_mut() {
        r.stop();
    }
    if let Some(fwd) = st.forwarder.as_mut() {
        fwd.stop();
        if let Ok(mut nf) = Nfnl::new() {
            if let Err(e) = firewall::remove_ttl_rule(&mut nf) {
                tracing::warn!("removing the TTL rule: {e}");
            }
            if let Err(e) = forward::remove_tables(&mut nf) {
                tracing::warn!("removing the forwarder's tables: {e}");
            }
        }
        if let Some(sock) = fwd.socket() {
            for g in &st.cfg.groups {
                let _ = sock.send_leave(st.uplink.index, *g);
            }
        }
    }
    let _ = std::fs::remove_file(st.cfg.agent_socket());
    tracing::info!("stopped; pods keep their interfaces and unicast connectivity");
}

/// The status document served on the agent socket.
pub fn status_reply(st: &State) -> api::Status {
    let (vifs, routes, forwarded, (not_rtps, wrong_if)) = match &st.forwarder {
        None => (vec![], vec![], vec![], (0, 0)),
        Some(f) => (
            f.vifs(),
            f.routes(),
            forwarded(&st.counters.forwarded),
            f.dropped(),
        ),
    };
    api::Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        node: st.cfg.node_name.clone().or_else(|| st.node.clone()),
        mode: st.cfg.mode.as_str().to_owned(),
        uplink: st.uplink.name.clone(),
        node_device: st.node_dev.name.clone(),
        routing: st.forwarder.is_some(),
        forwarder: api::ForwarderInfo {
            kind: st.forwarder_kind().map(|k| k.as_str().to_owned()),
            reason: st.forwarder_reason.clone(),
        },
        subnet: st.cfg.subnet.to_string(),
        pool: st.cfg.pool.map(|p| p.to_string()),
        groups: st.cfg.groups.clone(),
        started_at: crate::api::unix_secs(st.counters.started),
        restarts: st.counters.restarts,
        reloads: st.counters.reloads,
        pods: st.counters.pods as u64,
        vifs,
        routes,
        forwarded,
        dropped: api::Dropped {
            not_rtps,
            wrong_interface: wrong_if,
            spoofed: st.counters.spoofed_drops,
        },
        ttl_raised: st.counters.ttl_raised,
        upcalls: st.forwarder.as_ref().map_or(0, |f| f.upcalls()),
        multicast_pressure: st.pressure.to_api(),
        discovery_limits: st.limits.to_api(),
        domain_policy: st.domains.to_api(),
        discovery_datagrams: st.counts.to_api(),
        igmp_reports_sent: st.counters.reports_sent,
        participants: st.discovery.table.len() as u64,
        fast_path: api::FastPath {
            enabled: st.cfg.fast_path && st.forwarder.is_some(),
            lan: st.fastpath.lan_attached(),
            pods: st.fastpath.attached_pods() as u64,
            unavailable: st.fastpath.unavailable.clone(),
        },
        relay: st.relay.as_ref().map(|r| r.to_api()),
        install: st.install.as_ref().map(|w| {
            use std::sync::atomic::Ordering::Relaxed;
            api::Install {
                applied: w.applied.load(Relaxed),
                unchanged: w.unchanged.load(Relaxed),
                errors: w.errors.load(Relaxed),
            }
        }),
        healthy: st.problems.is_empty(),
        problems: st.problems.clone(),
    }
}

fn forwarded(f: &firewall::Forwarded) -> Vec<api::Forwarded> {
    f.iter()
        .map(|((group, direction), (packets, bytes))| api::Forwarded {
            group: *group,
            direction: (*direction).to_owned(),
            packets: *packets,
            bytes: *bytes,
        })
        .collect()
}

/// The participant table document (`participants` on the status socket).
pub fn participants_reply(st: &State) -> api::Participants {
    api::Participants {
        node: st.cfg.node_name.clone().or_else(|| st.node.clone()),
        subnet: st.cfg.subnet.to_string(),
        participants: st
            .discovery
            .table
            .participants()
            .into_iter()
            .cloned()
            .collect(),
        sources: st.discovery.table.sources().into_iter().cloned().collect(),
        malformed: st.discovery.table.malformed,
    }
}

/// A task that ended by panicking: the agent stops (exit code 70 through the
/// panic hook, or this error), so that its supervisor restarts it.
fn task_died(what: &str, e: tokio::task::JoinError) -> AgentError {
    AgentError::Setup(format!("the agent's {what} task died: {e}"))
}

/// Exit code of an agent that panicked (EX_SOFTWARE).
pub const PANIC_EXIT: i32 = 70;

/// Any panic in any thread or task ends the process: an agent whose state
/// lock is poisoned, or whose upcall or status task is gone, would keep
/// running without routing or answering; exiting lets systemd or the
/// DaemonSet restart it (kernel state survives, as after kill -9).
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info); // to stderr; a closed stderr is ignored there
        std::process::exit(PANIC_EXIT);
    }));
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(opts: Options) -> Result<(), AgentError> {
    exit_on_panic();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::Io {
            what: "tokio runtime".into(),
            source: e,
        })?;
    let mut state = start(&opts)?;
    let data_dir = state.cfg.data_dir.clone();
    let watcher = match &opts.install {
        Some(hook) => Some(hook.watch(&opts)?),
        None => None,
    };
    state.install = watcher.as_ref().map(|w| w.stats_handle());
    let watcher = Arc::new(Mutex::new(watcher));
    let r = rt.block_on(serve(
        state,
        opts.period.unwrap_or(Duration::from_secs(2)),
        Reinstall {
            opts: opts.clone(),
            watcher: watcher.clone(),
        },
    ));
    if let Some(w) = watcher.lock().unwrap().take() {
        w.stop();
    }
    if let Some(hook) = opts.install.as_ref().filter(|h| h.uninstall_on_exit) {
        hook.uninstall(&data_dir);
    }
    r
}

/// What SIGHUP needs to re-apply the conflist entry from the new config.
struct Reinstall {
    opts: Options,
    watcher: Arc<Mutex<Option<crate::install::Watcher>>>,
}

impl Reinstall {
    /// Restarts the watcher with the entry built from the (reloaded) config.
    fn restart(&self, st: &mut State) {
        let Some(hook) = &self.opts.install else {
            return;
        };
        match hook.watch(&self.opts) {
            Ok(w) => {
                st.install = Some(w.stats_handle());
                if let Some(old) = self.watcher.lock().unwrap().replace(w) {
                    old.stop();
                }
            }
            Err(e) => tracing::error!("reload: keeping the conflist entry as it was: {e}"),
        }
    }
}

struct Fd(RawFd);
impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.to_owned();
    move |source| AgentError::Io { what, source }
}

/// Runs the agent's tasks and its main loop until a signal ends it or a
/// task dies; then stops the tasks and shuts down.
async fn serve(state: State, period: Duration, reinstall: Reinstall) -> Result<(), AgentError> {
    let sock_path = state.cfg.agent_socket();
    let state = Arc::new(Mutex::new(state));
    let mut tasks = Tasks::spawn(&state, &sock_path).await?;
    let outcome = main_loop(&state, &mut tasks, &sock_path, period, &reinstall).await;
    tasks.stop().await;
    shutdown(&mut state.lock().unwrap());
    outcome
}

/// The tasks that run beside the main loop.
struct Tasks {
    status: tokio::task::JoinHandle<()>,
    metrics: Option<tokio::task::JoinHandle<()>>,
    /// None once it has ended (it is not awaited twice).
    upcalls: Option<tokio::task::JoinHandle<()>>,
    capture: Option<tokio::task::JoinHandle<()>>,
}

impl Tasks {
    /// Starts the status socket, the metrics listener, the upcall reader
    /// (routed mode) and the discovery capture reader.
    async fn spawn(state: &Arc<Mutex<State>>, sock_path: &Path) -> Result<Tasks, AgentError> {
        use tokio::io::unix::AsyncFd;
        let (metrics_addr, fd, cap_fd) = {
            let st = state.lock().unwrap();
            let cap_fd = st.discovery.capture.as_ref().map(|c| c.raw_fd());
            (st.cfg.metrics_address.clone(), st.mroute_fd(), cap_fd)
        };
        let status = tokio::spawn(status::serve(sock_path.to_owned(), state.clone()));
        let metrics = if metrics_addr.is_empty() {
            None
        } else {
            let listener = tokio::net::TcpListener::bind(&metrics_addr)
                .await
                .map_err(io_err(&format!("metrics address {metrics_addr}")))?;
            tracing::info!("metrics on http://{metrics_addr}/metrics");
            Some(tokio::spawn(metrics::serve(listener, state.clone())))
        };
        let readable = |fd: RawFd, what: &str| {
            // SAFETY: see the callers: each fd outlives the task that polls it.
            unsafe { AsyncFd::register_with_interest(Fd(fd), tokio::io::Interest::READABLE) }
                .map_err(|e| io_err(what)(e.into_parts().1))
        };
        // the fd belongs to the router's MrouteSocket, which lives in
        // `state` until after the task that polls it is aborted and awaited
        // (stop); it is never replaced.
        let upcalls = match fd {
            Some(fd) => Some(upcall_task(
                readable(fd, "multicast routing socket")?,
                state,
            )),
            None => None,
        };
        // the fd belongs to the Capture in `state`, which is only taken out
        // for a drain under the lock and always put back; the task that
        // polls it is aborted and awaited before `state` is shut down.
        let capture = match cap_fd {
            Some(fd) => Some(capture_task(readable(fd, "capture socket")?, state)),
            None => None,
        };
        Ok(Tasks {
            status,
            metrics,
            upcalls,
            capture,
        })
    }

    /// Aborts every task; those that poll a descriptor in the state are
    /// awaited, so that the state may be shut down after.
    async fn stop(self) {
        self.status.abort();
        if let Some(t) = self.metrics {
            t.abort();
        }
        for t in [self.upcalls, self.capture].into_iter().flatten() {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Discovery traffic is read in batches, at most every DRAIN_EVERY.
fn capture_task(
    afd: tokio::io::unix::AsyncFd<Fd>,
    state: &Arc<Mutex<State>>,
) -> tokio::task::JoinHandle<()> {
    let st = state.clone();
    tokio::spawn(async move {
        while let Ok(mut guard) = afd.readable().await {
            handle_capture(&mut st.lock().unwrap());
            guard.clear_ready();
            tokio::time::sleep(observe::DRAIN_EVERY).await;
        }
    })
}

/// Upcalls (new sources) are served by a task of their own, so they never
/// wait for the main loop (a reconcile pass, a reload).
fn upcall_task(
    afd: tokio::io::unix::AsyncFd<Fd>,
    state: &Arc<Mutex<State>>,
) -> tokio::task::JoinHandle<()> {
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            match afd.readable().await {
                Ok(mut guard) => {
                    handle_upcalls(&mut st.lock().unwrap());
                    guard.clear_ready();
                }
                Err(e) => {
                    tracing::error!("multicast routing socket: {e}");
                    return;
                }
            }
        }
    })
}

/// Reconciles every `period`, reloads on SIGHUP, ends on SIGTERM/SIGINT or
/// when the status or upcall task ends.
async fn main_loop(
    state: &Arc<Mutex<State>>,
    tasks: &mut Tasks,
    sock_path: &Path,
    period: Duration,
    reinstall: &Reinstall,
) -> Result<(), AgentError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(io_err("SIGHUP handler"))?;
    let mut term = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let notify = crate::sdnotify::Notifier::from_env();
    if let Some(n) = &notify {
        n.send("READY=1");
    }
    let mut upcall_done = false;
    let outcome = loop {
        tokio::select! {
            _ = tick.tick() => {
                let st = state.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || reconcile_shared(&st)).await {
                    break Err(task_died("reconcile", e));
                }
                // systemd's watchdog is fed only while the status socket answers
                if let Some(n) = notify.clone() {
                    let sock = sock_path.to_owned();
                    tokio::task::spawn_blocking(move || {
                        if crate::api::status(&sock).is_ok() {
                            n.send("WATCHDOG=1");
                        }
                    });
                }
            }
            _ = hup.recv() => {
                let st = state.clone();
                match tokio::task::spawn_blocking(move || reload_shared(&st)).await {
                    Ok(true) => reinstall.restart(&mut state.lock().unwrap()),
                    Ok(false) => {}
                    Err(e) => break Err(task_died("reload", e)),
                }
            }
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            // a task that ends (rather than panics) leaves the agent deaf:
            // stop, so that the supervisor restarts it
            r = &mut tasks.status => {
                break Err(AgentError::Setup(format!("the status socket task ended: {r:?}")));
            }
            Some(r) = async { match tasks.upcalls.as_mut() { Some(t) => Some(t.await), None => std::future::pending().await } } => {
                upcall_done = true;
                break Err(AgentError::Setup(format!("the multicast upcall task ended: {r:?}")));
            }
        }
    };
    if upcall_done {
        tasks.upcalls = None; // ended: not to be awaited again
    }
    outcome
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
