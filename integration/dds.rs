//! Real DDS across robot computers: stock Cyclone DDS (ddsperf) with no DDS
//! configuration in the pods, under a Wi-Fi-like switch.

use crate::common::*;
use ros2_cni::lab::probe::ddsperf_probe;
use serde_json::json;
use std::time::Duration;

#[test]
fn cyclone_dds_discovers_across_nodes_and_with_the_laptop_on_wifi() {
    assert!(
        ros2_cni::lab::probe::have_ddsperf(),
        "ddsperf missing: apt-get install cyclonedds-tools"
    );
    let tb = bed_with(2, |o| o.wifi = true);
    for i in 1..=2 {
        tb.start_agent(tb.node(i), &json!({})).unwrap();
    }
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let lap = tb.laptop.clone().unwrap();
    let t = Duration::from_secs(10);
    for (name, from, to, dom) in [
        ("pod a1 -> pod b1 (other node)", &a1.ns, &b1.ns, 0),
        ("pod b1 -> pod a1 (other node)", &b1.ns, &a1.ns, 1),
        ("pod a1 -> laptop", &a1.ns, &lap, 2),
        ("laptop -> pod b1", &lap, &b1.ns, 3),
    ] {
        let d = ddsperf_probe(from, to, dom, t).unwrap();
        assert!(
            d.discovered(),
            "{name}: no discovery / no round trips:\n{}",
            d.output
        );
        eprintln!("{name}: discovered after {:.2} s", d.seconds.unwrap());
    }
    assert_eq!(
        tb.wifi_drops().unwrap(),
        0,
        "nothing left a node with a foreign MAC"
    );
}

#[test]
fn without_the_agent_discovery_across_nodes_fails() {
    // the control experiment: the same pods, no multicast routing
    let tb = bed(2);
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let d = ddsperf_probe(&a1.ns, &b1.ns, 0, Duration::from_secs(4)).unwrap();
    assert!(
        !d.discovered(),
        "pods must not discover each other without the agent:\n{}",
        d.output
    );
}

/// Builds (once) and returns the Fast DDS test participant.
pub fn fastdds_participant() -> std::path::PathBuf {
    let build =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/fastdds/build.sh");
    let out = std::process::Command::new("bash")
        .arg(build)
        .output()
        .expect("run build.sh");
    assert!(
        out.status.success(),
        "building the Fast DDS participant (apt-get install libfastrtps-dev g++): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs the Fast DDS participant in `x` and `y` for `secs`; Ok when both
/// matched the other's writer and reader and received 10 samples.
pub fn fastdds_pair(
    tb: &ros2_cni::lab::testbed::Testbed,
    x: &str,
    y: &str,
    dom: &str,
    secs: u32,
) -> Result<(), String> {
    let bin = fastdds_participant();
    let mut pids = vec![];
    for (ns, tag) in [(x, "x"), (y, "y")] {
        let secs = secs.to_string();
        // a fixed run: if one side stopped at its own success, the other would lose it
        let cmd = [
            bin.to_str().unwrap(),
            "--domain",
            dom,
            "--duration",
            &secs,
            "--rate",
            "10",
            "--min-matched",
            "2",
            "--min-received",
            "10",
            "--name",
            tag,
        ];
        let log = format!("fastdds-{dom}-{tag}");
        pids.push((tb.spawn(ns, &cmd, &log).unwrap(), log));
    }
    let mut errors = vec![];
    for (pid, log) in pids {
        let st = tb.wait_exit(pid, Duration::from_secs(secs as u64 + 15));
        let out = tb.log(&log);
        if !(st.is_some_and(|s| s.success()) && out.contains("ok=1")) {
            errors.push(out);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n---\n"))
    }
}

#[test]
fn fast_dds_with_ttl_1_discovers_and_exchanges_samples_across_nodes_and_with_the_laptop() {
    let tb = bed_with(2, |o| o.wifi = true);
    for i in 1..=2 {
        tb.start_agent(tb.node(i), &json!({})).unwrap();
    }
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    let lap = tb.laptop.clone().unwrap();
    let ttl_before: Vec<u64> = (1..=2)
        .map(|i| {
            tb.agent_status(tb.node(i)).unwrap()["ttlRaised"]
                .as_u64()
                .unwrap()
        })
        .collect();
    for (what, x, y, dom) in [
        ("pod a1 <-> pod b1 (other node)", &a1.ns, &b1.ns, "21"),
        ("pod a1 <-> laptop", &a1.ns, &lap, "22"),
    ] {
        if let Err(out) = fastdds_pair(&tb, x, y, dom, 6) {
            panic!("{what}: Fast DDS did not discover/match/receive:\n{out}");
        }
    }
    // the TTL-1 path was taken on both nodes
    std::thread::sleep(Duration::from_millis(2500));
    for i in 1..=2 {
        let now = tb.agent_status(tb.node(i)).unwrap()["ttlRaised"]
            .as_u64()
            .unwrap();
        assert!(
            now > ttl_before[i - 1],
            "node {i}: no TTL-1 RTPS packet was raised ({now})"
        );
    }
    assert_eq!(tb.wifi_drops().unwrap(), 0);
}

#[test]
fn without_the_ttl_rule_fast_dds_cannot_cross_nodes_but_cyclone_can() {
    // the control experiment for the TTL rule: Fast DDS sends discovery with TTL 1
    let tb = bed(2);
    for i in 1..=2 {
        tb.start_agent(tb.node(i), &json!({"raiseTtl": false}))
            .unwrap();
    }
    let a1 = tb.add_pod(&spec("a1", 1)).unwrap();
    let b1 = tb.add_pod(&spec("b1", 2)).unwrap();
    assert!(
        fastdds_pair(&tb, &a1.ns, &b1.ns, "23", 4).is_err(),
        "Fast DDS must not cross nodes without the TTL rule"
    );
    let d = ddsperf_probe(&a1.ns, &b1.ns, 24, Duration::from_secs(8)).unwrap();
    assert!(
        d.discovered(),
        "Cyclone (TTL 32) still crosses:\n{}",
        d.output
    );
}
