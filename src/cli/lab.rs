//! `ros2-cni lab`: the embedded lab (see `ros2_cni::lab::run`).

use ros2_cni::lab::run::{self, LabOptions};
use ros2_cni::lab::testbed::Primary;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PrimaryArg {
    /// The reference `ptp` plugin when installed, else the built-in stand-in.
    Auto,
    /// The reference `ptp` + `host-local` plugins (containernetworking-plugins).
    Ptp,
    /// Built in: a Calico-like veth with a /32, no plugin binary needed.
    Builtin,
}

#[derive(clap::Args)]
#[command(after_help = "\
Builds robot computers from network namespaces on this machine (root needed), \
attaches pods through this ros2-cni binary, starts an agent per node, probes \
ROS 2 discovery (Cyclone DDS ddsperf, default settings) between every ordered \
pair of pods and an off-cluster laptop, and does the same with Multus-style \
macvlan for comparison. With --relay: a LAN switch that drops multicast and \
a node behind a router, probed with multicast only and then with the relay. \
Progress goes to stderr, the matrix to stdout.

Everything it makes is removed on exit, on error and on Ctrl-C, unless --keep.

Exit status: 0 every ros2-cni pair discovered each other; 3 some did not; \
1 error; 2 bad arguments; 130/143 interrupted.")]
pub struct Args {
    /// Robot computers (1-8; default 2, with --relay 3 and at least 3).
    #[arg(long, value_name = "N")]
    pub nodes: Option<usize>,
    /// Pods per robot computer (1-16).
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub pods_per_node: usize,
    /// Make the LAN switch behave like a Wi-Fi access point: drop frames
    /// from a node whose source MAC is not the node's own.
    #[arg(long)]
    pub wifi: bool,
    /// The relay scenario: the LAN switch drops all IPv4 multicast and the
    /// last node sits on a second subnet behind a router (no laptop); one
    /// matrix with multicast only, one with the agents' RTPS relay (peers,
    /// lanMulticast false), instead of the macvlan comparison.
    #[arg(long, conflicts_with_all = ["wifi", "no_macvlan"])]
    pub relay: bool,
    /// Leave everything in place and print how to inspect and remove it.
    #[arg(long)]
    pub keep: bool,
    /// Print only JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seconds each probe waits for discovery (1-60).
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub timeout: u64,
    /// Probes at a time (1-32; default: four per core, at most 8).
    #[arg(long, value_name = "K")]
    pub parallel: Option<usize>,
    /// The Calico stand-in that gives pods their primary eth0.
    #[arg(long, value_enum, default_value = "auto")]
    pub primary: PrimaryArg,
    /// Skip the Multus-style macvlan comparison.
    #[arg(long)]
    pub no_macvlan: bool,
    /// How to probe discovery: Cyclone DDS's ddsperf when installed, else the
    /// lab's own SPDP announcer/listener (auto); or always the latter (spdp).
    #[arg(long, value_enum, default_value = "auto")]
    pub prober: ProberArg,
    /// Write a graph of each matrix into DIR (created if missing):
    /// ros2-cni.svg and macvlan.svg (with --relay multicast-only.svg and
    /// relay.svg), each with the same graph as Graphviz DOT beside it.
    #[arg(long, value_name = "DIR")]
    pub graph_dir: Option<std::path::PathBuf>,
    /// Remove what earlier labs left behind (kept with --keep, or killed):
    /// namespaces whose lab is no longer running, the processes in them, their files.
    #[arg(long, exclusive = true)]
    pub cleanup: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProberArg {
    Auto,
    Spdp,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    if a.cleanup {
        return Ok(run::cleanup_main());
    }
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the running ros2-cni binary: {e}"))?;
    let mut o = LabOptions::new(exe);
    o.nodes = a
        .nodes
        .unwrap_or(if a.relay { run::RELAY_MIN_NODES } else { 2 });
    o.relay = a.relay;
    o.pods_per_node = a.pods_per_node;
    o.wifi = a.wifi;
    o.keep = a.keep;
    o.json = a.json;
    o.timeout = a.timeout;
    if let Some(p) = a.parallel {
        o.parallel = p;
    }
    o.primary = match a.primary {
        PrimaryArg::Auto => None,
        PrimaryArg::Ptp => Some(Primary::Ptp),
        PrimaryArg::Builtin => Some(Primary::Builtin),
    };
    o.macvlan = !a.no_macvlan;
    o.spdp_prober = a.prober == ProberArg::Spdp;
    o.graph_dir = a.graph_dir;
    Ok(run::main(o))
}
