//! The MicroK8s add-on: `addons.yaml` and `addons/ros2-cni/{enable,disable}`
//! run as `microk8s enable|disable ros2-cni` runs them ($SNAP and $SNAP_DATA
//! set), on a MicroK8s-shaped temp tree whose `$SNAP/microk8s-kubectl.wrapper`
//! is a fake kubectl: a script that records each call (argv, and stdin for
//! `apply -f -`) and answers the calls the scripts make like a cluster with
//! the given nodes would. The manifests the scripts apply are validated
//! offline with kubernetes-validate and read back with ros2-cni's own config
//! validation. The disable test plays kubelet with a real agent on the
//! namespace test bed (root), so "the CNI dirs byte for byte as before" is
//! checked on a real uninstall-on-exit.

use crate::common::BIN;
use ros2_cni::install::Entry;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const DATA_DIR: &str = "/var/snap/microk8s/common/var/lib/ros2-cni";

/// Calico's conflist as calico-node writes it (tabs, its own key order), so
/// that a byte-for-byte comparison means something.
const CALICO: &str = "{\n\t\"name\": \"k8s-pod-network\",\n\t\"cniVersion\": \"0.3.1\",\n\t\"plugins\": [\n\t\t{\"type\": \"calico\", \"datastore_type\": \"kubernetes\", \"mtu\": 1440,\n\t\t \"ipam\": {\"type\": \"calico-ipam\"}, \"policy\": {\"type\": \"k8s\"}},\n\t\t{\"type\": \"portmap\", \"snat\": true, \"capabilities\": {\"portMappings\": true}}\n\t]\n}\n";

/// The fake kubectl. State under $FAKE_KUBECTL: `nodes` (the cluster's node
/// names), `state/` (what was applied and not deleted), `calls/NNN.argv`
/// (one argument per line) and `calls/NNN.stdin`; switches: `nodes_fail`
/// (the API server does not answer), `rollout_fail`, `pods_stay` (pods never
/// go), `agent.pid` (the pod's agent: `delete daemonset` sends it SIGTERM,
/// as kubelet does, and the pod is listed until the process is gone).
const FAKE_KUBECTL: &str = r#"#!/bin/bash
set -u
F="$FAKE_KUBECTL"
seq=$(( $(cat "$F/seq" 2>/dev/null || echo 0) + 1 ))
echo "$seq" > "$F/seq"
id=$(printf %03d "$seq")
printf '%s\n' "$@" > "$F/calls/$id.argv"
a=" $* "
stdin="$F/calls/$id.stdin"
[[ "$a" == *" -f - "* ]] && cat > "$stdin"
agent_alive() {
  [ -f "$F/agent.pid" ] || return 1
  local st
  st=$(awk '{print $3}' "/proc/$(cat "$F/agent.pid")/stat" 2>/dev/null)
  [ -n "$st" ] && [ "$st" != Z ]
}
case "$a" in
  *" get nodes "*)
    if [ -f "$F/nodes_fail" ]; then
      echo "The connection to the server 127.0.0.1:16443 was refused" >&2; exit 1
    fi
    printf '%s' "$(cat "$F/nodes")" ;;
  *" get daemonset ros2-cni --ignore-not-found -o name "*)
    if [ -f "$F/state/DaemonSet" ]; then echo daemonset.apps/ros2-cni; fi ;;
  *" apply -f - "*)
    for k in ConfigMap DaemonSet; do
      if grep -q "^kind: $k\$" "$stdin"; then touch "$F/state/$k"; echo "$k/ros2-cni configured"; fi
    done ;;
  *" rollout restart daemonset/ros2-cni "*) echo "daemonset.apps/ros2-cni restarted" ;;
  *" rollout status daemonset/ros2-cni "*)
    echo 'Waiting for daemon set "ros2-cni" rollout to finish: 0 of 2 updated pods are available...'
    if [ -f "$F/rollout_fail" ]; then
      echo "error: timed out waiting for the condition" >&2; exit 1
    fi
    echo 'daemon set "ros2-cni" successfully rolled out' ;;
  *" get pods -l app.kubernetes.io/name=ros2-cni -o jsonpath="*)
    for n in $(cat "$F/nodes"); do echo "$n=True"; done ;;
  *" get pods -l app.kubernetes.io/name=ros2-cni -o wide "*)
    echo "NAME READY STATUS NODE"
    for n in $(cat "$F/nodes"); do echo "ros2-cni-$n 1/1 Running $n"; done ;;
  *" get pods -l app.kubernetes.io/name=ros2-cni -o name "*)
    if [ -f "$F/pods_stay" ] || agent_alive; then echo pod/ros2-cni-x1; fi ;;
  *" delete daemonset ros2-cni --ignore-not-found "*)
    if [ -f "$F/state/DaemonSet" ]; then
      rm -f "$F/state/DaemonSet"; echo 'daemonset.apps "ros2-cni" deleted'
      [ -f "$F/agent.pid" ] && kill -TERM "$(cat "$F/agent.pid")"
    fi
    exit 0 ;;
  *" delete configmap ros2-cni --ignore-not-found "*)
    if [ -f "$F/state/ConfigMap" ]; then
      rm -f "$F/state/ConfigMap"; echo 'configmap "ros2-cni" deleted'
    fi ;;
  *)
    echo "fake kubectl: unexpected call: $*" >&2; exit 99 ;;
esac
"#;

/// One call of the fake kubectl.
#[derive(Debug, Clone)]
struct Call {
    argv: Vec<String>,
    stdin: Option<String>,
}

impl Call {
    /// A call that changes the cluster.
    fn mutates(&self) -> bool {
        let verbs = [
            "apply", "create", "delete", "patch", "replace", "label", "annotate", "edit", "scale",
            "set",
        ];
        self.argv.iter().any(|a| verbs.contains(&a.as_str()))
            || self
                .argv
                .windows(2)
                .any(|w| w[0] == "rollout" && w[1] != "status")
    }

    fn has(&self, words: &[&str]) -> bool {
        self.argv.windows(words.len()).any(|w| w == words)
    }
}

/// $SNAP, $SNAP_DATA and the fake kubectl's state, in a temp dir removed on drop.
struct Snap {
    root: PathBuf,
    snap: PathBuf,
    snap_data: PathBuf,
    fake: PathBuf,
}

impl Snap {
    fn new(tag: &str, nodes: &[&str]) -> Snap {
        let root = std::env::temp_dir().join(format!(
            "ros2-cni-addon-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let snap = root.join("snap/microk8s/current");
        let snap_data = root.join("var/snap/microk8s/current");
        let fake = root.join("fake-kubectl");
        for d in [
            snap.join("usr/bin"),
            snap_data.join("opt/cni/bin"),
            snap_data.join("args/cni-network"),
            snap_data.join("credentials"),
            fake.join("calls"),
            fake.join("state"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let kubectl = snap.join("microk8s-kubectl.wrapper");
        std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
        std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
        // the snap ships python3 (its own CLI is Python)
        let python = String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v python3"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        std::os::unix::fs::symlink(python.trim(), snap.join("usr/bin/python3")).unwrap();
        std::fs::write(fake.join("nodes"), nodes.join(" ")).unwrap();
        // MicroK8s' CNI dirs: Calico's conflist and the snap's plugin symlinks
        let conf = snap_data.join("args/cni-network");
        std::fs::write(conf.join("10-calico.conflist"), CALICO).unwrap();
        std::fs::write(
            conf.join("calico-kubeconfig"),
            "apiVersion: v1\nkind: Config\n",
        )
        .unwrap();
        let bin = snap_data.join("opt/cni/bin");
        std::os::unix::fs::symlink(
            "/snap/microk8s/current/opt/cni/bin/calico",
            bin.join("calico"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/usr/lib/cni/portmap", bin.join("portmap")).unwrap();
        Snap {
            root,
            snap,
            snap_data,
            fake,
        }
    }

    /// Runs addons/ros2-cni/<script> as MicroK8s does.
    fn run(&self, script: &str, args: &[&str]) -> Output {
        let out = Command::new(repo().join("addons/ros2-cni").join(script))
            .args(args)
            .env("SNAP", &self.snap)
            .env("SNAP_DATA", &self.snap_data)
            .env("FAKE_KUBECTL", &self.fake)
            .output()
            .expect("run the add-on script");
        eprintln!(
            "{script} {}: {}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn touch(&self, switch: &str) {
        std::fs::write(self.fake.join(switch), "").unwrap();
    }

    fn calls(&self) -> Vec<Call> {
        let dir = self.fake.join("calls");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".argv"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let id = n.trim_end_matches(".argv");
                Call {
                    argv: std::fs::read_to_string(dir.join(n))
                        .unwrap()
                        .lines()
                        .map(str::to_owned)
                        .collect(),
                    stdin: std::fs::read_to_string(dir.join(format!("{id}.stdin"))).ok(),
                }
            })
            .collect()
    }

    /// Forgets the calls so far.
    fn clear_calls(&self) {
        let dir = self.fake.join("calls");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
    }

    /// What is applied and not deleted, by kind.
    fn state(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.fake.join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// The manifests of every `apply -f -`, as files (for kubernetes-validate).
    fn applied_files(&self) -> Vec<PathBuf> {
        self.calls()
            .iter()
            .filter(|c| c.has(&["apply", "-f", "-"]))
            .enumerate()
            .map(|(i, c)| {
                let p = self.root.join(format!("applied-{i}.yaml"));
                std::fs::write(&p, c.stdin.as_deref().expect("apply -f - reads stdin")).unwrap();
                p
            })
            .collect()
    }

    /// The documents of the last `apply -f -`.
    fn last_applied(&self) -> Vec<Value> {
        let c = self
            .calls()
            .into_iter()
            .rev()
            .find(|c| c.has(&["apply", "-f", "-"]))
            .expect("an apply call");
        yaml_docs(c.stdin.as_deref().unwrap())
    }
}

impl Drop for Snap {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn yaml_docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{e}:\n{text}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn doc<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:?}"))
}

fn config_of(docs: &[Value]) -> Value {
    let cm = doc(docs, "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "ros2-cni");
    assert_eq!(cm["metadata"]["namespace"], "kube-system");
    serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap()
}

fn repo_manifest() -> Vec<Value> {
    yaml_docs(&std::fs::read_to_string(repo().join("deploy/microk8s/ros2-cni.yaml")).unwrap())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn kubernetes_validate(files: &[PathBuf]) {
    assert!(!files.is_empty());
    for version in [&["-k", "1.28.0"][..], &[][..]] {
        let o = Command::new("kubernetes-validate")
            .arg("--strict")
            .args(version)
            .args(files)
            .output()
            .unwrap_or_else(|e| {
                panic!("kubernetes-validate cannot be run ({e}): pip install kubernetes-validate==1.37.0")
            });
        assert!(
            o.status.success(),
            "kubernetes-validate {version:?} rejected what the add-on applied:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
    }
}

/// The applied config is valid for every node it names (ros2-cni's own
/// validation, as the install container runs it) and keeps the mounted dataDir.
fn assert_valid_for_every_node(cfg: &Value) {
    let nodes: Vec<&String> = cfg["nodes"].as_object().unwrap().keys().collect();
    assert!(!nodes.is_empty());
    for node in nodes {
        let e = Entry::from_value(cfg, Path::new("config.json"), Some(node))
            .unwrap_or_else(|e| panic!("the applied config for {node}: {e}"));
        assert_eq!(e.data_dir, Path::new(DATA_DIR));
    }
}

const GOOD: &[&str] = &[
    "--subnet",
    "192.168.1.0/24",
    "--uplink",
    "wlan0",
    "--pool",
    "robot-1=192.168.1.160/28",
    "--pool=robot-2=192.168.1.176/28",
    "--metrics-address",
    "0.0.0.0:9741",
];

#[test]
fn addons_yaml_lists_the_addon_for_amd64_and_arm64() {
    let text = std::fs::read_to_string(repo().join("addons.yaml")).unwrap();
    let y: Value = serde_norway::from_str(&text).unwrap();
    let addons = y["microk8s-addons"]["addons"].as_array().unwrap();
    assert_eq!(addons.len(), 1, "{addons:?}");
    let a = &addons[0];
    assert_eq!(a["name"], "ros2-cni");
    assert!(a["description"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(y["microk8s-addons"]["description"].as_str().is_some());
    assert_eq!(
        a["version"],
        env!("CARGO_PKG_VERSION"),
        "addons.yaml's version is Cargo.toml's"
    );
    let mut arch: Vec<&str> = a["supported_architectures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    arch.sort();
    assert_eq!(arch, ["amd64", "arm64"]);
    // check_status names what enable creates, as `kubectl get all -A` prints it
    assert_eq!(a["check_status"], "daemonset.apps/ros2-cni");
    assert_eq!(
        doc(&repo_manifest(), "DaemonSet")["metadata"]["name"],
        "ros2-cni"
    );
    // the image the DaemonSet runs is this version's
    let ds = serde_json::to_string(doc(&repo_manifest(), "DaemonSet")).unwrap();
    assert!(ds.contains(&format!("localhost/ros2-cni:{}", env!("CARGO_PKG_VERSION"))));
    for s in ["enable", "disable"] {
        let p = repo().join("addons/ros2-cni").join(s);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{s} is executable by all: {mode:o}");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("#!/usr/bin/env bash\n"), "{s}: bash");
        let o = Command::new("bash").arg("-n").arg(&p).output().unwrap();
        assert!(o.status.success(), "{s}: {}", stderr(&o));
    }
}

#[test]
fn enable_applies_the_config_and_daemonset_waits_for_every_node_and_disable_deletes_them() {
    let s = Snap::new("enable", &["robot-1", "robot-2"]);
    let o = s.run("enable", GOOD);
    assert!(o.status.success());
    let out = stdout(&o);
    for want in [
        "Enabling ros2-cni (localhost/ros2-cni:",
        "Waiting up to 300s for the ros2-cni agent on every node",
        "successfully rolled out",
        "ros2-cni-robot-2 1/1 Running",
        "ros2-cni is enabled",
    ] {
        assert!(out.contains(want), "progress output: {want}");
    }
    let calls = s.calls();
    let seq: Vec<&str> = calls
        .iter()
        .map(|c| {
            if c.has(&["get", "nodes"]) {
                "nodes"
            } else if c.has(&["get", "daemonset"]) {
                "exists?"
            } else if c.has(&["apply", "-f", "-"]) {
                "apply"
            } else if c.has(&["rollout", "status", "daemonset/ros2-cni", "--timeout=300s"]) {
                "rollout"
            } else if c.argv.iter().any(|a| a.starts_with("jsonpath={range")) {
                "ready?"
            } else if c.has(&["-o", "wide"]) {
                "pods"
            } else {
                panic!("unexpected call {c:?}")
            }
        })
        .collect();
    assert_eq!(
        seq,
        ["nodes", "exists?", "apply", "rollout", "ready?", "pods"]
    );
    assert_eq!(s.state(), ["ConfigMap", "DaemonSet"]);

    // what was applied: valid, our config, the repository's DaemonSet
    kubernetes_validate(&s.applied_files());
    let docs = s.last_applied();
    assert_eq!(docs.len(), 2);
    let cfg = config_of(&docs);
    assert_eq!(
        cfg,
        json!({
            "subnet": "192.168.1.0/24",
            "uplink": "wlan0",
            "dataDir": DATA_DIR,
            "logFile": "/var/snap/microk8s/common/var/log/ros2-cni.log",
            "metricsAddress": "0.0.0.0:9741",
            "nodes": {"robot-1": "192.168.1.160/28", "robot-2": "192.168.1.176/28"}
        })
    );
    assert_valid_for_every_node(&cfg);
    assert_eq!(
        doc(&docs, "DaemonSet"),
        doc(&repo_manifest(), "DaemonSet"),
        "the add-on applies deploy/microk8s/ros2-cni.yaml's DaemonSet"
    );

    // enabling again with a new pool: applied, then the pods restarted so
    // that the install container writes the new entry
    s.clear_calls();
    let mut again = GOOD.to_vec();
    again[5] = "robot-1=192.168.1.192/28";
    assert!(s.run("enable", &again).status.success());
    let calls = s.calls();
    let apply = calls
        .iter()
        .position(|c| c.has(&["apply", "-f", "-"]))
        .unwrap();
    let restart = calls
        .iter()
        .position(|c| c.has(&["rollout", "restart", "daemonset/ros2-cni"]))
        .expect("the running pods are restarted");
    let status = calls
        .iter()
        .position(|c| c.has(&["rollout", "status"]))
        .unwrap();
    assert!(apply < restart && restart < status, "{calls:?}");
    assert_eq!(
        config_of(&s.last_applied())["nodes"]["robot-1"],
        "192.168.1.192/28"
    );

    // disable deletes exactly what enable applied
    let applied: Vec<(String, String, String)> = s
        .last_applied()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_lowercase(),
                d["metadata"]["namespace"].as_str().unwrap().to_owned(),
                d["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    s.clear_calls();
    let o = s.run("disable", &[]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("ros2-cni is disabled"));
    let mut deleted: Vec<(String, String, String)> = s
        .calls()
        .iter()
        .filter(|c| c.has(&["delete"]))
        .map(|c| {
            let i = c.argv.iter().position(|a| a == "delete").unwrap();
            let ns = c.argv.iter().position(|a| a == "-n").unwrap();
            (
                c.argv[i + 1].clone(),
                c.argv[ns + 1].clone(),
                c.argv[i + 2].clone(),
            )
        })
        .collect();
    let mut want = applied.clone();
    want.sort();
    deleted.sort();
    assert_eq!(deleted, want);
    assert!(s.state().is_empty(), "left applied: {:?}", s.state());
    // the DaemonSet first, the ConfigMap once its pods are gone
    let calls = s.calls();
    let order: Vec<usize> = ["daemonset", "pods", "configmap"]
        .iter()
        .map(|w| {
            calls
                .iter()
                .position(|c| c.argv.iter().any(|a| a == w))
                .unwrap()
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{calls:?}");
}

#[test]
fn enable_refuses_bad_arguments_naming_them_and_changes_nothing() {
    let s = Snap::new("bad", &["robot-1", "robot-2"]);
    let dir = s.root.join("configs");
    std::fs::create_dir(&dir).unwrap();
    let file = |name: &str, text: &str| -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let not_json = file("bad.json", "{\"subnet\": \"192.168.1.0/24\",");
    let other_dir = file(
        "datadir.json",
        r#"{"subnet": "192.168.1.0/24", "dataDir": "/var/lib/ros2-cni", "nodes": {"robot-1": "192.168.1.160/28", "robot-2": "192.168.1.176/28"}}"#,
    );
    let one_node = file(
        "one.json",
        r#"{"subnet": "192.168.1.0/24", "nodes": {"robot-1": "192.168.1.160/28"}}"#,
    );
    let node_form = file(
        "node.json",
        r#"{"subnet": "192.168.1.0/24", "podRange": "192.168.1.160/28"}"#,
    );
    let no_block = file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ros2-cni\ndata:\n  other: x\n",
    );
    let pools = [
        "--pool",
        "robot-1=192.168.1.160/28",
        "--pool",
        "robot-2=192.168.1.176/28",
    ];
    let with_pools = |extra: &[&'static str]| -> Vec<String> {
        extra
            .iter()
            .map(|s| s.to_string())
            .chain(pools.iter().map(|s| s.to_string()))
            .collect()
    };
    let v = |a: &[&str]| -> Vec<String> { a.iter().map(|s| s.to_string()).collect() };
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (v(&[]), "--subnet", "required"),
        (v(&["--subnet", "192.168.1.0/24"]), "--pool", "required"),
        (with_pools(&["--subnet", "banana"]), "--subnet", "not an IPv4 CIDR"),
        (with_pools(&["--subnet", "192.168.1.1/24"]), "--subnet", "host bits set (did you mean 192.168.1.0/24?)"),
        (with_pools(&["--subnet", "192.168.1.0/31"]), "--subnet", "between /8 and /30"),
        (with_pools(&["--subnet", "192.168.1.0/24", "--subnet", "10.0.0.0/8"]), "--subnet", "given twice"),
        (v(&["--subnet", "192.168.1.0/24", "--pool", "robot-1"]), "--pool", "NODE=CIDR"),
        (
            v(&["--subnet", "192.168.1.0/24", "--pool", "robot-1=192.168.1.160/28", "--pool", "robot-2=192.168.2.0/28"]),
            "--pool robot-2",
            "ros2-cni: --pool robot-2: pool \"192.168.2.0/28\" is not inside --subnet 192.168.1.0/24\n",
        ),
        (
            v(&["--subnet", "192.168.1.0/24", "--pool", "robot-1=192.168.1.160/27", "--pool", "robot-2=192.168.1.176/28"]),
            "--pool",
            "overlap",
        ),
        (
            v(&["--subnet", "192.168.1.0/24", "--pool", "robot-1=192.168.1.160/28", "--pool", "robot-1=192.168.1.176/28"]),
            "--pool",
            "\"robot-1\" is given twice",
        ),
        (
            v(&["--subnet", "192.168.1.0/24", "--pool", "Robot_1=192.168.1.160/28", "--pool", "robot-2=192.168.1.176/28"]),
            "--pool",
            "not a Kubernetes node name",
        ),
        (
            v(&["--subnet", "192.168.1.0/24", "--pool", "robot-1=192.168.1.164/28", "--pool", "robot-2=192.168.1.176/28"]),
            "--pool robot-1",
            "host bits set",
        ),
        // the cluster has robot-2 too: its install container would refuse
        (v(&["--subnet", "192.168.1.0/24", "--pool", "robot-1=192.168.1.160/28"]), "--pool", "robot-2"),
        (with_pools(&["--subnet", "192.168.1.0/24", "--uplink", "wlan0:1"]), "--uplink", "contains '/', ':'"),
        (with_pools(&["--subnet", "192.168.1.0/24", "--uplink", "a-very-long-ifname"]), "--uplink", "longer than 15 bytes"),
        (with_pools(&["--subnet", "192.168.1.0/24", "--metrics-address", "0.0.0.0"]), "--metrics-address", "not IPv4-address:port"),
        (with_pools(&["--subnet", "192.168.1.0/24", "--metrics-address", "0.0.0.0:99999"]), "--metrics-address", "not IPv4-address:port"),
        (with_pools(&["--subnet", "192.168.1.0/24", "--timeout", "soon"]), "--timeout", "not a number of seconds"),
        (with_pools(&["--subnet", "192.168.1.0/24", "--frobnicate"]), "--frobnicate", "unknown argument"),
        (with_pools(&["--subnet"]), "--subnet", "needs a value"),
        (v(&["--subnet", "192.168.1.0/24", "--pool"]), "--pool", "needs a value"),
        (v(&["--config", "/nonexistent/ros2-cni.json"]), "--config", "cannot read"),
        (v(&["--config", &not_json]), "--config", "not valid JSON"),
        (v(&["--config", &other_dir]), "--config", "\"dataDir\" is \"/var/lib/ros2-cni\", but the DaemonSet mounts /var/snap/microk8s/common/var/lib/ros2-cni"),
        (v(&["--config", &one_node]), "--config", "robot-2"),
        (v(&["--config", &node_form]), "--config", "no \"nodes\""),
        (v(&["--config", &no_block]), "--config", "no \"config.json: |\" block"),
        (v(&["--config", &other_dir, "--subnet", "192.168.1.0/24"]), "--config", "is the whole config"),
    ];
    for (args, names, says) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.clear_calls();
        let o = s.run("enable", &args);
        assert_eq!(o.status.code(), Some(2), "{args:?} must fail");
        let err = stderr(&o);
        assert!(
            err.contains(names) && err.contains(says),
            "{args:?}: the message must name {names} and say {says:?}: {err}"
        );
        assert!(err.contains("Nothing was changed"), "{args:?}: {err}");
        let changed: Vec<Call> = s.calls().into_iter().filter(Call::mutates).collect();
        assert!(
            changed.is_empty(),
            "{args:?} changed the cluster: {changed:?}"
        );
    }
    // a cluster that does not answer: nothing is applied either
    s.touch("nodes_fail");
    s.clear_calls();
    let o = s.run("enable", GOOD);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot list the cluster's nodes"));
    assert!(!s.calls().iter().any(Call::mutates));
    assert!(s.state().is_empty());
    // the checks must be able to pass: the same tree takes good arguments
    std::fs::remove_file(s.fake.join("nodes_fail")).unwrap();
    assert!(s.run("enable", GOOD).status.success());
    assert_eq!(s.state(), ["ConfigMap", "DaemonSet"]);
    // and disable refuses what it does not know
    s.clear_calls();
    let o = s.run("disable", &["--purge"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown argument \"--purge\""));
    assert!(!s.calls().iter().any(Call::mutates));
}

#[test]
fn enable_takes_a_json_config_or_a_configmap_file() {
    let s = Snap::new("config", &["robot-1", "robot-2"]);
    // a JSON config without dataDir: applied as given, with the mounted dataDir
    let cfg = json!({
        "subnet": "192.168.1.0/24",
        "logLevel": "debug",
        "domains": {"team-a": [0]},
        "nodes": {
            "robot-1": "192.168.1.160/28",
            "robot-2": {"podRange": "192.168.1.176-192.168.1.190", "uplink": "wlan0"}
        }
    });
    let path = s.root.join("cluster.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    assert!(s
        .run("enable", &["--config", path.to_str().unwrap()])
        .status
        .success());
    let mut want = cfg.clone();
    want["dataDir"] = json!(DATA_DIR);
    let got = config_of(&s.last_applied());
    assert_eq!(got, want);
    assert_valid_for_every_node(&got);

    // the repository's manifest as the ConfigMap (its config.json block)
    let manifest = repo().join("deploy/microk8s/ros2-cni.yaml");
    assert!(s
        .run(
            "enable",
            &["--config", manifest.to_str().unwrap(), "--timeout", "60"]
        )
        .status
        .success());
    let repo_cfg = config_of(&repo_manifest());
    assert_eq!(config_of(&s.last_applied()), repo_cfg);
    assert!(s.calls().iter().any(|c| c.has(&[
        "rollout",
        "status",
        "daemonset/ros2-cni",
        "--timeout=60s"
    ])));
    kubernetes_validate(&s.applied_files());

    // without the wrapper, $SNAP/kubectl with MicroK8s' kubeconfig
    let s = Snap::new("kubectl", &["robot-1", "robot-2"]);
    std::fs::rename(
        s.snap.join("microk8s-kubectl.wrapper"),
        s.snap.join("kubectl"),
    )
    .unwrap();
    assert!(s.run("enable", GOOD).status.success());
    let kubeconfig = format!(
        "--kubeconfig={}",
        s.snap_data.join("credentials/client.config").display()
    );
    let calls = s.calls();
    assert!(!calls.is_empty());
    for c in &calls {
        assert_eq!(c.argv[0], kubeconfig, "{c:?}");
    }
    assert!(s.run("disable", &[]).status.success());
    assert!(s.state().is_empty());
}

#[test]
fn enable_fails_when_the_agents_do_not_become_ready_and_disable_when_pods_stay() {
    let s = Snap::new("timeout", &["robot-1", "robot-2"]);
    s.touch("rollout_fail");
    let mut args = GOOD.to_vec();
    args.extend(["--timeout", "5"]);
    let o = s.run("enable", &args);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    for want in [
        "did not become ready within 5s",
        "logs ds/ros2-cni -c install",
        "microk8s ctr image import",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(s.calls().iter().any(|c| c.has(&[
        "rollout",
        "status",
        "daemonset/ros2-cni",
        "--timeout=5s"
    ])));

    // pods that do not go: disable gives up after its timeout, keeps the ConfigMap
    s.touch("pods_stay");
    s.clear_calls();
    let t0 = std::time::Instant::now();
    let o = s.run("disable", &["--timeout", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    assert!(stderr(&o).contains("still there after 1s"));
    assert!(!s.calls().iter().any(|c| c.has(&["configmap"])));
    assert_eq!(s.state(), ["ConfigMap"]);
}

/// Every file and symlink of the node's CNI dirs, with its bytes (or target) and mode.
fn cni_dirs(s: &Snap) -> BTreeMap<String, (String, u32)> {
    let mut out = BTreeMap::new();
    for d in ["opt/cni/bin", "args/cni-network"] {
        for e in std::fs::read_dir(s.snap_data.join(d)).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                let b = std::fs::read(&p).unwrap();
                format!(
                    "{} bytes: {}",
                    b.len(),
                    String::from_utf8_lossy(&b[..b.len().min(4096)])
                )
            };
            out.insert(
                format!("{d}/{}", e.file_name().to_string_lossy()),
                (what, m.permissions().mode()),
            );
        }
    }
    out
}

/// The applied config with the DaemonSet's host paths mapped into the tree,
/// as kubelet's hostPath mounts map them for the pod.
fn pod_config(s: &Snap) -> PathBuf {
    let text = serde_json::to_string_pretty(&config_of(&s.last_applied()))
        .unwrap()
        .replace(
            "/var/snap/microk8s/common",
            s.root.join("common").to_str().unwrap(),
        );
    let p = s.root.join("pod-config.json");
    std::fs::write(&p, text).unwrap();
    p
}

/// A container's command from the applied DaemonSet, with the image's binary,
/// the node name and the mounted paths substituted.
fn pod_command(s: &Snap, container: &str, config: &Path, node: &str) -> Vec<String> {
    let docs = s.last_applied();
    let spec = &doc(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let c = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["containers"].as_array().unwrap())
        .find(|c| c["name"] == container)
        .unwrap();
    c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            match a {
                "/ros2-cni" => BIN.to_owned(),
                "$(NODE_NAME)" => node.to_owned(),
                "/etc/ros2-cni/config.json" => config.to_str().unwrap().to_owned(),
                _ => a.replace("/var/snap/microk8s/current", s.snap_data.to_str().unwrap()),
            }
        })
        .collect()
}

/// The install container's command (inside `netns`, the node's host
/// network, when given).
fn run_install(s: &Snap, config: &Path, node: &str, netns: Option<&str>) {
    let cmd = pod_command(s, "install", config, node);
    let o = match netns {
        Some(ns) => Command::new("ip")
            .args(["netns", "exec", ns])
            .args(&cmd)
            .output(),
        None => Command::new(&cmd[0]).args(&cmd[1..]).output(),
    }
    .unwrap();
    assert!(o.status.success(), "install container: {}", stderr(&o));
    let conflist =
        std::fs::read_to_string(s.snap_data.join("args/cni-network/10-calico.conflist")).unwrap();
    assert!(conflist.contains("\"type\": \"ros2-cni\""), "{conflist}");
    assert!(s.snap_data.join("opt/cni/bin/ros2-cni").exists());
}

#[test]
fn disable_waits_for_the_agents_uninstall_and_leaves_the_cni_dirs_byte_for_byte() {
    let s = Snap::new("disable", &["robot-base"]);
    let before = cni_dirs(&s);
    let tb = crate::common::bed(1);
    let node = tb.node(1);
    let o = s.run(
        "enable",
        &[
            "--subnet",
            ros2_cni::lab::testbed::SUBNET,
            "--uplink",
            "eth0",
            "--pool",
            "robot-base=192.168.1.0/28",
        ],
    );
    assert!(o.status.success());
    // kubelet: the install container, then the agent, from what was applied
    let data = s.root.join("common/var/lib/ros2-cni");
    let config = pod_config(&s);
    run_install(&s, &config, "robot-base", Some(&node.ns));
    let installed = cni_dirs(&s);
    assert_ne!(installed, before);
    let cmd = pod_command(&s, "agent", &config, "robot-base");
    assert!(cmd.contains(&"--uninstall-on-exit".to_owned()), "{cmd:?}");
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let pid = tb.spawn(&node.ns, &args, "addon-agent").unwrap();
    crate::common::wait_for(10, "the agent's watcher checks the entry", || {
        ros2_cni::api::exchange(&data.join("agent.sock"), "status")
            .is_ok_and(|st| st["install"]["unchanged"].as_u64() >= Some(1))
    });
    std::fs::write(s.fake.join("agent.pid"), pid.to_string()).unwrap();

    // disable: the DaemonSet goes, kubelet sends SIGTERM, the agent
    // uninstalls and exits, then the ConfigMap goes
    let o = s.run("disable", &[]);
    assert!(o.status.success(), "{}", tb.log("addon-agent"));
    assert!(
        !stdout(&o).contains("uninstalling it here"),
        "the agent uninstalled, not the script's fallback"
    );
    assert!(
        tb.wait_exit(pid, std::time::Duration::from_secs(1))
            .is_some_and(|st| st.success()),
        "the agent exited cleanly on SIGTERM: {}",
        tb.log("addon-agent")
    );
    assert_eq!(
        cni_dirs(&s),
        before,
        "the CNI dirs byte for byte as before enable"
    );
    assert!(s.state().is_empty());
}

#[test]
fn disable_uninstalls_on_this_node_when_no_agent_did() {
    // an agent killed before it could uninstall leaves the entry and the
    // binary: disable finds them and runs the binary's own uninstall
    let s = Snap::new("fallback", &["robot-base"]);
    let before = cni_dirs(&s);
    assert!(s
        .run(
            "enable",
            &[
                "--subnet",
                "192.168.1.0/24",
                "--pool",
                "robot-base=192.168.1.160/28"
            ]
        )
        .status
        .success());
    let config = pod_config(&s);
    run_install(&s, &config, "robot-base", None);
    let o = s.run("disable", &[]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("still installed on this node"));
    assert_eq!(
        cni_dirs(&s),
        before,
        "the CNI dirs byte for byte as before enable"
    );
    assert!(s.state().is_empty());
}
