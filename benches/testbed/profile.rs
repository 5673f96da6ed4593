//! cpu-clock profiles (`perf record -g`) beside the timings, for the goals
//! whose limit is the kernel's or the machine's: where the CPU goes, by
//! kernel function, inclusive of what it calls.
//!
//! `perf` samples the clock (no hardware counters in a VM). A profile is
//! optional: without `perf`, or where `perf_event_open` is refused, the
//! caller gets `None` and notes it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Functions a CPU sits in when it has nothing to do: their own samples are
/// idle time, not work (a VM's `pv_native_safe_halt`; bare metal's idle
/// drivers).
const IDLE: &[&str] = &[
    "pv_native_safe_halt",
    "native_safe_halt",
    "default_idle",
    "intel_idle",
    "acpi_idle_do_entry",
    "mwait_idle_with_hints",
    "poll_idle",
    "cpu_idle_poll",
];

/// One profile: per symbol, the % of all samples spent in it and in what it
/// calls (`children`) and in it alone (`self_`).
#[derive(Debug, Default)]
pub struct Profile {
    pub children: HashMap<String, f64>,
    pub self_: HashMap<String, f64>,
    /// % of the samples in user space (`[.]` rows, their own samples).
    pub user: f64,
}

impl Profile {
    /// % of the samples spent working (not in an idle function).
    pub fn busy(&self) -> f64 {
        100.0 - IDLE.iter().filter_map(|s| self.self_.get(*s)).sum::<f64>()
    }

    /// % of the samples in `sym` and below it; 0 when it never ran.
    pub fn under(&self, sym: &str) -> f64 {
        self.children.get(sym).copied().unwrap_or(0.0)
    }

    /// The largest inclusive % of `syms`: one function under its names on
    /// different kernels or call paths (a system call's `__x64_sys_` entry
    /// may tail-call its `__sys_` body and vanish from the call chains).
    pub fn under_any(&self, syms: &[&str]) -> f64 {
        syms.iter().map(|s| self.under(s)).fold(0.0, f64::max)
    }

    /// Summed inclusive % of the symbols whose name starts with `prefix`
    /// (the JIT names BPF programs `bpf_prog_<tag>_<name>`).
    pub fn under_prefix(&self, prefix: &str) -> f64 {
        self.children
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// Parses `perf report --children --sort sym -q --stdio -g none`:
    /// `  12.34%   1.23%  [k] symbol`.
    pub fn parse(report: &str) -> Profile {
        let mut p = Profile::default();
        for line in report.lines() {
            let mut f = line.split_whitespace();
            let (Some(c), Some(s), Some(space), Some(sym)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let pct = |x: &str| x.strip_suffix('%').and_then(|x| x.parse::<f64>().ok());
            let (Some(c), Some(s)) = (pct(c), pct(s)) else {
                continue;
            };
            *p.children.entry(sym.to_string()).or_default() += c;
            *p.self_.entry(sym.to_string()).or_default() += s;
            if space == "[.]" {
                p.user += s;
            }
        }
        p
    }
}

/// Whether `perf` is installed.
pub fn have_perf() -> bool {
    crate::cni::which("perf").is_some()
}

/// A `perf record` running until [`Recording::finish`].
pub struct Recording {
    child: Child,
    out: PathBuf,
}

/// Starts sampling the CPU clock with call graphs: every CPU (`pid` None)
/// or one process and its threads.
pub fn start(pid: Option<u32>, tag: &str) -> Option<Recording> {
    let out = std::env::temp_dir().join(format!("r2b-{}-{tag}.perf", std::process::id()));
    let mut c = Command::new("perf");
    c.args(["record", "-q", "-e", "cpu-clock", "-F", "2999", "-g", "-o"])
        .arg(&out);
    match pid {
        Some(p) => c.args(["-p", &p.to_string()]),
        None => c.arg("-a"),
    };
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // perf opens its events before it samples: give it a moment to start
    std::thread::sleep(std::time::Duration::from_millis(300));
    Some(Recording { child, out })
}

impl Recording {
    /// Stops sampling (SIGINT, as perf expects) and reads the profile.
    pub fn finish(mut self) -> Option<Profile> {
        // SAFETY: a signal to the perf process this run started
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        // perf writes its data, then dies of the SIGINT it re-raises: its
        // exit status says nothing; an empty report says it failed
        self.child.wait().ok()?;
        let report = Command::new("perf")
            .args(["report", "--children", "--sort", "sym", "-q", "--stdio"])
            .args(["-g", "none", "-i"])
            .arg(&self.out)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok();
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(self.out.with_extension("perf.old"));
        let p = Profile::parse(&String::from_utf8_lossy(&report?.stdout));
        (!p.children.is_empty()).then_some(p)
    }
}

/// Checks the report parser against a known report; the smoke run (so
/// `./test.sh`) calls it, as the bench has no test harness.
pub fn self_check() {
    let p = Profile::parse(
        "    67.86%     0.45%  [k] do_syscall_64\n\
         \x20   26.00%    25.50%  [k] pv_native_safe_halt\n\
         \x20    0.78%     0.12%  [k] bpf_prog_61e7199c20e18057_r2c_pod\n\
         \x20    0.70%     0.10%  [k] bpf_prog_8b763348dd674d68_r2c_pod\n\
         \x20    3.00%     2.50%  [.] main\n\
         not a row\n",
    );
    assert_eq!(p.under("do_syscall_64"), 67.86);
    assert_eq!(p.under("absent"), 0.0);
    assert!((p.busy() - 74.5).abs() < 1e-9, "busy {}", p.busy());
    assert!((p.under_prefix("bpf_prog_") - 1.48).abs() < 1e-9);
    assert!((p.user - 2.5).abs() < 1e-9, "user {}", p.user);
}
