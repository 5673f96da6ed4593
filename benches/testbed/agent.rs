//! Section 6: the node agent's memory and CPU, idle and forwarding SPDP.

use crate::pods::{production_extra, ros0_ip};
use crate::report::Section;
use crate::Plan;
use ros2_cni::lab::testbed::{mcast_receiver, mcast_sender, Pod, PodSpec, Testbed, LAPTOP_IP};
use ros2_cni::rtps::spdp::{announce, ParticipantData};
use ros2_cni::rtps::{GuidPrefix, Locator, VendorId};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SPDP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);
const PORT: u16 = 7400;

/// The agents of this section forward 10000 SPDP datagrams/s from one
/// sender, far above the default discovery limits (podDiscoveryRate 200/s):
/// they run with the limits off, so that what is measured is forwarding.
pub(crate) fn unlimited() -> serde_json::Value {
    let mut v = production_extra();
    v["podDiscoveryRate"] = 0.into();
    v["uplinkDiscoveryRate"] = 0.into();
    v
}

/// CPU time of process `pid` so far in seconds (all threads): the
/// scheduler's exact runtime (its CPU-time clock), not utime + stime, which
/// are sampled at timer ticks and miss work that is paced in step with the
/// tick (a sender at a fixed rate, the forwarding it causes).
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let mut clk: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clk) } != 0 {
        return f64::NAN;
    }
    clock_seconds(clk)
}

/// CPU time of thread `tid` of this process so far, in seconds (exact).
pub(crate) fn thread_cpu_seconds(tid: libc::pid_t) -> f64 {
    // linux/posix-timers.h: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)
    clock_seconds(((!tid) << 3) | 6)
}

/// A clock's reading in seconds (NaN if it cannot be read).
pub(crate) fn clock_seconds(clk: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    if unsafe { libc::clock_gettime(clk, &mut ts) } != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A `Vm...:` line of /proc/<pid>/status in MiB.
fn vm_mib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

/// `plan.discovery_runs` ddsperf probes from pod namespace `a` to `b`, each
/// in a fresh domain counted from `first_domain`: (times to discover in ms,
/// probes that did not discover). Nothing when ddsperf is not installed.
pub(crate) fn discovery_probes(
    plan: &crate::Plan,
    a: &str,
    b: &str,
    first_domain: u32,
) -> (Vec<f64>, usize) {
    let (mut t, mut failures) = (vec![], 0);
    if !ros2_cni::lab::probe::have_ddsperf() {
        return (t, failures);
    }
    for rep in 0..plan.discovery_runs {
        let dom = first_domain + rep as u32 % 60;
        match ros2_cni::lab::probe::ddsperf_probe(a, b, dom, Duration::from_secs(10)) {
            Ok(d) if d.discovered() => t.push(d.seconds.unwrap_or(f64::NAN) * 1e3),
            _ => failures += 1,
        }
    }
    (t, failures)
}

/// An SPDP announcement of a Cyclone-like participant at `ip`, about 300 bytes.
pub fn spdp_payload(ip: Ipv4Addr) -> Vec<u8> {
    let mut p = ParticipantData::new(
        GuidPrefix([1, 16, 0x42, 7, 0, 0, 0, 1, 0, 0, 0, 1]),
        VendorId::CYCLONE,
    );
    p.domain_id = Some(0);
    p.default_unicast_locators = vec![Locator::udp_v4(ip, 7411)];
    p.metatraffic_unicast_locators = vec![Locator::udp_v4(ip, 7410)];
    p.default_multicast_locators = vec![Locator::udp_v4(SPDP, 7401)];
    p.metatraffic_multicast_locators = vec![Locator::udp_v4(SPDP, PORT)];
    p.builtin_endpoints = Some(0x0c3f);
    let base = announce(&p, ros2_cni::rtps::Endian::Little).len();
    // the entity name fills it up to ~300 bytes, as a ROS 2 enclave name would
    p.entity_name = Some("r".repeat(300usize.saturating_sub(base + 8)));
    announce(&p, ros2_cni::rtps::Endian::Little)
}

/// A receiver thread's socket: blocking with a short timeout, big buffer.
pub(crate) fn receiver(ns: &str, local: Ipv4Addr) -> UdpSocket {
    let s = mcast_receiver(ns, SPDP, PORT, local).expect("receiver");
    s.set_nonblocking(false).ok();
    s.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt on our socket with an int.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const _ as *const libc::c_void,
            4,
        );
    }
    s
}

/// Sends `rate` datagrams/s for `secs` from `ns` (at `local`, TTL 1) while
/// the receivers count what arrives. Returns (sent, achieved rate, received per receiver).
pub(crate) fn load(
    ns: &str,
    local: Ipv4Addr,
    payload: &[u8],
    rate: u32,
    secs: f64,
    receivers: &[UdpSocket],
) -> (u64, f64, Vec<u64>) {
    let tx = mcast_sender(ns, local, 1).expect("sender");
    let stop = AtomicBool::new(false);
    let len = payload.len();
    std::thread::scope(|s| {
        let counters: Vec<_> = receivers
            .iter()
            .map(|rx| {
                let stop = &stop;
                s.spawn(move || {
                    let mut buf = [0u8; 2048];
                    let mut n = 0u64;
                    let mut quiet_since: Option<Instant> = None;
                    loop {
                        match rx.recv_from(&mut buf) {
                            Ok((l, _)) => {
                                quiet_since = None;
                                if l == len && buf.starts_with(b"RTPS") {
                                    n += 1;
                                }
                            }
                            Err(_) => {
                                if stop.load(Ordering::Relaxed) {
                                    let q = *quiet_since.get_or_insert_with(Instant::now);
                                    if q.elapsed() > Duration::from_millis(300) {
                                        return n;
                                    }
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        // batches every millisecond
        let per_ms = (rate as f64 / 1000.0).max(1.0);
        let t0 = Instant::now();
        let total = (rate as f64 * secs) as u64;
        let mut sent = 0u64;
        let mut k = 0u64;
        while sent < total {
            let due = ((k + 1) as f64 * per_ms) as u64;
            while sent < due.min(total) {
                if tx.send_to(payload, (SPDP, PORT)).is_ok() {
                    sent += 1;
                } else {
                    // ENOBUFS: count as not sent and move on
                    break;
                }
            }
            k += 1;
            let next = t0 + Duration::from_micros(k * 1000);
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            if t0.elapsed() > Duration::from_secs_f64(secs * 2.0) {
                break;
            }
        }
        let achieved = sent as f64 / t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let got = counters
            .into_iter()
            .map(|h| h.join().expect("receiver"))
            .collect();
        (sent, achieved, got)
    })
}

/// Pod A on node 1 and pod B on node 2, attached as in production, with
/// their `ros0` addresses.
pub(crate) fn pod_pair(tb: &Testbed) -> (Pod, Ipv4Addr, Pod, Ipv4Addr) {
    named_pod_pair(tb, "a", "b")
}

/// [`pod_pair`] with the pods named `a` (node 1) and `b` (node 2).
pub(crate) fn named_pod_pair(tb: &Testbed, a: &str, b: &str) -> (Pod, Ipv4Addr, Pod, Ipv4Addr) {
    let a = tb
        .add_pod(&PodSpec::new(a, 1).extra(production_extra()))
        .unwrap_or_else(|e| panic!("pod {a}: {e}"));
    let b = tb
        .add_pod(&PodSpec::new(b, 2).extra(production_extra()))
        .unwrap_or_else(|e| panic!("pod {b}: {e}"));
    let a_ip = ros0_ip(&a.result, &a.netns_path()).expect("a ip");
    let b_ip = ros0_ip(&b.result, &b.netns_path()).expect("b ip");
    (a, a_ip, b, b_ip)
}

pub fn agent(plan: &Plan) -> Section {
    let rate = plan.agent_rate;
    let w = plan.agent_window;
    let mut s = Section::new(
        "6",
        "Agent: memory and CPU",
        &format!(
            "Two nodes and a laptop on the LAN; `ros2-cni agent` on both nodes (installed \
             configuration, log level info); pod A on node 1, pod B on node 2. Measured on node \
             1's agent: resident memory (VmRSS, and the peak VmHWM, from /proc/<pid>/status) and \
             CPU (utime+stime from /proc/<pid>/stat over the window, all threads, as % of one \
             core). **Idle**: {w} s windows after start-up. **Pod → LAN**: pod A sends {rate} \
             SPDP announcements/s (built by `ros2_cni::rtps::spdp::announce`, ~300 bytes, TTL 1) \
             to 239.255.0.1:7400 for {w} s; the laptop (LAN) and pod B (node 2, through both \
             agents) count what arrives. **LAN → pods**: the laptop sends the same; pods A and B \
             count. The forwarding itself is the kernel's (the static multicast routes the agent \
             installs at start); its softirq time is not the agent's. The \
             discovery rate limits are off here (this rate is far above their defaults; \
             integration/limits.rs measures the agent under a flood with them on). {} \
             repetitions each.",
            plan.agent_reps
        ),
    );
    let tb = plan.bed(2, true);
    let pid = tb.start_agent(tb.node(1), &unlimited()).expect("agent 1");
    tb.start_agent(tb.node(2), &unlimited()).expect("agent 2");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "ros2-cni", "pid {pid} is the agent");
    let (a, a_ip, b, b_ip) = pod_pair(&tb);
    let lap = tb.laptop.clone().expect("laptop");
    // let start-up work (IGMP reports, first reconciles) pass
    std::thread::sleep(Duration::from_millis(if plan.smoke { 300 } else { 2000 }));
    let payload = spdp_payload(a_ip);
    s.single(
        "SPDP datagram size (UDP payload)",
        "bytes",
        payload.len() as f64,
    );

    let (mut idle_cpu, mut idle_rss) = (vec![], vec![]);
    let (mut up_cpu, mut up_rate, mut up_lap, mut up_b) = (vec![], vec![], vec![], vec![]);
    let (mut down_cpu, mut down_rate, mut down_a, mut down_b) = (vec![], vec![], vec![], vec![]);
    let mut rss_load = vec![];
    for _ in 0..plan.agent_reps {
        let c0 = cpu_seconds(pid);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(w));
        idle_cpu.push((cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0);
        idle_rss.push(vm_mib(pid, "VmRSS"));

        let rx = [receiver(&lap, LAPTOP_IP), receiver(&b.ns, b_ip)];
        let c0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let (sent, achieved, got) = load(&a.ns, a_ip, &payload, rate, w, &rx);
        up_cpu.push((cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0);
        rss_load.push(vm_mib(pid, "VmRSS"));
        up_rate.push(achieved);
        up_lap.push(got[0] as f64 / sent as f64 * 100.0);
        up_b.push(got[1] as f64 / sent as f64 * 100.0);
        drop(rx);

        let rx = [receiver(&a.ns, a_ip), receiver(&b.ns, b_ip)];
        let c0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let (sent, achieved, got) = load(&lap, LAPTOP_IP, &payload, rate, w, &rx);
        down_cpu.push((cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0);
        rss_load.push(vm_mib(pid, "VmRSS"));
        down_rate.push(achieved);
        down_a.push(got[0] as f64 / sent as f64 * 100.0);
        down_b.push(got[1] as f64 / sent as f64 * 100.0);
    }
    s.value("idle: CPU", "% of a core", &idle_cpu);
    s.value("idle: VmRSS", "MiB", &idle_rss);
    s.value("pod → LAN: rate sent", "datagrams/s", &up_rate);
    s.value("pod → LAN: CPU", "% of a core", &up_cpu);
    s.value("pod → LAN: arrived at the laptop", "% of sent", &up_lap);
    s.value("pod → LAN: arrived at pod B (node 2)", "% of sent", &up_b);
    s.value("LAN → pods: rate sent", "datagrams/s", &down_rate);
    s.value("LAN → pods: CPU", "% of a core", &down_cpu);
    s.value(
        "LAN → pods: arrived at pod A (node 1)",
        "% of sent",
        &down_a,
    );
    s.value(
        "LAN → pods: arrived at pod B (node 2)",
        "% of sent",
        &down_b,
    );
    s.value("under load: VmRSS", "MiB", &rss_load);
    s.single("peak VmHWM over the section", "MiB", vm_mib(pid, "VmHWM"));
    if let Ok(st) = tb.agent_status(tb.node(1)) {
        for f in st["forwarded"].as_array().into_iter().flatten() {
            if let (Some(dir), Some(n)) = (f["direction"].as_str(), f["packets"].as_u64()) {
                s.note(format!(
                    "agent 1's kernel counters: {} {} packets forwarded {dir} (all repetitions)",
                    n,
                    f["group"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    s
}
