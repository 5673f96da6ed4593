//! The agent under faults (issue 11, item 4): a closed stderr, a task that
//! panics, agents started together, the liveness check and systemd's
//! watchdog, accept errors.

use crate::common::*;
use ros2_cni::lab::testbed::{http_get, Testbed};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An agent started outside the test bed's bookkeeping (its stdio is the
/// test's business), killed on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent_cmd(tb: &Testbed, node: usize, extra: &serde_json::Value) -> Command {
    let n = tb.node(node);
    let cfg = tb.agent_config(n, extra).unwrap();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &n.ns])
        .arg(&tb.opts.plugin)
        .args(["agent", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null());
    c
}

fn sock(tb: &Testbed, node: usize) -> std::path::PathBuf {
    tb.node(node).data_dir.join("ros2-cni/agent.sock")
}

fn answers(tb: &Testbed, node: usize) -> Option<u64> {
    ros2_cni::api::exchange(&sock(tb, node), "status")
        .ok()
        .and_then(|v| v["pid"].as_u64())
}

fn health(tb: &Testbed, node: usize) -> std::process::Output {
    Command::new(&tb.opts.plugin)
        .args(["health", "--socket", sock(tb, node).to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn agent_keeps_serving_with_a_closed_stderr() {
    let tb = bed(1);
    let mut c = agent_cmd(&tb, 1, &json!({"metricsAddress": "127.0.0.1:9531"}));
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let pid = child.id() as u64;
    wait_for(10, "agent up", || answers(&tb, 1) == Some(pid));
    // the log collector goes away: every later log line meets EPIPE
    drop(child.stderr.take());
    let agent = Agent(child);
    // log lines at every level: reloads (info), and upcalls of new sources
    // one at a time: signals that arrive while a reload runs are coalesced
    for k in 1..=3 {
        tb.signal(pid as u32, nix::sys::signal::Signal::SIGHUP);
        wait_for(5, &format!("reload {k} served"), || {
            tb.agent_status(tb.node(1)).unwrap()["reloads"] == k
        });
    }
    assert_eq!(
        answers(&tb, 1),
        Some(pid),
        "the status socket still answers"
    );
    let m = http_get(&tb.node(1).ns, "127.0.0.1:9531", "/metrics").unwrap();
    assert!(m.contains("ros2cni_"), "metrics still answer: {m}");
    assert!(
        health(&tb, 1).status.success(),
        "ros2-cni health says alive"
    );
    drop(agent);
    let h = health(&tb, 1);
    assert_eq!(h.status.code(), Some(1), "no agent: health fails");
    assert!(String::from_utf8_lossy(&h.stderr).contains("no agent answers"));
}

#[test]
fn agent_exits_when_a_task_panics() {
    let tb = bed(1);
    let mut c = agent_cmd(&tb, 1, &json!({}));
    c.env("ROS2_CNI_TEST_PANIC", "agent")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut agent = Agent(c.spawn().unwrap());
    let pid = agent.0.id() as u64;
    wait_for(10, "agent up", || answers(&tb, 1) == Some(pid));
    // a task panics while holding the state lock
    let _ = ros2_cni::api::exchange(&sock(&tb, 1), "test-panic");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "a panicked agent kept running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(ros2_cni::agent::PANIC_EXIT));
    assert!(!health(&tb, 1).status.success());
}

#[test]
fn agents_started_together_leave_exactly_one() {
    let tb = bed(1);
    for round in 0..2 {
        let first = tb.start_agent(tb.node(1), &json!({})).unwrap();
        // killed, and two started while it is still going away
        tb.signal(first, nix::sys::signal::Signal::SIGKILL);
        // one config file for both: written before either starts
        let cfg = tb.agent_config(tb.node(1), &json!({})).unwrap();
        let spawn = || {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &tb.node(1).ns])
                .arg(&tb.opts.plugin)
                .args(["agent", "--config", cfg.to_str().unwrap()])
                .stdin(Stdio::null());
            c.stdout(Stdio::null()).stderr(Stdio::piped());
            Agent(c.spawn().unwrap())
        };
        let mut a = spawn();
        let mut b = spawn();
        tb.kill(first);
        // the loser waits INSTANCE_WAIT for the lock, then gives up
        std::thread::sleep(ros2_cni::agent::INSTANCE_WAIT + Duration::from_secs(2));
        let mut alive = vec![];
        for x in [&mut a, &mut b] {
            if x.0.try_wait().unwrap().is_none() {
                alive.push(x.0.id());
            }
        }
        assert_eq!(
            alive.len(),
            1,
            "round {round}: exactly one agent runs: {alive:?}"
        );
        assert_eq!(
            answers(&tb, 1),
            Some(alive[0] as u64),
            "and it is the one answering"
        );
        let loser = if alive[0] == a.0.id() { &mut b } else { &mut a };
        let mut err = String::new();
        use std::io::Read;
        loser
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            err.contains("another ros2-cni agent"),
            "the loser says why: {err}"
        );
        assert!(
            tb.agent_status(tb.node(1)).unwrap()["routing"] == true,
            "the winner routes multicast"
        );
    }
}

#[test]
fn systemd_watchdog_is_fed_while_the_agent_serves() {
    let tb = bed(1);
    let path = tb.dir.join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let mut c = agent_cmd(&tb, 1, &json!({}));
    c.env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let agent = Agent(c.spawn().unwrap());
    let mut got = vec![];
    let mut buf = [0u8; 128];
    while got.iter().filter(|m| *m == "WATCHDOG=1").count() < 2 {
        let n = rx.recv(&mut buf).expect("a notification within 6 s");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(got[0], "READY=1", "{got:?}");
    drop(agent);
    // nobody feeds it any more
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert!(
        rx.recv(&mut buf).is_err(),
        "no WATCHDOG=1 from a dead agent"
    );
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / tick
}

#[test]
fn accept_errors_back_off() {
    let tb = bed(1);
    // few descriptors: held connections exhaust them, accept fails (EMFILE)
    let n = tb.node(1);
    let cfg = tb.agent_config(n, &json!({})).unwrap();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &n.ns, "prlimit", "--nofile=48:48", "--"])
        .arg(&tb.opts.plugin)
        .args(["agent", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let agent = Agent(c.spawn().unwrap());
    let pid = agent.0.id();
    wait_for(10, "agent up", || answers(&tb, 1) == Some(pid as u64));
    let mut held = vec![];
    for _ in 0..80 {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(sock(&tb, 1)) {
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_secs(pid) - before;
    // a listener spinning on EMFILE burns a whole core (2 s)
    assert!(
        used < 0.5,
        "the agent used {used:.2} s of CPU in 2 s while accept failed"
    );
    drop(held);
    wait_for(10, "the agent answers again", || {
        answers(&tb, 1) == Some(pid as u64)
    });
}
