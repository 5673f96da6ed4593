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
