//! Fault injection for the crash tests: **never set in production.**
//!
//! With `ROS2_CNI_TEST_KILL_AT=N` in its environment, the plugin kills
//! itself with SIGKILL at the N-th [`point`] it passes (1-based): right after
//! each kernel step and each file write of ADD and DEL. The tests run ADD
//! with N = 1, 2, … until it completes, and after each kill check that DEL
//! and GC leave nothing behind. With `ROS2_CNI_TEST_POINTS=FILE` every point
//! passed is appended to FILE by name, so a test can tell which point it
//! killed. Without either variable a point is one relaxed atomic load.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

struct Plan {
    kill_at: Option<u32>,
    log: Option<std::path::PathBuf>,
}

fn plan() -> &'static Option<Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let kill_at = std::env::var("ROS2_CNI_TEST_KILL_AT")
            .ok()
            .and_then(|s| s.parse().ok());
        let log = std::env::var_os("ROS2_CNI_TEST_POINTS").map(Into::into);
        (kill_at.is_some() || log.is_some()).then_some(Plan { kill_at, log })
    })
}

static PASSED: AtomicU32 = AtomicU32::new(0);

/// A point where a crash may happen: kills the process here if the test
/// asked for this one.
pub fn point(name: &str) {
    let Some(plan) = plan() else { return };
    let n = PASSED.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(log) = &plan.log {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{n} {name}");
        }
    }
    if plan.kill_at == Some(n) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
