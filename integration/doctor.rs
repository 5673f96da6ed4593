//! Seeing discovery: the agent's participant table and `ros2-cni doctor`.

use crate::common::*;
use ros2_cni::lab::testbed::{ns_sh, Testbed};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

fn participants(tb: &Testbed, node: usize) -> Vec<Value> {
    let sock = tb.node(node).data_dir.join("ros2-cni/agent.sock");
    ros2_cni::api::exchange(&sock, "participants").unwrap()["participants"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn agent_tables_participants_and_doctor_names_one_bound_to_eth0() {
    let tb = bed(2);
    for i in 1..=2 {
        tb.start_agent(tb.node(i), &json!({})).unwrap();
    }
    let good = tb.add_pod(&spec("good", 1)).unwrap();
    // a pod whose DDS is pinned to the primary interface (which keeps MULTICAST)
    let bad = tb
        .add_pod(&spec("bad", 1).extra(json!({"primaryMulticast": true})))
        .unwrap();
    let remote = tb.add_pod(&spec("remote", 2)).unwrap();
    let pinned = "<CycloneDDS><Domain><General><NetworkInterfaceAddress>eth0</NetworkInterfaceAddress></General></Domain></CycloneDDS>";
    let uri = format!("CYCLONEDDS_URI={pinned}");
    for (ns, log, env) in [
        (&good.ns, "dds-good", None),
        (&bad.ns, "dds-bad", Some(uri.as_str())),
        (&remote.ns, "dds-remote", None),
    ] {
        let mut args = vec!["env"];
        if let Some(e) = env {
            args.push(e);
        }
        args.extend(["timeout", "-s", "KILL", "30", "ddsperf", "-D", "25", "pong"]);
        tb.spawn(ns, &args, log).unwrap();
    }
    let bad_primary = bad.result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(bad_primary.starts_with("10.1.1."), "{bad_primary}");
    // all three announce within a few seconds
    let deadline = Instant::now() + Duration::from_secs(15);
    let ps = loop {
        let ps = participants(&tb, 1);
        let pods: Vec<&str> = ps.iter().filter_map(|p| p["pod"].as_str()).collect();
        if pods.contains(&"robots/good") && pods.contains(&"robots/bad") && ps.len() >= 3 {
            break ps;
        }
        assert!(Instant::now() < deadline, "participants on node 1: {ps:#?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let by_pod = |pod: &str| ps.iter().find(|p| p["pod"] == pod).unwrap().clone();
    let g = by_pod("robots/good");
    assert_eq!(g["vendor"], "Eclipse Cyclone DDS", "{g}");
    assert_eq!(g["domain"], 0);
    assert_eq!(g["seenOn"], "ros2br0", "seen on the node bridge: {g}");
    let good_ip = ip_of(&good).to_string();
    assert!(
        g["locators"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["address"] == good_ip.as_str()),
        "advertises its ros0 address: {g}"
    );
    let b = by_pod("robots/bad");
    assert!(b["locators"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["address"].as_str() != Some(good_ip.as_str())));
    assert!(
        b["locators"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["address"] == bad_primary.as_str()),
        "{b}"
    );
    // the remote pod, seen through the uplink
    let remote_ip = ip_of(&remote).to_string();
    assert!(
        ps.iter().any(|p| p["seenOn"] == "eth0"
            && p["source"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("{remote_ip}:")))),
        "node 1 sees node 2's pod on the uplink: {ps:#?}"
    );
    let st = tb.agent_status(tb.node(1)).unwrap();
    assert!(st["participants"].as_u64() >= Some(3));

    let (code, report) = doctor(&tb, 1);
    assert_eq!(code, 1, "error findings make doctor exit 1: {report:#}");
    let findings = report["findings"].as_array().unwrap();
    let unreachable: Vec<&Value> = findings
        .iter()
        .filter(|f| f["code"] == "UNREACHABLE_LOCATORS")
        .collect();
    assert_eq!(
        unreachable.len(),
        1,
        "exactly the pinned participant: {findings:#?}"
    );
    let msg = unreachable[0]["message"].as_str().unwrap();
    assert!(
        msg.contains(&bad_primary) && msg.contains("robots/bad"),
        "names the address and the pod: {msg}"
    );
    assert_eq!(unreachable[0]["severity"], "error");
    for key in ["participants", "findings", "pods", "routes", "agent"] {
        assert!(report.get(key).is_some(), "report has {key}");
    }
    // the text form says the same for people
    let n = tb.node(1);
    let text = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &n.ns,
            BIN,
            "doctor",
            "--config",
            n.data_dir.join("agent.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    eprintln!("{text}");
    assert!(
        text.contains("UNREACHABLE_LOCATORS")
            && text.contains("robots/bad")
            && text.contains("agent: running"),
        "{text}"
    );
    let p0 = &report["participants"][0];
    for key in [
        "guidPrefix",
        "vendor",
        "domain",
        "name",
        "locators",
        "seenOn",
    ] {
        assert!(p0.get(key).is_some(), "participant has {key}: {p0}");
    }
}

#[test]
fn doctor_reports_a_dead_agent_and_a_pod_that_lost_its_interface() {
    let tb = bed(1);
    let pod = tb.add_pod(&spec("lost", 1)).unwrap();
    ns_sh(&pod.ns, &["ip", "link", "del", "ros0"]).unwrap();
    let (code, report) = doctor(&tb, 1);
    assert_eq!(code, 1);
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"AGENT_DOWN") && codes.contains(&"POD_WITHOUT_INTERFACE"),
        "{codes:?}"
    );
    assert_eq!(report["agent"]["running"], false);
    // a healthy quiet node: the agent up, the interface back (a fresh pod)
    let s = spec("fresh", 1);
    tb.del_pod(&pod, &spec("lost", 1)).unwrap();
    tb.add_pod(&s).unwrap();
    tb.start_agent(tb.node(1), &json!({})).unwrap();
    let (code, report) = doctor(&tb, 1);
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert_eq!(code, 0, "no error findings: {codes:?}");
    assert_eq!(codes, vec!["NO_PARTICIPANTS"]);
}

#[test]
fn doctor_that_cannot_run_exits_2_not_1() {
    // 1 means "error findings"; a doctor without a readable config must differ
    let dir = std::env::temp_dir().join(format!("r2t-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("config.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["doctor", "--json", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout when doctor cannot run"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config.json"),
        "the message names the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Cyclone DDS pinned to the pod's primary interface, as users pin it.
const PINNED_ETH0: &str = "CYCLONEDDS_URI=<CycloneDDS><Domain><General><NetworkInterfaceAddress>eth0</NetworkInterfaceAddress></General></Domain></CycloneDDS>";

/// Runs `ddsperf pong` in `ns` for up to 30 s, with `env` set (e.g. the pin).
fn ddsperf_pong(tb: &Testbed, ns: &str, env: Option<&str>, log: &str) {
    let mut args = vec!["env"];
    args.extend(env);
    args.extend(["timeout", "-s", "KILL", "30", "ddsperf", "-D", "25", "pong"]);
    tb.spawn(ns, &args, log).unwrap();
}

fn pod_names(ps: &[Value]) -> Vec<String> {
    ps.iter()
        .filter_map(|p| p["pod"].as_str().map(str::to_owned))
        .collect()
}

fn primary_ip(pod: &ros2_cni::lab::testbed::Pod) -> String {
    pod.result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn doctor_finds_a_participant_pinned_to_eth0_from_its_sockets_and_not_an_unpinned_one() {
    assert!(
        ros2_cni::lab::probe::have_ddsperf(),
        "ddsperf missing: apt-get install cyclonedds-tools"
    );
    let tb = bed(1);
    tb.start_agent(tb.node(1), &json!({})).unwrap();
    let pinned = tb.add_pod(&spec("pinned", 1)).unwrap();
    let plain = tb.add_pod(&spec("plain", 1)).unwrap();
    // before any DDS runs: nothing to find
    let (_, report) = doctor(&tb, 1);
    assert!(
        findings_with(&report, "SILENT_PARTICIPANT").is_empty(),
        "{report:#}"
    );
    ddsperf_pong(&tb, &pinned.ns, Some(PINNED_ETH0), "dds-pinned");
    ddsperf_pong(&tb, &plain.ns, None, "dds-plain");
    // the unpinned pod announces on ros0 (the control runs DDS too), and
    // doctor finds the pinned one, which never does
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let (code, report) = doctor(&tb, 1);
        let seen = pod_names(report["participants"].as_array().unwrap());
        if seen.contains(&"robots/plain".to_owned())
            && !findings_with(&report, "SILENT_PARTICIPANT").is_empty()
        {
            assert_eq!(code, 1, "SILENT_PARTICIPANT is an error: {report:#}");
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "no SILENT_PARTICIPANT for robots/pinned or no participant of robots/plain: {report:#}\n{}",
            tb.log("dds-pinned")
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let silent = findings_with(&report, "SILENT_PARTICIPANT");
    assert_eq!(silent.len(), 1, "only the pinned pod: {silent:#?}");
    let msg = silent[0]["message"].as_str().unwrap();
    for want in [
        "Pod robots/pinned ",
        "on eth0, not on ros0",
        &format!("bound to {}:", primary_ip(&pinned)),
        "unset the pin, or name ros0",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    assert!(!msg.contains("robots/plain"), "{msg}");
    let seen = pod_names(report["participants"].as_array().unwrap());
    assert!(
        !seen.contains(&"robots/pinned".to_owned()),
        "the pinned participant never announced itself where the agent sees: {seen:?}"
    );
    // the text form names it in the pods section and the findings
    let n = tb.node(1);
    let out = Command::new("ip")
        .args(["netns", "exec", &n.ns, BIN, "doctor", "--config"])
        .arg(n.data_dir.join("agent.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |pod: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(pod))
            .unwrap_or_else(|| panic!("no line for {pod}: {text}"))
            .to_owned()
    };
    assert!(
        line("robots/pinned").ends_with("SILENT: DDS on eth0, not ros0"),
        "{text}"
    );
    assert!(line("robots/plain").ends_with(" ok"), "{text}");
    assert!(
        text.contains("SILENT_PARTICIPANT: Pod robots/pinned"),
        "{text}"
    );
}

/// The nodes and edges of a DOT file `ros2-cni` wrote: nodes as (id,
/// kind, cluster, isolated), edges as (from, to, path, stop, both).
pub type DotNode = (String, String, Option<String>, Option<String>);
pub type DotEdge = (String, String, String, Option<String>, bool);

/// Reads the DOT ros2-cni writes (one statement per line) back into its
/// nodes and edges; fails on a line it does not understand.
pub fn read_dot(text: &str) -> (Vec<DotNode>, BTreeSet<DotEdge>) {
    // the quoted string at the start of `s`, and the rest
    fn quoted(s: &str) -> (String, &str) {
        assert!(s.starts_with('"'), "not a quoted string: {s}");
        let mut out = String::new();
        let mut chars = s[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, c)) => out.push(c),
                    None => break,
                },
                '"' => return (out, &s[i + 2..]),
                c => out.push(c),
            }
        }
        panic!("unterminated string: {s}");
    }
    fn attrs(s: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut rest = s.trim().trim_start_matches('[');
        while let Some((k, v)) = rest.split_once('=') {
            let k = k.trim().trim_start_matches(',').trim().to_owned();
            let v = v.trim_start();
            let (val, after) = if v.starts_with('"') {
                quoted(v)
            } else {
                let end = v.find([',', ']']).unwrap_or(v.len());
                (v[..end].to_owned(), &v[end..])
            };
            out.insert(k, val);
            rest = after;
        }
        out
    }
    let mut lines = text.lines().map(str::trim);
    assert_eq!(lines.next(), Some("digraph discovery {"), "{text}");
    let mut cluster = None;
    let (mut nodes, mut edges) = (vec![], BTreeSet::new());
    for l in lines {
        if l.starts_with("graph [") || l.starts_with("node [") || l.starts_with("edge [") {
            continue;
        } else if let Some(rest) = l.strip_prefix("subgraph ") {
            let (name, _) = quoted(rest);
            cluster = Some(name.strip_prefix("cluster_").unwrap().to_owned());
        } else if l.starts_with("label=") {
            assert!(cluster.is_some(), "{l}");
        } else if l == "}" {
            cluster = None;
        } else if l.starts_with('"') {
            let (from, rest) = quoted(l);
            if let Some(rest) = rest.trim_start().strip_prefix("->") {
                let (to, rest) = quoted(rest.trim_start());
                let a = attrs(rest.trim_end_matches(';'));
                edges.insert((
                    from,
                    to,
                    a["path"].clone(),
                    a.get("stop").cloned(),
                    a.get("dir").is_some_and(|d| d == "both"),
                ));
            } else {
                let a = attrs(rest.trim_end_matches(';'));
                nodes.push((
                    from,
                    a["kind"].clone(),
                    cluster.clone(),
                    a.get("isolated").cloned(),
                ));
            }
        } else {
            panic!("unexpected DOT line: {l}\n{text}");
        }
    }
    (nodes, edges)
}

/// The `<title>`s of an SVG's nodes and edges (`<g class="node">`,
/// `<g class="edge">`), as Graphviz writes them and ros2-cni too.
pub fn svg_titles(svg: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut nodes = BTreeSet::new();
    let mut edges = BTreeSet::new();
    for part in svg.split("<g id=\"").skip(1) {
        let class = part
            .split("class=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let title = part
            .split("<title>")
            .nth(1)
            .unwrap()
            .split("</title>")
            .next()
            .unwrap()
            .replace("&gt;", ">")
            .replace("&lt;", "<")
            .replace("&quot;", "\"")
            .replace("&#45;", "-")
            .replace("&amp;", "&");
        match class {
            "node" => assert!(nodes.insert(title), "node title twice"),
            "edge" => {
                edges.insert(title);
            }
            // Graphviz's graph and clusters
            _ => {}
        }
    }
    (nodes, edges)
}

#[test]
fn doctor_graph_draws_the_nodes_view_of_a_two_node_bed() {
    assert!(
        ros2_cni::lab::probe::have_ddsperf(),
        "ddsperf missing: apt-get install cyclonedds-tools"
    );
    let tb = bed(2);
    // the cluster form: n1's doctor knows n2's pool, so n2's pod is drawn on n2
    let nodes: serde_json::Map<String, Value> = tb
        .nodes
        .iter()
        .map(|n| (format!("n{}", n.idx), json!({"podRange": n.pool})))
        .collect();
    for i in 1..=2 {
        tb.set_node_config(
            i,
            json!({"podRange": null, "nodeName": format!("n{i}"), "nodes": nodes}),
        );
        tb.start_agent(tb.node(i), &json!({})).unwrap();
    }
    let good = tb.add_pod(&spec("good", 1)).unwrap();
    let pinned = tb.add_pod(&spec("pinned", 1)).unwrap();
    let remote = tb.add_pod(&spec("remote", 2)).unwrap();
    ddsperf_pong(&tb, &good.ns, None, "dds-good");
    ddsperf_pong(&tb, &pinned.ns, Some(PINNED_ETH0), "dds-pinned");
    ddsperf_pong(&tb, &remote.ns, None, "dds-remote");
    let remote_ip = ip_of(&remote).to_string();
    // n1's agent sees its pod on the bridge and n2's on the uplink
    wait_for(20, "n1 sees robots/good and n2's pod", || {
        let ps = participants(&tb, 1);
        ps.iter().any(|p| p["pod"] == "robots/good")
            && ps.iter().any(|p| {
                p["seenOn"] == "eth0"
                    && p["source"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(&format!("{remote_ip}:")))
            })
    });
    let n = tb.node(1);
    let svg_file = tb.dir.join("n1-graph.svg");
    let out = Command::new("ip")
        .args(["netns", "exec", &n.ns, BIN, "doctor", "--config"])
        .arg(n.data_dir.join("agent.json"))
        .arg("--graph")
        .arg(&svg_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the pinned pod is an error: {text}"
    );
    let dot_file = svg_file.with_extension("dot");
    assert!(
        text.contains(&format!("graph: {}", svg_file.display()))
            && text.contains(&format!("as DOT {}", dot_file.display()))
            && text.contains("no Graphviz needed"),
        "the output names both files: {text}"
    );
    let (nodes, edges) = read_dot(&std::fs::read_to_string(&dot_file).unwrap());
    let s = |x: &str| x.to_owned();
    let remote_id = format!("pod:{remote_ip}");
    let isolated = nodes
        .iter()
        .find(|n| n.0 == "pod:robots/pinned")
        .and_then(|n| n.3.clone())
        .unwrap_or_else(|| panic!("the pinned pod is isolated: {nodes:#?}"));
    assert!(isolated.contains("DDS uses eth0, not ros0"), "{isolated}");
    let c1 = Some(s("computer:n1"));
    let c2 = Some(s("computer:n2"));
    assert_eq!(
        nodes,
        [
            (s("computer:n1"), s("computer"), c1.clone(), None),
            (s("pod:robots/good"), s("pod"), c1.clone(), None),
            (s("pod:robots/pinned"), s("pod"), c1, Some(isolated)),
            (s("computer:n2"), s("computer"), c2.clone(), None),
            (remote_id.clone(), s("pod"), c2, None),
        ],
        "{text}"
    );
    assert_eq!(
        edges,
        BTreeSet::from([
            (
                s("pod:robots/good"),
                s("computer:n1"),
                s("bridge"),
                None,
                false
            ),
            (
                remote_id.clone(),
                s("computer:n1"),
                s("lan-multicast"),
                None,
                false
            ),
        ]),
        "{text}"
    );
    // with --json, stdout stays JSON and the line goes to stderr
    let json_out = Command::new("ip")
        .args(["netns", "exec", &n.ns, BIN, "doctor", "--json", "--config"])
        .arg(n.data_dir.join("agent.json"))
        .arg("--graph")
        .arg(&svg_file)
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&json_out.stdout).expect("stdout is only JSON");
    assert!(
        String::from_utf8_lossy(&json_out.stderr)
            .contains(&format!("graph: {}", svg_file.display())),
        "{}",
        String::from_utf8_lossy(&json_out.stderr)
    );
    // the SVG draws the same graph, and so does Graphviz from the DOT
    let node_ids: BTreeSet<String> = nodes.iter().map(|n| n.0.clone()).collect();
    let edge_titles: BTreeSet<String> = edges.iter().map(|e| format!("{}->{}", e.0, e.1)).collect();
    let ours = svg_titles(&std::fs::read_to_string(&svg_file).unwrap());
    assert_eq!(ours, (node_ids.clone(), edge_titles.clone()));
    let gv = Command::new("dot")
        .arg("-Tsvg")
        .arg(&dot_file)
        .output()
        .expect("Graphviz's dot (apt-get install graphviz, listed in .ci/packages.txt)");
    assert!(
        gv.status.success() && gv.stderr.is_empty(),
        "Graphviz renders the DOT without a word: {}",
        String::from_utf8_lossy(&gv.stderr)
    );
    assert_eq!(
        svg_titles(&String::from_utf8_lossy(&gv.stdout)),
        (node_ids, edge_titles)
    );
}

#[test]
fn doctor_reads_its_config_from_the_conflist_or_the_plugin_entry() {
    let tb = bed(1);
    let n = tb.node(1);
    let agent = tb.start_agent(n, &json!({})).unwrap();
    let entry = tb.ros2cni_conf(n, "1.0.0", &json!({}));
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "plugins": [tb.primary_conf(n, "1.0.0"), entry.clone()],
    });
    let write = |name: &str, v: &Value| {
        let f = n.data_dir.join(name);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, serde_json::to_vec_pretty(v).unwrap()).unwrap();
        f
    };
    // the conf dir doctor checks for the entry: the conflist's own
    let conf_dir = n.data_dir.join("net.d");
    let run = |file: &std::path::Path| {
        let out = Command::new("ip")
            .args(["netns", "exec", &n.ns, BIN, "doctor", "--json", "--config"])
            .arg(file)
            .arg("--cni-conf-dir")
            .arg(&conf_dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for file in [
        write("net.d/10-calico.conflist", &conflist),
        write("ros2-cni-entry.json", &entry),
    ] {
        let (code, report, err) = run(&file);
        assert_eq!(code, Some(0), "{}: {err} {report:#}", file.display());
        // it found the agent where the entry's dataDir says
        assert_eq!(report["agent"]["running"], true, "{report:#}");
        assert_eq!(report["agent"]["pid"], agent, "{report:#}");
        assert_eq!(report["conflist"]["entry"], true, "{report:#}");
    }
    // a conflist without the entry, and another plugin's entry: doctor
    // cannot run (2), and says which file and why
    let mut bare = conflist.clone();
    bare["plugins"].as_array_mut().unwrap().pop();
    let bare = write("20-bare.conflist", &bare);
    let (code, report, err) = run(&bare);
    assert_eq!(code, Some(2), "{report:#}");
    assert!(
        err.contains(&bare.display().to_string()) && err.contains("without a ros2-cni entry"),
        "{err}"
    );
    let other = write("ptp.json", &tb.primary_conf(n, "1.0.0"));
    let (code, _, err) = run(&other);
    assert_eq!(code, Some(2));
    assert!(err.contains("not ros2-cni's"), "{err}");
}
