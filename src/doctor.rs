//! `ros2-cni doctor`: what the node looks like, and why discovery fails.
//!
//! It gathers the agent's status and participant table, the conflist entry,
//! the attached pods, and turns them into findings: each a plain-language
//! cause and a fix, with a stable code (see docs/troubleshooting.md).

use crate::agent::status::query;
use crate::config::{Config, Mode};
use crate::ipam::Store;
use ipnet::Ipv4Net;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
}

impl Finding {
    fn new(code: &'static str, severity: Severity, message: String) -> Finding {
        Finding {
            code,
            severity,
            message,
        }
    }
}

/// Everything doctor looked at.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub subnet: Option<Ipv4Net>,
    pub mode: Option<Mode>,
    pub raise_ttl: bool,
    /// The agent's status document, or why it could not be had.
    pub status: Result<Value, String>,
    /// The agent's participant document.
    pub participants: Option<Value>,
    /// (conflist path, has a ros2-cni entry), when a conf dir was looked at.
    pub conflist: Option<(PathBuf, bool)>,
    /// Attached pods: (name, address, netns path, has its interface: None if the netns is gone).
    pub pods: Vec<PodCheck>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCheck {
    pub pod: String,
    pub ip: Ipv4Addr,
    pub interface: String,
    pub netns: String,
    /// None when the pod's network namespace no longer exists.
    pub has_interface: Option<bool>,
}

fn pod_label(p: &Value) -> String {
    match p["pod"].as_str() {
        Some(pod) => format!("pod {pod}"),
        None => format!(
            "{} on {}",
            p["source"].as_str().unwrap_or("?"),
            p["seenOn"].as_str().unwrap_or("?")
        ),
    }
}

fn participant_label(p: &Value) -> String {
    let name = p["name"]
        .as_str()
        .map(|n| format!(" \"{n}\""))
        .unwrap_or_default();
    format!(
        "participant {}{} ({}, domain {})",
        p["guidPrefix"].as_str().unwrap_or("?"),
        name,
        p["vendor"].as_str().unwrap_or("?"),
        p["domain"]
            .as_u64()
            .map(|d| d.to_string())
            .unwrap_or_else(|| "?".into())
    )
}

/// MULTICAST_PRESSURE: the agent sees a flood of multicast to groups that
/// are not routed, naming the interface and the sources (with the pod each
/// source belongs to, when it is one).
fn multicast_pressure(inp: &Inputs, p: &Value) -> Option<Finding> {
    if p["active"] != true {
        return None;
    }
    let iface = p["interface"]
        .as_str()
        .unwrap_or("an interface not sampled yet");
    let rate = p["notRtpsPerSecond"].as_u64().unwrap_or(0);
    let sources: Vec<String> = p["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let ip = s["source"].as_str().unwrap_or("?");
            let pod = inp
                .pods
                .iter()
                .find(|c| c.ip.to_string() == ip)
                .map(|c| format!(" (pod {})", c.pod))
                .unwrap_or_default();
            format!(
                "{ip}{pod} on {}: {} packets to {} groups",
                s["interface"].as_str().unwrap_or("?"),
                s["packets"].as_u64().unwrap_or(0),
                s["groups"].as_u64().unwrap_or(0)
            )
        })
        .collect();
    let who = if sources.is_empty() {
        "sources not sampled yet".to_owned()
    } else {
        format!("sources in a sample: {}", sources.join("; "))
    };
    Some(Finding::new(
        "MULTICAST_PRESSURE",
        Severity::Warning,
        format!(
            "{rate} multicast packets/s to groups that are not routed arrive on {iface} ({who}). They are \
             not forwarded and cannot fill the multicast routes (RTPS discovery is unaffected), but they cost \
             this node and its LAN bandwidth. Fix: stop the sender (a pod: kubectl delete it; a LAN host: find it \
             by its address)."
        ),
    ))
}

/// What `ros2-cni doctor` says about the relay, from the status document's
/// `relay` part: the peers, whether each answers, and the participants
/// (by address) this node's pods hear only through the relay.
fn relay_findings(relay: &Value) -> Vec<Finding> {
    let mut out = vec![];
    let peers = relay["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        return out;
    }
    if let Some(p) = relay["problem"].as_str() {
        out.push(Finding {
            code: "RELAY_DOWN",
            severity: Severity::Error,
            message: format!(
                "The RTPS relay cannot run ({p}): peers get none of this node's pods' discovery. \
                 Fix: free the port or change relayPort on every node."
            ),
        });
    }
    let mut lines = vec![];
    let mut relayed_only = vec![];
    for p in &peers {
        let addr = p["address"].as_str().unwrap_or("?");
        let reachable = p["reachable"] == true;
        lines.push(format!(
            "{addr} (via {}, {}, sent {}, received {})",
            p["via"].as_str().unwrap_or("?"),
            if reachable {
                "reachable"
            } else {
                "not heard from"
            },
            p["sent"],
            p["received"]
        ));
        if !reachable {
            out.push(Finding {
                code: "RELAY_PEER_UNREACHABLE",
                severity: Severity::Warning,
                message: format!(
                    "Relay peer {addr} has not been heard from in {} s: its agent is down, the address is \
                     wrong, or UDP {} is filtered between the nodes. Its pods and this node's do not discover \
                     each other through the relay.",
                    crate::relay::PEER_TIMEOUT.as_secs(),
                    relay["port"]
                ),
            });
        }
        for src in p["sources"].as_array().into_iter().flatten() {
            relayed_only.push(format!("{} (from {addr})", src.as_str().unwrap_or("?")));
        }
    }
    out.push(Finding {
        code: "RELAY_PEERS",
        severity: Severity::Info,
        message: format!("Relay peers: {}.", lines.join("; ")),
    });
    if !relayed_only.is_empty() {
        out.push(Finding {
            code: "RELAY_ONLY_PARTICIPANTS",
            severity: Severity::Info,
            message: format!(
                "Participants this node's pods hear only through the relay (they are not in the \
                 participant table, which sees this node's own traffic): {}.",
                relayed_only.join(", ")
            ),
        });
    }
    out
}

/// Turns what was gathered into findings, most severe first.
pub fn findings(inp: &Inputs) -> Vec<Finding> {
    let mut out = vec![];
    match &inp.status {
        Err(why) => out.push(Finding::new(
            "AGENT_DOWN",
            Severity::Error,
            format!(
                "The ros2-cni agent does not answer ({why}). Pods still get ros0 and unicast works, but no RTPS \
                 multicast is routed between this node's pods and other computers. Fix: start it (kubectl -n \
                 kube-system get ds ros2-cni; or systemctl start ros2-cni-agent) and check its log."
            ),
        )),
        Ok(st) => {
            for p in st["problems"].as_array().into_iter().flatten() {
                out.push(Finding::new(
                    "AGENT_PROBLEM",
                    Severity::Warning,
                    format!("The agent reports: {}", p.as_str().unwrap_or_default()),
                ));
            }
            if let Some(f) = multicast_pressure(inp, &st["multicastPressure"]) {
                out.push(f);
            }
            out.extend(relay_findings(&st["relay"]));
        }
    }
    if let Some((file, false)) = &inp.conflist {
        out.push(Finding::new(
            "CONFLIST_ENTRY_MISSING",
            Severity::Error,
            format!(
                "{} has no ros2-cni entry: pods started now get no ros0. Cause: the primary plugin's installer \
                 (calico-node) rewrote the file while no agent was watching it. Fix: run `ros2-cni install` or \
                 start the agent with --cni-conf-dir.",
                file.display()
            ),
        ));
    }
    for p in &inp.pods {
        match p.has_interface {
            Some(false) => out.push(Finding::new(
                "POD_WITHOUT_INTERFACE",
                Severity::Error,
                format!(
                    "Pod {} opted in and holds {} but has no {} in its network namespace. Something removed it; \
                     the pod cannot reach the LAN. Fix: delete the pod so it is recreated.",
                    p.pod, p.ip, p.interface
                ),
            )),
            None => out.push(Finding::new(
                "STALE_ATTACHMENT",
                Severity::Warning,
                format!(
                    "{} is recorded for pod {} whose network namespace ({}) is gone. Cause: the runtime never \
                     called DEL. Fix: nothing urgent; the runtime's GC (CNI 1.1) releases it, or delete the file \
                     in dataDir/attachments.",
                    p.ip, p.pod, p.netns
                ),
            )),
            Some(true) => {}
        }
    }
    let parts: Vec<Value> = inp
        .participants
        .as_ref()
        .and_then(|d| d["participants"].as_array().cloned())
        .unwrap_or_default();
    if let Some(subnet) = inp.subnet {
        for p in &parts {
            let unicast: Vec<(Ipv4Addr, u64)> = p["locators"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|l| {
                    l["kind"].as_str().is_some_and(|k| k.ends_with("_unicast"))
                        && l["transport"] == "udpv4"
                })
                .filter_map(|l| Some((l["address"].as_str()?.parse().ok()?, l["port"].as_u64()?)))
                .filter(|(a, _): &(Ipv4Addr, u64)| !a.is_loopback() && !a.is_unspecified())
                .collect();
            if !unicast.is_empty() && !unicast.iter().any(|(a, _)| subnet.contains(a)) {
                let addrs: BTreeSet<String> =
                    unicast.iter().map(|(a, p)| format!("{a}:{p}")).collect();
                out.push(Finding::new(
                    "UNREACHABLE_LOCATORS",
                    Severity::Error,
                    format!(
                        "{} in {} advertises only {}, outside the robot LAN {subnet}: other computers cannot \
                         answer it (these are primary-network or masqueraded addresses). Cause: DDS is bound to \
                         the pod's primary interface (e.g. CYCLONEDDS_URI naming eth0, a Fast DDS interface \
                         whitelist, or primaryMulticast with default settings). Fix: let DDS use ros0 — remove the \
                         interface pin or name ros0.",
                        participant_label(p),
                        pod_label(p),
                        addrs.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    // TTL-1 discovery that is not forwarded
    let routes: Vec<Value> = inp
        .status
        .as_ref()
        .ok()
        .and_then(|s| s["routes"].as_array().cloned())
        .unwrap_or_default();
    let routing = inp
        .status
        .as_ref()
        .ok()
        .is_some_and(|s| s["routing"] == true);
    let (uplink, node_dev) = inp
        .status
        .as_ref()
        .ok()
        .map(|s| {
            (
                s["uplink"].as_str().unwrap_or("").to_owned(),
                s["nodeDevice"].as_str().unwrap_or("").to_owned(),
            )
        })
        .unwrap_or_default();
    let sources: Vec<Value> = inp
        .participants
        .as_ref()
        .and_then(|d| d["sources"].as_array().cloned())
        .unwrap_or_default();
    for s in sources.iter().filter(|s| s["ttl"] == 1) {
        let (src, grp, ifname) = (
            s["source"].as_str().unwrap_or(""),
            s["group"].as_str().unwrap_or(""),
            s["interface"].as_str().unwrap_or(""),
        );
        let forwarded = routes.iter().any(|r| {
            (r["source"] == src || r["source"] == "0.0.0.0")
                && r["group"] == grp
                && r["oifs"].as_array().is_some_and(|o| !o.is_empty())
                && r["packets"].as_u64() > Some(0)
        });
        let on_ros_path = ifname == uplink
            || ifname == node_dev
            || ifname.starts_with(crate::firewall::HOST_VETH_PREFIX);
        // on a macvlan node L2 carries everything: nothing is meant to be forwarded
        if forwarded || (inp.mode == Some(Mode::Macvlan) && on_ros_path) {
            continue;
        }
        let cause = if !on_ros_path {
            format!("it arrives on {ifname}, which is not part of the robot LAN path (a pod's primary network?): DDS there uses the wrong interface")
        } else if !routing {
            "the agent does not route multicast here".to_owned()
        } else if !inp.raise_ttl {
            "raiseTtl is false, so packets sent with TTL 1 (Fast DDS, Connext) die at the node"
                .to_owned()
        } else {
            "no multicast route carries it yet".to_owned()
        };
        out.push(Finding::new(
            "TTL1_NOT_FORWARDED",
            Severity::Warning,
            format!(
                "RTPS from {src} to {grp} arrives with TTL 1 on {ifname} and is not forwarded: {cause}. Fix: {}",
                if !on_ros_path {
                    "let DDS use ros0 (see UNREACHABLE_LOCATORS)"
                } else if !inp.raise_ttl {
                    "set raiseTtl to true (the default)"
                } else {
                    "check the agent's problems and `ip mroute show`"
                }
            ),
        ));
    }
    if let Ok(st) = &inp.status {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (code, msg) in crate::agent::limits::findings(st, now) {
            out.push(Finding::new(code, Severity::Warning, msg));
        }
        // the domains each pod's participants were seen in
        let mut seen: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for p in &parts {
            if let (Some(pod), Some(d)) = (p["pod"].as_str(), p["domain"].as_u64()) {
                let v = seen.entry(pod.to_owned()).or_default();
                if !v.contains(&(d as u16)) {
                    v.push(d as u16);
                }
            }
        }
        for (code, msg) in crate::agent::domains::findings(st, now, &seen) {
            out.push(Finding::new(code, Severity::Warning, msg));
        }
    }
    let mut domains: BTreeMap<u64, usize> = BTreeMap::new();
    for p in &parts {
        if let Some(d) = p["domain"].as_u64() {
            *domains.entry(d).or_default() += 1;
        }
    }
    if domains.len() > 1 {
        let list: Vec<String> = domains
            .iter()
            .map(|(d, n)| format!("domain {d} ({n})"))
            .collect();
        out.push(Finding::new(
            "DOMAINS_DIFFER",
            Severity::Warning,
            format!(
                "Participants are in different DDS domains: {}. Participants only discover others in the same \
                 domain. If they were meant to meet, set the same ROS_DOMAIN_ID everywhere.",
                list.join(", ")
            ),
        ));
    }
    if inp.status.is_ok() && parts.is_empty() {
        out.push(Finding::new(
            "NO_PARTICIPANTS",
            Severity::Info,
            "The agent has seen no DDS participant announce itself on this node yet (SPDP to the RTPS groups). \
             Start a ROS 2 node in an opted-in pod, or check `groups`."
                .into(),
        ));
    }
    out.sort_by_key(|f| f.severity);
    out
}

/// Gathers the inputs on this node.
pub fn gather(cfg: &Config, conf_dir: Option<&Path>) -> Inputs {
    let sock = cfg.agent_socket();
    let status = query(&sock, "status").map_err(|e| e.to_string());
    let participants = status
        .as_ref()
        .ok()
        .and_then(|_| query(&sock, "participants").ok());
    let conflist = conf_dir.and_then(|d| {
        let file = crate::install::choose_conf(d, None).ok()?;
        let text = std::fs::read_to_string(&file).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let has = v["plugins"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["type"] == crate::install::PLUGIN_TYPE));
        Some((file, has))
    });
    let pods = Store::new(&cfg.data_dir)
        .list()
        .unwrap_or_default()
        .records
        .into_iter()
        .map(|(_, a)| {
            let has_interface = crate::netlink::Netns::open(&a.netns)
                .ok()
                .and_then(|ns| crate::netlink::Handle::open_in(&ns).ok())
                .and_then(|mut h| h.link_by_name(&a.pod_if).ok())
                .map(|l| l.is_some());
            PodCheck {
                pod: if a.pod_name.is_empty() {
                    a.container_id.clone()
                } else {
                    format!("{}/{}", a.pod_namespace, a.pod_name)
                },
                ip: a.ip,
                interface: a.pod_if.clone(),
                netns: a.netns.clone(),
                has_interface,
            }
        })
        .collect();
    Inputs {
        subnet: Some(cfg.subnet),
        mode: Some(cfg.mode),
        raise_ttl: cfg.raise_ttl,
        status,
        participants,
        conflist,
        pods,
    }
}

/// The JSON report.
pub fn report(inp: &Inputs) -> Value {
    let st = inp.status.as_ref().ok();
    json!({
        "agent": match &inp.status {
            Ok(s) => json!({"running": true, "pid": s["pid"], "mode": s["mode"], "uplink": s["uplink"],
                            "healthy": s["healthy"], "restarts": s["restarts"], "pods": s["pods"]}),
            Err(e) => json!({"running": false, "error": e}),
        },
        "conflist": inp.conflist.as_ref().map(|(f, has)| json!({"file": f, "entry": has})),
        "pods": inp.pods,
        "routes": st.map(|s| s["routes"].clone()).unwrap_or(json!([])),
        "participants": inp.participants.as_ref().map(|p| p["participants"].clone()).unwrap_or(json!([])),
        "findings": findings(inp),
    })
}

/// The human-readable report.
pub fn render(inp: &Inputs) -> String {
    let mut o = String::new();
    let r = report(inp);
    match &inp.status {
        Ok(s) => o.push_str(&format!(
            "agent: running (pid {}), mode {}, uplink {}, {} pod(s), {} multicast route(s)\n",
            s["pid"],
            s["mode"].as_str().unwrap_or("?"),
            s["uplink"].as_str().unwrap_or("?"),
            s["pods"],
            s["routes"].as_array().map_or(0, |r| r.len())
        )),
        Err(e) => o.push_str(&format!("agent: NOT RUNNING ({e})\n")),
    }
    if let Some((f, has)) = &inp.conflist {
        o.push_str(&format!(
            "conflist: {} {}\n",
            f.display(),
            if *has {
                "has the ros2-cni entry"
            } else {
                "LACKS the ros2-cni entry"
            }
        ));
    }
    o.push_str(&format!("pods ({}):\n", inp.pods.len()));
    for p in &inp.pods {
        let state = match p.has_interface {
            Some(true) => "ok",
            Some(false) => "MISSING INTERFACE",
            None => "netns gone",
        };
        o.push_str(&format!("  {:<32} {:<16} {}\n", p.pod, p.ip, state));
    }
    let parts = r["participants"].as_array().cloned().unwrap_or_default();
    o.push_str(&format!("participants ({}):\n", parts.len()));
    for p in &parts {
        let locs: BTreeSet<String> = p["locators"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["kind"].as_str().is_some_and(|k| k.ends_with("_unicast")))
            .map(|l| format!("{}:{}", l["address"].as_str().unwrap_or("?"), l["port"]))
            .collect();
        o.push_str(&format!(
            "  {} {:<12} domain {:<3} {:<28} seen on {:<14} unicast {}\n",
            p["guidPrefix"].as_str().unwrap_or("?"),
            p["vendor"].as_str().unwrap_or("?"),
            p["domain"]
                .as_u64()
                .map(|d| d.to_string())
                .unwrap_or_else(|| "?".into()),
            p["pod"].as_str().or(p["name"].as_str()).unwrap_or("-"),
            p["seenOn"].as_str().unwrap_or("?"),
            locs.into_iter().collect::<Vec<_>>().join(" ")
        ));
    }
    let f = findings(inp);
    if f.is_empty() {
        o.push_str("findings: none — discovery should work\n");
    } else {
        o.push_str(&format!("findings ({}):\n", f.len()));
        for x in f {
            o.push_str(&format!("  [{:?}] {}: {}\n", x.severity, x.code, x.message));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Inputs {
        Inputs {
            subnet: Some("192.168.1.0/24".parse().unwrap()),
            mode: Some(Mode::Routed),
            raise_ttl: true,
            status: Ok(
                json!({"routing": true, "uplink": "eth0", "nodeDevice": "ros2br0", "problems": [], "routes": []}),
            ),
            participants: Some(json!({"participants": [], "sources": []})),
            conflist: None,
            pods: vec![],
        }
    }

    fn codes(i: &Inputs) -> Vec<&'static str> {
        findings(i).into_iter().map(|f| f.code).collect()
    }

    fn participant(addr: &str, domain: u64) -> Value {
        json!({"guidPrefix": "0110aabb", "vendor": "Eclipse Cyclone DDS", "domain": domain, "pod": "robots/talker",
               "seenOn": "veth1", "source": format!("{addr}:7400"),
               "locators": [{"kind": "metatraffic_unicast", "transport": "udpv4", "address": addr, "port": 7410}]})
    }

    #[test]
    fn agent_down_is_an_error() {
        let mut i = base();
        i.status = Err("no agent answers".into());
        i.participants = None;
        assert_eq!(codes(&i), vec!["AGENT_DOWN"]);
    }

    #[test]
    fn primary_network_locators_are_named() {
        let mut i = base();
        i.participants = Some(json!({"participants": [participant("10.1.1.5", 0)], "sources": []}));
        let f = findings(&i);
        assert_eq!(f[0].code, "UNREACHABLE_LOCATORS");
        assert!(
            f[0].message.contains("10.1.1.5:7410") && f[0].message.contains("robots/talker"),
            "{}",
            f[0].message
        );
        // one reachable locator is enough
        let mut p = participant("10.1.1.5", 0);
        p["locators"].as_array_mut().unwrap().push(json!({"kind": "default_unicast", "transport": "udpv4", "address": "192.168.1.160", "port": 7411}));
        i.participants = Some(json!({"participants": [p], "sources": []}));
        assert!(!codes(&i).contains(&"UNREACHABLE_LOCATORS"));
    }

    #[test]
    fn ttl1_not_forwarded_and_its_cause() {
        let mut i = base();
        i.participants = Some(json!({"participants": [participant("192.168.1.160", 0)],
            "sources": [{"source": "192.168.1.160", "group": "239.255.0.1", "interface": "r2c0123", "ttl": 1}]}));
        i.raise_ttl = false;
        let f: Vec<_> = findings(&i)
            .into_iter()
            .filter(|f| f.code == "TTL1_NOT_FORWARDED")
            .collect();
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("raiseTtl"), "{}", f[0].message);
        // forwarded: no finding
        i.status = Ok(
            json!({"routing": true, "uplink": "eth0", "nodeDevice": "ros2br0", "problems": [],
            "routes": [{"source": "192.168.1.160", "group": "239.255.0.1", "oifs": ["eth0"], "packets": 4}]}),
        );
        assert!(!codes(&i).contains(&"TTL1_NOT_FORWARDED"));
    }

    #[test]
    fn domains_and_pods_and_conflist() {
        let mut i = base();
        i.participants = Some(
            json!({"participants": [participant("192.168.1.160", 0), participant("192.168.1.161", 5)], "sources": []}),
        );
        i.conflist = Some((PathBuf::from("/x/10-calico.conflist"), false));
        i.pods = vec![PodCheck {
            pod: "robots/a".into(),
            ip: "192.168.1.160".parse().unwrap(),
            interface: "ros0".into(),
            netns: "/x".into(),
            has_interface: Some(false),
        }];
        let c = codes(&i);
        assert!(
            c.contains(&"DOMAINS_DIFFER")
                && c.contains(&"CONFLIST_ENTRY_MISSING")
                && c.contains(&"POD_WITHOUT_INTERFACE"),
            "{c:?}"
        );
        // errors first
        assert_eq!(findings(&i)[0].severity, Severity::Error);
    }

    #[test]
    fn agent_problems_and_stale_attachments() {
        let mut i = base();
        i.status = Ok(
            json!({"routing": true, "uplink": "eth0", "nodeDevice": "ros2br0", "routes": [],
            "problems": ["multicast VIFs: Address already in use"]}),
        );
        i.pods = vec![PodCheck {
            pod: "robots/gone".into(),
            ip: "192.168.1.161".parse().unwrap(),
            interface: "ros0".into(),
            netns: "/var/run/netns/cni-1234".into(),
            has_interface: None,
        }];
        let f = findings(&i);
        let problem = f
            .iter()
            .find(|f| f.code == "AGENT_PROBLEM")
            .expect("AGENT_PROBLEM");
        assert!(
            problem.message.contains("Address already in use"),
            "{}",
            problem.message
        );
        let stale = f
            .iter()
            .find(|f| f.code == "STALE_ATTACHMENT")
            .expect("STALE_ATTACHMENT");
        assert_eq!(stale.severity, Severity::Warning);
        assert!(
            stale.message.contains("192.168.1.161")
                && stale.message.contains("robots/gone")
                && stale.message.contains("cni-1234"),
            "{}",
            stale.message
        );
    }

    #[test]
    fn multicast_pressure_names_the_interface_and_the_pod() {
        let mut i = base();
        i.status = Ok(
            json!({"routing": true, "uplink": "eth0", "nodeDevice": "ros2br0", "problems": [], "routes": [],
                "multicastPressure": {"notRtpsPerSecond": 9000, "active": true, "interface": "ros2br0",
                    "sources": [{"source": "192.168.1.160", "interface": "ros2br0", "groups": 4000, "packets": 1800}]}}),
        );
        i.pods = vec![PodCheck {
            pod: "robots/flood".into(),
            ip: "192.168.1.160".parse().unwrap(),
            interface: "ros0".into(),
            netns: "/x".into(),
            has_interface: Some(true),
        }];
        let f = findings(&i);
        let p = f
            .iter()
            .find(|f| f.code == "MULTICAST_PRESSURE")
            .expect("MULTICAST_PRESSURE");
        assert!(
            p.message.contains("9000")
                && p.message.contains("ros2br0")
                && p.message.contains("robots/flood")
                && p.message.contains("4000 groups"),
            "{}",
            p.message
        );
        // no pressure: no finding
        i.status = Ok(json!({"routing": true, "problems": [], "routes": [],
            "multicastPressure": {"notRtpsPerSecond": 3, "active": false, "interface": null, "sources": []}}));
        assert!(!findings(&i).iter().any(|f| f.code == "MULTICAST_PRESSURE"));
    }

    #[test]
    fn ttl1_causes_wrong_interface_no_routing_no_route_and_macvlan() {
        let ttl1 = |ifname: &str| {
            json!({"participants": [participant("192.168.1.160", 0)],
                "sources": [{"source": "192.168.1.160", "group": "239.255.0.1", "interface": ifname, "ttl": 1}]})
        };
        let message = |i: &Inputs| {
            findings(i)
                .into_iter()
                .find(|f| f.code == "TTL1_NOT_FORWARDED")
                .map(|f| f.message)
        };
        let mut i = base();
        // arriving on a primary-network veth: DDS uses the wrong interface
        i.participants = Some(ttl1("cali1234"));
        let m = message(&i).expect("finding");
        assert!(
            m.contains("cali1234") && m.contains("wrong interface"),
            "{m}"
        );
        // on the bridge, but the agent does not route
        i.participants = Some(ttl1("ros2br0"));
        i.status = Ok(
            json!({"routing": false, "uplink": "eth0", "nodeDevice": "ros2br0", "problems": [], "routes": []}),
        );
        let m = message(&i).expect("finding");
        assert!(m.contains("does not route"), "{m}");
        // routing, raiseTtl on, but no route carries it
        i.status = base().status;
        let m = message(&i).expect("finding");
        assert!(m.contains("no multicast route"), "{m}");
        // a macvlan node: L2 carries it, nothing is meant to be forwarded
        i.mode = Some(Mode::Macvlan);
        assert_eq!(message(&i), None);
        i.participants = Some(ttl1("cali1234"));
        assert!(
            message(&i).is_some(),
            "the wrong interface is still wrong on macvlan"
        );
    }

    #[test]
    fn quiet_node_says_so() {
        assert_eq!(codes(&base()), vec!["NO_PARTICIPANTS"]);
    }

    #[test]
    fn doctor_names_peers_unreachable_ones_and_relayed_sources() {
        let relay = json!({"port": 7399, "peers": [
            {"address": "192.168.0.12", "via": "relay", "reachable": true, "sent": 3, "received": 4,
             "sources": ["192.168.2.5"]},
            {"address": "192.168.0.99", "via": "relay", "reachable": false, "sent": 3, "received": 0,
             "sources": []}]});
        let f = relay_findings(&relay);
        let codes: Vec<_> = f.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            [
                "RELAY_PEER_UNREACHABLE",
                "RELAY_PEERS",
                "RELAY_ONLY_PARTICIPANTS"
            ]
        );
        assert!(f[0].message.contains("192.168.0.99"));
        assert!(f[2].message.contains("192.168.2.5 (from 192.168.0.12)"));
        assert!(relay_findings(&json!({"peers": []})).is_empty());
    }
}
