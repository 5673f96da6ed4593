//! Section 6b: the two multicast forwarders side by side, in one run: the
//! kernel's multicast routing and the nftables dup rules, each where this
//! kernel offers it (a kernel without `CONFIG_IP_MROUTE` has only the
//! second; Debian's 6.1 kernel in the VM of docs/kernels.md has both).

use crate::agent::{cpu_seconds, load, pod_pair, receiver, spdp_payload, unlimited};
use crate::report::Section;
use crate::Plan;
use ros2_cni::lab::testbed::LAPTOP_IP;
use std::time::{Duration, Instant};

/// Softirq time of the whole machine so far, in seconds (all CPUs).
fn softirq_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // "cpu  user nice system idle iowait irq softirq ..."
    let v = stat
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(7))
        .and_then(|x| x.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    v / hz
}

pub fn forwarders(plan: &Plan) -> Section {
    let rate = plan.agent_rate;
    let w = plan.agent_window;
    let flood = plan.forwarder_flood_rate;
    let mut s = Section::new(
        "6b",
        "The two multicast forwarders",
        &format!(
            "Each forwarder this kernel offers (`multicastForwarder` \"kernel\": the kernel's \
             multicast routing, `CONFIG_IP_MROUTE`; \"nftables\": dup rules), on a fresh test bed \
             of two nodes and a laptop, agents with the discovery limits off. **Forwarded**: pod \
             A (node 1) sends ~300-byte SPDP datagrams (TTL 1) as fast as asked up to {flood}/s for \
             {w} s; pod B (node 2, through both nodes' forwarders) counts what arrives: datagrams \
             forwarded per second. **At {rate}/s**: the same at {rate}/s; CPU of node 1's agent \
             (utime+stime) and the machine's softirq time (/proc/stat, all CPUs: the forwarding \
             itself, both nodes and the senders' stacks), each as % of one core. **Discovery**: \
             `ddsperf` ping in pod A, pong in pod B (src/lab/probe.rs), {} repetitions, a fresh \
             domain each. {} repetitions of the load runs.",
            plan.discovery_runs, plan.agent_reps
        ),
    );
    let mut ran = vec![];
    for kind in ["kernel", "nftables"] {
        let tb = plan.bed(2, true);
        let mut extra = unlimited();
        extra["multicastForwarder"] = kind.into();
        let pid = match tb.start_agent(tb.node(1), &extra) {
            Ok(pid) => pid,
            Err(e) => {
                s.note(format!(
                    "{kind} forwarder: not available here (the agent says: {})",
                    e.to_string().lines().last().unwrap_or_default()
                ));
                continue;
            }
        };
        tb.start_agent(tb.node(2), &extra).expect("agent 2");
        let (a, a_ip, b, b_ip) = pod_pair(&tb);
        let running = tb
            .agent_status(tb.node(1))
            .ok()
            .and_then(|st| st["forwarder"]["kind"].as_str().map(str::to_owned));
        assert_eq!(running.as_deref(), Some(kind), "the agent runs {kind}");
        let payload = spdp_payload(a_ip);
        let (mut fwd_rate, mut agent_cpu, mut softirq, mut arrived) =
            (vec![], vec![], vec![], vec![]);
        for _ in 0..plan.agent_reps {
            let rx = [receiver(&b.ns, b_ip)];
            let t0 = Instant::now();
            let (_, _, got) = load(&a.ns, a_ip, &payload, flood, w, &rx);
            fwd_rate.push(got[0] as f64 / t0.elapsed().as_secs_f64());
            drop(rx);

            let rx = [
                receiver(&b.ns, b_ip),
                receiver(&tb.laptop.clone().unwrap(), LAPTOP_IP),
            ];
            let (c0, q0, t0) = (cpu_seconds(pid), softirq_seconds(), Instant::now());
            let (sent, _, got) = load(&a.ns, a_ip, &payload, rate, w, &rx);
            let dt = t0.elapsed().as_secs_f64();
            agent_cpu.push((cpu_seconds(pid) - c0) / dt * 100.0);
            softirq.push((softirq_seconds() - q0) / dt * 100.0);
            arrived.push(got[0] as f64 / sent as f64 * 100.0);
        }
        s.value(
            &format!("{kind}: forwarded pod → pod across nodes"),
            "datagrams/s",
            &fwd_rate,
        );
        s.value(
            &format!("{kind}: agent CPU at {rate}/s"),
            "% of a core",
            &agent_cpu,
        );
        s.value(
            &format!("{kind}: softirq CPU at {rate}/s (machine)"),
            "% of a core",
            &softirq,
        );
        s.value(
            &format!("{kind}: arrived at pod B at {rate}/s"),
            "% of sent",
            &arrived,
        );
        let mut t = vec![];
        let mut failures = 0;
        if ros2_cni::lab::probe::have_ddsperf() {
            for rep in 0..plan.discovery_runs {
                let dom = 140 + rep as u32 % 60;
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
            s.value(&format!("{kind}: time to discover pod → pod"), "ms", &t);
            s.single(
                &format!("{kind}: probes without discovery"),
                "count",
                failures as f64,
            );
        }
        ran.push(kind);
    }
    s.note(format!(
        "forwarders measured in this run: {}",
        ran.join(", ")
    ));
    s
}
