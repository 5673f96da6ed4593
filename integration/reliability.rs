//! Reliability under real runtimes (issue 11): GC as libcni 1.3 sends it,
//! DEL/GC with a config that stopped validating, ADDs killed at every point,
//! concurrent ADDs of one container, leftovers reclaimed; and ADD's refusal
//! of a CNI_NETNS that is not a pod's (issue 12).

use crate::common::*;
use ros2_cni::lab::testbed::{ip_json, PluginRun, Pod, Testbed};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The node's state without what the primary plugin (ptp) adds for pods
/// that are still there: its host veths and their routes.
fn ours(mut st: NodeState) -> NodeState {
    st.links.retain(|l| !l.starts_with("veth"));
    st.routes.retain(|r| !r.contains(" veth"));
    st
}

/// Removes a pod's namespace and waits (up to 10 s) until the node no longer
/// lists routes on links it cannot name ("if7"): the kernel tears a deleted
/// namespace down asynchronously, and under load the primary plugin's host
/// veth and its route outlive `ip netns del` for a moment.
fn remove_pod(tb: &Testbed, pod: &Pod) {
    tb.remove_ns(&pod.ns).unwrap();
    wait_for(10, "routes on links of a removed pod disappear", || {
        !node_state(tb, 1).routes.iter().any(|r| {
            r.rsplit_once(' ')
                .and_then(|(_, dev)| dev.strip_prefix("if"))
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
    });
}

/// Runs ros2-cni `cmd` for `pod` with `conf` and extra environment.
fn run_with(tb: &Testbed, pod: &Pod, cmd: &str, conf: &Value, extra: &[(&str, &str)]) -> PluginRun {
    let netns = pod.netns_path();
    let mut env = vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", pod.container_id.as_str()),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=robots"),
    ];
    env.extend_from_slice(extra);
    tb.run_plugin(tb.node(pod.node), &tb.opts.plugin, &env, conf)
        .expect("run ros2-cni")
}

/// A pod with only its primary interface (ros2-cni not run yet), and the
/// ros2-cni config its chain would pass (opted in, prevResult set).
fn primary_only(tb: &Testbed, name: &str, extra: Value) -> (Pod, Value) {
    let mut s = spec(name, 1).extra(extra.clone());
    s.chain_ros2cni = false;
    let pod = tb.add_pod(&s).expect("primary ADD");
    let conf = tb.pod_ros2cni_conf(&spec(name, 1).extra(extra), &pod.result);
    (pod, conf)
}

/// What a GC from libcni 1.3 looks like when the runtime has no pod left.
fn libcni13_gc_conf(tb: &Testbed) -> Value {
    let mut conf = tb.ros2cni_conf(tb.node(1), "1.1.0", &json!({}));
    conf["cni.dev/valid-attachments"] = Value::Null;
    conf["cni.dev/attachments"] = Value::Null;
    conf
}

#[test]
fn gc_with_null_attachments_as_libcni_1_3_sends_it() {
    let tb = bed(1);
    let base = baseline(&tb, 1);
    let s = spec("gcnull", 1).version("1.1.0");
    let pod = tb.add_pod(&s).unwrap();
    assert!(pod_has_link(&pod.ns, "ros0"));
    let r = gc(&tb, 1, &libcni13_gc_conf(&tb));
    assert!(r.success, "GC with null lists: {} {}", r.stdout, r.stderr);
    assert_eq!(
        ours(node_state(&tb, 1)),
        base,
        "null means no attachment is valid"
    );
    assert!(!pod_has_link(&pod.ns, "ros0"));
}

#[test]
fn del_and_gc_tear_down_when_the_config_stopped_validating() {
    let tb = bed(1);
    let base = baseline(&tb, 1);
    let s = spec("typo", 1).version("1.1.0");
    let p1 = tb.add_pod(&s).unwrap();
    let p2 = tb.add_pod(&spec("typo2", 1).version("1.1.0")).unwrap();
    // an operator's edit after ADD: a key with a typo, and an invalid value
    let broken = json!({"podRnage": "192.168.1.10/28", "mfcIdleSeconds": "soon"});
    let bad = s.clone().extra(broken.clone());
    // ADD and CHECK stay strict
    let r = tb.ros2cni_cmd("CHECK", &p1, &bad, None, None).unwrap();
    assert_eq!(
        r.code(),
        Some(2),
        "CHECK refuses the unknown key: {}",
        r.stdout
    );
    let r = tb.ros2cni_cmd("DEL", &p1, &bad, None, None).unwrap();
    assert!(
        r.success,
        "DEL with a broken config: {} {}",
        r.stdout, r.stderr
    );
    let log = std::fs::read_to_string(tb.node(1).data_dir.join("ros2-cni.log")).unwrap();
    assert!(
        log.contains("no longer validates") && log.contains("podRnage"),
        "the warning names the problem: {log}"
    );
    assert!(!pod_has_link(&p1.ns, "ros0"));
    let mut conf = tb.ros2cni_conf(tb.node(1), "1.1.0", &broken);
    conf["cni.dev/valid-attachments"] = json!([]);
    let r = gc(&tb, 1, &conf);
    assert!(
        r.success,
        "GC with a broken config: {} {}",
        r.stdout, r.stderr
    );
    assert!(!pod_has_link(&p2.ns, "ros0"));
    assert_eq!(ours(node_state(&tb, 1)), base);
    // what DEL truly needs must still be readable
    let r = tb
        .ros2cni_cmd(
            "DEL",
            &p1,
            &s.clone().extra(json!({"dataDir": "relative"})),
            None,
            None,
        )
        .unwrap();
    assert_eq!(r.code(), Some(7), "{}", r.stdout);
    assert!(r.stdout.contains("dataDir"), "{}", r.stdout);
}

/// The points ADD passed, by name, from ROS2_CNI_TEST_POINTS.
fn points(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, n)| n).to_owned())
        .collect()
}

#[test]
fn adds_killed_at_every_point_leave_nothing_after_del_or_gc() {
    // a pool of two addresses: a leaked one shows at the end
    let pool = json!({"podRange": "192.168.1.90-192.168.1.91"});
    let tb = bed(1);
    let base = baseline(&tb, 1);
    let mark = tb.dir.join("points");
    let mut n = 1;
    let mut report = vec![];
    loop {
        for cleanup in ["DEL", "GC"] {
            let name = format!("k{n}{}", cleanup.to_lowercase());
            let (pod, conf) = primary_only(&tb, &name, pool.clone());
            let _ = std::fs::remove_file(&mark);
            let at = n.to_string();
            let r = run_with(
                &tb,
                &pod,
                "ADD",
                &conf,
                &[
                    ("ROS2_CNI_TEST_KILL_AT", at.as_str()),
                    ("ROS2_CNI_TEST_POINTS", mark.to_str().unwrap()),
                ],
            );
            let passed = points(&mark);
            if r.success {
                assert!(passed.len() < n, "ADD ran past kill point {n}");
                // every point was killed: this ADD completes; clean it up
                let r = run_with(&tb, &pod, "DEL", &conf, &[]);
                assert!(r.success, "{}", r.stdout);
                assert_eq!(ours(node_state(&tb, 1)), base);
                remove_pod(&tb, &pod);
                assert!(n > 5, "ADD passes only {} points: {passed:?}", n - 1);
                eprintln!(
                    "killed ADD at {} points; after DEL or GC, residue per point: {report:?}",
                    n - 1
                );
                // the pool lost no address: both fit again
                let a = tb.add_pod(&spec("full1", 1).extra(pool.clone())).unwrap();
                let b = tb.add_pod(&spec("full2", 1).extra(pool.clone())).unwrap();
                assert!(a.ros_ip.is_some() && b.ros_ip.is_some());
                return;
            }
            assert_eq!(
                passed.len(),
                n,
                "killed at point {n}: {} {}",
                r.stdout,
                r.stderr
            );
            let point = passed.last().cloned().unwrap_or_default();
            match cleanup {
                "DEL" => {
                    // the runtime's DEL after a failed ADD: no prevResult
                    let mut c = conf.clone();
                    c.as_object_mut().unwrap().remove("prevResult");
                    let r = run_with(&tb, &pod, "DEL", &c, &[]);
                    assert!(r.success, "DEL after a kill at {point}: {}", r.stdout);
                }
                _ => {
                    let r = gc(&tb, 1, &libcni13_gc_conf(&tb));
                    assert!(r.success, "GC after a kill at {point}: {}", r.stdout);
                }
            }
            let st = ours(node_state(&tb, 1));
            let residue: BTreeSet<String> = [
                (&st.links, &base.links),
                (&st.routes, &base.routes),
                (&st.neighbours, &base.neighbours),
                (&st.proxies, &base.proxies),
                (&st.guard_elements, &base.guard_elements),
                (&st.leases, &base.leases),
                (&st.attachments, &base.attachments),
            ]
            .iter()
            .flat_map(|(now, was)| now.difference(was).cloned())
            .collect();
            assert!(
                residue.is_empty() && st == base,
                "after a kill at point {n} ({point}) and {cleanup}: left {residue:?}\n{st:?}"
            );
            assert!(!pod_has_link(&pod.ns, "ros0"), "ros0 left after {point}");
            assert!(
                link_flags(&pod.ns, "eth0").contains(&"MULTICAST".to_string()),
                "eth0's MULTICAST flag restored after {point}"
            );
            let tmp: Vec<_> = std::fs::read_dir(tb.node(1).data_dir.join("ros2-cni/attachments"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert!(tmp.is_empty(), "temporary records left: {tmp:?}");
            report.push(format!("{n} {point} {cleanup}: {}", residue.len()));
            remove_pod(&tb, &pod);
        }
        n += 1;
        assert!(n < 60, "ADD never completed");
    }
}

#[test]
fn concurrent_adds_of_one_container_serialize() {
    let tb = bed(1);
    let base = baseline(&tb, 1);
    for round in 0..3 {
        let (pod, conf) = primary_only(&tb, &format!("twin{round}"), json!({}));
        // the pool lock held while they start, so that all of them are past
        // their checks and waiting when it is released: the widest race
        let pool_lock = std::fs::File::open(tb.node(1).data_dir.join("ros2-cni/lock")).unwrap();
        pool_lock.lock().unwrap();
        let runs: Vec<PluginRun> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| run_with(&tb, &pod, "ADD", &conf, &[])))
                .collect();
            std::thread::sleep(std::time::Duration::from_millis(400));
            pool_lock.unlock().unwrap();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok = runs.iter().filter(|r| r.success).count();
        assert_eq!(ok, 1, "exactly one ADD wins: {runs:?}");
        for r in runs.iter().filter(|r| !r.success) {
            assert_eq!(
                r.code(),
                Some(104),
                "the others find it attached: {}",
                r.stdout
            );
        }
        let st = ours(node_state(&tb, 1));
        assert_eq!(st.leases.len(), 1, "one lease: {st:?}");
        assert_eq!(st.attachments.len(), 1, "one record: {st:?}");
        assert_eq!(st.guard_elements.len(), 1, "one guard element: {st:?}");
        assert_eq!(st.proxies.len(), base.proxies.len() + 1, "{st:?}");
        assert_eq!(
            st.links.len(),
            base.links.len() + 1,
            "one host veth: {st:?}"
        );
        assert!(pod_has_link(&pod.ns, "ros0"), "the winner's ros0 stays");
        let r = run_with(&tb, &pod, "DEL", &conf, &[]);
        assert!(r.success);
        assert_eq!(ours(node_state(&tb, 1)), base, "round {round}");
    }
}

#[test]
fn leftover_leases_and_temporary_records_are_reclaimed() {
    let one = json!({"podRange": "192.168.1.95-192.168.1.95"});
    let tb = bed(1);
    let base = baseline(&tb, 1);
    let data = tb.node(1).data_dir.join("ros2-cni");
    // what an ADD killed between the lease and the record leaves
    let leave = || {
        std::fs::write(data.join("leases/192.168.1.95"), "gone-container_eth0").unwrap();
        std::fs::write(data.join("attachments/.gone-container_eth0.tmp"), "").unwrap();
    };
    leave();
    // an exhausted pool takes it back and ADD succeeds
    let s = spec("one", 1).extra(one.clone());
    let pod = tb
        .add_pod(&s)
        .expect("ADD reclaims the orphan when the pool is full");
    assert_eq!(pod.ros_ip, Some("192.168.1.95".parse().unwrap()));
    tb.del_pod(&pod, &s).unwrap();
    assert_eq!(node_state(&tb, 1), base);
    // DEL of any attachment takes leftovers back
    leave();
    let p = tb.add_pod(&spec("other", 1)).unwrap();
    tb.del_pod(&p, &spec("other", 1)).unwrap();
    assert_eq!(node_state(&tb, 1), base, "DEL reclaimed the orphan lease");
    // and so does the agent, on its own
    leave();
    let agent = tb.start_agent(tb.node(1), &json!({})).unwrap();
    wait_state(&tb, 1, &base, 10, "the agent reclaims the orphan lease");
    tb.kill(agent);
    // a lease whose record names another address (two ADDs raced, before
    // they were serialized) is an orphan too; the record's own lease is not
    let p = tb.add_pod(&spec("raced", 1)).unwrap();
    let key = format!("{}_eth0", p.container_id);
    std::fs::write(data.join("leases/192.168.1.99"), &key).unwrap();
    let gc_conf = {
        let mut c = tb.ros2cni_conf(tb.node(1), "1.1.0", &json!({}));
        c["cni.dev/valid-attachments"] = json!([{"containerID": p.container_id, "ifname": "eth0"}]);
        c
    };
    assert!(gc(&tb, 1, &gc_conf).success);
    let st = node_state(&tb, 1);
    assert!(!st.leases.contains("192.168.1.99"), "{st:?}");
    assert!(
        st.leases.contains(&ip_of(&p).to_string()),
        "the live lease stays"
    );
    assert!(pod_has_link(&p.ns, "ros0"), "the listed attachment stays");
}

#[test]
fn add_refuses_a_netns_that_is_not_a_pods() {
    let tb = bed(1);
    let base = baseline(&tb, 1);
    let (pod, conf) = primary_only(&tb, "nsbad", json!({}));
    let file = tb.dir.join("not-a-netns");
    std::fs::write(&file, "").unwrap();
    for (path, why) in [
        ("/proc/self/ns/net", "the node's own network namespace"),
        (file.to_str().unwrap(), "not a network namespace"),
        (tb.dir.to_str().unwrap(), "not a network namespace"),
    ] {
        let r = run_with(&tb, &pod, "ADD", &conf, &[("CNI_NETNS", path)]);
        assert_eq!(r.code(), Some(4), "{path}: {}", r.stdout);
        assert!(
            r.stdout.contains("CNI_NETNS") && r.stdout.contains(why),
            "{}",
            r.stdout
        );
        let st = ours(node_state(&tb, 1));
        assert_eq!(st, base, "nothing changed in the node for {path}");
        let eth0 = ip_json(&tb.node(1).ns, &["link", "show", "eth0"]).unwrap();
        assert!(
            eth0[0]["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "MULTICAST"),
            "the node's eth0 keeps MULTICAST"
        );
        assert!(!pod_has_link(&tb.node(1).ns, "ros0"));
    }
}

#[test]
fn an_unwritable_log_file_is_reported_on_stderr() {
    let tb = bed(1);
    // a path that cannot be created: under /proc
    let s = spec("nolog", 1).extra(json!({"logFile": "/proc/ros2-cni/plugin.log"}));
    let (pod, _) = primary_only(&tb, "nolog", json!({}));
    let conf = tb.pod_ros2cni_conf(&s, &pod.result);
    let r = run_with(&tb, &pod, "ADD", &conf, &[]);
    assert!(r.success, "ADD still works: {}", r.stdout);
    assert!(
        r.stderr.contains("logFile /proc/ros2-cni/plugin.log")
            && r.stderr.contains("stderr instead"),
        "stderr says why: {}",
        r.stderr
    );
    assert!(
        !r.stdout.contains("logFile"),
        "stdout carries only the result"
    );
    let r = run_with(&tb, &pod, "DEL", &conf, &[]);
    assert!(r.success, "{}", r.stdout);
}
