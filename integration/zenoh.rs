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
s = zenoh.open(zenoh.Config())
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
/// and returns how many samples each subscriber got within `secs`.
fn samples(tb: &Testbed, from: &str, subs: &[(&str, &str)], secs: u32) -> Vec<(String, u32)> {
    let py = script(tb);
    let secs_s = secs.to_string();
    let key = format!("r2c/{}", std::process::id());
    let pids: Vec<(String, u32)> = subs
        .iter()
        .map(|(ns, name)| {
            let pid = tb
                .spawn(ns, &["python3", &py, "sub", &key, &secs_s], name)
                .unwrap();
            (name.to_string(), pid)
        })
        .collect();
    let publisher = tb
        .spawn(from, &["python3", &py, "pub", &key, &secs_s], "zenoh-pub")
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
}

#[test]
fn without_extra_multicast_zenoh_pods_on_two_nodes_find_nothing() {
    // the control: RTPS only, as before
    let (tb, a1, b1) = two_nodes(json!({"extraMulticast": []}));
    let got = samples(&tb, &a1.ns, &[(&b1.ns, "zenoh-b1")], 8);
    assert_eq!(got[0].1, 0, "scouting is not carried: {got:?}");
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
