//! Logging through `tracing`: never to stdout.

use crate::config::LogFormat;
use std::path::Path;
use std::sync::Mutex;
use tracing_subscriber::EnvFilter;

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_env("ROS2_CNI_LOG").unwrap_or_else(|_| EnvFilter::new(level))
}

/// The plugin logs to `log_file` (appended) or, without one, warnings and
/// errors to stderr, where the runtime shows them.
pub fn init_plugin(log_file: Option<&Path>, level: &str) {
    let file = log_file.and_then(|p| {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            Ok(f) => Some(f),
            Err(e) => {
                // said once on stderr (the runtime's log), never on stdout
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "ros2-cni: logFile {}: {e}; logging warnings and errors to stderr instead",
                    p.display()
                );
                None
            }
        }
    });
    // a log line that cannot be written is dropped: tracing-subscriber would
    // otherwise report it with eprintln!, which panics on a closed stderr
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .log_internal_errors(false);
    let _ = match file {
        Some(f) => builder
            .with_env_filter(filter(level))
            .with_writer(Mutex::new(f))
            .try_init(),
        None => builder
            .with_env_filter(filter("warn"))
            .with_writer(std::io::stderr)
            .try_init(),
    };
}

/// The agent and the CLI log to stderr, human-readable or JSON. A closed
/// stderr (a log collector restarting) loses lines but never panics.
pub fn init_stderr(format: LogFormat, level: &str) {
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Human => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}
