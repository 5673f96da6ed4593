//! `ros2-cni install` / `uninstall` on a MicroK8s-shaped directory tree, the
//! re-apply watcher against a calico-style rewrite, and the deploy/ manifests
//! (offline schema validation with kubernetes-validate, plus the properties
//! the DaemonSet must have). None of these need root or touch real CNI dirs.

use crate::common::BIN;
use ros2_cni::install::{Conflist, Entry, Target, WatchOptions, Watcher};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// MicroK8s' Calico conflist as calico-node's install-cni writes it
/// (cni/10-calico.conflist without the ros2-cni entry): cniVersion 0.3.1,
/// calico + portmap + bandwidth.
const CALICO: &str = r#"{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "calico",
      "log_level": "info",
      "log_file_path": "/var/snap/microk8s/common/var/log/calico/cni/cni.log",
      "datastore_type": "kubernetes",
      "nodename": "robot-base",
      "mtu": 1440,
      "ipam": {
        "type": "calico-ipam"
      },
      "policy": {
        "type": "k8s"
      },
      "kubernetes": {
        "kubeconfig": "/var/snap/microk8s/current/args/cni-network/calico-kubeconfig"
      }
    },
    {
      "type": "portmap",
      "snat": true,
      "capabilities": {
        "portMappings": true
      }
    },
    {
      "type": "bandwidth",
      "capabilities": {
        "bandwidth": true
      }
    }
  ]
}
"#;

const CNI_YAML: &str = "# Calico manifest applied by MicroK8s\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: calico-config\n  namespace: kube-system\n";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A MicroK8s-shaped tree in a temp dir, removed on drop.
struct Tree {
    root: PathBuf,
    bin: PathBuf,
    conf: PathBuf,
    data: PathBuf,
    config: PathBuf,
}

impl Tree {
    fn new(tag: &str) -> Tree {
        let root = std::env::temp_dir().join(format!(
            "ros2-cni-it-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let snap = root.join("var/snap/microk8s/current");
        let bin = snap.join("opt/cni/bin");
        let conf = snap.join("args/cni-network");
        let data = root.join("var/snap/microk8s/common/var/lib/ros2-cni");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("10-calico.conflist"), CALICO).unwrap();
        std::fs::write(conf.join("cni.yaml"), CNI_YAML).unwrap();
        std::fs::write(
            conf.join("calico-kubeconfig"),
            "apiVersion: v1\nkind: Config\n",
        )
        .unwrap();
        // the snap's own plugins are symlinks; ros2-cni must never touch them
        std::os::unix::fs::symlink("/usr/lib/cni/ptp", bin.join("ptp")).unwrap();
        std::os::unix::fs::symlink(
            "/snap/microk8s/current/opt/cni/bin/calico",
            bin.join("calico"),
        )
        .unwrap();
        let config = root.join("config.json");
        let cfg = json!({
            "subnet": "192.168.1.0/24",
            "uplink": "eth0",
            "dataDir": data.to_str().unwrap(),
            "logFile": "/var/snap/microk8s/common/var/log/ros2-cni.log",
            "groups": ["239.255.0.1"],
            "nodes": {
                "robot-base": "192.168.1.160/28",
                "robot-arm": {"podRange": "192.168.1.176-192.168.1.190", "uplink": "wlan0"}
            }
        });
        std::fs::write(&config, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
        Tree {
            root,
            bin,
            conf,
            data,
            config,
        }
    }

    fn conflist(&self) -> PathBuf {
        self.conf.join("10-calico.conflist")
    }

    fn read(&self) -> String {
        std::fs::read_to_string(self.conflist()).unwrap()
    }

    fn install(&self, node: &str) -> Output {
        run(&[
            "install",
            "--cni-bin-dir",
            self.bin.to_str().unwrap(),
            "--cni-conf-dir",
            self.conf.to_str().unwrap(),
            "--config",
            self.config.to_str().unwrap(),
            "--node",
            node,
        ])
    }

    fn uninstall(&self) -> Output {
        run(&[
            "uninstall",
            "--cni-bin-dir",
            self.bin.to_str().unwrap(),
            "--cni-conf-dir",
            self.conf.to_str().unwrap(),
        ])
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// The snap's symlinks are exactly as created.
    fn assert_symlinks_untouched(&self) {
        assert_eq!(
            std::fs::read_link(self.bin.join("ptp")).unwrap(),
            Path::new("/usr/lib/cni/ptp")
        );
        assert_eq!(
            std::fs::read_link(self.bin.join("calico")).unwrap(),
            Path::new("/snap/microk8s/current/opt/cni/bin/calico")
        );
    }

    /// calico-node's install-cni: write a temp file, rename it over the conflist.
    fn calico_rewrite(&self, text: &str) {
        let tmp = self.conf.join("calico-cni-tmp-1234");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.conflist()).unwrap();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("CNI_COMMAND")
        .env("NO_COLOR", "1")
        .output()
        .expect("run ros2-cni");
    eprintln!(
        "ros2-cni {}: {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn plugin_types(text: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(text).unwrap();
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn install_reinstall_rewrite_uninstall_on_a_microk8s_tree() {
    let t = Tree::new("cycle");
    let conf_names = Tree::names(&t.conf);

    // install
    let o = t.install("robot-base");
    assert!(o.status.success(), "install failed: {}", stderr(&o));
    assert!(o.stdout.is_empty(), "logs must not go to stdout");
    let after = t.read();
    assert_eq!(
        plugin_types(&after),
        vec!["calico", "portmap", "bandwidth", "ros2-cni"]
    );
    let v: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(v["cniVersion"], "0.3.1");
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, vec!["name", "cniVersion", "plugins"]);
    let e = &v["plugins"][3];
    assert_eq!(
        e["capabilities"],
        json!({"io.kubernetes.cri.pod-annotations": true})
    );
    assert_eq!(e["podRange"], "192.168.1.160/28");
    assert_eq!(e["subnet"], "192.168.1.0/24");
    assert_eq!(e["uplink"], "eth0");
    assert_eq!(e["dataDir"], t.data.to_str().unwrap());
    assert!(
        e.get("nodes").is_none() && e.get("groups").is_none(),
        "agent-only keys leaked: {e}"
    );
    // everything before the entry is byte-identical
    let cut = CALICO.rfind("\n  ]").unwrap();
    assert!(after.starts_with(&CALICO[..cut]), "{after}");
    // the binary is there under its own name, executable, identical to ours
    let dest = t.bin.join("ros2-cni");
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(BIN).unwrap());
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(Tree::names(&t.bin), vec!["calico", "ptp", "ros2-cni"]);
    t.assert_symlinks_untouched();
    // nothing new in the conf dir: the backup lives in the data dir
    assert_eq!(Tree::names(&t.conf), conf_names);
    assert_eq!(
        std::fs::read_to_string(t.data.join("install/10-calico.conflist.orig")).unwrap(),
        CALICO
    );

    // reinstall: one entry, same bytes
    let o = t.install("robot-base");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(t.read(), after);

    // reinstall for another node: updated in place, still one entry
    let o = t.install("robot-arm");
    assert!(o.status.success(), "{}", stderr(&o));
    let arm = t.read();
    assert_eq!(
        plugin_types(&arm)
            .iter()
            .filter(|p| *p == "ros2-cni")
            .count(),
        1
    );
    assert!(
        arm.contains("\"podRange\": \"192.168.1.176-192.168.1.190\""),
        "{arm}"
    );
    assert!(arm.contains("\"uplink\": \"wlan0\""), "{arm}");

    // calico-node restarts and rewrites its conflist while the watcher runs
    let entry = Entry::from_config_file(&t.config, Some("robot-arm")).unwrap();
    let watcher = Watcher::spawn(
        Target::new(&t.conf, entry),
        WatchOptions {
            resync: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let owners = CALICO.replace("\"mtu\": 1440", "\"mtu\": 1410");
    let start = Instant::now();
    t.calico_rewrite(&owners);
    loop {
        let now = t.read();
        if plugin_types(&now).last().map(String::as_str) == Some("ros2-cni") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the entry was not re-applied within 2 s of calico's rewrite:\n{now}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("re-applied {:?} after the rewrite", start.elapsed());
    let reapplied = t.read();
    assert!(
        reapplied.contains("\"mtu\": 1410"),
        "the owner's new content is kept"
    );
    assert!(reapplied.starts_with(&owners[..owners.rfind("\n  ]").unwrap()]));
    watcher.stop();

    // uninstall: exactly what the owner last wrote, binary gone, symlinks kept
    let o = t.uninstall();
    assert!(o.status.success(), "uninstall failed: {}", stderr(&o));
    assert_eq!(t.read().as_bytes(), owners.as_bytes());
    assert_eq!(Tree::names(&t.bin), vec!["calico", "ptp"]);
    t.assert_symlinks_untouched();
    assert_eq!(Tree::names(&t.conf), conf_names);
    assert!(!t.data.join("install").exists());

    // install + uninstall with no rewrite in between: the original bytes
    assert!(t.install("robot-base").status.success());
    assert!(t.uninstall().status.success());
    assert_eq!(t.read(), owners);
    // uninstall again: nothing to do, still fine
    assert!(t.uninstall().status.success());
    assert_eq!(t.read(), owners);
}

#[test]
fn broken_conflist_is_left_untouched_and_the_message_helps() {
    let t = Tree::new("broken");
    let broken = &CALICO[..CALICO.len() / 2];
    std::fs::write(t.conflist(), broken).unwrap();
    let o = t.install("robot-base");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("10-calico.conflist")
            && err.contains("not valid JSON")
            && err.contains("Nothing was changed")
            && err.contains("calico-node"),
        "{err}"
    );
    assert_eq!(t.read(), broken);
    assert_eq!(
        Tree::names(&t.bin),
        vec!["calico", "ptp"],
        "no binary copied on refusal"
    );
    assert!(!t.data.join("install").exists());
    t.assert_symlinks_untouched();
    // uninstall does not touch it either
    assert!(t.uninstall().status.success());
    assert_eq!(t.read(), broken);
}

#[test]
fn refusals_change_nothing_and_say_what_to_do() {
    let t = Tree::new("refuse");
    // a node missing from "nodes"
    let o = t.install("robot-zz");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("\"robot-zz\"")
            && err.contains("robot-arm, robot-base")
            && err.contains("Nothing was changed"),
        "{err}"
    );
    assert_eq!(t.read(), CALICO);

    // Multus first
    let multus = r#"{"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus", "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig", "delegates": [{"cniVersion": "0.3.1", "name": "k8s-pod-network", "plugins": [{"type": "calico"}]}]}"#;
    std::fs::write(t.conf.join("00-multus.conf"), multus).unwrap();
    let o = t.install("robot-base");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("00-multus.conf") && err.contains("Multus") && err.contains("--conf-file"),
        "{err}"
    );
    assert_eq!(t.read(), CALICO);
    assert_eq!(
        std::fs::read_to_string(t.conf.join("00-multus.conf")).unwrap(),
        multus
    );
    std::fs::remove_file(t.conf.join("00-multus.conf")).unwrap();

    // a single-plugin .conf sorting first
    let single = r#"{"cniVersion": "0.4.0", "name": "mynet", "type": "bridge", "bridge": "cni0"}"#;
    std::fs::write(t.conf.join("05-bridge.conf"), single).unwrap();
    let o = t.install("robot-base");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("05-bridge.conf") && err.contains("single-plugin") && err.contains("conflist"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(t.conf.join("05-bridge.conf")).unwrap(),
        single
    );
    assert_eq!(t.read(), CALICO);
    std::fs::remove_file(t.conf.join("05-bridge.conf")).unwrap();

    // no conf file at all
    std::fs::remove_file(t.conflist()).unwrap();
    let o = t.install("robot-base");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("no CNI config") && err.contains("cni-network"),
        "{err}"
    );
    assert_eq!(Tree::names(&t.bin), vec!["calico", "ptp"]);
}

/// The installer's entry for the repo's example matches cni/10-calico.conflist
/// byte for byte: the documented example is what install really writes.
#[test]
fn install_output_matches_the_documented_example() {
    let example = std::fs::read_to_string(repo().join("cni/10-calico.conflist")).unwrap();
    let cfg = json!({
        "subnet": "192.168.1.0/24",
        "uplink": "eth0",
        "dataDir": "/var/snap/microk8s/common/var/lib/ros2-cni",
        "logFile": "/var/snap/microk8s/common/var/log/ros2-cni.log",
        "nodes": {"robot-base": "192.168.1.160/28"}
    });
    let entry = Entry::from_value(&cfg, Path::new("config.json"), Some("robot-base")).unwrap();
    let c = Conflist::parse(CALICO.as_bytes(), Path::new("10-calico.conflist")).unwrap();
    let (text, _) = c.with_entry(&entry.map);
    assert_eq!(text, example);
}

// ---- deploy/ ----

fn yaml_docs(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

const MANIFESTS: &[&str] = &[
    "deploy/microk8s/ros2-cni.yaml",
    "deploy/generic/ros2-cni.yaml",
    "deploy/examples/talker-listener.yaml",
];

fn kubernetes_validate(args: &[&str], files: &[PathBuf]) -> Output {
    match Command::new("kubernetes-validate").args(args).args(files).output() {
        Ok(o) => o,
        Err(e) => panic!(
            "kubernetes-validate cannot be run ({e}). The manifest tests need it: \
             `pip install kubernetes-validate==1.37.0` (it bundles the Kubernetes schemas and works offline)"
        ),
    }
}

#[test]
fn manifests_pass_offline_schema_validation() {
    let files: Vec<PathBuf> = MANIFESTS.iter().map(|m| repo().join(m)).collect();
    // MicroK8s 1.28 .. the newest schemas the validator bundles
    for version in [&["-k", "1.28.0"][..], &[][..]] {
        let mut args = vec!["--strict"];
        args.extend_from_slice(version);
        let o = kubernetes_validate(&args, &files);
        assert!(
            o.status.success(),
            "kubernetes-validate {args:?} rejected the manifests:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // the validator must be able to fail: a misspelled field is rejected
    let dir = std::env::temp_dir().join(format!("ros2-cni-kv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    let text = std::fs::read_to_string(&files[0])
        .unwrap()
        .replace("hostNetwork: true", "hostNetwrok: true");
    std::fs::write(&bad, text).unwrap();
    let o = kubernetes_validate(&["--strict"], &[bad]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !o.status.success(),
        "kubernetes-validate accepted a misspelled field"
    );
}

#[test]
fn generic_manifest_is_the_generated_variant() {
    let o = Command::new("bash")
        .arg(repo().join("deploy/make-generic.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let committed = std::fs::read(repo().join("deploy/generic/ros2-cni.yaml")).unwrap();
    assert!(
        o.stdout == committed,
        "deploy/generic/ros2-cni.yaml is stale: run deploy/make-generic.sh > deploy/generic/ros2-cni.yaml"
    );
    let text = String::from_utf8(committed).unwrap();
    assert!(
        !text.contains("/var/snap/microk8s"),
        "MicroK8s path left in the generic manifest"
    );
}

fn check_daemonset(manifest: &str, bin: &str, conf: &str, data: &str) {
    let docs = yaml_docs(&repo().join(manifest));
    let ds = kind(&docs, "DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true, "{manifest}: hostNetwork");
    assert!(
        spec["tolerations"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none())),
        "{manifest}: must tolerate every taint to run on every node"
    );
    assert_eq!(
        spec["automountServiceAccountToken"], false,
        "{manifest}: no API access needed"
    );
    assert!(
        !docs.iter().any(|d| [
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
            "ServiceAccount"
        ]
        .contains(&d["kind"].as_str().unwrap_or(""))),
        "{manifest}: no RBAC is needed"
    );

    // volumes: exactly the two CNI dirs, the data dir and the config map
    let vols = spec["volumes"].as_array().unwrap();
    let mut host: Vec<&str> = vols
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    host.sort();
    let mut want = vec![bin, conf, data];
    want.sort();
    assert_eq!(host, want, "{manifest}: hostPath volumes");
    let cms: Vec<_> = vols
        .iter()
        .filter(|v| v.get("configMap").is_some())
        .collect();
    assert_eq!(cms.len(), 1, "{manifest}: one ConfigMap volume");
    assert_eq!(vols.len(), 4, "{manifest}: nothing else mounted");
    let cm_name = cms[0]["configMap"]["name"].as_str().unwrap();
    let cm = kind(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["name"], cm_name);

    // the cluster config is valid for every node it names, and its dataDir is the mounted one
    let cfg: Value = serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap();
    assert!(cfg.get("nodes").is_some(), "{manifest}: cluster form");
    for node in cfg["nodes"].as_object().unwrap().keys() {
        let e = Entry::from_value(&cfg, Path::new("config.json"), Some(node))
            .unwrap_or_else(|e| panic!("{manifest}: config for {node}: {e}"));
        assert_eq!(
            e.data_dir,
            Path::new(data),
            "{manifest}: dataDir must be the mounted data dir"
        );
    }

    let containers: Vec<&Value> = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["containers"].as_array().unwrap())
        .collect();
    let mut saw_install = false;
    let mut saw_agent = false;
    for c in &containers {
        let name = c["name"].as_str().unwrap();
        let sc = &c["securityContext"];
        assert!(
            sc["privileged"].is_null() || sc["privileged"] == false,
            "{manifest}/{name}: privileged"
        );
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{manifest}/{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            json!(["ALL"]),
            "{manifest}/{name}: drop ALL"
        );
        let env = c["env"].as_array().unwrap();
        assert!(
            env.iter().any(|e| e["name"] == "NODE_NAME"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
            "{manifest}/{name}: NODE_NAME from the downward API"
        );
        // the host paths are mounted at the same paths
        for m in c["volumeMounts"].as_array().unwrap() {
            let v = vols.iter().find(|v| v["name"] == m["name"]).unwrap();
            if let Some(p) = v["hostPath"]["path"].as_str() {
                assert_eq!(
                    m["mountPath"], p,
                    "{manifest}/{name}: mount {p} at the same path"
                );
            }
        }
        let cmd: Vec<&str> = c["command"]
            .as_array()
            .unwrap()
            .iter()
            .chain(c["args"].as_array().into_iter().flatten())
            .map(|s| s.as_str().unwrap())
            .collect();
        let flag = |f: &str| cmd.iter().position(|a| *a == f).map(|i| cmd[i + 1]);
        assert_eq!(cmd[0], "/ros2-cni");
        match cmd[1] {
            "install" => {
                saw_install = true;
                assert!(
                    sc["capabilities"].get("add").is_none(),
                    "{manifest}/install needs no capability"
                );
            }
            "agent" => {
                saw_agent = true;
                let mut add: Vec<&str> = sc["capabilities"]["add"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap())
                    .collect();
                add.sort();
                assert_eq!(
                    add,
                    vec!["BPF", "NET_ADMIN", "NET_RAW"],
                    "{manifest}/agent capabilities"
                );
                assert!(
                    cmd.contains(&"--uninstall-on-exit"),
                    "{manifest}: the agent uninstalls on SIGTERM"
                );
            }
            other => panic!("{manifest}/{name}: unexpected command {other}"),
        }
        assert_eq!(flag("--cni-bin-dir"), Some(bin), "{manifest}/{name}");
        assert_eq!(flag("--cni-conf-dir"), Some(conf), "{manifest}/{name}");
        assert_eq!(
            flag("--config"),
            Some("/etc/ros2-cni/config.json"),
            "{manifest}/{name}"
        );
        assert_eq!(flag("--node"), Some("$(NODE_NAME)"), "{manifest}/{name}");
    }
    assert!(
        saw_install && saw_agent,
        "{manifest}: an install init container and the agent"
    );
    assert_eq!(
        spec["initContainers"][0]["command"][1], "install",
        "{manifest}: install runs before the agent"
    );
}

#[test]
fn daemonset_has_only_what_it_needs() {
    check_daemonset(
        "deploy/microk8s/ros2-cni.yaml",
        "/var/snap/microk8s/current/opt/cni/bin",
        "/var/snap/microk8s/current/args/cni-network",
        "/var/snap/microk8s/common/var/lib/ros2-cni",
    );
    check_daemonset(
        "deploy/generic/ros2-cni.yaml",
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/var/lib/ros2-cni",
    );
}

#[test]
fn example_pods_opt_in_and_land_on_different_nodes() {
    let docs = yaml_docs(&repo().join("deploy/examples/talker-listener.yaml"));
    let pods: Vec<_> = docs.iter().filter(|d| d["kind"] == "Pod").collect();
    assert_eq!(pods.len(), 2);
    let mut roles = Vec::new();
    for p in pods {
        assert_eq!(p["metadata"]["annotations"]["ros2-cni.io/enabled"], "true");
        let rule = &p["spec"]["affinity"]["podAntiAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(rule["topologyKey"], "kubernetes.io/hostname");
        let sel = &rule["labelSelector"]["matchLabels"];
        for (k, v) in sel.as_object().unwrap() {
            assert_eq!(
                &p["metadata"]["labels"][k], v,
                "the anti-affinity selects both pods"
            );
        }
        let c = &p["spec"]["containers"][0];
        assert!(c["image"].as_str().unwrap().contains("ros:jazzy"));
        assert!(
            c.get("command").is_none(),
            "keep the image's ros_entrypoint.sh"
        );
        assert!(
            c.get("env").is_none(),
            "default RMW and domain: no DDS configuration"
        );
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(&args[..3], &["ros2", "run", "demo_nodes_cpp"]);
        roles.push(args[3].to_owned());
        assert!(p["spec"].get("hostNetwork").is_none());
    }
    roles.sort();
    assert_eq!(roles, vec!["listener", "talker"]);
}

#[test]
fn image_build_files_are_consistent() {
    let cf = std::fs::read_to_string(repo().join("deploy/Containerfile")).unwrap();
    let froms: Vec<&str> = cf.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(
        froms.last().unwrap().starts_with("FROM scratch"),
        "the final image is FROM scratch"
    );
    assert!(cf.contains("ENTRYPOINT [\"/ros2-cni\"]"));
    // the manifests use the tag build-image.sh produces
    let version = env!("CARGO_PKG_VERSION");
    for m in &MANIFESTS[..2] {
        let text = std::fs::read_to_string(repo().join(m)).unwrap();
        assert!(
            text.contains(&format!("image: localhost/ros2-cni:{version}")),
            "{m}: image tag"
        );
    }
    let o = Command::new("bash")
        .args(["-n"])
        .arg(repo().join("deploy/build-image.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The agent, as the DaemonSet runs it (in a robot-computer namespace), keeps
/// the entry in place when calico-node rewrites the conflist, and removes it
/// (and the binary) on SIGTERM with --uninstall-on-exit.
#[test]
fn agent_reapplies_after_a_calico_rewrite_and_uninstalls_on_exit() {
    let t = Tree::new("agent");
    let tb = crate::common::bed(1);
    let node = tb.node(1);
    let cfg = json!({
        "subnet": ros2_cni::lab::testbed::SUBNET,
        "uplink": "eth0",
        "dataDir": t.data.to_str().unwrap(),
        "metricsAddress": "",
        "nodes": {"robot-base": "192.168.1.0/24", "robot-arm": "192.168.2.0/24"}
    });
    std::fs::write(&t.config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    assert!(t.install("robot-base").status.success());
    let installed = t.read();
    assert_eq!(
        plugin_types(&installed).last().map(String::as_str),
        Some("ros2-cni")
    );
    let pid = tb
        .spawn(
            &node.ns,
            &[
                BIN,
                "agent",
                "--config",
                t.config.to_str().unwrap(),
                "--node",
                "robot-base",
                "--cni-conf-dir",
                t.conf.to_str().unwrap(),
                "--cni-bin-dir",
                t.bin.to_str().unwrap(),
                "--uninstall-on-exit",
            ],
            "agent-install",
        )
        .unwrap();
    let sock = t.data.join("agent.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ros2_cni::api::exchange(&sock, "status").is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "agent did not start: {}",
            tb.log("agent-install")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // the watcher's first pass (the entry is already in place)
    while ros2_cni::api::exchange(&sock, "status").unwrap()["install"]["unchanged"].as_u64()
        < Some(1)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "watcher never checked the entry"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // calico-node restarts and writes its own conflist back
    t.calico_rewrite(CALICO);
    let start = std::time::Instant::now();
    while plugin_types(&t.read()).last().map(String::as_str) != Some("ros2-cni") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "not re-applied within 2 s:\n{}",
            t.read()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!(
        "re-applied {:.0} ms after the rewrite",
        start.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(
        t.read(),
        installed,
        "the re-applied file is what install wrote"
    );
    // the log line follows the write
    let want = "re-applied the ros2-cni entry (inserted) after another writer changed the file";
    let logged = std::time::Instant::now();
    while !tb.log("agent-install").contains(want) {
        assert!(
            logged.elapsed() < std::time::Duration::from_secs(2),
            "the re-application is logged:
{}",
            tb.log("agent-install")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // a new pool for this node, then SIGHUP: the entry follows the config
    let mut cfg2 = cfg.clone();
    cfg2["nodes"]["robot-base"] = json!("192.168.3.0/24");
    std::fs::write(&t.config, serde_json::to_vec_pretty(&cfg2).unwrap()).unwrap();
    tb.signal(pid, nix::sys::signal::Signal::SIGHUP);
    let start = std::time::Instant::now();
    while !t.read().contains("192.168.3.0/24") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "entry not updated after SIGHUP:\n{}\n{}",
            t.read(),
            tb.log("agent-install")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    tb.signal(pid, nix::sys::signal::Signal::SIGTERM);
    let st = tb
        .wait_exit(pid, std::time::Duration::from_secs(5))
        .expect("agent exits on SIGTERM");
    assert!(st.success(), "{}", tb.log("agent-install"));
    assert_eq!(
        t.read(),
        CALICO,
        "uninstall on exit restores calico's bytes"
    );
    assert!(!t.bin.join("ros2-cni").exists(), "binary removed");
    t.assert_symlinks_untouched();
}
