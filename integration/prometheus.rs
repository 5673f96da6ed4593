//! A real Prometheus (Debian's `prometheus` package) scraping a real agent:
//! the server runs inside the node's network namespace, listening on
//! 127.0.0.1 there, runs the scrape job docs/install.md documents (its pod
//! discovery stood in for by static targets with the same meta labels),
//! scrapes the agent every second at the node's own address (metricsAddress
//! 0.0.0.0:9741, what docs/install.md tells DaemonSet users to set) and
//! evaluates deploy/prometheus/ros2-cni-alerts.yaml. Known
//! discovery traffic from pods; then the per-pod discovery counts, the
//! rate-limit drops and the domain-policy drops Prometheus stored must be
//! exactly what was sent, the alerts for them active (and no other), and
//! every panel query of deploy/grafana/ros2-cni-dashboard.json must return
//! data. The alert rules' own unit tests run with promtool.

use crate::agent::{exactly_once, receivers, send_and_count, Sender};
use crate::common::*;
use ros2_cni::lab::testbed::{http_get, Pod, Testbed, LAPTOP_IP};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const SPDP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const ALERTS: &str = "deploy/prometheus/ros2-cni-alerts.yaml";
const ALERTS_TEST: &str = "deploy/prometheus/ros2-cni-alerts.test.yaml";
const DASHBOARD: &str = "deploy/grafana/ros2-cni-dashboard.json";

/// Percent-encodes a query-string value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The body as `http_get` returns it (headers cut off): Go's HTTP/1.1 server
/// sends larger bodies chunked, and a JSON body never starts with a chunk size.
fn dechunk(body: &str) -> String {
    if body.trim_start().starts_with(['{', '[']) {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("not a chunked body: {body:?}"));
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// Series values by the values of some of their labels.
type Series = BTreeMap<Vec<String>, f64>;

/// Debian's Prometheus inside a namespace, on 127.0.0.1 there.
struct Prometheus {
    ns: String,
    addr: String,
}

impl Prometheus {
    /// Starts it with the scrape `job` every second and the repository's
    /// alert rules, storage under the test bed's directory.
    fn start(tb: &Testbed, ns: &str, job: Value) -> Prometheus {
        assert!(
            Path::new("/usr/bin/prometheus").exists(),
            "Debian's prometheus is missing: apt-get install prometheus (.ci/packages.txt)"
        );
        // a free port inside the namespace (nothing else binds there)
        let port = ros2_cni::kernel::netns::Netns::open(format!("/var/run/netns/{ns}"))
            .unwrap()
            .run(|| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .unwrap();
        let dir = tb.dir.join("prometheus");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [repo().join(ALERTS)],
            "scrape_configs": [job]
        });
        // JSON is YAML
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let addr = format!("127.0.0.1:{port}");
        tb.spawn(
            ns,
            &[
                "/usr/bin/prometheus",
                &format!("--config.file={}", cfg.display()),
                &format!("--storage.tsdb.path={}", dir.join("data").display()),
                &format!("--web.listen-address={addr}"),
                "--log.level=warn",
            ],
            "prometheus",
        )
        .unwrap();
        let p = Prometheus {
            ns: ns.to_owned(),
            addr,
        };
        wait_for(60, "Prometheus is ready", || {
            http_get(&p.ns, &p.addr, "/-/ready").is_ok_and(|b| b.contains("Ready"))
        });
        p
    }

    /// GET `path` of the HTTP API: its `data`.
    fn api(&self, path: &str) -> Value {
        let body = http_get(&self.ns, &self.addr, path).unwrap();
        let v: Value = serde_json::from_str(&dechunk(&body))
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "{path}: {v}");
        v["data"].clone()
    }

    /// An instant query: the result vector.
    fn query(&self, q: &str) -> Vec<Value> {
        let d = self.api(&format!("/api/v1/query?query={}", urlencode(q)));
        assert_eq!(d["resultType"], "vector", "{q}: {d}");
        d["result"].as_array().unwrap().clone()
    }

    /// Each series of `metric` (job ros2-cni) by the values of `labels`.
    fn series(&self, metric: &str, labels: &[&str]) -> Series {
        self.query(&format!("{metric}{{job=\"ros2-cni\"}}"))
            .iter()
            .map(|r| {
                (
                    labels
                        .iter()
                        .map(|l| r["metric"][l].as_str().unwrap_or("").to_owned())
                        .collect(),
                    r["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Active alerts as (name, state, labels).
    fn alerts(&self) -> Vec<(String, String, Value)> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap().to_owned(),
                    a["state"].as_str().unwrap().to_owned(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }
}

/// docs/install.md's scrape config (the first ```yaml block of its
/// Monitoring section), parsed.
fn documented_scrape_config() -> Value {
    let doc = std::fs::read_to_string(repo().join("docs/install.md")).unwrap();
    let monitoring = &doc[doc.find("\n## Monitoring\n").expect("a Monitoring section")..];
    let start = monitoring.find("```yaml\n").expect("a scrape config") + 8;
    let snippet = &monitoring[start..start + monitoring[start..].find("```").unwrap()];
    serde_norway::from_str(snippet).unwrap()
}

/// The annotations of the DaemonSet's pods in `manifest`.
fn pod_annotations(manifest: &str) -> Value {
    use serde::Deserialize;
    let text = std::fs::read_to_string(repo().join(manifest)).unwrap();
    let ds = serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "DaemonSet")
        .unwrap();
    ds["spec"]["template"]["metadata"]["annotations"].clone()
}

/// The documented job with the targets Kubernetes' pod discovery would give
/// it, as static targets with the same meta labels: Debian's Prometheus is
/// built without Kubernetes discovery. Each pod: its address (a host-network
/// pod without declared ports: the node's address alone), its
/// `app.kubernetes.io/name` label, its annotations and its node.
fn as_discovered(pods: &[(String, &str, &Value, &str)]) -> Value {
    let mut job = documented_scrape_config()["scrape_configs"][0].clone();
    assert_eq!(job["kubernetes_sd_configs"][0]["role"], "pod", "{job}");
    job.as_object_mut().unwrap().remove("kubernetes_sd_configs");
    let groups: Vec<Value> = pods
        .iter()
        .map(|(addr, app, annotations, node)| {
            let mut labels = serde_json::Map::new();
            labels.insert(
                "__meta_kubernetes_pod_label_app_kubernetes_io_name".into(),
                json!(app),
            );
            labels.insert("__meta_kubernetes_pod_node_name".into(), json!(node));
            for (k, v) in annotations.as_object().unwrap() {
                let name: String = k
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                labels.insert(
                    format!("__meta_kubernetes_pod_annotation_{name}"),
                    v.clone(),
                );
            }
            json!({"targets": [addr], "labels": labels})
        })
        .collect();
    job["static_configs"] = json!(groups);
    job
}

/// The same series as the agent's own /metrics page shows them.
fn page_series(page: &str, metric: &str, labels: &[&str]) -> Series {
    let mut out = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let Some((l, v)) = rest.strip_prefix('{').and_then(|r| r.split_once("} ")) else {
            continue;
        };
        let map: BTreeMap<&str, &str> = l
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        out.insert(
            labels
                .iter()
                .map(|k| map.get(k).copied().unwrap_or("").to_owned())
                .collect(),
            v.parse().unwrap(),
        );
    }
    out
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn pod_in(tb: &Testbed, name: &str, ns: &str, extra: &Value) -> Pod {
    let mut s = spec(name, 1).extra(extra.clone());
    s.k8s_namespace = ns.into();
    tb.add_pod(&s).unwrap()
}

/// Every `expr` in the dashboard (rows' panels too), with the panel's title.
fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    p["title"].as_str().unwrap().to_owned(),
                    t["expr"].as_str().unwrap().to_owned(),
                ));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = vec![];
    walk(&d["panels"], &mut out);
    out
}

#[test]
fn a_real_prometheus_stores_what_pods_sent_fires_the_alerts_and_feeds_every_panel() {
    let t0 = Instant::now();
    let tb = bed(1);
    let node = tb.node(1);
    // team-a may use domain 0, team-b domain 1; a low per-pod discovery
    // limit (1/s, burst 10) that a pod sending 30 datagrams exceeds; a relay
    // peer that never answers (the laptop) for the relay series
    let cfg = json!({
        "metricsAddress": "0.0.0.0:9741",
        "domains": {"team-a": [0], "team-b": [1]},
        "podDiscoveryRate": 1,
        "podDiscoveryBurst": 10,
        "peers": [LAPTOP_IP.to_string()]
    });
    tb.start_agent(node, &cfg).unwrap();
    let a1 = pod_in(&tb, "a1", "team-a", &cfg);
    let a3 = pod_in(&tb, "a3", "team-a", &cfg);
    let fl = pod_in(&tb, "flooder", "team-a", &cfg);
    let b1 = pod_in(&tb, "b1", "team-b", &cfg);
    wait_for(10, "the agent counts the four pods' discovery", || {
        tb.agent_status(node).unwrap()["discoveryDatagrams"]
            .as_array()
            .map_or(0, Vec::len)
            == 4
    });
    // the documented scrape config, with the targets pod discovery would
    // give it: this agent's pod, annotated as the DaemonSet's are, and
    // another kube-system pod that must be left alone
    let annotations = pod_annotations("deploy/microk8s/ros2-cni.yaml");
    let job = as_discovered(&[
        (node.ip.to_string(), "ros2-cni", &annotations, "robot-1"),
        ("127.0.0.1:1".into(), "calico-node", &annotations, "robot-1"),
    ]);
    let prom = Prometheus::start(&tb, &node.ns, job);
    let up = Instant::now();
    let target = format!("{}:9741", node.ip);
    let mut targets = Value::Null;
    wait_for(30, "one target, the agent, up", || {
        targets = prom.api("/api/v1/targets");
        targets["activeTargets"].as_array().map_or(0, Vec::len) == 1
            && targets["activeTargets"][0]["health"] == "up"
    });
    let t = &targets["activeTargets"][0];
    assert_eq!(t["scrapeUrl"], format!("http://{target}/metrics"), "{t}");
    assert_eq!(
        t["labels"],
        json!({"instance": target, "job": "ros2-cni", "node": "robot-1"}),
        "{t}"
    );
    assert_eq!(
        targets["droppedTargets"].as_array().unwrap().len(),
        1,
        "{targets}"
    );
    // scraped, healthy, and every pod's series there at 0 before any traffic
    // (increase() in the alerts counts from the first sample)
    wait_for(30, "Prometheus has every pod's series", || {
        prom.series("up", &[]).values().eq([&1.0])
            && prom.series("ros2cni_healthy", &[]).values().eq([&1.0])
            && prom
                .series(
                    "ros2cni_pod_discovery_datagrams_total",
                    &["pod", "direction"],
                )
                .len()
                == 8
            && prom
                .series("ros2cni_pod_rate_limited_packets_total", &["pod"])
                .len()
                == 4
            && prom
                .series(
                    "ros2cni_pod_domain_dropped_packets_total",
                    &["pod", "direction"],
                )
                .len()
                == 8
    });
    eprintln!("Prometheus up and scraping after {:?}", up.elapsed());

    // the traffic: a1 sends 5 to domain 0's SPDP port (team-a's a3 and the
    // flooder get them, team-b's b1 does not) and 3 to domain 1's (dropped
    // as it leaves a1); the flooder sends 30 to domain 0, of which the limit
    // passes its burst (and what refilled meanwhile)
    let rx = |port: u16| {
        receivers(
            &[("a3", &a3.ns, ip_of(&a3)), ("b1", &b1.ns, ip_of(&b1))],
            SPDP,
            port,
        )
    };
    fn from(p: &Pod) -> Sender<'_> {
        Sender(&p.ns, ip_of(p), 1)
    }
    let got = send_and_count(from(&a1), (SPDP, 7400), 5, &rx(7400), "a1-d0");
    assert_eq!(got["a3"], exactly_once(5), "{got:?}");
    assert!(got["b1"].is_empty(), "{got:?}");
    let got = send_and_count(from(&a1), (SPDP, 7650), 3, &rx(7650), "a1-d1");
    assert!(got.values().all(|g| g.is_empty()), "{got:?}");
    let n = 30;
    let got = send_and_count(from(&fl), (SPDP, 7400), n, &rx(7400), "fl");
    assert!(got["b1"].is_empty(), "{got:?}");
    assert!(got["a3"].values().all(|c| *c == 1), "{got:?}");
    let passed = got["a3"].len() as u64;
    assert!(
        (10..n as u64).contains(&passed),
        "the limit (burst 10) passes 10 and what refills at 1/s, drops the rest: {passed} of {n} passed"
    );
    let (n, a_sent, a_blocked) = (n as u64, 5u64, 3u64);
    eprintln!("sent: a1 {a_sent} (domain 0) + {a_blocked} (domain 1), flooder {n}, of which {passed} passed");

    let mut want_disc = BTreeMap::new();
    for (pod, sent, received) in [
        ("a1", a_sent + a_blocked, passed),
        ("a3", 0, a_sent + passed),
        ("flooder", n, a_sent),
        ("b1", 0, 0),
    ] {
        want_disc.insert(key(&[pod, "sent"]), sent as f64);
        want_disc.insert(key(&[pod, "received"]), received as f64);
    }
    let mut want_limited = BTreeMap::new();
    for pod in ["a1", "a3", "b1"] {
        want_limited.insert(key(&[pod]), 0.0);
    }
    want_limited.insert(key(&["flooder"]), (n - passed) as f64);
    let mut want_domain = BTreeMap::new();
    for pod in ["a1", "a3", "flooder", "b1"] {
        for dir in ["sent", "received"] {
            want_domain.insert(key(&[pod, dir]), 0.0);
        }
    }
    want_domain.insert(key(&["a1", "sent"]), a_blocked as f64);
    want_domain.insert(key(&["b1", "received"]), (a_sent + passed) as f64);

    let checks: [(&str, &[&str], &Series); 3] = [
        (
            "ros2cni_pod_discovery_datagrams_total",
            &["pod", "direction"],
            &want_disc,
        ),
        (
            "ros2cni_pod_rate_limited_packets_total",
            &["pod"],
            &want_limited,
        ),
        (
            "ros2cni_pod_domain_dropped_packets_total",
            &["pod", "direction"],
            &want_domain,
        ),
    ];
    let sent_at = Instant::now();
    let mut last: Vec<Series>;
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        last = checks
            .iter()
            .map(|(m, l, _)| prom.series(m, l))
            .collect::<Vec<_>>();
        if checks
            .iter()
            .zip(&last)
            .all(|((_, _, want), got)| *want == got)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus's series are not what was sent:\n{}",
            checks
                .iter()
                .zip(&last)
                .map(|((m, _, want), got)| format!("{m}\n  got:  {got:?}\n  want: {want:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    eprintln!(
        "Prometheus stored the counts {:?} after the traffic",
        sent_at.elapsed()
    );
    // the namespace label is the pod's Kubernetes namespace
    let ns_of = prom.series(
        "ros2cni_pod_discovery_datagrams_total",
        &["pod", "namespace"],
    );
    for (pod, ns) in [("a1", "team-a"), ("flooder", "team-a"), ("b1", "team-b")] {
        assert!(
            ns_of.contains_key(&key(&[pod, ns])),
            "{pod} in {ns}: {ns_of:?}"
        );
    }
    // the agent's own page, read at the node's address, says the same
    let page = http_get(&node.ns, &target, "/metrics").unwrap();
    for ((m, l, want), got) in checks.iter().zip(&last) {
        assert_eq!(&page_series(&page, m, l), *want, "{m} on the agent's page");
        assert_eq!(got, *want);
    }

    // the alert rules, evaluated on the live series: the drops' alerts and
    // the never-answering peer's are active (pending: each has a `for`), the
    // rest quiet, and every rule evaluates without error
    let active = |name: &str, labels: &[(&str, &str)], alerts: &[(String, String, Value)]| {
        alerts
            .iter()
            .any(|(n, _, l)| n == name && labels.iter().all(|(k, v)| l[k] == *v))
    };
    let laptop = LAPTOP_IP.to_string();
    let mut alerts = vec![];
    wait_for(20, "the drop and relay alerts are active", || {
        alerts = prom.alerts();
        active(
            "ROS2CNIPodDiscoveryRateLimited",
            &[("pod", "flooder"), ("namespace", "team-a")],
            &alerts,
        ) && active(
            "ROS2CNIDiscoveryDomainBlocked",
            &[("pod", "a1"), ("direction", "sent")],
            &alerts,
        ) && active(
            "ROS2CNIDiscoveryDomainBlocked",
            &[("pod", "b1"), ("direction", "received")],
            &alerts,
        ) && active(
            "ROS2CNIRelayPeerUnreachable",
            &[("peer", laptop.as_str())],
            &alerts,
        )
    });
    let names: BTreeSet<&str> = alerts.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "ROS2CNIDiscoveryDomainBlocked",
            "ROS2CNIPodDiscoveryRateLimited",
            "ROS2CNIRelayPeerUnreachable"
        ]),
        "only these: {alerts:?}"
    );
    assert_eq!(
        alerts
            .iter()
            .filter(|(n, _, _)| n == "ROS2CNIPodDiscoveryRateLimited")
            .count(),
        1,
        "only the flooder is limited: {alerts:?}"
    );
    assert_eq!(
        alerts
            .iter()
            .filter(|(n, _, _)| n == "ROS2CNIDiscoveryDomainBlocked")
            .count(),
        2,
        "a1's sent and b1's received drops only: {alerts:?}"
    );
    let groups = prom.api("/api/v1/rules")["groups"].clone();
    let rules: Vec<&Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(rules.len(), 8, "{groups}");
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
    }

    // the dashboard: every panel query returns data
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(DASHBOARD)).unwrap()).unwrap();
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 15, "{exprs:?}");
    for (title, expr) in &exprs {
        let q = expr
            .replace("$__rate_interval", "30s")
            .replace("$instance", ".*");
        assert!(
            !q.contains('$'),
            "{title}: a variable the test does not know: {expr}"
        );
        let mut r = vec![];
        wait_for(10, &format!("panel \"{title}\" returns data: {q}"), || {
            r = prom.query(&q);
            !r.is_empty()
        });
        eprintln!("panel {title:?}: {} series", r.len());
    }
    // its agent variable lists the agent
    let var = &dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "instance")
        .unwrap()["query"]["query"];
    assert_eq!(var, "label_values(ros2cni_healthy, instance)");
    let values = prom.api("/api/v1/label/instance/values?match[]=ros2cni_healthy");
    assert_eq!(values, json!([target]));
    eprintln!("whole test: {:?}", t0.elapsed());
}

/// The dashboard's structure: what Grafana needs to import it.
#[test]
fn the_dashboard_is_grafana_json_with_a_prometheus_datasource_variable() {
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(DASHBOARD)).unwrap()).unwrap();
    assert_eq!(dash["uid"], "ros2-cni");
    assert!(dash["schemaVersion"].as_u64() > Some(30));
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == "datasource"
        && v["type"] == "datasource"
        && v["query"] == "prometheus"));
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id {}",
            p["id"]
        );
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{}: gridPos.{k}", p["title"]);
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("promtool cannot be run ({e}): apt-get install prometheus"))
}

/// Metric names (`ros2cni_...`) in `text`, without the counters' `_total`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("ros2cni_") {
        let start = i + at;
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        let name = &text[start..end];
        out.insert(name.strip_suffix("_total").unwrap_or(name).to_owned());
        i = end;
    }
    out
}

#[test]
fn alert_rules_pass_promtool_and_each_alert_is_tested_firing_and_quiet() {
    let rules = repo().join(ALERTS);
    let o = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("SUCCESS: 8 rules found"),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = promtool(&["test", "rules", repo().join(ALERTS_TEST).to_str().unwrap()]);
    assert!(
        o.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // every metric the rules and the dashboard use is one the agent serves
    let src: String = [
        "src/agent/metrics.rs",
        "src/agent/limits.rs",
        "src/agent/domains.rs",
        "src/relay/mod.rs",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(repo().join(f)).unwrap())
    .collect();
    let used: BTreeSet<String> = [ALERTS, DASHBOARD]
        .iter()
        .flat_map(|f| metric_names(&std::fs::read_to_string(repo().join(f)).unwrap()))
        .collect();
    assert!(used.len() >= 15, "{used:?}");
    for m in &used {
        assert!(
            src.contains(&format!("\"{m}\"")),
            "{m} is not a metric of the agent"
        );
    }

    // each alert's unit tests can fail: with its expression never true the
    // firing expectations fail, always true the quiet ones
    let doc: Value = serde_norway::from_str(&std::fs::read_to_string(&rules).unwrap()).unwrap();
    let names: Vec<String> = doc["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 8);
    let dir = std::env::temp_dir().join(format!("ros2-cni-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo().join(ALERTS_TEST),
        dir.join("ros2-cni-alerts.test.yaml"),
    )
    .unwrap();
    for (i, name) in names.iter().enumerate() {
        for (expr, breaks) in [("vector(0) > 1", "fires"), ("vector(1)", "stays quiet")] {
            let mut d = doc.clone();
            d["groups"][0]["rules"][i]["expr"] = json!(expr);
            std::fs::write(
                dir.join("ros2-cni-alerts.yaml"),
                serde_norway::to_string(&d).unwrap(),
            )
            .unwrap();
            let o = promtool(&[
                "test",
                "rules",
                dir.join("ros2-cni-alerts.test.yaml").to_str().unwrap(),
            ]);
            assert!(
                !o.status.success(),
                "the unit tests do not check that {name} {breaks}: they pass with expr {expr}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The DaemonSets' scrape annotations name the agent's port and path, and
/// the scrape config docs/install.md gives for them passes `promtool check
/// config` and reads those annotations.
#[test]
fn the_daemonset_is_annotated_for_scraping_and_the_documented_scrape_config_is_valid() {
    let port = ros2_cni::config::DEFAULT_METRICS_ADDRESS
        .rsplit_once(':')
        .unwrap()
        .1;
    for manifest in [
        "deploy/microk8s/ros2-cni.yaml",
        "deploy/generic/ros2-cni.yaml",
    ] {
        assert_eq!(
            pod_annotations(manifest),
            json!({
                "prometheus.io/scrape": "true",
                "prometheus.io/port": port,
                "prometheus.io/path": "/metrics"
            }),
            "{manifest}"
        );
    }
    let doc = std::fs::read_to_string(repo().join("docs/install.md")).unwrap();
    assert!(doc.contains("\"metricsAddress\": \"0.0.0.0:9741\""));
    let cfg = documented_scrape_config();
    let text = serde_json::to_string(&cfg).unwrap();
    for a in ["scrape", "port", "path"] {
        assert!(
            text.contains(&format!(
                "__meta_kubernetes_pod_annotation_prometheus_io_{a}"
            )),
            "the scrape config reads prometheus.io/{a}"
        );
    }
    assert_eq!(
        cfg["scrape_configs"][0]["job_name"], "ros2-cni",
        "the job the alerts select"
    );
    // promtool checks the rest (Debian's build has no Kubernetes discovery;
    // the relabeling runs for real in the live test)
    let mut checked = cfg.clone();
    checked["scrape_configs"][0] = as_discovered(&[(
        "192.168.1.11".into(),
        "ros2-cni",
        &pod_annotations("deploy/microk8s/ros2-cni.yaml"),
        "robot-1",
    )]);
    let dir = std::env::temp_dir().join(format!("ros2-cni-promcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(repo().join(ALERTS), dir.join("ros2-cni-alerts.yaml")).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        serde_json::to_vec_pretty(&checked).unwrap(),
    )
    .unwrap();
    let o = promtool(&[
        "check",
        "config",
        dir.join("prometheus.yml").to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        o.status.success(),
        "promtool check config on docs/install.md's scrape config: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
