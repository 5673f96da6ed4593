//! Zenoh across computers with stock settings: Zenoh's multicast scouting
//! (224.0.0.224:7446, TTL 1, a link-local group no kernel routes) carried
//! like RTPS discovery (`extraMulticast`, default on), with real Zenoh
//! (eclipse-zenoh from PyPI, pinned in .ci/deps.sh).

use crate::agent::{exactly_once, receivers, send_and_count, Sender};
use crate::common::*;
use ros2_cni::lab::testbed::{Pod, Testbed, LAPTOP_IP};
use serde_json::json;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const SCOUT: (Ipv4Addr, u16) = (Ipv4Addr::new(224, 0, 0, 224), 7446);

/// A Zenoh session with the default configuration (peer mode, multicast
/// scouting on, listening on every address): `sub KEY SECS` prints every
/// sample and ends after 3 distinct ones; `pub KEY SECS` puts a sample
/// every 100 ms.
const SCRIPT: &str = r#"
import sys, time
try:
    import zenoh
except ImportError as e:
    print("no zenoh module: python3 -m pip install eclipse-zenoh (see .ci/deps.sh):", e, flush=True)
    sys.exit(3)
role, key, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
c = zenoh.Config()
if len(sys.argv) > 4 and sys.argv[4] == "rmw":
    # rmw_zenoh's stock session (DEFAULT_RMW_ZENOH_SESSION_CONFIG.json5)
    c.insert_json5("mode", '"peer"')
    c.insert_json5("connect/endpoints", '["tcp/localhost:7447"]')
    c.insert_json5("listen/endpoints", '["tcp/localhost:0"]')
    c.insert_json5("scouting/multicast/enabled", "false")
    c.insert_json5("scouting/gossip/enabled", "true")
    c.insert_json5("scouting/gossip/target", '{"router": ["router", "peer"], "peer": ["router"]}')
s = zenoh.open(c)
deadline = time.time() + secs
if role == "sub":
    got = set()
    def on_sample(sample):
        got.add(sample.payload.to_string())
    sub = s.declare_subscriber(key, on_sample)
    while time.time() < deadline and len(got) < 3:
        time.sleep(0.05)
    print("received", len(got), flush=True)
else:
    p = s.declare_publisher(key)
    i = 0
    while time.time() < deadline:
        p.put("m%d" % i)
        i += 1
        time.sleep(0.1)
s.close()
"#;

fn script(tb: &Testbed) -> String {
    let p = tb.dir.join("zenoh_session.py");
    std::fs::write(&p, SCRIPT).unwrap();
    p.to_string_lossy().into_owned()
}

/// Starts subscribers in `subs` (netns, log name) and a publisher in `from`,
/// and returns how many samples each subscriber got within `secs` (times
/// `time_scale()`).
fn samples(tb: &Testbed, from: &str, subs: &[(&str, &str)], secs: u32) -> Vec<(String, u32)> {
    samples_of(tb, "default", from, subs, secs)
}

/// `samples` with sessions of `flavour`: "default" (`zenoh.Config()`) or
/// "rmw" (rmw_zenoh's stock session keys).
fn samples_of(
    tb: &Testbed,
    flavour: &str,
    from: &str,
    subs: &[(&str, &str)],
    secs: u32,
) -> Vec<(String, u32)> {
    let py = script(tb);
    // the sessions' window, stretched where everything runs slower (in the
    // VM, starting Python and importing zenoh alone takes 5-6.5 s); a
    // subscriber that has its samples ends early, so natively nothing waits
    let secs = (f64::from(secs) * time_scale()).ceil() as u32;
    let secs_s = secs.to_string();
    let key = format!("r2c/{}", std::process::id());
    let pids: Vec<(String, u32)> = subs
        .iter()
        .map(|(ns, name)| {
            let pid = tb
                .spawn(ns, &["python3", &py, "sub", &key, &secs_s, flavour], name)
                .unwrap();
            (name.to_string(), pid)
        })
        .collect();
    let publisher = tb
        .spawn(
            from,
            &["python3", &py, "pub", &key, &secs_s, flavour],
            "zenoh-pub",
        )
        .unwrap();
    let limit = Duration::from_secs(u64::from(secs) + 10);
    let out = pids
        .into_iter()
        .map(|(name, pid)| {
            tb.wait_exit(pid, limit);
            let log = tb.log(&name);
            assert!(!log.contains("no zenoh module"), "{log}");
            let n = log
                .lines()
                .find_map(|l| l.strip_prefix("received ")?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} did not finish: {log}"));
            (name, n)
        })
        .collect();
    tb.wait_exit(publisher, limit);
    out
}

fn two_nodes(extra: serde_json::Value) -> (Testbed, Pod, Pod) {
    let tb = bed(2);
    for i in 1..=2 {
        tb.start_agent(tb.node(i), &extra).unwrap();
    }
    let a1 = tb.add_pod(&spec("za1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("zb1", 2)).unwrap();
    (tb, a1, b1)
}

#[test]
fn zenoh_peers_with_the_default_config_discover_across_nodes_and_the_laptop() {
    let (tb, a1, b1) = two_nodes(json!({}));
    let lap = tb.laptop.clone().unwrap();
    let t0 = Instant::now();
    let got = samples(
        &tb,
        &a1.ns,
        &[(&b1.ns, "zenoh-b1"), (&lap, "zenoh-laptop")],
        20,
    );
    for (name, n) in &got {
        assert_eq!(*n, 3, "{name} got {n} of 3 samples: {got:?}");
    }
    eprintln!(
        "zenoh: pod on node 2 and the laptop got samples from a pod on node 1 within {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // the agents counted the scouting they carried
    let st = tb.agent_status(tb.node(1)).unwrap();
    let carried = st["forwarded"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["group"] == "224.0.0.224")
        .filter_map(|f| f["packets"].as_u64())
        .sum::<u64>();
    assert!(carried > 0, "no Zenoh scouting counted: {st}");
    // doctor lists the pods' scouting sessions (the agents read their
    // SCOUTs, and forget a source a minute after its last one) and has
    // nothing to say against them. The sessions above have ended (in the
    // VM, more than a minute before doctor gets to node 2): a session in
    // each pod scouts while doctor looks.
    let py = script(&tb);
    let live: Vec<u32> = [&a1, &b1]
        .iter()
        .map(|p| {
            let name = format!("zenoh-live-{}", p.name);
            tb.spawn(&p.ns, &["python3", &py, "sub", "r2c/live", "600"], &name)
                .unwrap()
        })
        .collect();
    for (node, pod) in [(1, &a1), (2, &b1)] {
        let deadline = Instant::now() + Duration::from_secs_f64(30.0 * time_scale());
        let rep = loop {
            let (_, rep) = doctor(&tb, node);
            let scouts = rep["zenohScouts"].as_array().unwrap();
            if scouts.iter().any(|z| {
                z["pod"].as_str().is_some_and(|p| p.contains(&pod.name))
                    && z["group"] == "224.0.0.224:7446"
                    && z["looksFor"].as_array().is_some_and(|l| !l.is_empty())
            }) {
                break rep;
            }
            assert!(
                Instant::now() < deadline,
                "node {node}: no scout of pod {}: {scouts:?}",
                pod.name
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        // nor are the TTL-1 scouts taken for RTPS nothing forwards
        for code in ["ZENOH_SCOUTING_NOT_CARRIED", "TTL1_NOT_FORWARDED"] {
            assert!(!rep["findings"].to_string().contains(code), "{rep}");
        }
    }
    for pid in live {
        tb.kill(pid);
    }
}

#[test]
fn without_extra_multicast_zenoh_pods_on_two_nodes_find_nothing() {
    // the control: RTPS only, as before
    let (tb, a1, b1) = two_nodes(json!({"extraMulticast": []}));
    let got = samples(&tb, &a1.ns, &[(&b1.ns, "zenoh-b1")], 8);
    assert_eq!(got[0].1, 0, "scouting is not carried: {got:?}");
    // and doctor says so, naming the pod
    let (_, rep) = doctor(&tb, 1);
    let msg = finding(&rep, "ZENOH_SCOUTING_NOT_CARRIED")["message"]
        .as_str()
        .unwrap();
    assert!(
        msg.contains(&a1.name) && msg.contains("224.0.0.224:7446"),
        "{msg}"
    );
}

#[test]
fn a_zenoh_scout_arrives_exactly_once_in_each_other_pod_and_on_the_laptop() {
    let tb = bed(3);
    for i in 1..=3 {
        tb.start_agent(tb.node(i), &json!({})).unwrap();
    }
    let a1 = tb.add_pod(&spec("za1", 1)).unwrap();
    let a2 = tb.add_pod(&spec("za2", 1)).unwrap();
    let b1 = tb.add_pod(&spec("zb1", 2)).unwrap();
    let c1 = tb.add_pod(&spec("zc1", 3)).unwrap();
    let lap = tb.laptop.clone().unwrap();
    let rx = receivers(
        &[
            ("a2", &a2.ns, ip_of(&a2)),
            ("b1", &b1.ns, ip_of(&b1)),
            ("c1", &c1.ns, ip_of(&c1)),
            ("laptop", &lap, LAPTOP_IP),
        ],
        SCOUT.0,
        SCOUT.1,
    );
    let got = send_and_count(Sender(&a1.ns, ip_of(&a1), 1), SCOUT, 5, &rx, "scout");
    for (name, seen) in &got {
        assert_eq!(seen, &exactly_once(5), "pod a1 -> {name}: {got:?}");
    }
    // and from the LAN into every pod
    let rx = receivers(
        &[
            ("a1", &a1.ns, ip_of(&a1)),
            ("b1", &b1.ns, ip_of(&b1)),
            ("c1", &c1.ns, ip_of(&c1)),
        ],
        SCOUT.0,
        SCOUT.1,
    );
    let got = send_and_count(Sender(&lap, LAPTOP_IP, 1), SCOUT, 5, &rx, "lan-scout");
    for (name, seen) in &got {
        assert_eq!(seen, &exactly_once(5), "laptop -> {name}: {got:?}");
    }
    // another port of the same link-local group stays on its network
    let rx = receivers(&[("b1", &b1.ns, ip_of(&b1))], SCOUT.0, 7447);
    let got = send_and_count(
        Sender(&a1.ns, ip_of(&a1), 1),
        (SCOUT.0, 7447),
        3,
        &rx,
        "other-port",
    );
    assert!(got["b1"].is_empty(), "only the configured port: {got:?}");
}

#[test]
fn zenoh_scouting_is_held_to_the_pod_discovery_limit_and_counted_per_pod() {
    let limit = json!({"podDiscoveryRate": 5, "podDiscoveryBurst": 5});
    let (tb, a1, b1) = two_nodes(limit);
    // a pod's limit rule and counters come with its agent's next pass
    let pod_listed = |st: &serde_json::Value, key: &str| {
        st[key]
            .as_array()
            .is_some_and(|v| v.iter().any(|p| p["pod"] == "za1"))
    };
    wait_for(8, "za1's limit and count rules", || {
        let st = tb.agent_status(tb.node(1)).unwrap();
        pod_listed(&st["discoveryLimits"], "pods") && pod_listed(&st, "discoveryDatagrams")
    });
    let rx = receivers(&[("b1", &b1.ns, ip_of(&b1))], SCOUT.0, SCOUT.1);
    let n = 40;
    let got = send_and_count(Sender(&a1.ns, ip_of(&a1), 1), SCOUT, n, &rx, "burst");
    let through = got["b1"].len() as u32;
    assert!(
        (1..n / 2).contains(&through),
        "the pod's limit (5/s, burst 5) holds Zenoh scouting too: {through} of {n} crossed"
    );
    let pod = |st: &serde_json::Value, key: &str| -> serde_json::Value {
        let list = if key == "limits" {
            &st["discoveryLimits"]["pods"]
        } else {
            &st["discoveryDatagrams"]
        };
        list.as_array()
            .and_then(|v| v.iter().find(|p| p["pod"] == "za1").cloned())
            .unwrap_or_default()
    };
    wait_for(6, "the limit's drops and the pod's sent count", || {
        let st = tb.agent_status(tb.node(1)).unwrap();
        pod(&st, "limits")["limitedPackets"].as_u64() >= Some(u64::from(n / 2))
            && pod(&st, "counts")["sent"].as_u64() >= Some(u64::from(n))
    });
}

/// A Zenoh router run from a configuration file: it stands in for zenohd
/// (the pods' routers, through `zenohPodRouter`), for the nodes' routers
/// (configured by `ros2-cni zenoh-router-config`) and for the laptop's.
const ROUTER: &str = r#"
import sys, time
import zenoh
s = zenoh.open(zenoh.Config.from_file(sys.argv[1]))
print("router", s.zid(), flush=True)
while True:
    time.sleep(3600)
"#;

fn router_script(tb: &Testbed) -> String {
    let p = tb.dir.join("zenoh_router.py");
    std::fs::write(&p, ROUTER).unwrap();
    p.to_string_lossy().into_owned()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// The pids of the pods' routers the agent of `node` reports running.
fn pod_routers(tb: &Testbed, node: usize) -> Vec<u32> {
    let st = tb.agent_status(tb.node(node)).unwrap();
    st["zenoh"]["pods"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["pid"].as_u64().map(|p| p as u32))
                .collect()
        })
        .unwrap_or_default()
}

/// Where deploy/zenoh/zenoh-router.yaml's init container writes the node
/// router's configuration and its zenohd reads it.
const MANIFEST_ROUTER_CONFIG: &str = "/run/zenoh/router.json5";

/// The command line of the manifest's "config" init container; checks on
/// the way that the router container reads what it writes.
fn manifest_config_command() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/zenoh/zenoh-router.yaml"
    );
    let y: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let spec = &y["spec"]["template"]["spec"];
    let cmd = |list: &str, name: &str| -> Vec<String> {
        let c = spec[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {list} {name} in {path}"));
        serde_json::from_value(c["command"].clone()).unwrap()
    };
    let zenohd = cmd("containers", "zenohd");
    assert_eq!(zenohd[1..], ["--config", MANIFEST_ROUTER_CONFIG]);
    let config = cmd("initContainers", "config");
    assert!(
        config.contains(&MANIFEST_ROUTER_CONFIG.to_string()),
        "{config:?}"
    );
    config
}

/// Agents with `zenohRouter` on two nodes, each node's router configured
/// by `ros2-cni zenoh-router-config` (the other node and the laptop listed
/// as `peers`), and the laptop's own router.
fn zenoh_routed_bed() -> (Testbed, String) {
    let tb = bed(2);
    let router = router_script(&tb);
    for i in 1..=2 {
        let n = tb.node(i);
        let other = tb.node(3 - i).ip.to_string();
        let extra = json!({
            "zenohRouter": 7447,
            "zenohPodRouter": ["python3", router, "{config}"],
            "peers": [other, LAPTOP_IP.to_string()],
        });
        tb.start_agent(n, &extra).unwrap();
        // the node router's configuration, made by the command line of
        // deploy/zenoh/zenoh-router.yaml's "config" init container
        let conf = n.data_dir.join("zenoh-router.json5");
        let argv: Vec<String> = manifest_config_command()
            .into_iter()
            .map(|a| match a.as_str() {
                "/ros2-cni" => BIN.to_string(),
                "/etc/ros2-cni/config.json" => {
                    n.data_dir.join("agent.json").to_string_lossy().into()
                }
                "$(NODE_NAME)" => format!("n{i}"),
                MANIFEST_ROUTER_CONFIG => conf.to_string_lossy().into(),
                _ => a,
            })
            .collect();
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{argv:?}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&conf).unwrap()).unwrap();
        assert_eq!(
            v["connect"]["endpoints"],
            json!([format!("tcp/{other}:7447"), format!("tcp/{LAPTOP_IP}:7447")])
        );
        tb.spawn(
            &n.ns,
            &["python3", &router, conf.to_str().unwrap()],
            &format!("zenoh-router-n{i}"),
        )
        .unwrap();
    }
    let lap = tb.laptop.clone().unwrap();
    let conf = tb.dir.join("laptop-router.json5");
    let v = json!({
        "mode": "router",
        "listen": {"endpoints": ["tcp/0.0.0.0:7447"]},
        "scouting": {"multicast": {"enabled": false}},
    });
    std::fs::write(&conf, v.to_string()).unwrap();
    tb.spawn(
        &lap,
        &["python3", &router, conf.to_str().unwrap()],
        "zenoh-router-laptop",
    )
    .unwrap();
    (tb, router)
}

#[test]
fn rmw_zenoh_sessions_reach_each_other_through_the_pods_and_the_nodes_routers() {
    let (tb, _) = zenoh_routed_bed();
    let a1 = tb.add_pod(&spec("ra1", 1)).unwrap();
    let a2_spec = spec("ra2", 1);
    let a2 = tb.add_pod(&a2_spec).unwrap();
    let b1 = tb.add_pod(&spec("rb1", 2)).unwrap();
    wait_for(10, "a router in each pod", || {
        pod_routers(&tb, 1).len() == 2 && pod_routers(&tb, 2).len() == 1
    });
    // the pod's router listens on its loopback, [::1] too where lo has IPv6
    let dir = tb.node(1).data_dir.join("ros2-cni/zenoh");
    let v6 = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &a1.ns,
            "cat",
            "/proc/sys/net/ipv6/conf/lo/disable_ipv6",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap();
    let confs: Vec<serde_json::Value> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json5"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    assert_eq!(confs.len(), 2, "{dir:?}");
    let mut listen = vec![json!("tcp/127.0.0.1:7447")];
    if v6 {
        listen.push(json!("tcp/[::1]:7447"));
    }
    for c in &confs {
        assert_eq!(c["listen"]["endpoints"], json!(listen), "{c}");
        let node = format!("tcp/{}:7447", tb.node(1).ip);
        assert_eq!(c["connect"]["endpoints"], json!([node]), "{c}");
    }
    let lap = tb.laptop.clone().unwrap();
    let t0 = Instant::now();
    // rmw_zenoh's stock sessions: a pod's neighbour on the same node, a pod
    // on the other node, a session on the laptop (its router a peer)
    let got = samples_of(
        &tb,
        "rmw",
        &a1.ns,
        &[
            (&a2.ns, "rmw-same-node"),
            (&b1.ns, "rmw-other-node"),
            (&lap, "rmw-laptop"),
        ],
        15,
    );
    for (name, n) in &got {
        assert_eq!(*n, 3, "{name} got {n} of 3 samples: {got:?}");
    }
    eprintln!(
        "rmw_zenoh: same node, other node and laptop got samples within {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // the pod is deleted: its router stops with it
    let before = pod_routers(&tb, 1);
    tb.del_pod(&a2, &a2_spec).unwrap();
    wait_for(10, "the deleted pod's router stops", || {
        pod_routers(&tb, 1).len() == 1
    });
    let gone: Vec<u32> = before
        .into_iter()
        .filter(|p| !pod_routers(&tb, 1).contains(p))
        .collect();
    assert_eq!(gone.len(), 1);
    wait_for(5, "its process is gone", || !alive(gone[0]));
}

#[test]
fn without_a_router_at_its_localhost_an_rmw_zenoh_session_in_a_pod_finds_nothing() {
    // the control: the same nodes' routers, agents without zenohRouter
    let tb = bed(2);
    for i in 1..=2 {
        tb.start_agent(tb.node(i), &json!({})).unwrap();
    }
    let a1 = tb.add_pod(&spec("rc1", 1)).unwrap();
    let a2 = tb.add_pod(&spec("rc2", 1)).unwrap();
    let got = samples_of(&tb, "rmw", &a1.ns, &[(&a2.ns, "rmw-no-router")], 8);
    assert_eq!(got[0].1, 0, "{got:?}");
}

#[test]
fn a_zenoh_router_port_nothing_listens_on_is_a_doctor_finding_add_succeeds_and_kill_9_takes_the_routers(
) {
    let tb = bed(1);
    let router = router_script(&tb);
    let agent = tb
        .start_agent(
            tb.node(1),
            &json!({"zenohRouter": 7999, "zenohPodRouter": ["python3", router, "{config}"]}),
        )
        .unwrap();
    let p = tb.add_pod(&spec("rz1", 1)).unwrap();
    assert!(pod_has_link(&p.ns, "ros0"));
    wait_for(10, "the pod's router runs", || {
        pod_routers(&tb, 1).len() == 1
    });
    let (code, report) = doctor(&tb, 1);
    let f = finding(&report, "ZENOH_ROUTER_DOWN");
    assert_eq!(code, 1, "an error finding: {report}");
    let msg = f["message"].as_str().unwrap();
    let node_ip = tb.node(1).ip;
    assert!(
        msg.contains(&format!("{node_ip}:7999")) && msg.contains("refused"),
        "{msg}"
    );
    let pid = pod_routers(&tb, 1)[0];
    // kill -9 the agent: the kernel takes its pods' routers with it
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(5, "the pod's router dies with its agent", || !alive(pid));
}

#[test]
fn a_zenoh_pod_router_that_cannot_start_is_named_by_doctor_and_add_succeeds() {
    let tb = bed(1);
    tb.start_agent(
        tb.node(1),
        &json!({"zenohRouter": 7447, "zenohPodRouter": ["/nonexistent/zenohd", "-c", "{config}"]}),
    )
    .unwrap();
    let p = tb.add_pod(&spec("rz2", 1)).unwrap();
    assert!(pod_has_link(&p.ns, "ros0"));
    wait_for(10, "the agent reports the failed start", || {
        tb.agent_status(tb.node(1)).unwrap()["zenoh"]["pods"][0]["lastError"]
            .as_str()
            .is_some()
    });
    let (_, report) = doctor(&tb, 1);
    let f = finding(&report, "ZENOH_POD_ROUTER_DOWN");
    let msg = f["message"].as_str().unwrap();
    assert!(
        msg.contains("/nonexistent/zenohd") && msg.contains("No such file"),
        "{msg}"
    );
}

#[test]
fn zenoh_peers_discover_through_the_relay_across_a_switch_that_drops_multicast() {
    // lanMulticast false behind a switch that drops multicast: the relay
    // alone carries the pods' scouting (extraMulticast), TCP follows
    let tb = bed_with(2, |o| o.laptop = false);
    crate::relay::drop_multicast(&tb);
    for i in 1..=2 {
        let cfg = crate::relay::relay_cfg(&tb, i, false);
        tb.start_agent(tb.node(i), &cfg).unwrap();
    }
    let a1 = tb.add_pod(&spec("zr1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("zr2", 2)).unwrap();
    let got = samples(&tb, &a1.ns, &[(&b1.ns, "zenoh-relay-b1")], 20);
    assert_eq!(got[0].1, 3, "{got:?}");
    // the pods ran Zenoh only: what node 1 relayed to node 2 was scouting
    let st = tb.agent_status(tb.node(1)).unwrap();
    let to_n2 = st["relay"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == tb.node(2).ip.to_string())
        .unwrap_or_else(|| panic!("node 2 is no peer: {st}"))
        .clone();
    assert!(to_n2["sent"].as_u64().unwrap() > 0, "{to_n2}");
}
