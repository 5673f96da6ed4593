//! `ros2-cni lab` as a user runs it: the real binary, its JSON, and what it
//! leaves behind (nothing), also when interrupted.

use crate::common::{require_root, BIN};
use ros2_cni::lab::testbed::{namespaces_of, ping, PodSpec, Primary, LAPTOP_IP};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A process: pid and start time (clock ticks since boot), so a reused pid
/// is not taken for the same process.
type Proc = (u32, u64);

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after "(comm)": state is field 3, starttime field 22
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// Records, while a lab runs, every process found inside one of its network
/// namespaces. Namespace inodes are compared only while the namespace
/// exists: once it is gone the kernel may give its inode to another test's.
struct Watcher {
    procs: Arc<Mutex<BTreeMap<Proc, String>>>,
    saw_namespaces: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(pid: u32) -> Watcher {
        let procs = Arc::new(Mutex::new(BTreeMap::new()));
        let saw = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, w, s) = (procs.clone(), saw.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let inodes: BTreeSet<u64> = namespaces_of("r2lab")
                    .into_iter()
                    .filter(|(_, owner)| *owner == pid)
                    .filter_map(|(ns, _)| std::fs::metadata(format!("/var/run/netns/{ns}")).ok())
                    .map(|m| m.ino())
                    .collect();
                if !inodes.is_empty() {
                    w.store(true, Ordering::SeqCst);
                    for q in all_pids() {
                        let inside = std::fs::metadata(format!("/proc/{q}/ns/net"))
                            .is_ok_and(|m| inodes.contains(&m.ino()));
                        if inside {
                            if let Some(t) = start_time(q) {
                                p.lock()
                                    .unwrap()
                                    .entry((q, t))
                                    .or_insert_with(|| cmdline(q));
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        Watcher {
            procs,
            saw_namespaces: saw,
            stop,
            thread: Some(thread),
        }
    }

    /// Command lines of the processes seen so far.
    fn seen(&self) -> Vec<String> {
        self.procs.lock().unwrap().values().cloned().collect()
    }

    fn finish(mut self) -> (bool, BTreeMap<Proc, String>) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.take().unwrap().join();
        let procs = self.procs.lock().unwrap().clone();
        (self.saw_namespaces.load(Ordering::SeqCst), procs)
    }
}

/// Processes seen in the lab that still run, and any process whose command
/// line names the lab's files: "pid cmdline" each.
fn strays(pid: u32, seen: &BTreeMap<Proc, String>) -> Vec<String> {
    let mut out: Vec<String> = seen
        .iter()
        .filter(|((q, t), _)| start_time(*q) == Some(*t))
        .map(|((q, _), cmd)| format!("{q} {cmd}"))
        .collect();
    let mark = format!("/r2lab-{pid}-");
    for q in all_pids() {
        let cmd = cmdline(q);
        if cmd.contains(&mark) && q != std::process::id() {
            out.push(format!("{q} {cmd}"));
        }
    }
    out
}

fn assert_nothing_left(pid: u32, watched: (bool, BTreeMap<Proc, String>)) {
    let (saw, seen) = watched;
    assert!(saw, "the watcher saw the lab's namespaces");
    let left: Vec<String> = namespaces_of("r2lab")
        .into_iter()
        .filter(|(_, owner)| *owner == pid)
        .map(|(ns, _)| ns)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    // SIGKILL takes effect asynchronously: give the dying a moment
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut left = strays(pid, &seen);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = strays(pid, &seen);
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let dirs: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("r2lab-{pid}-")))
        .collect();
    assert!(dirs.is_empty(), "directories left behind: {dirs:?}");
}

/// Runs `ros2-cni lab ARGS` (with `--json`) to its end (at most 120 s) with a
/// watcher on its processes: stdout parsed, the lab's pid and what the
/// watcher saw. Fails on a non-zero exit, or on stdout that is not only JSON.
fn lab_json(args: &[&str]) -> (Value, u32, (bool, BTreeMap<Proc, String>)) {
    require_root();
    let started = Instant::now();
    let mut child = lab(args);
    let pid = child.id();
    let watcher = Watcher::start(pid);
    let stderr = Stderr::collect(&mut child);
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let watched = watcher.finish();
    eprintln!("lab {} took {:?}", args.join(" "), started.elapsed());
    assert!(
        status.success(),
        "exit {status}; stderr:\n{}\nstdout:\n{stdout}",
        stderr.text()
    );
    let v = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is only JSON ({e}):\n{stdout}"));
    (v, pid, watched)
}

fn lab(args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("lab")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ros2-cni lab")
}

/// Collects stderr lines in the background; `wait_for` blocks until one matches.
struct Stderr {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Stderr {
    fn collect(child: &mut Child) -> Stderr {
        let lines = Arc::new(Mutex::new(vec![]));
        let l = lines.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(|x| x.ok()) {
                l.lock().unwrap().push(line);
            }
        });
        Stderr { lines }
    }

    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ros2-cni lab did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The id the lab's graphs give a host: `pod:nN-podM`, `host:laptop`.
fn graph_id(host: &str) -> String {
    if host.contains("-pod") {
        format!("pod:{host}")
    } else {
        format!("host:{host}")
    }
}

/// Checks `DIR/NAME.dot` and `DIR/NAME.svg` against the matrix's JSON
/// pairs: every host in its computer's cluster (the laptop on its own), one
/// edge per pair of hosts toward the one that discovered the other (two
/// arrowheads when both did), `no-route` where one did not; `across` is the
/// path between computers.
fn check_graph(dir: &std::path::Path, name: &str, pairs: &[Value], across: &str) {
    use crate::doctor::{read_dot, svg_titles};
    let dot = std::fs::read_to_string(dir.join(format!("{name}.dot")))
        .unwrap_or_else(|e| panic!("{name}.dot: {e}"));
    let (nodes, edges) = read_dot(&dot);
    let mut hosts: Vec<&str> = vec![];
    for p in pairs {
        let f = p["from"].as_str().unwrap();
        if !hosts.contains(&f) {
            hosts.push(f);
        }
    }
    let computer = |h: &str| h.split_once("-pod").map(|(c, _)| c.to_owned());
    let mut want_nodes = vec![];
    for h in hosts.iter().filter(|h| computer(h).is_some()) {
        let c = format!("computer:{}", computer(h).unwrap());
        if !want_nodes
            .iter()
            .any(|n: &(String, String, Option<String>, Option<String>)| n.0 == c)
        {
            want_nodes.push((c.clone(), "computer".to_owned(), Some(c.clone()), None));
        }
        want_nodes.push((graph_id(h), "pod".to_owned(), Some(c), None));
    }
    for h in hosts.iter().filter(|h| computer(h).is_none()) {
        want_nodes.push((graph_id(h), "lan-host".to_owned(), None, None));
    }
    let mut got_nodes = nodes.clone();
    got_nodes.sort();
    want_nodes.sort();
    assert_eq!(got_nodes, want_nodes, "{name}.dot:\n{dot}");
    let discovered = |a: &str, b: &str| {
        pairs
            .iter()
            .find(|p| p["from"] == a && p["to"] == b)
            .unwrap_or_else(|| panic!("no pair {a} -> {b}"))["discovered"]
            == true
    };
    let mut want = BTreeSet::new();
    for (i, a) in hosts.iter().enumerate() {
        for b in &hosts[i + 1..] {
            let path = match (computer(a), computer(b)) {
                (Some(x), Some(y)) if x == y => "bridge",
                (Some(_), Some(_)) => across,
                _ => "lan-multicast",
            };
            let (ida, idb) = (graph_id(a), graph_id(b));
            let stop = |ok: bool| (!ok).then(|| "no-route".to_owned());
            match (discovered(a, b), discovered(b, a)) {
                (x, y) if x == y => {
                    want.insert((idb, ida, path.to_owned(), stop(x), true));
                }
                (x, y) => {
                    want.insert((idb.clone(), ida.clone(), path.to_owned(), stop(x), false));
                    want.insert((ida, idb, path.to_owned(), stop(y), false));
                }
            }
        }
    }
    assert_eq!(edges, want, "{name}.dot:\n{dot}");
    // the SVG draws the same graph, and so does Graphviz from the DOT
    let want = (
        nodes.iter().map(|n| n.0.clone()).collect::<BTreeSet<_>>(),
        edges
            .iter()
            .map(|e| format!("{}->{}", e.0, e.1))
            .collect::<BTreeSet<_>>(),
    );
    let svg = std::fs::read_to_string(dir.join(format!("{name}.svg")))
        .unwrap_or_else(|e| panic!("{name}.svg: {e}"));
    assert_eq!(svg_titles(&svg), want, "{name}.svg");
    let gv = Command::new("dot")
        .arg("-Tsvg")
        .arg(dir.join(format!("{name}.dot")))
        .output()
        .expect("Graphviz's dot (apt-get install graphviz, listed in .ci/packages.txt)");
    assert!(
        gv.status.success() && gv.stderr.is_empty(),
        "Graphviz renders {name}.dot without a word: {}",
        String::from_utf8_lossy(&gv.stderr)
    );
    assert_eq!(
        svg_titles(&String::from_utf8_lossy(&gv.stdout)),
        want,
        "Graphviz's {name}.svg"
    );
}

/// A directory for `--graph-dir` (outside the lab's own, which must go).
fn graph_dir(test: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("r2t-graphs-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn lab_json_on_two_nodes_with_wifi_discovers_every_pair_and_leaves_nothing() {
    let graphs = graph_dir("wifi");
    let (v, pid, watched) = lab_json(&[
        "--nodes",
        "2",
        "--wifi",
        "--json",
        "--graph-dir",
        graphs.to_str().unwrap(),
    ]);
    assert_eq!(v["nodes"], 2);
    assert_eq!(v["podsPerNode"], 1);
    assert_eq!(v["wifi"], true);
    assert_eq!(v["prober"], "ddsperf");
    // two pods and the laptop: 3 * 2 ordered pairs, each once
    let pairs = v["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 6, "{v:#}");
    let mut seen = BTreeSet::new();
    for p in pairs {
        let keys: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["from", "to", "discovered", "seconds"])
        );
        let (from, to) = (p["from"].as_str().unwrap(), p["to"].as_str().unwrap());
        assert_ne!(from, to);
        assert!(
            seen.insert((from.to_owned(), to.to_owned())),
            "{from} -> {to} twice"
        );
        assert_eq!(p["discovered"], true, "ros2-cni pair {from} -> {to}: {v:#}");
        let s = p["seconds"].as_f64().expect("seconds is a number");
        assert!(s > 0.0 && s < 5.0, "{from} -> {to}: {s} s");
    }
    let hosts: BTreeSet<&str> = seen.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(hosts, BTreeSet::from(["laptop", "n1-pod1", "n2-pod1"]));
    assert_eq!(
        v["wifiDroppedFrames"], 0,
        "ros2-cni never sends a foreign MAC"
    );
    // the comparison ran and has the same shape; its failures are the point
    let mv = v["macvlan"]["pairs"].as_array().expect("macvlan pairs");
    assert_eq!(mv.len(), 6);
    for p in mv {
        assert!(p["discovered"].is_boolean());
        assert!(p["seconds"].is_null() || p["seconds"].is_number());
        assert_eq!(p["seconds"].is_number(), p["discovered"] == true);
        // behind the Wi-Fi-like switch the pods' own MACs are dropped, and
        // nothing routes their primary network's multicast: pods on
        // different computers never meet through macvlan
        let ends = [p["from"].as_str().unwrap(), p["to"].as_str().unwrap()];
        if ends.contains(&"n1-pod1") && ends.contains(&"n2-pod1") {
            assert_eq!(
                p["discovered"], false,
                "macvlan across the Wi-Fi switch: {p}"
            );
        }
    }
    // the same range on every node: host-local hands out the same address twice
    let addrs: Vec<&str> = v["macvlan"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["192.168.1.160", "192.168.1.160"]);
    // the graphs of both matrices, named in the JSON
    assert_eq!(
        v["graphs"],
        serde_json::json!({
            "ros2-cni": graphs.join("ros2-cni.svg"),
            "macvlan": graphs.join("macvlan.svg"),
        })
    );
    check_graph(&graphs, "ros2-cni", pairs, "lan-multicast");
    check_graph(&graphs, "macvlan", mv, "lan-multicast");
    let _ = std::fs::remove_dir_all(&graphs);
    assert_nothing_left(pid, watched);
}

#[test]
fn lab_interrupted_while_probing_cleans_up_and_fails() {
    require_root();
    let started = Instant::now();
    let mut child = lab(&["--nodes", "2", "--no-macvlan"]);
    let pid = child.id();
    let watcher = Watcher::start(pid);
    let stderr = Stderr::collect(&mut child);
    assert!(
        stderr.wait_for("ros2-cni: probing", Duration::from_secs(60)),
        "the lab reached the probes:\n{}",
        stderr.text()
    );
    // agents and ddsperf pairs are running now
    std::thread::sleep(Duration::from_millis(300));
    let busy = watcher.seen();
    assert!(
        busy.iter().any(|p| p.contains("ddsperf")) && busy.iter().any(|p| p.contains(" agent ")),
        "probes and agents were running when interrupted: {busy:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(40));
    let watched = watcher.finish();
    eprintln!("interrupted lab took {:?}", started.elapsed());
    assert_eq!(status.code(), Some(130), "stderr:\n{}", stderr.text());
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(stdout.is_empty(), "no matrix after an interrupt: {stdout}");
    assert!(
        stderr.text().contains("removed everything it made"),
        "{}",
        stderr.text()
    );
    assert_nothing_left(pid, watched);
}

#[test]
fn lab_terminated_while_building_cleans_up_and_fails() {
    require_root();
    let mut child = lab(&["--nodes", "3", "--pods-per-node", "2", "--no-macvlan"]);
    let pid = child.id();
    let watcher = Watcher::start(pid);
    let stderr = Stderr::collect(&mut child);
    assert!(
        stderr.wait_for("attaching", Duration::from_secs(60)),
        "{}",
        stderr.text()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(40));
    let watched = watcher.finish();
    assert_eq!(status.code(), Some(143), "stderr:\n{}", stderr.text());
    assert_nothing_left(pid, watched);
}

#[test]
fn lab_refuses_bad_arguments_before_touching_anything() {
    for (args, needle) in [
        (&["--nodes", "0"][..], "1 to 8 robot computers"),
        (&["--nodes", "9"][..], "1 to 8 robot computers"),
        (&["--pods-per-node", "17"][..], "1 to 16 pods"),
    ] {
        let out = Command::new(BIN).arg("lab").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn builtin_primary_wires_pods_like_calico() {
    // the fallback for machines without the reference plugins
    let tb = crate::common::bed_with(2, |o| o.primary = Primary::Builtin);
    let a = tb.add_pod(&PodSpec::new("a1", 1)).unwrap();
    let b = tb.add_pod(&PodSpec::new("b1", 2)).unwrap();
    let eth0 = |ns: &str| crate::common::addrs(ns, "eth0");
    assert_eq!(eth0(&a.ns), ["10.1.1.2/32"]);
    assert_eq!(eth0(&b.ns), ["10.1.2.2/32"]);
    let routes = crate::common::routes(&a.ns);
    assert!(
        routes.iter().any(|r| r == "default eth0"),
        "default route via the primary: {routes:?}"
    );
    // the primary network across nodes, and ros0 on the LAN
    assert!(
        ping(&a.ns, "10.1.2.2".parse().unwrap()),
        "primary across nodes"
    );
    assert!(ping(&a.ns, b.ros_ip.unwrap()), "ros0 across nodes");
    assert!(ping(&b.ns, LAPTOP_IP), "ros0 to the laptop");
    tb.del_pod(&a, &PodSpec::new("a1", 1)).unwrap();
    let node_links = crate::common::node_state(&tb, 1).links;
    assert!(
        !node_links.iter().any(|l| l.starts_with("cali")),
        "the pod's veth went with it: {node_links:?}"
    );
}

#[test]
fn lab_with_its_own_spdp_prober_discovers_every_ros2_cni_pair_and_no_macvlan_pair() {
    // the prober used where Cyclone DDS is not installed
    let (v, pid, watched) = lab_json(&[
        "--nodes",
        "2",
        "--wifi",
        "--json",
        "--prober",
        "spdp",
        "--timeout",
        "3",
    ]);
    assert_eq!(v["prober"], "spdp");
    let pairs = v["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 6);
    for p in pairs {
        assert_eq!(p["discovered"], true, "{p}");
        assert!(
            p["seconds"]
                .as_f64()
                .is_some_and(|s| (0.0..3.0).contains(&s)),
            "{p}"
        );
    }
    // default interface choice in a Multus-style pod is eth0: nothing meets
    let mv = v["macvlan"]["pairs"].as_array().unwrap();
    assert_eq!(mv.len(), 6);
    assert!(mv.iter().all(|p| p["discovered"] == false), "{v:#}");
    assert_nothing_left(pid, watched);
}

#[test]
fn lab_keep_leaves_the_lab_running_and_cleanup_removes_it() {
    require_root();
    let mut child = lab(&["--nodes", "1", "--keep", "--json"]);
    let pid = child.id();
    let stderr = Stderr::collect(&mut child);
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let ours = || -> Vec<String> {
        namespaces_of("r2lab")
            .into_iter()
            .filter(|(_, owner)| *owner == pid)
            .map(|(ns, _)| ns)
            .collect()
    };
    let kept = ours();
    // whatever happens below, leave nothing behind
    struct Sweep(Vec<String>);
    impl Drop for Sweep {
        fn drop(&mut self) {
            for ns in &self.0 {
                ros2_cni::lab::testbed::remove_ns_and_processes(ns);
            }
        }
    }
    let _sweep = Sweep(kept.clone());
    assert!(
        status.success(),
        "exit {status}; stderr:\n{}\nstdout:\n{stdout}",
        stderr.text()
    );
    let v: Value = serde_json::from_str(&stdout).expect("stdout is only JSON");
    assert!(v["pairs"].as_array().is_some_and(|p| !p.is_empty()));
    assert!(
        stderr.text().contains("ros2-cni lab --cleanup"),
        "says how to remove it:\n{}",
        stderr.text()
    );
    // still there after the lab exited: namespaces, and the agents inside
    assert!(!kept.is_empty(), "--keep left the namespaces");
    let inside: Vec<i32> = kept
        .iter()
        .flat_map(|ns| {
            ros2_cni::lab::testbed::sh(&["ip", "netns", "pids", ns])
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    assert!(
        inside
            .iter()
            .any(|p| cmdline(*p as u32).contains(" agent ")),
        "an agent still runs in the kept lab: {:?}",
        inside
            .iter()
            .map(|p| cmdline(*p as u32))
            .collect::<Vec<_>>()
    );
    let dirs = || -> Vec<String> {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("r2lab-{pid}-")))
            .collect()
    };
    assert!(!dirs().is_empty(), "--keep left the files");

    let out = Command::new(BIN)
        .args(["lab", "--cleanup"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        ours().is_empty(),
        "cleanup removed the namespaces: {:?}",
        ours()
    );
    assert!(dirs().is_empty(), "cleanup removed the files: {:?}", dirs());
    let deadline = Instant::now() + Duration::from_secs(2);
    while inside.iter().any(|p| start_time(*p as u32).is_some()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive: Vec<String> = inside
        .iter()
        .filter(|p| start_time(**p as u32).is_some())
        .map(|p| cmdline(*p as u32))
        .collect();
    assert!(alive.is_empty(), "cleanup stopped the processes: {alive:?}");
}

#[test]
fn lab_relay_scenario_fails_with_multicast_only_and_discovers_every_pod_pair_by_relay() {
    let graphs = graph_dir("relay");
    let (v, pid, watched) =
        lab_json(&["--relay", "--json", "--graph-dir", graphs.to_str().unwrap()]);
    assert_eq!(v["scenario"], "relay");
    assert_eq!(v["nodes"], 3, "--relay defaults to 3 nodes");
    assert_eq!(v["prober"], "ddsperf");
    assert_eq!(v["lanNodes"], serde_json::json!(["n1", "n2"]));
    assert_eq!(v["secondSubnet"]["subnet"], "192.168.16.0/20");
    assert_eq!(v["secondSubnet"]["nodes"], serde_json::json!(["n3"]));
    assert!(
        v["macvlan"].is_null(),
        "no macvlan run in the relay scenario"
    );
    let node = |p: &Value, end: &str| -> String {
        let l = p[end].as_str().unwrap();
        l.split('-').next().unwrap().to_owned()
    };
    // the relay configuration: every ordered pair of pods, each once, discovered
    let relay = v["pairs"].as_array().expect("relay pairs");
    let mut seen = BTreeSet::new();
    for p in relay {
        let (from, to) = (p["from"].as_str().unwrap(), p["to"].as_str().unwrap());
        assert!(seen.insert((from.to_owned(), to.to_owned())), "{p} twice");
        assert_eq!(p["discovered"], true, "relay pair {from} -> {to}: {v:#}");
        let s = p["seconds"].as_f64().expect("seconds is a number");
        assert!(s > 0.0 && s < 5.0, "{from} -> {to}: {s} s");
    }
    let hosts: BTreeSet<&str> = seen.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["n1-pod1", "n2-pod1", "n3-pod1"]),
        "pods only, no laptop"
    );
    assert_eq!(seen.len(), 6);
    // multicast only, same bed: the switch and the router keep the nodes apart
    let mc = &v["multicastOnly"];
    assert!(
        mc["configuration"]
            .as_str()
            .is_some_and(|c| c.contains("lanMulticast true")),
        "{mc}"
    );
    assert!(
        v["configuration"]
            .as_str()
            .is_some_and(|c| c.contains("lanMulticast false")),
        "{v}"
    );
    let mc_pairs = mc["pairs"].as_array().expect("multicast-only pairs");
    assert_eq!(mc_pairs.len(), 6);
    for p in mc_pairs {
        assert_ne!(node(p, "from"), node(p, "to"));
        assert_eq!(p["discovered"], false, "multicast only across nodes: {p}");
        assert!(p["seconds"].is_null(), "{p}");
    }
    assert!(
        mc["switchDroppedMulticastFrames"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "the switch was offered (and dropped) the pods' multicast: {mc}"
    );
    assert_eq!(
        v["graphs"],
        serde_json::json!({
            "multicast-only": graphs.join("multicast-only.svg"),
            "relay": graphs.join("relay.svg"),
        })
    );
    check_graph(&graphs, "multicast-only", mc_pairs, "lan-multicast");
    check_graph(&graphs, "relay", relay, "relay");
    let _ = std::fs::remove_dir_all(&graphs);
    assert_nothing_left(pid, watched);
}

#[test]
fn lab_relay_refuses_too_few_nodes_and_a_second_switch_behaviour() {
    for (args, needle) in [
        (
            &["--relay", "--nodes", "2"][..],
            "needs 3 to 8 robot computers",
        ),
        (&["--relay", "--wifi"][..], "cannot be used with"),
        (&["--relay", "--no-macvlan"][..], "cannot be used with"),
    ] {
        let out = Command::new(BIN).arg("lab").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}
