//! `ros2-cni lab`: build the test bed, attach pods through ros2-cni, start
//! the agents, probe discovery between every ordered pair of hosts, and do
//! the same with Multus-style macvlan for comparison.
//!
//! Everything lives in namespaces named `r2lab-<pid>-<n>-...` and a
//! directory `$TMPDIR/r2lab-<pid>-<n>`; it is removed on exit, on error and
//! on SIGINT/SIGTERM/SIGHUP (see `interrupt`), unless `--keep`.

use super::interrupt::{exit_code, Interrupt};
use super::matrix::{MacvlanRun, Matrix, Pair, RelayScenario, Report};
use super::probe::{in_path, Cancel, Endpoint, ProbeRequest, Prober, Unavailable};
use super::probers::select_prober;
use super::testbed::{
    self, dir_for_prefix, namespaces_of, pid_alive, remove_ns_and_processes, sh, unique_prefix,
    LabError, Options, PodSpec, Primary, Result, Testbed, KEPT_MARKER, LAPTOP_IP,
};
use serde_json::json;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// Namespace names of the lab start with `r2lab-<pid>-`.
pub const FAMILY: &str = "r2lab";

/// How long the main thread gets to clean up after a signal before the
/// signal thread removes everything by name and exits.
const GRACE: Duration = Duration::from_secs(30);

/// The host-local range every node hands out in the macvlan comparison
/// (the original recipe's 192.168.1.160-180, inside the lab's LAN).
pub const MACVLAN_RANGE: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(192, 168, 1, 160),
    Ipv4Addr::new(192, 168, 1, 180),
);

pub const MAX_NODES: usize = 8;
pub const MAX_PODS_PER_NODE: usize = 16;
pub const MAX_TIMEOUT: u64 = 60;
pub const MAX_PARALLEL: usize = 32;
/// `--relay`: two nodes on the multicast-dropping LAN, one behind the router.
pub const RELAY_MIN_NODES: usize = 3;

/// What `ros2-cni lab` was asked to do.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub nodes: usize,
    pub pods_per_node: usize,
    pub wifi: bool,
    pub keep: bool,
    pub json: bool,
    /// Seconds each probe waits for discovery.
    pub timeout: u64,
    /// Probes at a time.
    pub parallel: usize,
    /// The Calico stand-in; None: `ptp` when installed, else the built-in one.
    pub primary: Option<Primary>,
    /// Run the Multus-style macvlan comparison.
    pub macvlan: bool,
    /// Use the lab's own SPDP prober even where ddsperf is installed.
    pub spdp_prober: bool,
    /// The relay scenario: the LAN switch drops all IPv4 multicast, the last
    /// node sits on a second subnet behind a router, no laptop; the
    /// multicast-only configuration, then the relay one (no macvlan).
    pub relay: bool,
    /// Write a graph of each matrix (SVG and DOT) into this directory.
    pub graph_dir: Option<PathBuf>,
    /// The ros2-cni binary (the running one).
    pub plugin: PathBuf,
    pub cni_bin_dir: PathBuf,
}

/// Probes at a time by default: four per core (a probe mostly waits: ddsperf
/// pings at 100 Hz), 2 to 8.
pub fn default_parallel() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 4)
        .unwrap_or(4)
        .clamp(2, 8)
}

impl LabOptions {
    pub fn new(plugin: impl Into<PathBuf>) -> LabOptions {
        LabOptions {
            nodes: 2,
            pods_per_node: 1,
            wifi: false,
            keep: false,
            json: false,
            timeout: 5,
            parallel: default_parallel(),
            primary: None,
            macvlan: true,
            spdp_prober: false,
            relay: false,
            graph_dir: None,
            plugin: plugin.into(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
        }
    }

    /// Checks the numbers; the message says what is allowed.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=MAX_NODES).contains(&self.nodes) {
            return Err(format!(
                "--nodes {}: a lab has 1 to {MAX_NODES} robot computers",
                self.nodes
            ));
        }
        if self.relay && self.nodes < RELAY_MIN_NODES {
            return Err(format!(
                "--relay --nodes {}: the relay scenario needs {RELAY_MIN_NODES} to {MAX_NODES} robot computers \
                 (two or more on the LAN whose switch drops multicast, the last one on a second subnet behind a router)",
                self.nodes
            ));
        }
        if self.relay && self.wifi {
            return Err("--relay and --wifi: choose one switch behaviour".into());
        }
        if !(1..=MAX_PODS_PER_NODE).contains(&self.pods_per_node) {
            return Err(format!(
                "--pods-per-node {}: 1 to {MAX_PODS_PER_NODE} pods per robot computer",
                self.pods_per_node
            ));
        }
        if !(1..=MAX_TIMEOUT).contains(&self.timeout) {
            return Err(format!(
                "--timeout {}: 1 to {MAX_TIMEOUT} seconds per probe",
                self.timeout
            ));
        }
        if !(1..=MAX_PARALLEL).contains(&self.parallel) {
            return Err(format!(
                "--parallel {}: 1 to {MAX_PARALLEL} probes at a time",
                self.parallel
            ));
        }
        Ok(())
    }

    /// Pods plus the laptop (the relay scenario has no laptop).
    pub fn hosts(&self) -> usize {
        self.nodes * self.pods_per_node + usize::from(!self.relay)
    }

    /// Ordered pairs probed per run.
    pub fn pairs(&self) -> usize {
        let h = self.hosts();
        h * (h - 1)
    }

    /// "about 12 s" for all pairs at `per_probe` seconds each, `parallel` at a time.
    pub fn estimate(&self, per_probe: f64) -> String {
        let waves = self.pairs().div_ceil(self.parallel.max(1));
        let secs = (waves as f64 * per_probe).ceil() as u64;
        if secs < 120 {
            format!("about {secs} s")
        } else {
            format!("about {} min", secs.div_ceil(60))
        }
    }
}

/// The tools the test bed runs (the prober's own are checked by
/// `select_prober`), with the Debian package that has each.
pub fn required_tools(nft: bool) -> Vec<(&'static str, &'static str)> {
    let mut t = vec![("ip", "iproute2"), ("iptables", "iptables")];
    if nft {
        t.push(("nft", "nftables"));
    }
    t
}

/// Tools missing from PATH, with their packages.
pub fn missing_tools(nft: bool) -> Vec<(&'static str, &'static str)> {
    required_tools(nft)
        .into_iter()
        .filter(|(t, _)| !in_path(t))
        .collect()
}

/// One message for everything missing: what, and the one command that installs it.
pub fn missing_message(missing: &[(&str, &str)], prober: Option<&Unavailable>) -> String {
    let mut parts = vec![];
    let mut pkgs: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    if !missing.is_empty() {
        let tools: Vec<&str> = missing.iter().map(|(t, _)| *t).collect();
        parts.push(format!("{} not found in PATH", tools.join(", ")));
    }
    if let Some(u) = prober {
        parts.push(u.reason.clone());
        pkgs.extend(u.packages.iter().copied());
    }
    pkgs.dedup();
    let mut msg = parts.join("; ");
    if !pkgs.is_empty() {
        msg.push_str(&format!(
            "; install with: apt-get install {}",
            pkgs.join(" ")
        ));
    }
    msg
}

fn progress(msg: &str) {
    eprintln!("lab: {msg}");
}

fn check(cancel: &Cancel) -> Result<()> {
    if cancel.is_cancelled() {
        Err(LabError("interrupted".into()))
    } else {
        Ok(())
    }
}

/// What `--keep` left in place, for the "how to inspect / remove" text.
#[derive(Debug, Clone)]
pub struct KeptBed {
    pub what: &'static str,
    pub prefix: String,
    pub dir: PathBuf,
    pub nodes: Vec<String>,
    pub pods: Vec<String>,
    pub agents: Vec<u32>,
}

/// The order pairs are probed in: by distance around the host list (all
/// (i, i+1), then all (i, i+2), ...), so probes running side by side
/// involve different hosts.
pub fn pair_order(hosts: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(hosts * hosts.saturating_sub(1));
    for d in 1..hosts {
        for i in 0..hosts {
            out.push((i, (i + d) % hosts));
        }
    }
    out
}

/// How progress lines number finished pairs: `[before + k/of] <tag>a -> b`,
/// so that several matrices count through one total.
#[derive(Debug, Clone, Copy, Default)]
pub struct Numbering<'a> {
    pub tag: &'a str,
    pub before: usize,
    pub of: usize,
}

/// Runs one probe per ordered pair of `hosts`, `parallel` at a time, each in
/// its own DDS domain, and reports each finished pair.
pub fn probe_matrix(
    prober: &dyn Prober,
    hosts: &[Endpoint],
    timeout: Duration,
    parallel: usize,
    cancel: &Cancel,
    num: &Numbering,
    report: &(dyn Fn(&str) + Sync),
) -> Result<Matrix> {
    let order = pair_order(hosts.len());
    let total = order.len();
    let jobs: Mutex<VecDeque<usize>> = Mutex::new((0..total).collect());
    // domain ids 1..=230, reused in turn, never two at once
    let domains: Mutex<VecDeque<u32>> = Mutex::new((1..=230).collect());
    let failed = Cancel::default();
    let (tx, rx) = mpsc::channel();
    let mut results: Vec<Option<Pair>> = vec![None; total];
    let mut first_error = None;
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, total.max(1)) {
            let tx = tx.clone();
            let (jobs, domains, order, failed) = (&jobs, &domains, &order, &failed);
            s.spawn(move || loop {
                if cancel.is_cancelled() || failed.is_cancelled() {
                    return;
                }
                let Some(job) = jobs.lock().unwrap().pop_front() else {
                    return;
                };
                let domain = domains.lock().unwrap().pop_front().unwrap_or(0);
                let (f, t) = order[job];
                let req = ProbeRequest {
                    from: &hosts[f],
                    to: &hosts[t],
                    domain,
                    timeout,
                    cancel,
                };
                let r = prober.probe(&req);
                domains.lock().unwrap().push_back(domain);
                if tx.send((job, r)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut done = 0;
        for (job, r) in rx {
            let (f, t) = order[job];
            let (from, to) = (&hosts[f].label, &hosts[t].label);
            match r {
                Ok(o) => {
                    done += 1;
                    if !cancel.is_cancelled() {
                        let what = match (o.discovered, o.seconds) {
                            (true, Some(sec)) => format!("discovered in {sec:.2} s"),
                            (true, None) => "discovered".into(),
                            (false, _) => format!(
                                "no ({})",
                                o.note.clone().unwrap_or_else(|| format!(
                                    "not within {} s",
                                    timeout.as_secs()
                                ))
                            ),
                        };
                        report(&format!(
                            "[{}/{}] {}{from} -> {to}: {what}",
                            num.before + done,
                            num.of.max(num.before + total),
                            num.tag
                        ));
                    }
                    results[job] = Some(Pair {
                        from: from.clone(),
                        to: to.clone(),
                        discovered: o.discovered,
                        seconds: o.seconds.filter(|_| o.discovered),
                        note: o.note,
                    });
                }
                Err(e) => {
                    failed.cancel();
                    first_error.get_or_insert(LabError(format!(
                        "probe {from} -> {to} could not run: {e}"
                    )));
                }
            }
        }
    });
    check(cancel)?;
    if let Some(e) = first_error {
        return Err(e);
    }
    // every result in the order of the rows: from, then to
    let mut pairs: Vec<Pair> = results.into_iter().flatten().collect();
    let pos = |l: &str| {
        hosts
            .iter()
            .position(|h| h.label == l)
            .unwrap_or(usize::MAX)
    };
    pairs.sort_by_key(|p| (pos(&p.from), pos(&p.to)));
    Ok(Matrix {
        hosts: hosts.iter().map(|h| h.label.clone()).collect(),
        pairs,
    })
}

fn bed_options(opts: &LabOptions, primary: Primary) -> Options {
    let mut o = Options::new(&unique_prefix(FAMILY), opts.nodes, &opts.plugin);
    o.wifi = opts.wifi;
    o.laptop = !opts.relay;
    if opts.relay {
        o.second_lan = vec![opts.nodes];
    }
    o.cni_bin_dir = opts.cni_bin_dir.clone();
    o.primary = primary;
    o
}

fn pod_label(node: usize, j: usize) -> String {
    format!("n{node}-pod{j}")
}

fn laptop(tb: &Testbed) -> Result<Endpoint> {
    Ok(Endpoint {
        label: "laptop".into(),
        ns: tb
            .laptop
            .clone()
            .ok_or_else(|| LabError("the test bed has no laptop".into()))?,
        lan_ip: Some(LAPTOP_IP),
    })
}

fn build(
    opts: &LabOptions,
    primary: Primary,
    what: &'static str,
    kept: &mut Vec<KeptBed>,
) -> Result<Testbed> {
    let mut tb = Testbed::new(bed_options(opts, primary))?;
    if opts.relay {
        tb.drop_multicast()?;
    }
    if opts.keep {
        tb.keep();
        kept.push(KeptBed {
            what,
            prefix: tb.opts.prefix.clone(),
            dir: tb.dir.clone(),
            nodes: tb.nodes.iter().map(|n| n.ns.clone()).collect(),
            pods: vec![],
            agents: vec![],
        });
    }
    Ok(tb)
}

/// One test bed of the lab: what is built, attached and probed on it.
/// Every bed goes through the same steps ([`bed_run`]); this says how
/// they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bed {
    /// Agents, pods with ros0 attached through ros2-cni, and the laptop.
    Ros2Cni,
    /// The comparison: no agent, pods with the primary eth0 plus a
    /// reference macvlan `net1` (what a Multus user adds), and the laptop.
    Macvlan,
    /// One configuration of `--relay`: agents configured for it, pods
    /// through ros2-cni, no laptop.
    Relay(RelayConfig),
}

impl Bed {
    /// The word that starts its progress lines.
    fn tag(self) -> &'static str {
        match self {
            Bed::Ros2Cni => "ros2-cni",
            Bed::Macvlan => "macvlan",
            Bed::Relay(c) => c.name(),
        }
    }

    /// What `--keep` calls the bed.
    fn kept_as(self) -> &'static str {
        match self {
            Bed::Macvlan => "macvlan comparison",
            _ => self.tag(),
        }
    }

    fn building(self, opts: &LabOptions, primary: Primary) -> String {
        match self {
            Bed::Relay(_) => format!(
                "building a LAN switch that drops all IPv4 multicast with n1-n{} on it, a router and a second LAN ({}) with n{} (primary network: {}); no laptop",
                opts.nodes - 1,
                testbed::SUBNET2,
                opts.nodes,
                primary.name()
            ),
            _ => format!(
                "building a LAN switch{}, {} robot computer{} (primary network: {}) and a laptop",
                if opts.wifi {
                    " with the Wi-Fi rule"
                } else {
                    ""
                },
                opts.nodes,
                if opts.nodes == 1 { "" } else { "s" },
                primary.name()
            ),
        }
    }

    /// Whether the bed runs an agent on every node.
    fn has_agents(self) -> bool {
        self != Bed::Macvlan
    }

    fn starting_agents(self, opts: &LabOptions) -> String {
        let how = match self {
            Bed::Relay(RelayConfig::MulticastOnly) => " (no relay peers, lanMulticast true)",
            Bed::Relay(RelayConfig::Relay) => " (peers: every other node, lanMulticast false)",
            _ => "",
        };
        format!("starting {} agent(s){how}", opts.nodes)
    }

    fn attaching(self, opts: &LabOptions) -> String {
        let pods = opts.nodes * opts.pods_per_node;
        match self {
            Bed::Macvlan => format!(
                "attaching {pods} pod(s): primary eth0 + reference macvlan net1 (host-local {}-{} on every node)",
                MACVLAN_RANGE.0, MACVLAN_RANGE.1
            ),
            _ => format!("attaching {pods} pod(s) through ros2-cni"),
        }
    }

    /// Whether the laptop is one of the probed hosts.
    fn has_laptop(self) -> bool {
        !matches!(self, Bed::Relay(_))
    }

    /// Where discovery is expected to fail, these probes mostly wait out
    /// the timeout: the time estimate and the progress line say so.
    fn failures_expected(self) -> Option<&'static str> {
        match self {
            Bed::Macvlan => Some("; failures are expected"),
            Bed::Relay(RelayConfig::MulticastOnly) => Some("; failures across nodes are expected"),
            _ => None,
        }
    }

    fn probing(self, opts: &LabOptions, prober: &dyn Prober) -> String {
        let per_probe = match self.failures_expected() {
            Some(_) => opts.timeout as f64 + 1.0,
            None => 1.5,
        };
        format!(
            "probing {} ordered pairs with {}, {} at a time (up to {} s each; {}{})",
            opts.pairs(),
            prober.name(),
            opts.parallel.min(opts.pairs()),
            opts.timeout,
            opts.estimate(per_probe),
            self.failures_expected().unwrap_or("")
        )
    }
}

/// What one bed gave.
struct BedRun {
    matrix: Matrix,
    /// The pods, with their address on the LAN (ros0 or the macvlan).
    pods: Vec<Endpoint>,
    /// Frames the switch dropped: multicast for the relay beds, the Wi-Fi
    /// rule's otherwise (None without it).
    drops: Option<u64>,
}

/// One bed, start to end: build it, start the agents, attach the pods,
/// probe every ordered pair of hosts. The bed is removed (unless kept) when
/// this returns.
fn bed_run(
    opts: &LabOptions,
    primary: Primary,
    prober: &dyn Prober,
    cancel: &Cancel,
    kept: &mut Vec<KeptBed>,
    bed: Bed,
    num: &Numbering,
) -> Result<BedRun> {
    let tag = bed.tag();
    progress(&format!("{tag}: {}", bed.building(opts, primary)));
    let tb = build(opts, primary, bed.kept_as(), kept)?;
    check(cancel)?;
    if bed.has_agents() {
        progress(&format!("{tag}: {}", bed.starting_agents(opts)));
        start_agents(&tb, bed, cancel, opts.keep, kept)?;
    }
    progress(&format!("{tag}: {}", bed.attaching(opts)));
    let pods = attach_pods(&tb, opts, bed, cancel, kept)?;
    let mut hosts = pods.clone();
    if bed.has_laptop() {
        hosts.push(laptop(&tb)?);
    }
    progress(&format!("{tag}: {}", bed.probing(opts, prober)));
    let matrix = probe_matrix(
        prober,
        &hosts,
        Duration::from_secs(opts.timeout),
        opts.parallel,
        cancel,
        num,
        &progress,
    )?;
    let drops = match bed {
        Bed::Relay(_) => tb.multicast_drops().ok(),
        _ if opts.wifi => tb.wifi_drops().ok(),
        _ => None,
    };
    Ok(BedRun {
        matrix,
        pods,
        drops,
    })
}

/// An agent on every node (configured for the relay configuration, if
/// any); with `--keep`, their pids go into the kept bed.
fn start_agents(
    tb: &Testbed,
    bed: Bed,
    cancel: &Cancel,
    keep: bool,
    kept: &mut [KeptBed],
) -> Result<()> {
    let mut agents = vec![];
    for n in &tb.nodes {
        if let Bed::Relay(config) = bed {
            tb.set_node_config(n.idx, relay_node_config(tb, n.idx, config));
        }
        agents.push(tb.start_agent(n, &json!({"logLevel": "info"}))?);
        check(cancel)?;
    }
    if keep {
        if let Some(k) = kept.last_mut() {
            k.agents = agents;
        }
    }
    Ok(())
}

/// Every node's pods, as probe endpoints; with `--keep`, their namespaces
/// go into the kept bed.
fn attach_pods(
    tb: &Testbed,
    opts: &LabOptions,
    bed: Bed,
    cancel: &Cancel,
    kept: &mut [KeptBed],
) -> Result<Vec<Endpoint>> {
    let mut hosts = vec![];
    for i in 1..=opts.nodes {
        for j in 1..=opts.pods_per_node {
            let pod = match bed {
                Bed::Macvlan => macvlan_pod(tb, i, j)?,
                _ => ros2cni_pod(tb, i, j)?,
            };
            if opts.keep {
                if let Some(k) = kept.last_mut() {
                    k.pods.push(pod.ns.clone());
                }
            }
            hosts.push(pod);
            check(cancel)?;
        }
    }
    Ok(hosts)
}

/// Pod `j` of node `i`, attached through ros2-cni: its ros0 address.
fn ros2cni_pod(tb: &Testbed, i: usize, j: usize) -> Result<Endpoint> {
    let pod = tb.add_pod(&PodSpec::new(&pod_label(i, j), i))?;
    let ip = pod.ros_ip.ok_or_else(|| {
        LabError(format!(
            "pod {} got no ros0 address: {}",
            pod.name, pod.result
        ))
    })?;
    Ok(Endpoint {
        label: pod.name,
        ns: pod.ns,
        lan_ip: Some(ip),
    })
}

/// Pod `j` of node `i` with the primary network only, then the reference
/// macvlan as `net1`: its macvlan address.
fn macvlan_pod(tb: &Testbed, i: usize, j: usize) -> Result<Endpoint> {
    let mut spec = PodSpec::new(&pod_label(i, j), i);
    spec.chain_ros2cni = false;
    let pod = tb.add_pod(&spec)?;
    let r = tb.attach_extra(&pod, "macvlan", "net1", &macvlan_conf(&tb.node(i).data_dir))?;
    let ip: Ipv4Addr = r
        .json()
        .filter(|_| r.success)
        .and_then(|v| {
            v["ips"][0]["address"]
                .as_str()?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| {
            LabError(format!(
                "macvlan ADD for {} failed: {} {}",
                pod.name, r.stdout, r.stderr
            ))
        })?;
    Ok(Endpoint {
        label: pod.name,
        ns: pod.ns,
        lan_ip: Some(ip),
    })
}

/// The two configurations `--relay` compares, on identical test beds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayConfig {
    /// No relay peers, `lanMulticast` true (the default): discovery relies
    /// on the LAN carrying multicast.
    MulticastOnly,
    /// Every other node's address in `peers`, `lanMulticast` false.
    Relay,
}

impl RelayConfig {
    pub fn name(self) -> &'static str {
        match self {
            RelayConfig::MulticastOnly => "multicast-only",
            RelayConfig::Relay => "relay",
        }
    }
}

/// The settings of node `idx` in `config`: the cluster's nodes with their
/// pools and subnets but without `address` (an address would make every
/// node a relay peer); for the relay, the other nodes' addresses as `peers`
/// and no RTPS multicast on the LAN.
pub fn relay_node_config(tb: &Testbed, idx: usize, config: RelayConfig) -> serde_json::Value {
    let nodes: serde_json::Map<String, serde_json::Value> = tb
        .nodes
        .iter()
        .map(|n| {
            (
                format!("n{}", n.idx),
                json!({"podRange": n.pool, "subnet": n.subnet}),
            )
        })
        .collect();
    let mut c = json!({ "nodes": nodes });
    if config == RelayConfig::Relay {
        let peers: Vec<String> = tb
            .nodes
            .iter()
            .filter(|n| n.idx != idx)
            .map(|n| n.ip.to_string())
            .collect();
        c["peers"] = json!(peers);
        c["lanMulticast"] = json!(false);
    }
    c
}

/// `--relay`: the multicast-only configuration, then the relay one, each on
/// its own identical test bed.
fn relay_scenario(
    opts: &LabOptions,
    primary: Primary,
    prober: &dyn Prober,
    cancel: &Cancel,
    kept: &mut Vec<KeptBed>,
) -> Result<Report> {
    let pairs = opts.pairs();
    let multicast_only = bed_run(
        opts,
        primary,
        prober,
        cancel,
        kept,
        Bed::Relay(RelayConfig::MulticastOnly),
        &Numbering {
            tag: "multicast-only ",
            before: 0,
            of: 2 * pairs,
        },
    )?;
    let relay = bed_run(
        opts,
        primary,
        prober,
        cancel,
        kept,
        Bed::Relay(RelayConfig::Relay),
        &Numbering {
            tag: "relay ",
            before: pairs,
            of: 2 * pairs,
        },
    )?;
    Ok(Report {
        nodes: opts.nodes,
        pods_per_node: opts.pods_per_node,
        wifi: false,
        prober: prober.name().into(),
        primary: primary.name().into(),
        timeout_seconds: opts.timeout,
        ros2cni: relay.matrix,
        ros2cni_wifi_drops: None,
        macvlan: Err("not part of the relay scenario (--relay)".into()),
        relay: Some(RelayScenario {
            multicast_only: multicast_only.matrix,
            multicast_only_drops: multicast_only.drops,
            relay_drops: relay.drops,
            lan_nodes: (1..opts.nodes).map(|i| format!("n{i}")).collect(),
            second_subnet: testbed::SUBNET2.into(),
            second_subnet_nodes: vec![format!("n{}", opts.nodes)],
        }),
        graph_files: vec![],
    })
}

/// Why the macvlan comparison cannot run here, if it cannot.
fn macvlan_unavailable(opts: &LabOptions) -> Option<String> {
    if !opts.macvlan {
        return Some("skipped (--no-macvlan)".into());
    }
    let missing: Vec<&str> = ["macvlan", "host-local"]
        .into_iter()
        .filter(|p| !opts.cni_bin_dir.join(p).exists())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the reference {} plugin{} {} not installed in {} (apt-get install containernetworking-plugins)",
            missing.join(" and "),
            if missing.len() == 1 { "" } else { "s" },
            if missing.len() == 1 { "is" } else { "are" },
            opts.cni_bin_dir.display()
        )
    })
}

/// The macvlan network a Multus user adds: the reference macvlan on the
/// node's uplink, host-local with the same range on every node.
fn macvlan_conf(node_data_dir: &Path) -> serde_json::Value {
    json!({
        "cniVersion": "0.3.1",
        "name": "macvlan-conf",
        "type": "macvlan",
        "master": "eth0",
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "ranges": [[{
                "subnet": testbed::SUBNET,
                "rangeStart": MACVLAN_RANGE.0.to_string(),
                "rangeEnd": MACVLAN_RANGE.1.to_string(),
            }]],
            "dataDir": node_data_dir.join("macvlan-ipam"),
        }
    })
}

/// The macvlan bed, numbered after the ros2-cni one, with the addresses
/// host-local gave.
fn macvlan_comparison(
    opts: &LabOptions,
    primary: Primary,
    prober: &dyn Prober,
    cancel: &Cancel,
    kept: &mut Vec<KeptBed>,
) -> Result<MacvlanRun> {
    let b = bed_run(
        opts,
        primary,
        prober,
        cancel,
        kept,
        Bed::Macvlan,
        &Numbering {
            tag: "macvlan ",
            before: opts.pairs(),
            of: 2 * opts.pairs(),
        },
    )?;
    Ok(MacvlanRun {
        matrix: b.matrix,
        addresses: b
            .pods
            .into_iter()
            .filter_map(|p| Some((p.label, p.lan_ip?)))
            .collect(),
        range: format!("{}-{}", MACVLAN_RANGE.0, MACVLAN_RANGE.1),
        wifi_drops: b.drops,
    })
}

/// Both runs, one after the other; each test bed is gone (unless kept)
/// before the next is built.
pub fn run(
    opts: &LabOptions,
    prober: &dyn Prober,
    cancel: &Cancel,
    kept: &mut Vec<KeptBed>,
) -> Result<Report> {
    let primary = opts
        .primary
        .unwrap_or_else(|| Primary::detect(&opts.cni_bin_dir));
    if primary == Primary::Ptp {
        for p in ["ptp", "host-local"] {
            if !opts.cni_bin_dir.join(p).exists() {
                return Err(LabError(format!(
                    "--primary ptp: {} is missing (apt-get install containernetworking-plugins, or use --primary builtin)",
                    opts.cni_bin_dir.join(p).display()
                )));
            }
        }
    }
    if opts.relay {
        return relay_scenario(opts, primary, prober, cancel, kept);
    }
    let pairs = opts.pairs();
    let macvlan_reason = macvlan_unavailable(opts);
    let ros2cni = bed_run(
        opts,
        primary,
        prober,
        cancel,
        kept,
        Bed::Ros2Cni,
        &Numbering {
            tag: "",
            before: 0,
            of: pairs * if macvlan_reason.is_none() { 2 } else { 1 },
        },
    )?;
    let macvlan = match macvlan_reason {
        Some(reason) => Err(reason),
        None => Ok(macvlan_comparison(opts, primary, prober, cancel, kept)?),
    };
    Ok(Report {
        nodes: opts.nodes,
        pods_per_node: opts.pods_per_node,
        wifi: opts.wifi,
        prober: prober.name().into(),
        primary: primary.name().into(),
        timeout_seconds: opts.timeout,
        ros2cni: ros2cni.matrix,
        ros2cni_wifi_drops: ros2cni.drops,
        macvlan,
        relay: None,
        graph_files: vec![],
    })
}

/// Writes `<name>.svg` and `<name>.dot` for each of the report's graphs
/// into `dir`; returns the names and SVG files.
pub fn write_graphs(report: &Report, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = vec![];
    for (name, g) in report.graphs() {
        let svg = dir.join(format!("{name}.svg"));
        for (file, text) in [
            (&svg, g.to_svg()),
            (&dir.join(format!("{name}.dot")), g.to_dot()),
        ] {
            std::fs::write(file, text)
                .map_err(|e| LabError(format!("writing {}: {e}", file.display())))?;
        }
        out.push((name.to_owned(), svg));
    }
    Ok(out)
}

/// `r2lab-<pid>-<n>-` for a lab namespace name.
fn lab_prefix(ns: &str) -> Option<String> {
    let mut parts = ns.splitn(4, '-');
    let (f, pid, n) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next()?;
    (f == FAMILY).then(|| format!("{f}-{pid}-{n}-"))
}

fn is_kept(ns: &str) -> bool {
    lab_prefix(ns).is_some_and(|p| dir_for_prefix(&p).join(KEPT_MARKER).exists())
}

/// Lab directories in $TMPDIR with their owner pid.
fn lab_dirs() -> Vec<(PathBuf, u32)> {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return vec![];
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = testbed::owner_pid(FAMILY, &name)?;
            Some((e.path(), pid))
        })
        .collect()
}

/// Removes what labs whose process is gone left behind: their namespaces
/// (killing the processes inside, such as kept agents) and directories.
/// Kept labs are removed only with `include_kept`. Returns the namespaces removed.
pub fn sweep_dead_labs(include_kept: bool) -> Vec<String> {
    let mut removed = vec![];
    for (ns, pid) in namespaces_of(FAMILY) {
        if pid_alive(pid) || (!include_kept && is_kept(&ns)) {
            continue;
        }
        if remove_ns_and_processes(&ns) {
            removed.push(ns);
        }
    }
    for (dir, pid) in lab_dirs() {
        if pid_alive(pid) || (!include_kept && dir.join(KEPT_MARKER).exists()) {
            continue;
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    removed
}

/// Kills every process in this process's lab namespaces (they are all ours).
fn kill_own_processes(me: u32) {
    for (ns, pid) in namespaces_of(FAMILY) {
        if pid != me {
            continue;
        }
        if let Ok(pids) = sh(&["ip", "netns", "pids", &ns]) {
            for p in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                if p as u32 != me {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// Removes this process's lab namespaces and directories by name: the last
/// line of defence (the test beds remove their own on drop).
fn remove_own(me: u32) -> usize {
    let mut n = 0;
    for (ns, pid) in namespaces_of(FAMILY) {
        if pid == me && remove_ns_and_processes(&ns) {
            n += 1;
        }
    }
    for (dir, pid) in lab_dirs() {
        if pid == me {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    n
}

fn print_kept(kept: &[KeptBed]) {
    if kept.is_empty() {
        return;
    }
    let mut s = String::from("lab: kept (--keep); nothing was removed:\n");
    for k in kept {
        s.push_str(&format!(
            "  {}: namespaces {}* ; files in {}\n",
            k.what,
            k.prefix,
            k.dir.display()
        ));
        if !k.agents.is_empty() {
            let pids: Vec<String> = k.agents.iter().map(u32::to_string).collect();
            s.push_str(&format!(
                "    agents still running (pids {}); logs: {}/agent-n*.err\n",
                pids.join(" "),
                k.dir.display()
            ));
        }
    }
    let first = &kept[0];
    s.push_str("  inspect:\n");
    s.push_str(&format!(
        "    ip netns list | grep {FAMILY}-{}-\n",
        std::process::id()
    ));
    if let Some(n) = first.nodes.first() {
        s.push_str(&format!(
            "    ip -n {n} addr; ip -n {n} route; ip -n {n} mroute; ip netns exec {n} nft list ruleset\n"
        ));
        if first.what == "ros2-cni" {
            s.push_str(&format!(
                "    echo status | socat - UNIX-CONNECT:{}/n1/ros2-cni/agent.sock   # agent on n1\n",
                first.dir.display()
            ));
        }
    }
    if let [a, b, ..] = first.pods.as_slice() {
        s.push_str(&format!(
            "    ip netns exec {b} ddsperf -i 0 pong   # and, in another shell:\n    ip netns exec {a} ddsperf -i 0 ping\n"
        ));
    } else if let Some(a) = first.pods.first() {
        s.push_str(&format!("    ip netns exec {a} ip addr\n"));
    }
    s.push_str("  remove:\n    ros2-cni lab --cleanup\n");
    eprint!("{s}");
}

/// `ros2-cni lab --cleanup`.
pub fn cleanup_main() -> i32 {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "ros2-cni lab --cleanup: removing network namespaces needs root: run it with sudo"
        );
        return 1;
    }
    if !in_path("ip") {
        eprintln!(
            "ros2-cni lab --cleanup: {}",
            missing_message(&[("ip", "iproute2")], None)
        );
        return 1;
    }
    let removed = sweep_dead_labs(true);
    let alive: Vec<String> = namespaces_of(FAMILY)
        .into_iter()
        .filter(|(_, pid)| pid_alive(*pid))
        .map(|(ns, _)| ns)
        .collect();
    println!(
        "removed {} namespace(s) of labs that are no longer running{}",
        removed.len(),
        if removed.is_empty() {
            String::new()
        } else {
            format!(": {}", removed.join(" "))
        }
    );
    if !alive.is_empty() {
        println!(
            "left {} namespace(s) of labs still running (they remove their own on exit)",
            alive.len()
        );
    }
    0
}

/// `ros2-cni lab`: exit 0 when every ros2-cni pair discovered each other,
/// 3 when some did not, 1 on an error, 2 on bad arguments, 128+n on signal n.
pub fn main(opts: LabOptions) -> i32 {
    if let Err(e) = opts.validate() {
        eprintln!("ros2-cni lab: {e}");
        return 2;
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "ros2-cni lab: the lab builds network namespaces and must run as root: sudo {} lab ...",
            std::env::args().next().unwrap_or_else(|| "ros2-cni".into())
        );
        return 1;
    }
    let missing = missing_tools(opts.wifi || opts.relay);
    let chosen = if opts.spdp_prober {
        Ok(super::probers::spdp_prober())
    } else {
        select_prober()
    };
    let prober = match (chosen, missing.is_empty()) {
        (Ok(p), true) => p,
        (r, _) => {
            eprintln!(
                "ros2-cni lab: {}",
                missing_message(&missing, r.as_ref().err())
            );
            return 1;
        }
    };
    let me = std::process::id();
    let keep = opts.keep;
    let interrupt = match Interrupt::install(
        GRACE,
        move |sig| {
            progress(&format!("{sig} received: stopping and cleaning up"));
            if !keep {
                kill_own_processes(me);
            }
        },
        move |sig| {
            if !keep {
                remove_own(me);
            }
            eprintln!("lab: {sig}: removed what was left by name; exiting");
        },
    ) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("ros2-cni lab: cannot set up signal handling: {e}");
            return 1;
        }
    };
    if let Some(dir) = &opts.graph_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("ros2-cni lab: --graph-dir {}: {e}", dir.display());
            return 1;
        }
    }
    let swept = sweep_dead_labs(false);
    if !swept.is_empty() {
        progress(&format!(
            "removed {} namespace(s) left by labs that died",
            swept.len()
        ));
    }
    let mut kept = vec![];
    let r = run(&opts, prober.as_ref(), interrupt.cancel(), &mut kept);
    // the test beds are dropped: removed unless kept. Anything left by name
    // (a namespace whose `ip netns add` a signal cut short) goes here.
    if !keep {
        remove_own(me);
    }
    interrupt.finished();
    if let Some(sig) = interrupt.signal() {
        progress(&format!(
            "interrupted by {sig}; {}",
            if keep {
                "kept what was built (--keep)"
            } else {
                "removed everything it made"
            }
        ));
        print_kept(&kept);
        return exit_code(sig);
    }
    match r {
        Ok(mut report) => {
            if let Some(dir) = &opts.graph_dir {
                match write_graphs(&report, dir) {
                    Ok(files) => {
                        let names: Vec<String> =
                            files.iter().map(|(_, f)| f.display().to_string()).collect();
                        progress(&format!("graphs: {} (DOT beside each)", names.join(", ")));
                        report.graph_files = files;
                    }
                    Err(e) => {
                        eprintln!("ros2-cni lab: {e}");
                        return 1;
                    }
                }
            }
            // a closed stdout (`| head`) is not worth a panic
            let out = if opts.json {
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&report.json()).unwrap()
                )
            } else {
                report.text()
            };
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
            print_kept(&kept);
            if report.ros2cni.all_discovered() {
                0
            } else {
                3
            }
        }
        Err(e) => {
            eprintln!("ros2-cni lab: {e}");
            print_kept(&kept);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_limits() {
        let ok = LabOptions::new("/bin/true");
        assert!(ok.validate().is_ok());
        let mut o = ok.clone();
        o.nodes = 0;
        assert!(o.validate().unwrap_err().contains("1 to 8 robot computers"));
        o.nodes = 9;
        assert!(o.validate().is_err());
        let mut o = ok.clone();
        o.pods_per_node = 17;
        assert!(o.validate().unwrap_err().contains("--pods-per-node 17"));
        let mut o = ok.clone();
        o.timeout = 0;
        assert!(o.validate().is_err());
        let mut o = ok;
        o.parallel = 0;
        assert!(o.validate().is_err());
    }

    #[test]
    fn the_relay_scenario_needs_three_nodes_and_has_no_laptop() {
        let mut o = LabOptions::new("/bin/true");
        o.relay = true;
        o.nodes = 2;
        assert!(o.validate().unwrap_err().contains("needs 3 to 8"));
        o.nodes = 3;
        assert!(o.validate().is_ok());
        assert_eq!((o.hosts(), o.pairs()), (3, 6));
        o.wifi = true;
        assert!(o.validate().is_err());
    }

    #[test]
    fn pairs_count_every_ordered_pair_once() {
        let mut o = LabOptions::new("/bin/true");
        assert_eq!((o.hosts(), o.pairs()), (3, 6));
        o.nodes = 3;
        o.pods_per_node = 2;
        assert_eq!(o.pairs(), 7 * 6);
        for h in 1..6 {
            let order = pair_order(h);
            assert_eq!(order.len(), h * (h - 1));
            let mut uniq = order.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq.len(), order.len(), "no pair twice");
            assert!(order.iter().all(|(a, b)| a != b));
        }
        // neighbours first: the first round touches every host once as a source
        assert_eq!(&pair_order(3)[..3], &[(0, 1), (1, 2), (2, 0)]);
    }

    #[test]
    fn lab_prefixes_are_read_from_namespace_names() {
        assert_eq!(
            lab_prefix("r2lab-123-0-p-n1-pod1").as_deref(),
            Some("r2lab-123-0-")
        );
        assert_eq!(
            lab_prefix("r2lab-123-1-sw").as_deref(),
            Some("r2lab-123-1-")
        );
        assert_eq!(lab_prefix("r2t-1-0-sw"), None);
        assert_eq!(lab_prefix("r2lab-1"), None);
    }

    #[test]
    fn missing_tools_say_what_to_install() {
        let u = Unavailable {
            reason: "no discovery prober".into(),
            packages: vec!["cyclonedds-tools"],
        };
        let m = missing_message(&[("ip", "iproute2"), ("nft", "nftables")], Some(&u));
        assert!(m.contains("ip, nft not found in PATH"), "{m}");
        assert!(m.contains("no discovery prober"), "{m}");
        assert!(
            m.ends_with("install with: apt-get install iproute2 nftables cyclonedds-tools"),
            "{m}"
        );
        let only = missing_message(&[], Some(&u));
        assert!(only.ends_with("apt-get install cyclonedds-tools"), "{only}");
        assert!(required_tools(true).contains(&("nft", "nftables")));
        assert!(!required_tools(false).iter().any(|(t, _)| *t == "nft"));
    }

    /// A prober that answers from a table, to test the matrix runner alone.
    struct Fake;
    impl Prober for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn probe(&self, req: &ProbeRequest) -> Result<super::super::probe::Outcome> {
            let ok = req.from.label != "c";
            Ok(super::super::probe::Outcome {
                discovered: ok,
                seconds: ok.then_some(0.5),
                note: None,
            })
        }
    }

    #[test]
    fn the_runner_fills_every_pair_in_row_order() {
        let hosts: Vec<Endpoint> = ["a", "b", "c"]
            .iter()
            .map(|l| Endpoint {
                label: (*l).into(),
                ns: format!("ns-{l}"),
                lan_ip: None,
            })
            .collect();
        let lines = Mutex::new(vec![]);
        let m = probe_matrix(
            &Fake,
            &hosts,
            Duration::from_secs(1),
            2,
            &Cancel::default(),
            &Numbering::default(),
            &|l: &str| lines.lock().unwrap().push(l.to_owned()),
        )
        .unwrap();
        let order: Vec<(&str, &str)> = m
            .pairs
            .iter()
            .map(|p| (p.from.as_str(), p.to.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("a", "b"),
                ("a", "c"),
                ("b", "a"),
                ("b", "c"),
                ("c", "a"),
                ("c", "b")
            ]
        );
        assert_eq!(m.discovered(), 4);
        let lines = lines.into_inner().unwrap();
        assert_eq!(lines.len(), 6);
        assert!(lines.iter().any(|l| l.starts_with("[6/6] ")), "{lines:?}");
        let cancelled = Cancel::default();
        cancelled.cancel();
        assert!(probe_matrix(
            &Fake,
            &hosts,
            Duration::from_secs(1),
            2,
            &cancelled,
            &Numbering::default(),
            &|_| {}
        )
        .is_err());
    }
}
