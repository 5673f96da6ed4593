//! Section 6b: the multicast forwarders side by side, in one run: the two
//! the agent ships, each where this kernel offers it (the kernel's
//! multicast routing and the nftables dup rules; a kernel without
//! `CONFIG_IP_MROUTE` has only the second, Debian's 6.1 kernel in the VM of
//! docs/kernels.md has both), and the two candidates of issue 18 that were
//! measured and not shipped ([`crate::candidates`]: tc/BPF clone_redirect
//! and packet sockets).

use crate::agent::{
    cpu_seconds, discovery_probes, load, pod_pair, receiver, spdp_payload, thread_cpu_seconds,
    unlimited,
};
use crate::candidates::{Candidate, Installed};
use crate::report::{Cmp, Section};
use crate::Plan;
use ros2_cni::config::{DEFAULT_BRIDGE, DEFAULT_GROUP};
use ros2_cni::lab::testbed::LAPTOP_IP;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Softirq time of the whole machine so far, in seconds (all CPUs), as
/// /proc/stat has it: sampled at timer ticks (this kernel has no
/// `CONFIG_IRQ_TIME_ACCOUNTING`), so a load paced in step with the tick can
/// hide from it; [`IdleMeter`] is the exact measure.
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

/// The machine's busy time, measured exactly by what is left over: one
/// SCHED_IDLE thread per CPU spins and gets only the time nothing else
/// wants (every task, softirq and interrupt comes first); busy = CPUs ×
/// wall − what the spinners got. Unlike /proc/stat it holds forwarding done
/// in a softirq and inline in a system call alike, and is not sampled.
struct IdleMeter {
    stop: Arc<AtomicBool>,
    tids: Vec<libc::pid_t>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl IdleMeter {
    fn start() -> IdleMeter {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let threads = (0..n)
            .map(|_| {
                let (stop, tx) = (stop.clone(), tx.clone());
                std::thread::spawn(move || {
                    let p = libc::sched_param { sched_priority: 0 };
                    // SAFETY: sched_setscheduler on this thread with a valid param.
                    let ok = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &p) } == 0;
                    // SAFETY: gettid has no preconditions.
                    let _ = tx.send(ok.then(|| unsafe { libc::gettid() }));
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let tids = rx.iter().take(n).flatten().collect::<Vec<_>>();
        IdleMeter {
            stop,
            tids,
            threads,
        }
    }

    /// CPU seconds the spinners got so far; NaN if one could not be made
    /// SCHED_IDLE (it would compete, not measure).
    fn idle_seconds(&self) -> f64 {
        if self.tids.len() != self.threads.len() {
            return f64::NAN;
        }
        self.tids.iter().map(|t| thread_cpu_seconds(*t)).sum()
    }

    fn cpus(&self) -> f64 {
        self.threads.len() as f64
    }
}

impl Drop for IdleMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A group the agents carry in a candidate's run instead of the RTPS group,
/// so that what moves 239.255.0.1 between the nodes is the candidate alone
/// (the agents still do everything else: addresses, ARP, the TTL rule).
const DECOY: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 2);

/// One forwarder of the run.
#[derive(Debug, Clone, Copy)]
enum Run {
    /// `multicastForwarder` of the agent.
    Agent(&'static str),
    Candidate(Candidate),
}

impl Run {
    fn label(self) -> String {
        match self {
            Run::Agent(k) => k.to_owned(),
            Run::Candidate(c) => format!("{} (candidate)", c.name()),
        }
    }
}

pub fn forwarders(plan: &Plan) -> Section {
    let rate = plan.agent_rate;
    let w = plan.agent_window;
    let flood = plan.forwarder_flood_rate;
    let mut s = Section::new(
        "6b",
        "The multicast forwarders and the candidates",
        &format!(
            "Each forwarder this kernel offers (`multicastForwarder` \"kernel\": the kernel's \
             multicast routing, `CONFIG_IP_MROUTE`; \"nftables\": dup rules) and the two \
             candidates measured and not shipped (tc/BPF `bpf_clone_redirect` and packet sockets, \
             benches/testbed/candidates.rs; in their runs the agents carry another group and the \
             candidate on each node carries 239.255.0.1), each on a fresh test bed of two nodes \
             and a laptop, agents with the discovery limits off. **Forwarded**: pod A (node 1) \
             sends ~300-byte SPDP datagrams (TTL 1) as fast as asked up to {flood}/s for {w} s; pod \
             B (node 2, through both nodes' forwarders) counts what arrives: datagrams forwarded \
             per second. **At {rate}/s**: the same at {rate}/s; CPU of node 1's agent \
             (utime+stime), of node 1's candidate thread where it has one (user-space \
             forwarding), (the scheduler's exact CPU-time clocks), the machine's softirq \
             time (/proc/stat, sampled at ticks) and its busy time (exact: one SCHED_IDLE spinner \
             per CPU gets what nothing else wants; busy = CPUs × wall − their share; it holds the \
             forwarding itself on both nodes, the sender and the receivers, in softirqs and \
             inline in system calls alike), each as % of one core. **Discovery**: \
             `ddsperf` ping in pod A, pong in pod B (src/lab/probe.rs), {} repetitions, a fresh \
             domain each. {} repetitions of the load runs.",
            plan.discovery_runs, plan.agent_reps
        ),
    );
    let mut ran = vec![];
    let mut all_discovered = ros2_cni::lab::probe::have_ddsperf();
    for run in [
        Run::Agent("kernel"),
        Run::Agent("nftables"),
        Run::Candidate(Candidate::BpfClone),
        Run::Candidate(Candidate::Packet),
    ] {
        let label = run.label();
        let tb = plan.bed(2, true);
        let mut extra = unlimited();
        match run {
            Run::Agent(kind) => extra["multicastForwarder"] = kind.into(),
            Run::Candidate(_) => {
                extra["multicastForwarder"] = "nftables".into();
                extra["groups"] = serde_json::json!([DECOY.to_string()]);
            }
        }
        let pid = match tb.start_agent(tb.node(1), &extra) {
            Ok(pid) => pid,
            Err(e) => {
                s.note(format!(
                    "{label} forwarder: not available here (the agent says: {})",
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
        let want = match run {
            Run::Agent(k) => k,
            Run::Candidate(_) => "nftables",
        };
        assert_eq!(running.as_deref(), Some(want), "the agent runs {want}");
        let installed: Vec<Installed> = match run {
            Run::Agent(_) => vec![],
            Run::Candidate(c) => [1, 2]
                .iter()
                .map(|i| {
                    c.install(&tb.node(*i).ns, "eth0", DEFAULT_BRIDGE, &[DEFAULT_GROUP])
                        .unwrap_or_else(|e| panic!("{label} on node {i}: {e}"))
                })
                .collect(),
        };
        let own_cpu = || installed.first().and_then(Installed::cpu_seconds);
        let payload = spdp_payload(a_ip);
        let (mut fwd_rate, mut agent_cpu, mut user_cpu, mut softirq, mut busy, mut arrived) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
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
            let meter = IdleMeter::start();
            let (c0, u0, q0, i0, t0) = (
                cpu_seconds(pid),
                own_cpu(),
                softirq_seconds(),
                meter.idle_seconds(),
                Instant::now(),
            );
            let (sent, _, got) = load(&a.ns, a_ip, &payload, rate, w, &rx);
            let dt = t0.elapsed().as_secs_f64();
            agent_cpu.push((cpu_seconds(pid) - c0) / dt * 100.0);
            if let (Some(u0), Some(u1)) = (u0, own_cpu()) {
                user_cpu.push((u1 - u0) / dt * 100.0);
            }
            softirq.push((softirq_seconds() - q0) / dt * 100.0);
            busy.push((meter.cpus() * dt - (meter.idle_seconds() - i0)) / dt * 100.0);
            drop(meter);
            arrived.push(got[0] as f64 / sent as f64 * 100.0);
        }
        s.value(
            &format!("{label}: forwarded pod → pod across nodes"),
            "datagrams/s",
            &fwd_rate,
        );
        s.value(
            &format!("{label}: agent CPU at {rate}/s"),
            "% of a core",
            &agent_cpu,
        );
        if !user_cpu.is_empty() {
            s.value(
                &format!("{label}: its own thread's CPU at {rate}/s (node 1)"),
                "% of a core",
                &user_cpu,
            );
        }
        s.value(
            &format!("{label}: softirq CPU at {rate}/s (machine)"),
            "% of a core",
            &softirq,
        );
        s.value(
            &format!("{label}: machine busy CPU at {rate}/s"),
            "% of a core",
            &busy,
        );
        s.value(
            &format!("{label}: arrived at pod B at {rate}/s"),
            "% of sent",
            &arrived,
        );
        if ros2_cni::lab::probe::have_ddsperf() {
            let (t, failures) = discovery_probes(plan, &a.ns, &b.ns, 140);
            s.value(&format!("{label}: time to discover pod → pod"), "ms", &t);
            s.single(
                &format!("{label}: probes without discovery"),
                "count",
                failures as f64,
            );
            all_discovered &= failures == 0;
        }
        drop(installed);
        ran.push(label);
    }
    s.note(format!(
        "forwarders measured in this run: {}",
        ran.join(", ")
    ));
    // every forwarder that ran carried discovery (the candidates included:
    // a copy with a broken header checksum or a wrong TTL never arrives)
    s.goal(
        "check: every forwarder measured discovers pod → pod across nodes",
        Some(if all_discovered && ran.len() >= 3 {
            1.0
        } else {
            0.0
        }),
        "(1 = yes)",
        Cmp::AtLeast,
        1.0,
        "every ddsperf probe of every forwarder, the candidates included",
    );
    s
}
