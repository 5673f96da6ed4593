//! Benchmarks on the namespace test bed: the plugin on a pod's start path,
//! the data path, discovery and the agent, side by side with the reference
//! plugins and the host network. Writes docs/benchmarks.md and .json.
//!
//! - `./bench/run.sh` (= `cargo bench --bench testbed`): the full run (minutes).
//! - `cargo bench --bench testbed -- --smoke`: every section, tiny (seconds);
//!   `cargo test --benches` (and so `./test.sh`) runs this smoke run too.
//! - `--only 1,4`: some sections; `--out DIR`: where to write.
//!
//! Needs root; everything happens in namespaces named `r2b-<pid>-...`, removed
//! on exit, on a panic, on SIGINT/SIGTERM, and (if this process was killed) by
//! the next run.

mod agent;
mod candidates;
mod cni;
mod costs;
mod datapath;
mod forwarders;
mod invoke;
mod pods;
mod profile;
mod relay;
mod report;
mod stats;
mod zenoh;

use report::{Report, Section};
use ros2_cni::lab::testbed::{sh, sweep_stale, unique_prefix, Options, Testbed};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How much of everything to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub plugin: PathBuf,
    pub smoke: bool,
    pub callgrind: bool,
    pub iters: usize,
    pub parallel: usize,
    pub parallel_rounds: usize,
    pub scale_pods: usize,
    pub scale_window: usize,
    pub scale_rounds: usize,
    /// veth pairs per `ip -batch` when timing the kernel alone (section 3).
    pub scale_kernel_pairs: usize,
    pub iperf_runs: usize,
    pub iperf_secs: u64,
    /// Profiled iperf3 runs per path (section 4: pod → LAN host, ros2-cni
    /// and macvlan, alternating), besides the timed ones.
    pub profile_runs: usize,
    pub rtt_runs: usize,
    pub rtt_secs: u64,
    pub udp_runs: usize,
    pub udp_rtts: usize,
    pub discovery_runs: usize,
    pub costs_reps: usize,
    /// How many of the paths get the ddsperf round trip and discovery probes.
    pub dds_paths: usize,
    pub agent_reps: usize,
    pub agent_window: f64,
    pub agent_rate: u32,
    /// Section 6b: the rate asked of the sender when measuring how much a forwarder carries.
    pub forwarder_flood_rate: u32,
    /// Leave the test beds in place (debugging; `ip netns del` them by hand).
    pub keep: bool,
    /// Other builds of the plugin to time beside the first (section 1): (label, path).
    pub alt_plugins: Vec<(String, PathBuf)>,
}

impl Plan {
    fn full(plugin: PathBuf) -> Plan {
        Plan {
            plugin,
            smoke: false,
            callgrind: true,
            iters: 60,
            parallel: 64,
            parallel_rounds: 5,
            scale_pods: 250,
            scale_window: 10,
            scale_rounds: 3,
            scale_kernel_pairs: 40,
            iperf_runs: 9,
            iperf_secs: 3,
            profile_runs: 3,
            rtt_runs: 5,
            rtt_secs: 4,
            udp_runs: 7,
            udp_rtts: 5000,
            discovery_runs: 7,
            costs_reps: 3,
            dds_paths: 3,
            agent_reps: 3,
            agent_window: 5.0,
            agent_rate: 10_000,
            forwarder_flood_rate: 100_000,
            keep: false,
            alt_plugins: vec![],
        }
    }

    fn smoke(plugin: PathBuf) -> Plan {
        Plan {
            plugin,
            smoke: true,
            callgrind: false,
            iters: 3,
            parallel: 8,
            parallel_rounds: 1,
            scale_pods: 8,
            scale_window: 3,
            scale_rounds: 1,
            scale_kernel_pairs: 3,
            iperf_runs: 1,
            iperf_secs: 1,
            profile_runs: 1,
            rtt_runs: 1,
            rtt_secs: 1,
            udp_runs: 1,
            udp_rtts: 200,
            discovery_runs: 1,
            costs_reps: 1,
            dds_paths: 1,
            agent_reps: 1,
            agent_window: 0.5,
            agent_rate: 2_000,
            forwarder_flood_rate: 4_000,
            keep: false,
            alt_plugins: vec![],
        }
    }

    /// A fresh namespace prefix `r2b-<pid>-<n>-`.
    pub fn prefix(&self) -> String {
        unique_prefix("r2b")
    }

    /// A test bed of `nodes` robot computers, with or without the laptop.
    pub fn bed(&self, nodes: usize, laptop: bool) -> Testbed {
        let mut o = Options::new(&self.prefix(), nodes, &self.plugin);
        o.laptop = laptop;
        let mut tb = Testbed::new(o).expect("build test bed");
        if self.keep {
            tb.keep();
        }
        tb
    }
}

/// Namespaces and temp dirs of this process, for the signal handler.
fn cleanup_own() {
    let mine = format!("r2b-{}-", std::process::id());
    if let Ok(list) = sh(&["ip", "netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if !name.starts_with(&mine) {
                continue;
            }
            if let Ok(pids) = sh(&["ip", "netns", "pids", name]) {
                for p in pids
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = sh(&["ip", "netns", "del", name]);
        }
    }
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&mine) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// The write end of the self-pipe the signal handler writes to.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the fd stays open for the process' life.
    unsafe {
        libc::write(
            SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed),
            &b as *const u8 as *const libc::c_void,
            1,
        );
    }
}

/// SIGINT/SIGTERM/SIGHUP: remove what this process made, then exit. A
/// handler and a self-pipe, not a blocked mask: the mask would be inherited
/// by every process the test bed starts (agents, ddsperf), which then could
/// not be stopped with SIGTERM.
fn handle_signals() {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    SIGNAL_PIPE.store(fds[1], std::sync::atomic::Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that only calls write(2); exec resets it in children.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let rd = fds[0];
    std::thread::spawn(move || {
        let mut b = 0u8;
        // SAFETY: reads one byte from our pipe.
        let n = unsafe { libc::read(rd, &mut b as *mut u8 as *mut libc::c_void, 1) };
        if n == 1 {
            eprintln!("bench: signal {b}: removing this run's namespaces");
            cleanup_own();
            std::process::exit(130);
        }
    });
}

fn cmd_line(args: &[&str]) -> String {
    std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "not found".into())
}

fn dpkg_version(pkg: &str) -> String {
    cmd_line(&["dpkg-query", "-W", "-f", "${Version}", pkg])
}

fn machine(plan: &Plan) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let hyper = if cpuinfo.contains(" hypervisor") {
        " (virtual machine)"
    } else {
        ""
    };
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|k| format!("{:.1} GiB", k / 1024.0 / 1024.0))
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    let root = env!("CARGO_MANIFEST_DIR");
    let rev = cmd_line(&["git", "-C", root, "rev-parse", "--short", "HEAD"]);
    // the previous run's own output does not make the sources dirty
    let dirty = std::process::Command::new("git")
        .args([
            "-C",
            root,
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!docs/benchmarks.md",
            ":!docs/benchmarks.json",
        ])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let profile = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    };
    vec![
        ("CPU".into(), format!("{model}{hyper}")),
        (
            "cores".into(),
            std::thread::available_parallelism()
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ),
        ("memory".into(), mem),
        ("OS".into(), os),
        ("kernel".into(), cmd_line(&["uname", "-r"])),
        (
            "ros2-cni".into(),
            format!(
                "{} at {rev}{} ({profile}: {})",
                env!("CARGO_PKG_VERSION"),
                if dirty { " + local changes" } else { "" },
                plan.plugin.display()
            ),
        ),
        ("rustc".into(), cmd_line(&["rustc", "-V"])),
        (
            "containernetworking-plugins".into(),
            dpkg_version("containernetworking-plugins"),
        ),
        ("iproute2".into(), cmd_line(&["ip", "-V"])),
        ("nftables".into(), cmd_line(&["nft", "-v"])),
        ("iperf3".into(), dpkg_version("iperf3")),
        (
            "cyclonedds-tools (ddsperf)".into(),
            dpkg_version("cyclonedds-tools"),
        ),
        ("valgrind".into(), cmd_line(&["valgrind", "--version"])),
        (
            "load average at start".into(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
    ]
}

struct Args {
    smoke: bool,
    skip: bool,
    list: bool,
    only: Option<Vec<String>>,
    out: Option<PathBuf>,
    plugin: Option<PathBuf>,
    alt_plugins: Vec<(String, PathBuf)>,
    keep: bool,
    notes_only: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        smoke: false,
        skip: false,
        list: false,
        only: None,
        out: None,
        plugin: None,
        alt_plugins: vec![],
        keep: false,
        notes_only: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test` does not: then this is the
    // smoke run, and libtest-style filters that do not name it skip it
    let bench = argv.iter().any(|x| x == "--bench");
    a.smoke = !bench || argv.iter().any(|x| x == "--smoke");
    let mut filters = vec![];
    let mut it = argv.iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--only" => a.only = it.next().map(|v| v.split(',').map(str::to_owned).collect()),
            "--out" => a.out = it.next().map(PathBuf::from),
            "--list" => a.list = true,
            "--plugin" => a.plugin = it.next().map(PathBuf::from),
            // LABEL=PATH
            "--alt-plugin" => {
                if let Some(v) = it.next() {
                    let (label, path) = v.split_once('=').unwrap_or(("other build", v));
                    a.alt_plugins.push((label.to_owned(), PathBuf::from(path)));
                }
            }
            "--keep" => a.keep = true,
            "--notes-only" => a.notes_only = true,
            "--smoke" | "--bench" => {}
            s if s.starts_with("--") => {} // libtest options from cargo test
            s => filters.push(s.to_owned()),
        }
    }
    if !bench && !filters.is_empty() {
        a.skip = !filters.iter().any(|f| "bench_smoke".contains(f.as_str()));
    }
    a
}

fn main() {
    let args = parse_args();
    if args.list {
        println!("bench_smoke: test");
        return;
    }
    if args.notes_only {
        // re-append bench/notes.md to an existing docs/benchmarks.md
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = args.out.clone().unwrap_or_else(|| root.join("docs"));
        let md = std::fs::read_to_string(out.join("benchmarks.md")).expect("benchmarks.md");
        let notes = std::fs::read_to_string(root.join("bench/notes.md")).unwrap_or_default();
        std::fs::write(
            out.join("benchmarks.md"),
            report::replace_notes(&md, &notes),
        )
        .expect("write benchmarks.md");
        return;
    }
    if args.skip {
        println!("bench_smoke: filtered out\n0 passed, 0 failed");
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "bench: the test bed builds network namespaces and needs root (sudo -E ./bench/run.sh)"
        );
        std::process::exit(1);
    }
    handle_signals();
    sweep_stale("r2b");
    profile::self_check();
    let built = PathBuf::from(env!("CARGO_BIN_EXE_ros2-cni"));
    let plugin = args
        .plugin
        .clone()
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .unwrap_or_else(|| built.clone());
    let mut plan = if args.smoke {
        Plan::smoke(plugin)
    } else {
        Plan::full(plugin)
    };
    plan.keep = args.keep;
    plan.alt_plugins = args
        .alt_plugins
        .iter()
        .map(|(l, p)| (l.clone(), std::fs::canonicalize(p).unwrap_or(p.clone())))
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = args.out.clone().unwrap_or_else(|| {
        if plan.smoke {
            root.join("target/bench-smoke")
        } else {
            root.join("docs")
        }
    });
    // `--only 4` also selects 4b, `--only 6` 6b and 6c
    let want = |id: &str| {
        args.only.as_ref().is_none_or(|o| {
            o.iter()
                .any(|x| x == id || id.trim_end_matches(char::is_alphabetic) == x.as_str())
        })
    };
    let started = Instant::now();
    let machine = machine(&plan);
    let mut sections: Vec<Section> = vec![];
    let mut failed = vec![];
    let mut run = |id: &str, enabled: bool, f: &dyn Fn() -> Vec<Section>| {
        if !enabled {
            return;
        }
        let t = Instant::now();
        eprintln!("bench: section {id} ...");
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(v) => {
                eprintln!(
                    "bench: section {id} done in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
                sections.extend(v);
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("bench: section {id} FAILED: {msg}");
                let mut s = Section::new(id, "(failed)", "");
                s.note(format!("this section failed: {msg}"));
                sections.push(s);
                failed.push(id.to_owned());
            }
        }
    };
    run("1", want("1"), &|| vec![cni::per_pod(&plan)]);
    run("2", want("2"), &|| vec![cni::parallel(&plan)]);
    run("3", want("3"), &|| vec![cni::scale(&plan)]);
    run("4+5", want("4") || want("5"), &|| {
        let p = datapath::build(&plan);
        let mut v = vec![];
        if want("4") {
            v.push(datapath::datapath(&plan, &p));
        }
        if want("5") {
            v.push(datapath::discovery(&plan, &p));
        }
        v
    });
    run("4b", want("4b"), &|| vec![costs::costs(&plan)]);
    run("6", want("6"), &|| vec![agent::agent(&plan)]);
    run("6b", want("6b"), &|| vec![forwarders::forwarders(&plan)]);
    run("6c", want("6c"), &|| vec![relay::relay(&plan)]);
    run("7", want("7"), &|| vec![zenoh::zenoh(&plan)]);
    sections.sort_by(|a, b| a.id.cmp(&b.id));
    let mut machine = machine;
    machine.push((
        "load average at end".into(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    ));
    let report = Report {
        mode: if plan.smoke { "smoke" } else { "full" }.into(),
        machine,
        sections,
        seconds: started.elapsed().as_secs_f64(),
    };
    let notes = if plan.smoke {
        String::new()
    } else {
        std::fs::read_to_string(root.join("bench/notes.md")).unwrap_or_default()
    };
    report.write(&out, &notes).expect("write the report");
    eprintln!(
        "bench: wrote {} and {} in {:.0} s",
        out.join("benchmarks.md").display(),
        out.join("benchmarks.json").display(),
        report.seconds
    );
    for s in &report.sections {
        for g in &s.goals {
            eprintln!("bench: [{}] {}: {}", s.id, g.text, g.status());
        }
    }
    // correctness checks (unlike performance goals) fail the run, smoke included
    let broken: Vec<String> = report
        .sections
        .iter()
        .flat_map(|s| s.goals.iter().map(move |g| (s, g)))
        .filter(|(_, g)| g.text.starts_with("check:") && g.met() != Some(true))
        .map(|(s, g)| format!("[{}] {}", s.id, g.text))
        .collect();
    for b in &broken {
        eprintln!("bench: check failed: {b}");
    }
    let total = report.sections.len();
    println!(
        "bench{}: {} passed, {} failed, {} check(s) failed",
        if plan.smoke { "_smoke" } else { "" },
        total - failed.len(),
        failed.len(),
        broken.len()
    );
    if !failed.is_empty() || !broken.is_empty() {
        std::process::exit(1);
    }
}
