//! Pods on a test bed node, attached by the thing under test, one CNI
//! invocation at a time so each can be timed on its own.

use crate::invoke::{self, cni_env, Run, Via};
use ros2_cni::lab::testbed::{ros_ip_of, Node, Pod, PodSpec, Testbed, SUBNET};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The ros2-cni entry as installed (cni/10-calico.conflist): default log
/// level (info) to a log file, not the test bed's debug level.
pub fn production_extra() -> Value {
    json!({"logLevel": null})
}

pub struct Lab<'a> {
    pub tb: &'a Testbed,
    pub plugin: PathBuf,
    pub cni_bin: PathBuf,
}

/// A pod that has its primary interface (ptp + host-local, the Calico
/// stand-in) and nothing else yet.
pub struct PrimaryPod {
    pub pod: Pod,
    pub spec: PodSpec,
}

impl PrimaryPod {
    pub fn netns(&self) -> String {
        self.pod.netns_path()
    }

    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
            self.spec.k8s_namespace, self.spec.name
        )
    }
}

impl<'a> Lab<'a> {
    pub fn new(tb: &'a Testbed) -> Lab<'a> {
        Lab {
            tb,
            plugin: tb.opts.plugin.clone(),
            cni_bin: tb.opts.cni_bin_dir.clone(),
        }
    }

    /// Namespace + ptp ADD (not timed). `opted_in` sets the pod annotation.
    pub fn primary_pod(&self, name: &str, node: usize, opted_in: bool) -> PrimaryPod {
        self.primary_pod_timed(name, node, opted_in).0
    }

    /// Like `primary_pod`, also returning the primary's own ADD time in ms
    /// (`ip netns exec <node> ptp`, host-local included; None with the
    /// built-in primary, which is no plugin).
    pub fn primary_pod_timed(
        &self,
        name: &str,
        node: usize,
        opted_in: bool,
    ) -> (PrimaryPod, Option<f64>) {
        let mut spec = PodSpec::new(name, node).extra(production_extra());
        if !opted_in {
            spec = spec.opted_out();
        }
        spec.chain_ros2cni = false;
        let (pod, wall) = self
            .tb
            .add_pod_timed(&spec)
            .unwrap_or_else(|e| panic!("primary pod {name}: {e}"));
        (
            PrimaryPod { pod, spec },
            wall.map(|w| w.as_secs_f64() * 1e3),
        )
    }

    /// ptp DEL and namespace removal (not timed).
    pub fn remove(&self, p: &PrimaryPod) {
        self.tb
            .del_pod(&p.pod, &p.spec)
            .unwrap_or_else(|e| panic!("removing pod {}: {e}", p.spec.name));
    }

    fn node(&self, p: &PrimaryPod) -> &Node {
        self.tb.node(p.spec.node)
    }

    /// One ros2-cni invocation for `p`, chained after ptp (prevResult = `prev`).
    pub fn ros2(&self, cmd: &str, p: &PrimaryPod, prev: &Value) -> Run {
        let conf = self.tb.pod_ros2cni_conf(&p.spec, prev);
        let netns = p.netns();
        let args = p.cni_args();
        let env = cni_env(cmd, &p.pod.container_id, &netns, "eth0", &args);
        let node = self.node(p);
        invoke::run(
            Via::IpNetnsExec(&node.ns),
            &self.plugin,
            &env,
            conf.to_string().as_bytes(),
        )
        .expect("run ros2-cni")
    }

    /// The reference pair, as Multus runs it for a second interface:
    /// `macvlan` (master eth0, bridge mode) with `host-local` IPAM, `net1`.
    pub fn macvlan_conf(&self, node: &Node) -> Value {
        let third = 13 + node.idx;
        json!({
            "cniVersion": "0.3.1",
            "name": "macvlan-ref",
            "type": "macvlan",
            "master": "eth0",
            "mode": "bridge",
            "ipam": {
                "type": "host-local",
                "ranges": [[{
                    "subnet": SUBNET,
                    "rangeStart": format!("192.168.{third}.1"),
                    "rangeEnd": format!("192.168.{third}.254"),
                }]],
                "dataDir": node.data_dir.join("macvlan-ipam"),
            }
        })
    }

    /// One reference invocation (`macvlan`, which runs `host-local` itself).
    pub fn macvlan(
        &self,
        cmd: &str,
        node: &Node,
        container_id: &str,
        netns: &str,
        prev: Option<&Value>,
    ) -> Run {
        let mut conf = self.macvlan_conf(node);
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        let env = cni_env(cmd, container_id, netns, "net1", "IgnoreUnknown=1");
        invoke::run(
            Via::IpNetnsExec(&node.ns),
            &self.cni_bin.join("macvlan"),
            &env,
            conf.to_string().as_bytes(),
        )
        .expect("run macvlan")
    }

    /// A pod with only the reference macvlan interface (no primary): what the
    /// data path comparison uses, so DDS has one interface to choose.
    pub fn macvlan_only_pod(&self, name: &str, node: usize) -> (String, Ipv4Addr) {
        let n = self.tb.node(node);
        let ns = format!("{}mv-{name}", self.tb.opts.prefix);
        self.tb.add_ns(&ns).expect("namespace");
        let netns = format!("/var/run/netns/{ns}");
        let r = self.macvlan("ADD", n, &ns, &netns, None);
        assert!(
            r.success,
            "macvlan ADD for {name}: {} {}",
            r.stdout, r.stderr
        );
        let ip = r
            .json()
            .and_then(|v| first_ip(&v))
            .expect("macvlan result has an address");
        (ns, ip)
    }

    /// Runs a program (e.g. /bin/true) in a node's namespace, timed.
    pub fn baseline(&self, via: Via, program: &Path) -> Run {
        invoke::run(via, program, &[], b"").expect("run baseline program")
    }
}

/// The first address of a CNI result.
pub fn first_ip(result: &Value) -> Option<Ipv4Addr> {
    result["ips"].as_array()?.first()?["address"]
        .as_str()?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// The ros0 address of a chained result.
pub fn ros0_ip(result: &Value, netns: &str) -> Option<Ipv4Addr> {
    ros_ip_of(result, netns)
}
