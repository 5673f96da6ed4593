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
mod pass;
pub mod pods;
pub mod pressure;
mod serve;
pub mod status;

pub use pass::{reconcile, reconcile_shared};
pub use serve::{run, PANIC_EXIT};

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
    /// The pods' Zenoh routers (`zenohRouter`).
    pub zenoh: Option<crate::zenoh::routers::Routers>,
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
    let zenoh = zenoh_settings(&cfg, &uplink).map(crate::zenoh::routers::Routers::start);
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
        zenoh,
        _instance: Some(instance),
    })
    .map(|mut st| {
        match observe::Capture::open(&observe::watched_groups(&st.cfg)) {
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
    let Some(mut cap) = st.discovery.capture.take() else {
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
            match (zenoh_settings(&cfg, &st.uplink), st.zenoh.as_mut()) {
                (Some(z), Some(r)) => r.update(z),
                (Some(z), None) => st.zenoh = Some(crate::zenoh::routers::Routers::start(z)),
                (None, Some(r)) => {
                    r.stop();
                    st.zenoh = None;
                }
                (None, None) => {}
            }
            if !cfg.fast_path && st.cfg.fast_path {
                st.fastpath.remove(&st.uplink);
            }
            st.fastpath.reset();
            if let Some(c) = &st.discovery.capture {
                if let Err(e) = c.set_filter(&observe::watched_groups(&cfg)) {
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

/// What the pods' Zenoh routers run with; None when `zenohRouter` is not
/// set. They connect to the node's router at the node entry's `address`,
/// else at the uplink's first IPv4 address.
fn zenoh_settings(cfg: &Config, uplink: &Link) -> Option<crate::zenoh::routers::Settings> {
    let port = cfg.zenoh_router?;
    let address = cfg.node_address.or_else(|| {
        Handle::new()
            .and_then(|mut h| h.addresses4(uplink.index))
            .ok()?
            .first()
            .map(|(a, _)| *a)
    });
    Some(crate::zenoh::routers::Settings {
        argv: cfg.zenoh_pod_router.clone(),
        node_router: address.map(|a| std::net::SocketAddrV4::new(a, port)),
        data_dir: cfg.data_dir.clone(),
    })
}

/// SIGTERM: remove what only the agent needs; keep pod-facing state.
pub fn shutdown(st: &mut State) {
    st.fastpath.remove(&st.uplink);
    if let Some(r) = st.relay.as_mut() {
        r.stop();
    }
    if let Some(z) = st.zenoh.as_mut() {
        z.stop();
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
            into_pods: st.fastpath.into_pods() as u64,
            into_pods_refused: st.fastpath.into_pods_refused.clone(),
            unavailable: st.fastpath.unavailable.clone(),
        },
        relay: st.relay.as_ref().map(|r| r.to_api()),
        zenoh: st.zenoh.as_ref().map(|z| z.to_api()),
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
        zenoh_scouts: st.discovery.table.zenoh_scouts(),
    }
}
