//! Robot computers on one machine, built from network namespaces.
//!
//! - a LAN switch: a netns holding a bridge;
//! - nodes: a netns each with `eth0` on the switch, IP forwarding, their own
//!   data dir, and a Calico stand-in for the primary network (the reference
//!   `ptp` + `host-local` plugins with ipMasq, 10.1.N.0/24 per node, node
//!   routes between the pod ranges and no masquerade inside 10.1.0.0/16; or,
//!   where the reference plugins are not installed, a built-in stand-in that
//!   wires pods the way Calico does: a /32 on `eth0`, a default route via
//!   169.254.1.1 answered by proxy ARP on the node's `cali...` veth);
//! - pods: a netns each, networked by running the CNI plugins the way a
//!   container runtime does (CNI_* environment, JSON on stdin, chained results);
//! - an off-cluster laptop on the LAN;
//! - optionally a Wi-Fi-like switch: it drops frames entering from a node's
//!   port unless their source MAC is that node's own (what an access point in
//!   3-address mode does).
//!
//! Every address lives inside namespaces this module created. Everything is
//! removed on drop, including processes started inside the namespaces.
//! Used by the integration tests and by `ros2-cni lab`.

use crate::kernel::netns::Netns;
use serde_json::{json, Value};
use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LabError(pub String);

pub type Result<T> = std::result::Result<T, LabError>;

fn err(s: impl Into<String>) -> LabError {
    LabError(s.into())
}

/// How to build a test bed.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespace names start with this; must be unique per test bed.
    pub prefix: String,
    pub nodes: usize,
    pub laptop: bool,
    pub wifi: bool,
    /// The `ros2-cni` binary to run as the plugin.
    pub plugin: PathBuf,
    /// Where the reference CNI plugins live.
    pub cni_bin_dir: PathBuf,
    /// How pods get their primary interface (the Calico stand-in).
    pub primary: Primary,
    /// Nodes (1-based) on a second LAN, 192.168.16.0/20, joined to the
    /// first by a router; empty: one LAN and no router. With a second LAN
    /// the nodes get the cluster form (per-node `subnet` and `address`).
    pub second_lan: Vec<usize>,
}

/// The Calico stand-in that gives pods their primary `eth0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    /// The reference `ptp` + `host-local` plugins with ipMasq.
    Ptp,
    /// Built in, no plugin binary: a veth with a /32 and a default route via
    /// 169.254.1.1 (proxy ARP on the node side), as Calico does.
    Builtin,
}

impl Primary {
    /// `Ptp` when `<cni_bin_dir>/ptp` and `host-local` exist, `Builtin` otherwise.
    pub fn detect(cni_bin_dir: &Path) -> Primary {
        if cni_bin_dir.join("ptp").exists() && cni_bin_dir.join("host-local").exists() {
            Primary::Ptp
        } else {
            Primary::Builtin
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Primary::Ptp => "ptp",
            Primary::Builtin => "builtin",
        }
    }
}

impl Options {
    pub fn new(prefix: &str, nodes: usize, plugin: impl Into<PathBuf>) -> Options {
        Options {
            prefix: prefix.into(),
            nodes,
            laptop: true,
            wifi: false,
            plugin: plugin.into(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            primary: Primary::detect(Path::new("/usr/lib/cni")),
            second_lan: vec![],
        }
    }
}

/// The robot LAN of every test bed.
pub const SUBNET: &str = "192.168.0.0/20";
pub const LAPTOP_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 200);
/// The second LAN (`Options::second_lan`), behind the router.
pub const SUBNET2: &str = "192.168.16.0/20";

#[derive(Debug, Clone)]
pub struct Node {
    /// 1-based.
    pub idx: usize,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub data_dir: PathBuf,
    /// This node's ros2-cni pool.
    pub pool: String,
    /// This node's primary (Calico stand-in) pod range.
    pub pod_cidr: String,
    /// The switch port it hangs off.
    pub port: String,
    /// Its LAN (`SUBNET` or `SUBNET2`).
    pub subnet: String,
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub ns: String,
    pub node: usize,
    pub container_id: String,
    /// The chain's final result.
    pub result: Value,
    /// The address on ros0, if attached.
    pub ros_ip: Option<Ipv4Addr>,
}

impl Pod {
    pub fn netns_path(&self) -> String {
        format!("/var/run/netns/{}", self.ns)
    }
}

/// What a plugin printed and how it exited.
#[derive(Debug, Clone)]
pub struct PluginRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl PluginRun {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(self.stdout.trim()).ok()
    }

    /// The CNI error code, if the plugin failed with an error JSON.
    pub fn code(&self) -> Option<u64> {
        self.json()
            .and_then(|v| v.get("code").and_then(Value::as_u64))
    }
}

/// How a pod is attached.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub node: usize,
    /// Pod annotations (the runtime passes them when the conf declares the capability).
    pub annotations: Vec<(String, String)>,
    pub k8s_namespace: String,
    /// cniVersion of the conflist.
    pub version: String,
    /// Extra keys for the ros2-cni entry (override defaults; null removes).
    pub extra: Value,
    /// Chain ros2-cni after the primary (false: the primary alone).
    pub chain_ros2cni: bool,
}

impl PodSpec {
    pub fn new(name: &str, node: usize) -> PodSpec {
        PodSpec {
            name: name.into(),
            node,
            annotations: vec![("ros2-cni.io/enabled".into(), "true".into())],
            k8s_namespace: "robots".into(),
            version: "0.3.1".into(),
            extra: json!({}),
            chain_ros2cni: true,
        }
    }

    pub fn version(mut self, v: &str) -> Self {
        self.version = v.into();
        self
    }

    pub fn opted_out(mut self) -> Self {
        self.annotations.clear();
        self
    }

    pub fn extra(mut self, v: Value) -> Self {
        self.extra = v;
        self
    }
}

/// Runs `args` and returns stdout; fails with stderr on a non-zero exit.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("{}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command inside `ns`.
pub fn ns_sh(ns: &str, args: &[&str]) -> Result<String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    sh(&v)
}

/// `ip -j ...` inside `ns`, parsed.
pub fn ip_json(ns: &str, args: &[&str]) -> Result<Value> {
    let mut v = vec!["ip", "-n", ns, "-j"];
    v.extend_from_slice(args);
    let out = sh(&v)?;
    if out.trim().is_empty() {
        return Ok(json!([]));
    }
    serde_json::from_str(&out).map_err(|e| err(format!("ip -j {}: {e}", args.join(" "))))
}

/// `nft -j list ...` inside `ns`, parsed.
pub fn nft_json(ns: &str, args: &[&str]) -> Result<Value> {
    let mut v = vec!["ip", "netns", "exec", ns, "nft", "-j", "list"];
    v.extend_from_slice(args);
    let out = sh(&v)?;
    serde_json::from_str(&out).map_err(|e| err(format!("nft -j list {}: {e}", args.join(" "))))
}

/// Loads `rules` (the nft CLI's syntax) into `ns` with `nft -f`, through a
/// file in the temp dir named after `ns` and `tag`, removed afterwards.
pub fn nft_load(ns: &str, tag: &str, rules: &str) -> Result<()> {
    let path = std::env::temp_dir().join(format!("r2t-{tag}-{ns}.nft"));
    std::fs::write(&path, rules).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let r = ns_sh(ns, &["nft", "-f", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
    r.map(|_| ())
}

/// The packets counted by every counter in table `family name` of `ns`.
pub fn nft_table_packets(ns: &str, family: &str, name: &str) -> Result<u64> {
    let j = nft_json(ns, &["table", family, name])?;
    Ok(j["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["rule"]["expr"].as_array())
        .flatten()
        .filter_map(|e| e["counter"]["packets"].as_u64())
        .sum())
}

/// Whether a process with this pid exists.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a namespace name `<family>-<pid>-...`.
pub fn owner_pid(family: &str, ns: &str) -> Option<u32> {
    ns.strip_prefix(&format!("{family}-"))?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Namespaces named `<family>-<pid>-...`, each with its owner pid.
pub fn namespaces_of(family: &str) -> Vec<(String, u32)> {
    let Ok(list) = sh(&["ip", "netns", "list"]) else {
        return vec![];
    };
    list.lines()
        .filter_map(|line| {
            let name = line.split_whitespace().next()?;
            Some((name.to_owned(), owner_pid(family, name)?))
        })
        .collect()
}

/// Kills (SIGKILL) every process inside `ns`, then removes it.
pub fn remove_ns_and_processes(ns: &str) -> bool {
    // processes left inside (agents, DDS) would keep it alive
    if let Ok(pids) = sh(&["ip", "netns", "pids", ns]) {
        for p in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .filter(|p| *p as u32 != std::process::id())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    sh(&["ip", "netns", "del", ns]).is_ok()
}

/// Removes namespaces left by test beds whose process died (crash, SIGKILL).
/// Names look like `<family>-<pid>-...`.
pub fn sweep_stale(family: &str) {
    for (name, pid) in namespaces_of(family) {
        if !pid_alive(pid) {
            remove_ns_and_processes(&name);
        }
    }
}

/// The file `Testbed::keep` leaves in the test bed's directory.
pub const KEPT_MARKER: &str = "kept";

/// The directory of the test bed whose namespace prefix is `prefix`.
pub fn dir_for_prefix(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(prefix.trim_end_matches('-'))
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A unique prefix for namespaces of this process: `<family>-<pid>-<n>-`.
/// Environment variable naming the multicast forwarder (`auto`, `kernel`,
/// `nftables`) the test bed's agents run with when a test does not choose.
pub const TEST_FORWARDER_ENV: &str = "ROS2_CNI_TEST_FORWARDER";

pub fn unique_prefix(family: &str) -> String {
    format!(
        "{family}-{}-{}-",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Testbed {
    pub opts: Options,
    pub dir: PathBuf,
    pub switch: String,
    /// The second LAN's switch and the router, with `Options::second_lan`.
    pub switch2: Option<String>,
    pub router: Option<String>,
    pub nodes: Vec<Node>,
    pub laptop: Option<String>,
    namespaces: Mutex<Vec<String>>,
    children: Mutex<Vec<Child>>,
    /// Per-node ros2-cni settings (e.g. `{"mode": "macvlan"}`), merged into
    /// every conflist entry and agent config of that node.
    node_config: Mutex<std::collections::HashMap<usize, Value>>,
    /// Next host number per node for the built-in primary (index = node - 1).
    builtin_next: Mutex<Vec<u8>>,
    keep: bool,
}

impl Testbed {
    /// Builds the switch, the nodes and the laptop.
    pub fn new(opts: Options) -> Result<Testbed> {
        let dir = dir_for_prefix(&opts.prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let mut tb = Testbed {
            switch: format!("{}sw", opts.prefix),
            switch2: None,
            router: None,
            opts,
            dir,
            nodes: vec![],
            laptop: None,
            namespaces: Mutex::new(vec![]),
            children: Mutex::new(vec![]),
            node_config: Mutex::new(Default::default()),
            builtin_next: Mutex::new(vec![]),
            keep: false,
        };
        tb.build()?;
        Ok(tb)
    }

    /// Leave everything in place on drop (`lab --keep`). Marks the test
    /// bed's directory with a `kept` file, so sweeps can tell it from a crash.
    pub fn keep(&mut self) {
        self.keep = true;
        let _ = std::fs::write(self.dir.join(KEPT_MARKER), b"");
    }

    /// The namespaces this test bed created and still has.
    pub fn namespaces(&self) -> Vec<String> {
        self.namespaces.lock().unwrap().clone()
    }

    /// The pids of processes started with `spawn` that are still tracked.
    pub fn child_pids(&self) -> Vec<u32> {
        self.children
            .lock()
            .unwrap()
            .iter()
            .map(Child::id)
            .collect()
    }

    /// Creates a namespace (lo up) that is removed when the test bed drops.
    pub fn add_ns(&self, name: &str) -> Result<()> {
        sh(&["ip", "netns", "add", name])?;
        self.namespaces.lock().unwrap().push(name.to_owned());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Plugs a new host `ns` into the switch as `eth0` with `ip`; returns its MAC.
    fn plug(&self, ns: &str, port: &str, ip: Ipv4Addr) -> Result<String> {
        self.plug_as(&self.switch, ns, port, "eth0", ip)
    }

    /// Plugs `ns` into switch `sw` as `ifname` with `ip`/20; returns its MAC.
    fn plug_as(
        &self,
        sw: &str,
        ns: &str,
        port: &str,
        ifname: &str,
        ip: Ipv4Addr,
    ) -> Result<String> {
        sh(&[
            "ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns",
            ns,
        ])?;
        sh(&["ip", "-n", sw, "link", "set", port, "master", "br0", "up"])?;
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/20"),
            "dev",
            ifname,
        ])?;
        sh(&["ip", "-n", ns, "link", "set", ifname, "up"])?;
        let j = ip_json(ns, &["link", "show", ifname])?;
        j[0]["address"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| err("no MAC on eth0"))
    }

    /// A switch: a namespace with a bridge `br0`.
    fn add_switch(&self, sw: &str) -> Result<()> {
        self.add_ns(sw)?;
        sh(&["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])?;
        // the switch forwards at once and floods multicast like a dumb switch
        sh(&[
            "ip",
            "-n",
            sw,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        sh(&["ip", "-n", sw, "link", "set", "br0", "up"]).map(|_| ())
    }

    /// Builds the whole bed: the switch (and the second LAN with its router),
    /// the nodes, the routes between their pod ranges, the laptop, Wi-Fi.
    fn build(&mut self) -> Result<()> {
        self.add_switch(&self.switch)?;
        if !self.opts.second_lan.is_empty() {
            self.add_second_lan()?;
        }
        for i in 1..=self.opts.nodes {
            let node = self.add_node(i)?;
            self.nodes.push(node);
        }
        for n in &self.nodes {
            self.route_pod_ranges(n)?;
        }
        *self.builtin_next.lock().unwrap() = vec![2; self.nodes.len()];
        if self.opts.laptop {
            let ns = format!("{}lap", self.opts.prefix);
            self.add_ns(&ns)?;
            self.plug(&ns, "lap", LAPTOP_IP)?;
            self.laptop = Some(ns);
        }
        if self.opts.wifi {
            self.set_wifi(true)?;
        }
        Ok(())
    }

    /// A second LAN and a router with a leg on each, .1 on both.
    fn add_second_lan(&mut self) -> Result<()> {
        let p = &self.opts.prefix;
        let (sw2, rt) = (format!("{p}sw2"), format!("{p}rt"));
        self.add_switch(&sw2)?;
        self.add_ns(&rt)?;
        self.plug_as(
            &self.switch,
            &rt,
            "rt",
            "eth0",
            Ipv4Addr::new(192, 168, 0, 1),
        )?;
        self.plug_as(&sw2, &rt, "rt", "eth1", Ipv4Addr::new(192, 168, 16, 1))?;
        ns_sh(&rt, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        self.switch2 = Some(sw2);
        self.router = Some(rt);
        Ok(())
    }

    /// Node `i` (from 1): a namespace plugged into its LAN's switch as
    /// `eth0`, forwarding, with a default route via the LAN's .1 and a data
    /// directory.
    fn add_node(&self, i: usize) -> Result<Node> {
        let ns = format!("{}n{i}", self.opts.prefix);
        self.add_ns(&ns)?;
        let second = self.opts.second_lan.contains(&i);
        let (ip, gw, subnet, pool) = if second {
            (
                Ipv4Addr::new(192, 168, 16, 10 + i as u8),
                "192.168.16.1",
                SUBNET2,
                format!("192.168.{}.0/24", 16 + i),
            )
        } else {
            (
                Ipv4Addr::new(192, 168, 0, 10 + i as u8),
                "192.168.0.1",
                SUBNET,
                format!("192.168.{i}.0/24"),
            )
        };
        let port = format!("n{i}");
        let sw = if second {
            self.switch2.as_deref().unwrap()
        } else {
            &self.switch
        };
        let mac = self.plug_as(sw, &ns, &port, "eth0", ip)?;
        ns_sh(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // a default route, so "uplink" can default to it; it leads to the
        // router when there is one, nowhere otherwise
        sh(&[
            "ip", "-n", &ns, "route", "add", "default", "via", gw, "dev", "eth0", "onlink",
        ])?;
        let data_dir = self.dir.join(format!("n{i}"));
        std::fs::create_dir_all(&data_dir).map_err(|e| err(e.to_string()))?;
        Ok(Node {
            idx: i,
            ns,
            ip,
            mac,
            data_dir,
            pool,
            pod_cidr: format!("10.1.{i}.0/24"),
            port,
            subnet: subnet.to_owned(),
        })
    }

    /// Calico stand-in for node `n`: routes to the pod ranges of the nodes
    /// on its LAN (another LAN's go through the default route, the router,
    /// which learns `n`'s range here), no NAT inside 10.1.0.0/16, and with
    /// the built-in primary the masquerade ptp's ipMasq would add.
    fn route_pod_ranges(&self, n: &Node) -> Result<()> {
        for m in self.nodes.iter().filter(|m| m.idx != n.idx) {
            if m.subnet == n.subnet {
                sh(&[
                    "ip",
                    "-n",
                    &n.ns,
                    "route",
                    "add",
                    &m.pod_cidr,
                    "via",
                    &m.ip.to_string(),
                ])?;
            }
        }
        if let Some(rt) = &self.router {
            sh(&[
                "ip",
                "-n",
                rt,
                "route",
                "add",
                &n.pod_cidr,
                "via",
                &n.ip.to_string(),
            ])?;
        }
        ns_sh(
            &n.ns,
            &[
                "iptables",
                "-t",
                "nat",
                "-I",
                "POSTROUTING",
                "-s",
                "10.1.0.0/16",
                "-d",
                "10.1.0.0/16",
                "-j",
                "RETURN",
            ],
        )?;
        if self.opts.primary == Primary::Builtin {
            // what ptp's ipMasq does per pod, once per node
            ns_sh(
                &n.ns,
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-s",
                    &n.pod_cidr,
                    "-j",
                    "MASQUERADE",
                ],
            )?;
        }
        Ok(())
    }

    /// Turns the Wi-Fi-like rule on the switch on or off.
    pub fn set_wifi(&self, on: bool) -> Result<()> {
        let _ = ns_sh(&self.switch, &["nft", "delete", "table", "bridge", "wifi"]);
        if !on {
            return Ok(());
        }
        let mut rules = String::from(
            "table bridge wifi {\n chain ap {\n  type filter hook prerouting priority 0; policy accept;\n",
        );
        for n in &self.nodes {
            rules.push_str(&format!(
                "  iifname \"{}\" ether saddr != {} counter drop\n",
                n.port, n.mac
            ));
        }
        rules.push_str(" }\n}\n");
        nft_load(&self.switch, "wifi", &rules)
    }

    /// Frames the Wi-Fi rule dropped so far.
    pub fn wifi_drops(&self) -> Result<u64> {
        nft_table_packets(&self.switch, "bridge", "wifi")
    }

    /// Makes the LAN switch drop every IPv4 multicast frame between its
    /// ports (a switch or access point that does not carry multicast),
    /// counting what it drops.
    pub fn drop_multicast(&self) -> Result<()> {
        let rules = "table bridge nomcast {\n chain drop_mc {\n  type filter hook forward priority 0; policy accept;\n  ip daddr 224.0.0.0/4 counter drop\n }\n}\n";
        nft_load(&self.switch, "nomcast", rules)
    }

    /// IPv4 multicast frames the switch dropped so far (`drop_multicast`).
    pub fn multicast_drops(&self) -> Result<u64> {
        nft_table_packets(&self.switch, "bridge", "nomcast")
    }

    pub fn node(&self, idx: usize) -> &Node {
        &self.nodes[idx - 1]
    }

    /// The primary (Calico stand-in) conflist entry for `node`.
    pub fn primary_conf(&self, node: &Node, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "ptp",
            "ipMasq": true,
            "ipam": {
                "type": "host-local",
                "subnet": node.pod_cidr,
                "dataDir": node.data_dir.join("host-local"),
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        })
    }

    /// Settings for every ros2-cni entry and agent of node `idx` from now on.
    pub fn set_node_config(&self, idx: usize, cfg: Value) {
        self.node_config.lock().unwrap().insert(idx, cfg);
    }

    /// The ros2-cni conflist entry for `node`.
    pub fn ros2cni_conf(&self, node: &Node, version: &str, extra: &Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "ros2-cni",
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            "subnet": SUBNET,
            "podRange": node.pool,
            "uplink": "eth0",
            "dataDir": node.data_dir.join("ros2-cni"),
            "logFile": node.data_dir.join("ros2-cni.log"),
            "logLevel": "debug",
        });
        if !self.opts.second_lan.is_empty() {
            // the cluster form: each node's pool, address and subnet
            let nodes: serde_json::Map<String, Value> = self
                .nodes
                .iter()
                .map(|n| {
                    (
                        format!("n{}", n.idx),
                        json!({"podRange": n.pool, "address": n.ip.to_string(), "subnet": n.subnet}),
                    )
                })
                .collect();
            let m = c.as_object_mut().unwrap();
            m.remove("podRange");
            m.insert("nodes".into(), Value::Object(nodes));
            m.insert("nodeName".into(), json!(format!("n{}", node.idx)));
        }
        let node_cfg = self.node_config.lock().unwrap().get(&node.idx).cloned();
        for layer in [node_cfg.as_ref(), Some(extra)].into_iter().flatten() {
            for (k, v) in layer.as_object().into_iter().flatten() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
        }
        c
    }

    /// Runs `plugin` inside `node`'s namespace as a runtime would.
    pub fn run_plugin(
        &self,
        node: &Node,
        plugin: &Path,
        env: &[(&str, &str)],
        conf: &Value,
    ) -> Result<PluginRun> {
        self.run_plugin_bytes(node, plugin, env, conf.to_string().as_bytes())
    }

    /// Like `run_plugin`, with raw bytes on stdin.
    pub fn run_plugin_bytes(
        &self,
        node: &Node,
        plugin: &Path,
        env: &[(&str, &str)],
        stdin: &[u8],
    ) -> Result<PluginRun> {
        self.run_plugin_wrapped(node, &[], plugin, env, stdin)
    }

    /// Like `run_plugin_bytes`, with `wrapper` (a command and its arguments
    /// that end by running the plugin given as the last argument) in between.
    pub fn run_plugin_wrapped(
        &self,
        node: &Node,
        wrapper: &[&str],
        plugin: &Path,
        env: &[(&str, &str)],
        stdin: &[u8],
    ) -> Result<PluginRun> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.ns])
            .args(wrapper)
            .arg(plugin);
        cmd.env_clear();
        cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| err(format!("{}: {e}", plugin.display())))?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin)
            .map_err(|e| err(e.to_string()))?;
        let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
        Ok(PluginRun {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn cni_env<'a>(
        cmd: &'a str,
        cid: &'a str,
        netns: &'a str,
        args: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
            ("CNI_ARGS", args),
        ]
    }

    fn cni_args(spec: &PodSpec) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
            spec.k8s_namespace, spec.name
        )
    }

    /// The ros2-cni config a pod's chain uses, with runtimeConfig and prevResult.
    pub fn pod_ros2cni_conf(&self, spec: &PodSpec, prev: &Value) -> Value {
        let node = self.node(spec.node);
        let mut conf = self.ros2cni_conf(node, &spec.version, &spec.extra);
        if !spec.annotations.is_empty() {
            let ann: serde_json::Map<String, Value> = spec
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            conf["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": ann});
        }
        conf["prevResult"] = prev.clone();
        conf
    }

    /// The primary plugin's cniVersion for a chain at `version` (the Debian
    /// reference plugins stop at 1.0.0; 1.1.0 results have the same layout).
    fn primary_version(version: &str) -> &str {
        if version == "1.1.0" {
            "1.0.0"
        } else {
            version
        }
    }

    /// The primary (Calico stand-in) ADD for a new pod: its result, in the
    /// primary's cniVersion, and for the `ptp` plugin how long its invocation
    /// took (`ip netns exec <node> ptp`, from spawn to the reaped exit).
    fn primary_add(
        &self,
        node: &Node,
        spec: &PodSpec,
        ns: &str,
        netns: &str,
        cid: &str,
        env: &[(&str, &str)],
    ) -> Result<(Value, Option<Duration>)> {
        let version = Self::primary_version(&spec.version);
        match self.opts.primary {
            Primary::Ptp => {
                let t0 = Instant::now();
                let primary = self.run_plugin(
                    node,
                    &self.opts.cni_bin_dir.join("ptp"),
                    env,
                    &self.primary_conf(node, version),
                )?;
                let wall = t0.elapsed();
                let result = primary.json().filter(|_| primary.success).ok_or_else(|| {
                    err(format!(
                        "ptp ADD for {} failed: {}",
                        spec.name, primary.stdout
                    ))
                })?;
                Ok((result, Some(wall)))
            }
            Primary::Builtin => Ok((
                self.builtin_primary_add(node, ns, netns, cid, version)?,
                None,
            )),
        }
    }

    /// The built-in Calico stand-in: `cali<hash>` on the node, `eth0` with
    /// 10.1.N.x/32 in the pod, default route via 169.254.1.1 (proxy ARP).
    fn builtin_primary_add(
        &self,
        node: &Node,
        ns: &str,
        netns: &str,
        cid: &str,
        version: &str,
    ) -> Result<Value> {
        let host = {
            let mut next = self.builtin_next.lock().unwrap();
            let h = next[node.idx - 1];
            if h == 255 {
                return Err(err(format!("node {}: pod range exhausted", node.idx)));
            }
            next[node.idx - 1] = h + 1;
            h
        };
        let ip = Ipv4Addr::new(10, 1, node.idx as u8, host);
        let veth = calico_veth_name(cid);
        sh(&[
            "ip", "-n", &node.ns, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
            "netns", ns,
        ])?;
        ns_sh(
            &node.ns,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{veth}.proxy_arp=1"),
                // answer at once, as Calico does (the default holds replies up to 0.8 s)
                &format!("net.ipv4.neigh.{veth}.proxy_delay=0"),
            ],
        )?;
        sh(&["ip", "-n", &node.ns, "link", "set", &veth, "up"])?;
        sh(&[
            "ip",
            "-n",
            &node.ns,
            "route",
            "add",
            &format!("{ip}/32"),
            "dev",
            &veth,
        ])?;
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/32"),
            "dev",
            "eth0",
        ])?;
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        sh(&[
            "ip",
            "-n",
            ns,
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ])?;
        sh(&[
            "ip",
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ])?;
        let mac_of = |ns: &str, dev: &str| -> Result<String> {
            ip_json(ns, &["link", "show", dev])?[0]["address"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| err(format!("no MAC on {dev} in {ns}")))
        };
        let mut ipc = json!({"address": format!("{ip}/32"), "interface": 1});
        if version < "1.0.0" {
            ipc["version"] = json!("4");
        }
        Ok(json!({
            "cniVersion": version,
            "interfaces": [
                {"name": veth, "mac": mac_of(&node.ns, &veth)?},
                {"name": "eth0", "mac": mac_of(ns, "eth0")?, "sandbox": netns},
            ],
            "ips": [ipc],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {},
        }))
    }

    /// Runs another plugin for an existing pod, as Multus runs a pod's
    /// extra networks (e.g. the reference `macvlan` with `ifname` "net1").
    pub fn attach_extra(
        &self,
        pod: &Pod,
        plugin: &str,
        ifname: &str,
        conf: &Value,
    ) -> Result<PluginRun> {
        let netns = pod.netns_path();
        let cid = format!("{}-{ifname}", pod.container_id);
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", cid.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", ifname),
            (
                "CNI_PATH",
                self.opts.cni_bin_dir.to_str().unwrap_or("/usr/lib/cni"),
            ),
        ];
        self.run_plugin(
            self.node(pod.node),
            &self.opts.cni_bin_dir.join(plugin),
            &env,
            conf,
        )
    }

    /// Creates the pod's namespace and runs ADD through the chain.
    pub fn add_pod(&self, spec: &PodSpec) -> Result<Pod> {
        self.add_pod_timed(spec).map(|(pod, _)| pod)
    }

    /// Like [`Testbed::add_pod`], also returning how long the primary
    /// plugin's ADD took (None with the built-in primary, which is no plugin).
    pub fn add_pod_timed(&self, spec: &PodSpec) -> Result<(Pod, Option<Duration>)> {
        let ns = format!("{}p-{}", self.opts.prefix, spec.name);
        self.add_ns(&ns)?;
        let netns = format!("/var/run/netns/{ns}");
        let cid = format!("{}{}", self.opts.prefix.replace('-', ""), spec.name);
        let args = Self::cni_args(spec);
        let node = self.node(spec.node);
        let env = Self::cni_env("ADD", &cid, &netns, &args);
        let (mut result, primary_wall) = self.primary_add(node, spec, &ns, &netns, &cid, &env)?;
        result["cniVersion"] = json!(spec.version);
        if spec.chain_ros2cni {
            let conf = self.pod_ros2cni_conf(spec, &result);
            let r = self.run_plugin(node, &self.opts.plugin, &env, &conf)?;
            result = r.json().filter(|_| r.success).ok_or_else(|| {
                err(format!(
                    "ros2-cni ADD for {} failed: {} {}",
                    spec.name, r.stdout, r.stderr
                ))
            })?;
        }
        let ros_ip = ros_ip_of(&result, &netns);
        Ok((
            Pod {
                name: spec.name.clone(),
                ns,
                node: spec.node,
                container_id: cid,
                result,
                ros_ip,
            },
            primary_wall,
        ))
    }

    /// Runs one ros2-cni command for a pod (DEL, CHECK, ...), with the pod's
    /// cached result as prevResult unless `prev` says otherwise.
    pub fn ros2cni_cmd(
        &self,
        cmd: &str,
        pod: &Pod,
        spec: &PodSpec,
        prev: Option<&Value>,
        netns: Option<&str>,
    ) -> Result<PluginRun> {
        let node = self.node(pod.node);
        let args = Self::cni_args(spec);
        let netns_path = netns.map(str::to_owned).unwrap_or_else(|| pod.netns_path());
        let env = Self::cni_env(cmd, &pod.container_id, &netns_path, &args);
        let mut conf = self.pod_ros2cni_conf(spec, prev.unwrap_or(&pod.result));
        if prev.is_some_and(Value::is_null) {
            conf.as_object_mut().unwrap().remove("prevResult");
        }
        self.run_plugin(node, &self.opts.plugin, &env, &conf)
    }

    /// DEL through the chain (ros2-cni, then the primary), then removes the namespace.
    pub fn del_pod(&self, pod: &Pod, spec: &PodSpec) -> Result<()> {
        if spec.chain_ros2cni {
            let r = self.ros2cni_cmd("DEL", pod, spec, None, None)?;
            if !r.success {
                return Err(err(format!(
                    "ros2-cni DEL for {} failed: {}",
                    pod.name, r.stdout
                )));
            }
        }
        if self.opts.primary == Primary::Ptp {
            let node = self.node(pod.node);
            let args = Self::cni_args(spec);
            let netns = pod.netns_path();
            let env = Self::cni_env("DEL", &pod.container_id, &netns, &args);
            let mut conf = self.primary_conf(node, Self::primary_version(&spec.version));
            conf["prevResult"] = pod.result.clone();
            conf["prevResult"]["cniVersion"] = conf["cniVersion"].clone();
            let r = self.run_plugin(node, &self.opts.cni_bin_dir.join("ptp"), &env, &conf)?;
            if !r.success {
                return Err(err(format!(
                    "ptp DEL for {} failed: {}",
                    pod.name, r.stdout
                )));
            }
        }
        if self.opts.primary == Primary::Builtin {
            // as Calico's DEL: the host-side veth (and the /32 route with it);
            // already gone is fine
            let node = self.node(pod.node);
            let veth = calico_veth_name(&pod.container_id);
            if ip_json(&node.ns, &["link", "show"])?
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| l["ifname"] == veth.as_str())
            {
                sh(&["ip", "-n", &node.ns, "link", "del", &veth])?;
            }
        }
        self.remove_ns(&pod.ns)
    }

    pub fn remove_ns(&self, ns: &str) -> Result<()> {
        if !remove_ns_and_processes(ns) {
            return Err(err(format!("cannot remove namespace {ns}")));
        }
        self.namespaces.lock().unwrap().retain(|n| n != ns);
        Ok(())
    }

    /// Starts a long-running process inside `ns`; killed when the test bed drops.
    /// Output goes to `<dir>/<log>.out` / `.err`.
    pub fn spawn(&self, ns: &str, args: &[&str], log: &str) -> Result<u32> {
        let out = std::fs::File::create(self.dir.join(format!("{log}.out")))
            .map_err(|e| err(e.to_string()))?;
        let errf = std::fs::File::create(self.dir.join(format!("{log}.err")))
            .map_err(|e| err(e.to_string()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(errf)
            .spawn()
            .map_err(|e| err(format!("{}: {e}", args.join(" "))))?;
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        Ok(pid)
    }

    /// Kills a process started with `spawn` (SIGKILL) and reaps it.
    pub fn kill(&self, pid: u32) {
        let mut kids = self.children.lock().unwrap();
        if let Some(pos) = kids.iter().position(|c| c.id() == pid) {
            let mut c = kids.remove(pos);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal to a process started with `spawn`.
    pub fn signal(&self, pid: u32, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }

    /// Waits for a spawned process to exit on its own, up to `timeout`.
    pub fn wait_exit(&self, pid: u32, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut kids = self.children.lock().unwrap();
                if let Some(pos) = kids.iter().position(|c| c.id() == pid) {
                    if let Ok(Some(st)) = kids[pos].try_wait() {
                        // already reaped by try_wait
                        let _ = kids.remove(pos).wait();
                        return Some(st);
                    }
                } else {
                    return None;
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes the agent's config file for `node` (node form, the keys the
    /// plugin gets with `extra` merged, plus `multicastForwarder` from
    /// [`TEST_FORWARDER_ENV`] when set and `extra` does not say).
    pub fn agent_config(&self, node: &Node, extra: &Value) -> Result<PathBuf> {
        let mut c = self.ros2cni_conf(node, "1.1.0", extra);
        let m = c.as_object_mut().unwrap();
        // the agent logs to stderr (kept in <dir>/agent-nN.err)
        for k in ["cniVersion", "name", "type", "capabilities", "logFile"] {
            m.remove(k);
        }
        // the test suite runs the multicast tests once per forwarder the
        // kernel offers: ROS2_CNI_TEST_FORWARDER names one for every agent
        // whose test does not choose itself
        if let Ok(f) = std::env::var(TEST_FORWARDER_ENV) {
            if !f.is_empty() && !m.contains_key("multicastForwarder") {
                m.insert("multicastForwarder".into(), Value::String(f));
            }
        }
        let path = node.data_dir.join("agent.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap())
            .map_err(|e| err(e.to_string()))?;
        Ok(path)
    }

    /// Starts `ros2-cni agent` in `node` and waits until its status socket answers.
    pub fn start_agent(&self, node: &Node, extra: &Value) -> Result<u32> {
        let cfg = self.agent_config(node, extra)?;
        let log = format!("agent-n{}", node.idx);
        let bin = self.opts.plugin.to_str().unwrap().to_owned();
        let pid = self.spawn(
            &node.ns,
            &[&bin, "agent", "--config", cfg.to_str().unwrap()],
            &log,
        )?;
        let sock = node.data_dir.join("ros2-cni").join("agent.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if crate::api::status(&sock).is_ok_and(|s| s.pid > 0) {
                return Ok(pid);
            }
            if self.wait_exit(pid, Duration::from_millis(50)).is_some() {
                return Err(err(format!(
                    "agent on node {} exited: {}",
                    node.idx,
                    self.log(&log)
                )));
            }
        }
        Err(err(format!(
            "agent on node {} did not come up: {}",
            node.idx,
            self.log(&log)
        )))
    }

    /// The agent's status document for `node`, as on the wire (tests
    /// assert on its keys); it must also read as an [`crate::api::Status`].
    pub fn agent_status(&self, node: &Node) -> Result<Value> {
        let sock = node.data_dir.join("ros2-cni").join("agent.sock");
        let v = crate::api::exchange(&sock, &crate::api::Request::Status.line())
            .map_err(|e| err(e.to_string()))?;
        serde_json::from_value::<crate::api::Status>(v.clone())
            .map_err(|e| err(format!("the agent's status is not an api::Status: {e}")))?;
        Ok(v)
    }

    pub fn log(&self, log: &str) -> String {
        let out = std::fs::read_to_string(self.dir.join(format!("{log}.out"))).unwrap_or_default();
        let e = std::fs::read_to_string(self.dir.join(format!("{log}.err"))).unwrap_or_default();
        format!("{out}{e}")
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for mut c in self.children.lock().unwrap().drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut names = self.namespaces.lock().unwrap().clone();
        // pods first, the switch last; grandchildren (ddsperf under timeout,
        // which dies with a SIGKILL without passing it on) go with their namespace
        names.reverse();
        for n in names {
            remove_ns_and_processes(&n);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Calico-like host-side veth name for a container: `cali` + 11 hex digits.
pub fn calico_veth_name(cid: &str) -> String {
    // FNV-1a, 64 bits: stable across runs and builds
    let mut h: u64 = 0xcbf29ce484222325;
    for b in cid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("cali{:011x}", h & 0xfff_ffff_ffff)
}

/// The ros0 address in a chain result (the interface in `sandbox` that is not eth0).
pub fn ros_ip_of(result: &Value, sandbox: &str) -> Option<Ipv4Addr> {
    let ifaces = result["interfaces"].as_array()?;
    let idx = ifaces.iter().position(|i| {
        i["sandbox"].as_str() == Some(sandbox) && i["name"].as_str() != Some("eth0")
    })?;
    result["ips"].as_array()?.iter().find_map(|ip| {
        (ip["interface"].as_u64() == Some(idx as u64))
            .then(|| ip["address"].as_str()?.split('/').next()?.parse().ok())
            .flatten()
    })
}

/// One ping from `ns` to `ip` (up to 2 s).
pub fn ping(ns: &str, ip: Ipv4Addr) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ping",
            "-c1",
            "-W2",
            "-n",
            "-q",
            &ip.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A UDP socket bound inside `ns`.
pub fn udp_in(ns: &str, bind: &str) -> Result<UdpSocket> {
    let n = Netns::open(format!("/var/run/netns/{ns}")).map_err(|e| err(e.to_string()))?;
    n.run(|| UdpSocket::bind(bind))
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(format!("bind {bind} in {ns}: {e}")))
}

/// A TCP GET of `path` from inside `ns`; returns the body.
pub fn http_get(ns: &str, addr: &str, path: &str) -> Result<String> {
    use std::io::Read;
    let n = Netns::open(format!("/var/run/netns/{ns}")).map_err(|e| err(e.to_string()))?;
    let mut s = n
        .run(|| std::net::TcpStream::connect(addr))
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(format!("connect {addr} in {ns}: {e}")))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| err(e.to_string()))?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| err(e.to_string()))?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// A multicast receiver inside `ns`: bound to `port`, joined to `group` on
/// the interface holding `local` (the pod's ros0 address, or the laptop's).
pub fn mcast_receiver(ns: &str, group: Ipv4Addr, port: u16, local: Ipv4Addr) -> Result<UdpSocket> {
    let n = Netns::open(format!("/var/run/netns/{ns}")).map_err(|e| err(e.to_string()))?;
    n.run(|| -> std::io::Result<UdpSocket> {
        let s = socket_reuse(port)?;
        s.join_multicast_v4(&group, &local)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .map_err(|e| err(e.to_string()))?
    .map_err(|e| err(format!("multicast receiver in {ns}: {e}")))
}

/// A UDP socket on 0.0.0.0:port with SO_REUSEADDR (several receivers per port).
pub(crate) fn socket_reuse(port: u16) -> std::io::Result<UdpSocket> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket/setsockopt/bind calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = UdpSocket::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            4,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

/// A multicast sender inside `ns`, leaving through the interface holding `local`, with `ttl`.
pub fn mcast_sender(ns: &str, local: Ipv4Addr, ttl: u32) -> Result<UdpSocket> {
    let n = Netns::open(format!("/var/run/netns/{ns}")).map_err(|e| err(e.to_string()))?;
    n.run(|| -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind((local, 0))?;
        s.set_multicast_ttl_v4(ttl)?;
        s.set_multicast_loop_v4(false)?;
        set_multicast_if(&s, local)?;
        Ok(s)
    })
    .map_err(|e| err(e.to_string()))?
    .map_err(|e| err(format!("multicast sender in {ns}: {e}")))
}

fn set_multicast_if(s: &UdpSocket, local: Ipv4Addr) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let a = libc::in_addr {
        s_addr: u32::from_ne_bytes(local.octets()),
    };
    // SAFETY: setsockopt with a valid fd and an in_addr.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            &a as *const _ as *const libc::c_void,
            4,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Drains a non-blocking receiver: the payloads that arrived.
pub fn drain(s: &UdpSocket) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = s.recv_from(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

/// Sends one datagram from `from` to `to_ip`, received in `to`: returns the
/// source address the receiver saw, or None if nothing arrived.
pub fn udp_seen_source(
    from: &str,
    to: &str,
    to_ip: Ipv4Addr,
    port: u16,
) -> Result<Option<Ipv4Addr>> {
    let rx = udp_in(to, &format!("0.0.0.0:{port}"))?;
    rx.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let tx = udp_in(from, "0.0.0.0:0")?;
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        tx.send_to(b"ros2-cni probe", (to_ip, port))
            .map_err(|e| err(format!("send from {from}: {e}")))?;
        if let Ok((_, std::net::SocketAddr::V4(a))) = rx.recv_from(&mut buf) {
            return Ok(Some(*a.ip()));
        }
    }
    Ok(None)
}
