//! Section 6c: the relay (issue 20): what relaying RTPS costs each node's
//! agent, and discovery through it against LAN multicast, in one run.

use crate::agent::{cpu_seconds, load, pod_pair, receiver, spdp_payload, unlimited};
use crate::report::{Cmp, Section};
use crate::Plan;
use std::time::Duration;

pub fn relay(plan: &Plan) -> Section {
    let rate = plan.agent_rate;
    let w = plan.agent_window;
    let mut s = Section::new(
        "6c",
        "The relay",
        &format!(
            "Two nodes, agents with the discovery limits off. **LAN multicast**: the \
             default forwarder. **Relay**: the switch drops all multicast (an nft rule on the \
             LAN bridge), `lanMulticast: false`, each node the other's peer, \
             `relayPeerRate: 0` (the per-peer limit off: what is measured is relaying). \
             **Discovery**: `ddsperf` ping in pod A (node 1), pong in pod B (node 2), {} \
             repetitions each way of carrying it, a fresh domain each. **CPU**: pod A sends \
             ~300-byte SPDP datagrams (TTL 1) at {rate}/s for {w} s ({} repetitions); CPU of \
             each node's agent from the scheduler's exact CPU-time clock (relay thread, \
             discovery capture and everything else the agent does), as % of one core.",
            plan.discovery_runs, plan.agent_reps
        ),
    );
    let mut discovery: Vec<Vec<f64>> = vec![];
    let mut failures = 0;
    let (mut cpu1, mut cpu2, mut arrived) = (vec![], vec![], vec![]);
    for relayed in [false, true] {
        let tb = plan.bed(2, false);
        if relayed {
            tb.drop_multicast().expect("a switch that drops multicast");
        }
        let pids: Vec<u32> = [1, 2]
            .iter()
            .map(|&i| {
                let mut extra = unlimited();
                if relayed {
                    let other = tb.node(3 - i).ip.to_string();
                    extra["peers"] = serde_json::json!([other]);
                    extra["lanMulticast"] = false.into();
                    extra["relayPeerRate"] = 0.into();
                }
                tb.start_agent(tb.node(i), &extra).expect("agent")
            })
            .collect();
        let (a, a_ip, b, b_ip) = pod_pair(&tb);
        let mut t = vec![];
        if ros2_cni::lab::probe::have_ddsperf() {
            for rep in 0..plan.discovery_runs {
                let dom = 160 + rep as u32 % 60;
                match ros2_cni::lab::probe::ddsperf_probe(
                    &a.ns,
                    &b.ns,
                    dom,
                    Duration::from_secs(10),
                ) {
                    Ok(d) if d.discovered() => t.push(d.seconds.unwrap_or(f64::NAN) * 1e3),
                    _ => failures += 1,
                }
            }
        }
        let label = if relayed { "relay" } else { "LAN multicast" };
        s.value(&format!("{label}: time to discover pod → pod"), "ms", &t);
        discovery.push(t);
        if !relayed {
            continue;
        }
        let payload = spdp_payload(a_ip);
        for _ in 0..plan.agent_reps {
            let rx = [receiver(&b.ns, b_ip)];
            let before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
            let t0 = std::time::Instant::now();
            let (sent, _, got) = load(&a.ns, a_ip, &payload, rate, w, &rx);
            let dt = t0.elapsed().as_secs_f64();
            let used: Vec<f64> = pids
                .iter()
                .zip(&before)
                .map(|(p, b)| (cpu_seconds(*p) - b) / dt * 100.0)
                .collect();
            cpu1.push(used[0]);
            cpu2.push(used[1]);
            arrived.push(got[0] as f64 / sent as f64 * 100.0);
        }
    }
    let r = s.ratio(
        "discovery: relay / LAN multicast",
        &discovery[1],
        &discovery[0],
    );
    let c1 = s
        .value(
            &format!("relay: sending node's agent CPU at {rate}/s"),
            "% of a core",
            &cpu1,
        )
        .map(|x| x.median);
    let c2 = s
        .value(
            &format!("relay: receiving node's agent CPU at {rate}/s"),
            "% of a core",
            &cpu2,
        )
        .map(|x| x.median);
    s.value(
        &format!("relay: arrived at pod B at {rate}/s"),
        "% of sent",
        &arrived,
    );
    s.goal(
        &format!("relay at {rate}/s: < 5 % of a core on each side"),
        c1.zip(c2).map(|(a, b)| a.max(b)),
        "% of a core",
        Cmp::AtMost,
        5.0,
        "the higher of the two agents' medians",
    );
    s.goal(
        "discovery through the relay ≤ 1.2× LAN multicast",
        r,
        "×",
        Cmp::AtMost,
        1.2,
        "ratio of median ddsperf discovery times",
    );
    s.goal(
        "check: every probe discovers, relayed or not",
        Some(if failures == 0 && !discovery[1].is_empty() {
            1.0
        } else {
            0.0
        }),
        "(1 = yes)",
        Cmp::AtLeast,
        1.0,
        "all repetitions",
    );
    s
}
