//! Section 7: Zenoh pod to pod across nodes against the host network, for
//! both stock layouts: default peers (multicast scouting, carried by
//! `extraMulticast`) and rmw_zenoh's (sessions at `localhost:7447`: the
//! pods' routers and the nodes' routers with `zenohRouter`; on the host
//! network the sessions reach their node's router directly).

use crate::agent::pod_pair;
use crate::pods::production_extra;
use crate::report::{Cmp, Section};
use crate::Plan;
use ros2_cni::lab::testbed::Testbed;
use std::time::Duration;

/// `pong FLAVOUR KEY SECS`: answers every ping; prints "ready" once it is
/// subscribed. `ping FLAVOUR KEY N`: opens its session, pings every 20 ms
/// until the first answer (discovery: from before opening the session to
/// that answer), then N pings one at a time; prints both in ms.
const PROBE: &str = r#"
import sys, os, time, threading, json
import zenoh
role, flavour, key = sys.argv[1], sys.argv[2], sys.argv[3]
def config():
    c = zenoh.Config()
    if flavour == "rmw":
        c.insert_json5("mode", '"peer"')
        c.insert_json5("connect/endpoints", '["tcp/localhost:7447"]')
        c.insert_json5("listen/endpoints", '["tcp/localhost:0"]')
        c.insert_json5("scouting/multicast/enabled", "false")
        c.insert_json5("scouting/gossip/enabled", "true")
    return c
if role == "pong":
    s = zenoh.open(config())
    p = s.declare_publisher(key + "/pong")
    sub = s.declare_subscriber(key + "/ping", lambda smp: p.put(smp.payload.to_bytes()))
    print("ready", flush=True)
    time.sleep(float(sys.argv[4]))
    os._exit(0)
n = int(sys.argv[4])
got = {}
cond = threading.Condition()
def on_pong(smp):
    with cond:
        got[smp.payload.to_string()] = time.perf_counter()
        cond.notify_all()
t0 = time.perf_counter()
s = zenoh.open(config())
sub = s.declare_subscriber(key + "/pong", on_pong)
p = s.declare_publisher(key + "/ping")
found = None
deadline = t0 + 20
while found is None and time.perf_counter() < deadline:
    p.put("hello")
    with cond:
        cond.wait_for(lambda: "hello" in got, timeout=0.02)
        found = got.get("hello")
if found is None:
    print("no answer", flush=True)
    os._exit(1)
rtts = []
for i in range(n):
    k = str(i)
    t = time.perf_counter()
    p.put(k)
    with cond:
        if cond.wait_for(lambda: k in got, timeout=1.0):
            rtts.append((got[k] - t) * 1e3)
print(json.dumps({"discovery_ms": (found - t0) * 1e3, "rtt_ms": rtts}), flush=True)
# a zenoh-python process can hang at interpreter exit with a session open
os._exit(0)
"#;

/// A router from a configuration file (stands in for zenohd).
const ROUTER: &str = r#"
import sys, time
import zenoh
s = zenoh.open(zenoh.Config.from_file(sys.argv[1]))
while True:
    time.sleep(3600)
"#;

/// One probe: pong in `b`, ping in `a`; (discovery ms, round trips in ms).
fn probe(
    tb: &Testbed,
    py: &str,
    flavour: &str,
    a: &str,
    b: &str,
    n: usize,
    run: usize,
) -> Option<(f64, Vec<f64>)> {
    let key = format!("bench/{}/{run}", std::process::id());
    let pong_log = format!("zenoh-pong-{flavour}-{run}");
    let pong = tb
        .spawn(b, &["python3", py, "pong", flavour, &key, "40"], &pong_log)
        .ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !tb.log(&pong_log).contains("ready") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = format!("zenoh-ping-{flavour}-{run}");
    let n_s = n.to_string();
    let ping = tb
        .spawn(a, &["python3", py, "ping", flavour, &key, &n_s], &log)
        .ok()?;
    tb.wait_exit(ping, Duration::from_secs(60));
    tb.kill(pong);
    let out = tb.log(&log);
    let v: serde_json::Value = out.lines().find_map(|l| serde_json::from_str(l).ok())?;
    let rtts = v["rtt_ms"]
        .as_array()?
        .iter()
        .filter_map(|x| x.as_f64())
        .collect();
    Some((v["discovery_ms"].as_f64()?, rtts))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

pub fn zenoh(plan: &Plan) -> Section {
    let runs = plan.discovery_runs;
    let n = if plan.smoke { 20 } else { 200 };
    let mut s = Section::new(
        "7",
        "Zenoh across nodes",
        &format!(
            "Two nodes; agents with `zenohRouter` 7447 (a zenoh-python router per pod, \
             eclipse-zenoh as pinned in .ci/deps.sh) and a router per node configured like \
             `ros2-cni zenoh-router-config` (each connects to the other). Pod A (node 1) pings, \
             pod B (node 2) answers (a Zenoh publisher answering every sample of a subscriber); \
             the host path is the same between the two nodes' own network namespaces. \
             **default**: sessions with `zenoh.Config()` (peers, multicast scouting, carried by \
             `extraMulticast` between pods); **rmw**: rmw_zenoh's stock session keys (connect \
             `tcp/localhost:7447`, no multicast scouting): through the pods' and the nodes' \
             routers, on the host path through the nodes' routers. **Discovery**: from before \
             the pinging session opens to the first answer (pings every 20 ms). **Round trip**: \
             then {n} pings one at a time, the median of each run. {runs} runs each, a fresh key \
             each."
        ),
    );
    let check = "check: every Zenoh probe through ros2-cni and the host path is answered";
    let have_zenoh = std::process::Command::new("python3")
        .args(["-c", "import zenoh"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !have_zenoh {
        s.note(
            "python3's zenoh module is not installed (eclipse-zenoh as pinned in .ci/deps.sh; \
             ./test.sh installs it): no Zenoh figures",
        );
        s.goal(check, None, "(1 = yes)", Cmp::AtLeast, 1.0, "not run");
        return s;
    }
    let tb = plan.bed(2, false);
    let py = tb.dir.join("zenoh_probe.py");
    std::fs::write(&py, PROBE).unwrap();
    let router = tb.dir.join("zenoh_router.py");
    std::fs::write(&router, ROUTER).unwrap();
    let (py, router) = (
        py.to_string_lossy().into_owned(),
        router.to_string_lossy().into_owned(),
    );
    for i in 1..=2 {
        let mut extra = production_extra();
        extra["zenohRouter"] = 7447.into();
        extra["zenohPodRouter"] = serde_json::json!(["python3", router, "{config}"]);
        tb.start_agent(tb.node(i), &extra).expect("agent");
        let other = tb.node(3 - i).ip;
        let conf = tb.dir.join(format!("node-router-{i}.json5"));
        let v = ros2_cni::zenoh::node_router_config(7447, &[other]);
        std::fs::write(&conf, v.to_string()).unwrap();
        tb.spawn(
            &tb.node(i).ns,
            &["python3", &router, conf.to_str().unwrap()],
            &format!("node-router-{i}"),
        )
        .expect("node router");
    }
    let (a, _, b, _) = pod_pair(&tb);
    // the pods' routers are up before the first rmw session
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let up = (1..=2).all(|i| {
            tb.agent_status(tb.node(i))
                .ok()
                .and_then(|st| st["zenoh"]["pods"][0]["pid"].as_u64())
                .is_some()
        });
        if up {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let paths = [
        ("pod → pod", a.ns.clone(), b.ns.clone()),
        ("host → host", tb.node(1).ns.clone(), tb.node(2).ns.clone()),
    ];
    let mut run = 0;
    let mut unanswered = 0;
    for flavour in ["default", "rmw"] {
        let mut medians: Vec<Vec<f64>> = vec![];
        for (path, from, to) in &paths {
            let (mut disc, mut rtt, mut failed) = (vec![], vec![], 0);
            for _ in 0..runs {
                run += 1;
                match probe(&tb, &py, flavour, from, to, n, run) {
                    Some((d, mut r)) if !r.is_empty() => {
                        disc.push(d);
                        rtt.push(median(&mut r));
                    }
                    _ => failed += 1,
                }
            }
            s.value(&format!("{flavour}: discovery {path}"), "ms", &disc);
            s.value(&format!("{flavour}: round trip {path}"), "ms", &rtt);
            if failed > 0 {
                s.note_last(&format!("{failed} run(s) without an answer"));
            }
            unanswered += failed;
            medians.push(rtt);
        }
        s.ratio(
            &format!("{flavour}: round trip pod → pod / host → host"),
            &medians[0],
            &medians[1],
        );
    }
    s.goal(
        check,
        Some(if unanswered == 0 { 1.0 } else { 0.0 }),
        "(1 = yes)",
        Cmp::AtLeast,
        1.0,
        "all runs, both layouts, both paths",
    );
    s
}
