//! Discovery probes between two hosts of a test bed, with real Cyclone DDS
//! (`ddsperf`, Debian package cyclonedds-tools) and no DDS configuration.

use super::testbed::{LabError, Result};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Whether `ddsperf` can be run.
pub fn have_ddsperf() -> bool {
    Command::new("ddsperf")
        .arg("help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A `ddsperf` command inside `ns`, killed after `secs` in any case (it does
/// not always exit by itself), with no DDS configuration from our environment.
fn ddsperf_cmd(ns: &str, secs: u64, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        ns,
        "timeout",
        "-s",
        "KILL",
        &secs.to_string(),
        "ddsperf",
    ]);
    c.args(args);
    c.env_remove("CYCLONEDDS_URI");
    c.env_remove("ROS_DOMAIN_ID");
    c
}

/// Stops a `timeout ... ddsperf` child: SIGTERM, which `timeout` relays to
/// ddsperf (a SIGKILL would orphan ddsperf), then reaps it.
fn stop(c: &mut std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = c.wait();
}

/// Outcome of one probe.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// Seconds from the pinger's start until it saw the ponger, if it did.
    pub seconds: Option<f64>,
    /// Round trips measured after discovery (0 if none).
    pub roundtrips: u64,
    pub output: String,
}

impl Discovery {
    pub fn discovered(&self) -> bool {
        self.seconds.is_some() && self.roundtrips > 0
    }
}

/// Runs `ddsperf pong` in `b` and `ddsperf ping` in `a`; measures how long
/// `a` takes to discover `b` and whether round trips follow. `domain`
/// keeps parallel probes apart.
pub fn ddsperf_probe(a: &str, b: &str, domain: u32, timeout: Duration) -> Result<Discovery> {
    let secs = timeout.as_secs().max(2);
    let dom = domain.to_string();
    let mut pong = ddsperf_cmd(
        b,
        secs + 2,
        &["-i", &dom, "-D", &(secs + 1).to_string(), "pong"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .map_err(|e| LabError(format!("ddsperf pong in {b}: {e}")))?;
    let start = Instant::now();
    let mut ping = ddsperf_cmd(
        a,
        secs + 1,
        &[
            "-i",
            &dom,
            "-D",
            &secs.to_string(),
            "-Qminmatch:1",
            &format!("-Qinitwait:{secs}"),
            "ping",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .map_err(|e| LabError(format!("ddsperf ping in {a}: {e}")))?;
    let out = ping.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut found = None;
    let mut roundtrips = 0u64;
    let mut output = String::new();
    while let Ok((t, line)) = rx.recv() {
        output.push_str(&line);
        output.push('\n');
        if found.is_none() && line.contains(": new") && !line.contains("(self)") {
            found = Some(t.duration_since(start).as_secs_f64());
        }
        // "... size 12 mean 19us ... cnt 25803": round trips in the last second
        if let Some(cnt) = line
            .split(" cnt ")
            .nth(1)
            .and_then(|c| c.trim().parse::<u64>().ok())
        {
            roundtrips += cnt;
            // one report with round trips is proof enough
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(ping.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let _ = reader.join();
    stop(&mut ping);
    stop(&mut pong);
    Ok(Discovery {
        seconds: found,
        roundtrips,
        output,
    })
}
