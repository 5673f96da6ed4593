//! Section 6c: the relay (issue 20): what relaying RTPS costs each node's
//! agent, and discovery through it against LAN multicast, in one run.

use crate::agent::{
    clock_seconds, cpu_seconds, discovery_probes, load, pod_pair, receiver, spdp_payload, unlimited,
};
use crate::report::{Cmp, Section};
use crate::Plan;
use ros2_cni::config::{DEFAULT_BRIDGE, DEFAULT_GROUP};
use ros2_cni::kernel::netns::Netns;
use ros2_cni::kernel::packet;
use ros2_cni::relay::wire;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The calling thread's exact CPU time so far, in seconds.
fn thread_cpu() -> f64 {
    clock_seconds(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Calls `send` `rate` times a second for `secs`, in batches every
/// millisecond as the load sender does; returns the CPU this thread spent
/// (the sends and all the kernel does inline for them), as % of a core.
fn paced_cpu(rate: u32, secs: f64, mut send: impl FnMut()) -> f64 {
    let per_ms = (rate as f64 / 1000.0).max(1.0);
    let total = (rate as f64 * secs) as u64;
    let (c0, t0) = (thread_cpu(), Instant::now());
    let (mut sent, mut k) = (0u64, 0u64);
    while sent < total {
        let due = (((k + 1) as f64 * per_ms) as u64).min(total);
        while sent < due {
            send();
            sent += 1;
        }
        k += 1;
        let next = t0 + Duration::from_micros(k * 1000);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    (thread_cpu() - c0) / t0.elapsed().as_secs_f64() * 100.0
}

/// A UDP socket opened in namespace `ns`, bound to `local`.
fn udp_in(ns: &str, local: (Ipv4Addr, u16)) -> UdpSocket {
    Netns::open(format!("/var/run/netns/{ns}"))
        .expect("netns")
        .run(|| UdpSocket::bind(local))
        .expect("enter netns")
        .expect("bind")
}

/// A port nothing else on the test bed uses (the relay's is 7401 by default).
const FLOOR_PORT: u16 = 7390;

/// One more load window with the sending node's agent under `perf record
/// -p` (cpu-clock, call graphs): where its CPU goes, as % of its samples.
#[allow(clippy::too_many_arguments)]
fn relay_profile(
    s: &mut Section,
    agent: u32,
    a_ns: &str,
    a_ip: Ipv4Addr,
    payload: &[u8],
    (b_ns, b_ip): (&str, Ipv4Addr),
    rate: u32,
    w: f64,
) {
    use crate::profile;
    if !profile::have_perf() {
        s.note("perf is not installed (apt-get install linux-perf): no profile of the relay");
        return;
    }
    let rx = [receiver(b_ns, b_ip)];
    let Some(rec) = profile::start(Some(agent), "relay") else {
        s.note("perf record did not start: no profile of the relay");
        return;
    };
    load(a_ns, a_ip, payload, rate, w, &rx);
    let Some(p) = rec.finish() else {
        s.note("perf record of the sending agent gave no samples: no profile of the relay");
        return;
    };
    for (what, pct) in [
        (
            "sending (under udp_sendmsg: sendmmsg or sendmsg)",
            p.under("udp_sendmsg"),
        ),
        (
            "of all, under net_rx_action (the switch's and the other node's receive, run inline)",
            p.under("net_rx_action"),
        ),
        (
            "reading its capture and relay sockets (under recvmmsg)",
            p.under_any(&["__x64_sys_recvmmsg", "__sys_recvmmsg"]),
        ),
        (
            "waiting (under poll and epoll_pwait)",
            p.under("__x64_sys_poll") + p.under("__x64_sys_epoll_pwait"),
        ),
        ("in its own code (user space)", p.user),
    ] {
        s.value(
            &format!("profile, sending node's agent at {rate}/s: {what}"),
            "% of its CPU",
            &[pct],
        );
    }
}

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
             discovery capture and everything else the agent does), as % of one core. \
             **Profile**: one more load window with the sending node's agent under \
             `perf record -p <agent> -g -e cpu-clock -F 2999`: % of the agent's samples \
             under each kernel function named (inclusive of what it calls), and in user \
             space.",
            plan.discovery_runs, plan.agent_reps
        ),
    );
    let mut discovery: Vec<Vec<f64>> = vec![];
    let mut failures = 0;
    let (mut cpu1, mut cpu2, mut arrived) = (vec![], vec![], vec![]);
    let (mut floor1, mut floor2, mut floor2_arrived) = (vec![], vec![], vec![]);
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
        let (t, failed) = discovery_probes(plan, &a.ns, &b.ns, 160);
        failures += failed;
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
        relay_profile(
            &mut s,
            pids[0],
            &a.ns,
            a_ip,
            &payload,
            (&b.ns, b_ip),
            rate,
            w,
        );
        // the floor: what the same datagrams cost the kernel alone on this
        // test bed, where a veth's transmit runs the receiving side's stack
        // inline, in the sender's system call (the switch, the other node's
        // receive path up to its socket; the bridge and the pod's stack)
        let n1 = tb.node(1).clone();
        let n2 = tb.node(2).clone();
        let ip = wire::udp_packet(a_ip, DEFAULT_GROUP, 7400, 7400, 1, &payload);
        let mut datagram = vec![0u8; wire::HEADER_LEN];
        datagram.extend_from_slice(&ip);
        for _ in 0..plan.agent_reps {
            let tx = udp_in(&n1.ns, (n1.ip, 0));
            let sink = udp_in(&n2.ns, (n2.ip, FLOOR_PORT));
            sink.set_read_timeout(Some(Duration::from_millis(100))).ok();
            let stop = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|sc| {
                sc.spawn(|| {
                    let mut buf = [0u8; 2048];
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = sink.recv_from(&mut buf);
                    }
                });
                floor1.push(paced_cpu(rate, w, || {
                    let _ = tx.send_to(&datagram, (n2.ip, FLOOR_PORT));
                }));
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let netns = Netns::open(format!("/var/run/netns/{}", n2.ns)).expect("netns");
            let inject = netns
                .run(|| packet::packet_socket(libc::SOCK_DGRAM))
                .expect("enter netns")
                .expect("packet socket");
            let bridge = ros2_cni::kernel::rtnl::Handle::open_in(&netns)
                .and_then(|mut h| h.link_by_name(DEFAULT_BRIDGE))
                .ok()
                .flatten()
                .expect("the bridge on node 2")
                .index;
            let rx = [receiver(&b.ns, b_ip)];
            let got = std::thread::scope(|sc| {
                let counter = sc.spawn(|| {
                    let mut buf = [0u8; 2048];
                    let mut n = 0u64;
                    let t_end = Instant::now() + Duration::from_secs_f64(w + 1.0);
                    while Instant::now() < t_end {
                        if rx[0].recv_from(&mut buf).is_ok() {
                            n += 1;
                        }
                    }
                    n
                });
                floor2.push(paced_cpu(rate, w, || {
                    let _ = packet::send(
                        inject.as_raw_fd(),
                        bridge,
                        wire::group_mac(DEFAULT_GROUP),
                        &ip,
                    );
                }));
                counter.join().unwrap()
            });
            floor2_arrived.push(got as f64 / (rate as f64 * w) * 100.0);
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
    s.value(
        &format!("floor, node 1: a plain UDP socket sending the same datagrams to node 2 at {rate}/s (its thread)"),
        "% of a core",
        &floor1,
    );
    s.value(
        &format!("floor, node 2: a packet socket putting the same packets on the bridge at {rate}/s (its thread)"),
        "% of a core",
        &floor2,
    );
    s.value(
        "floor, node 2: arrived at pod B",
        "% of sent",
        &floor2_arrived,
    );
    let own = |a: &[f64], f: &[f64]| -> Vec<f64> { a.iter().zip(f).map(|(a, f)| a - f).collect() };
    s.value(
        "relay's own work, sending node: agent − floor",
        "% of a core",
        &own(&cpu1, &floor1),
    );
    s.value(
        "relay's own work, receiving node: agent − floor",
        "% of a core",
        &own(&cpu2, &floor2),
    );
    s.note_last("the agent's figures hold its discovery capture and everything else it does too");
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
