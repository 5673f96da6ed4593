//! Discovery probes between two hosts of a test bed.
//!
//! A [`Prober`] answers one question: how long does host A take to discover
//! host B? The lab's matrix runs one probe per ordered pair of hosts through
//! this trait and knows nothing else about how a probe works. [`Ddsperf`] runs
//! real Cyclone DDS (`ddsperf`, Debian package cyclonedds-tools) with no DDS
//! configuration.
//!
//! Adding a prober (e.g. an SPDP announcer/listener built on an RTPS parser):
//! implement [`Prober`] for a new type — announce in `req.to`'s namespace,
//! listen in `req.from`'s, use `req.domain` for the ports, give up after
//! `req.timeout` or as soon as `req.cancel` is set — and return it from
//! `select_prober` in [`super::probers`].
//!
//! This module names no prober but its own: the others (e.g.
//! [`super::spdp_probe`]) import the trait from here, and only
//! [`super::probers`] knows them all.

use super::testbed::{LabError, Result};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// One host of a probe: a pod or the laptop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// What the matrix calls it ("n1-pod1", "laptop").
    pub label: String,
    /// Its network namespace.
    pub ns: String,
    /// Its address on the robot LAN (ros0, a macvlan, the laptop's eth0), if it has one.
    pub lan_ip: Option<Ipv4Addr>,
}

/// Set once to stop work early (the lab was interrupted). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One probe: does `from` discover `to`?
#[derive(Debug, Clone)]
pub struct ProbeRequest<'a> {
    pub from: &'a Endpoint,
    pub to: &'a Endpoint,
    /// DDS domain id (0-230): no other probe running at the same time uses it.
    pub domain: u32,
    /// How long to wait for discovery.
    pub timeout: Duration,
    /// Return early once this is set.
    pub cancel: &'a Cancel,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub discovered: bool,
    /// Seconds from the start of `from` until it discovered `to` (only when discovered).
    pub seconds: Option<f64>,
    /// One line for humans when it is not a plain success or a plain timeout.
    pub note: Option<String>,
}

/// A way to find out whether, and how fast, one host discovers another.
pub trait Prober: Send + Sync {
    /// Short name for reports and JSON ("ddsperf").
    fn name(&self) -> &'static str;

    /// Runs one probe. Blocks for at most about `req.timeout` (plus start-up),
    /// and returns soon after `req.cancel` is set. `Err` only when the probe
    /// could not be run at all; "not discovered" is an `Ok` outcome.
    fn probe(&self, req: &ProbeRequest) -> Result<Outcome>;
}

/// Why no prober can run here, and the Debian packages that would fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub reason: String,
    pub packages: Vec<&'static str>,
}

/// Whether `tool` is an executable file in a directory of PATH.
pub fn in_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p).any(|d| {
                std::fs::metadata(d.join(tool))
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
        })
        .unwrap_or(false)
}

/// Real Cyclone DDS: `ddsperf pong` in the target, `ddsperf ping` in the source.
#[derive(Debug, Clone, Default)]
pub struct Ddsperf {
    pub options: DdsperfOptions,
}

impl Ddsperf {
    /// Pings at 100 Hz: round trips prove the match, and many probes can run
    /// side by side on a small machine (unpaced ping-pong takes a whole core).
    pub fn for_lab() -> Ddsperf {
        Ddsperf {
            options: DdsperfOptions {
                ping_rate: Some("100Hz".into()),
            },
        }
    }
}

impl Prober for Ddsperf {
    fn name(&self) -> &'static str {
        "ddsperf"
    }

    fn probe(&self, req: &ProbeRequest) -> Result<Outcome> {
        let d = ddsperf_probe_with(
            &req.from.ns,
            &req.to.ns,
            req.domain,
            req.timeout,
            &self.options,
            Some(req.cancel),
        )?;
        let note = match (d.seconds, d.roundtrips) {
            (Some(s), 0) => Some(format!(
                "saw the participant after {s:.2} s, but no round trips followed"
            )),
            _ => None,
        };
        Ok(Outcome {
            discovered: d.discovered(),
            seconds: d.seconds.filter(|_| d.discovered()),
            note,
        })
    }
}

/// Knobs for `ddsperf_probe_with`.
#[derive(Debug, Clone, Default)]
pub struct DdsperfOptions {
    /// `ping R` (e.g. "100Hz"); None: ping as fast as the pong answers.
    pub ping_rate: Option<String>,
}

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
    ddsperf_probe_with(a, b, domain, timeout, &DdsperfOptions::default(), None)
}

/// `ddsperf_probe` with options, stopping early when `cancel` is set.
pub fn ddsperf_probe_with(
    a: &str,
    b: &str,
    domain: u32,
    timeout: Duration,
    opts: &DdsperfOptions,
    cancel: Option<&Cancel>,
) -> Result<Discovery> {
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
    let dur = secs.to_string();
    let initwait = format!("-Qinitwait:{secs}");
    let mut ping_args = vec!["-i", &dom, "-D", &dur, "-Qminmatch:1", &initwait, "ping"];
    if let Some(rate) = &opts.ping_rate {
        ping_args.push(rate);
    }
    let mut ping = ddsperf_cmd(a, secs + 1, &ping_args)
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
    let mut cancelled = false;
    loop {
        let (t, line) = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(x) => x,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !cancelled && cancel.is_some_and(Cancel::is_cancelled) {
                    cancelled = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(ping.id() as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
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
