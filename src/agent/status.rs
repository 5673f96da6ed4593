//! The agent's health socket: a Unix socket (mode 0600, root only) in the data
//! dir. A client writes one command line (`status`) and reads one JSON document.

use super::State;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Serves status requests until the task is aborted.
pub async fn serve(path: PathBuf, state: Arc<Mutex<State>>) {
    // a socket file left by a killed agent: nobody answers on it
    if std::os::unix::net::UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("status socket {}: {e}", path.display());
            return;
        }
    };
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    tracing::info!("status on {}", path.display());
    let mut backoff = AcceptBackoff::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(e) => {
                backoff.wait("status socket", &e).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            let mut rd = BufReader::new(rd);
            let _ = tokio::time::timeout(Duration::from_secs(1), rd.read_line(&mut line)).await;
            let line = line.trim();
            if let Some(job) = line.strip_prefix("teardown ") {
                let doc = match serde_json::from_str::<super::pods::Handoff>(job) {
                    Ok(h) => {
                        // the kernel waits out grace periods here: off the caller's path
                        tokio::task::spawn_blocking(move || {
                            if let Err(e) = super::pods::run_handoff(&h) {
                                tracing::warn!(link = %h.name, "handed-over teardown: {e}");
                            }
                        });
                        serde_json::json!({"queued": true})
                    }
                    Err(e) => serde_json::json!({"error": format!("bad teardown request: {e}")}),
                };
                let _ = wr.write_all(format!("{doc}\n").as_bytes()).await;
                let _ = wr.shutdown().await;
                return;
            }
            if line == "test-panic"
                && std::env::var("ROS2_CNI_TEST_PANIC").is_ok_and(|v| v == "agent")
            {
                // tests only: a task that panics holding the state lock
                let _held = state.lock().unwrap();
                panic!("panic requested through ROS2_CNI_TEST_PANIC");
            }
            let doc = match line {
                "" | "status" => super::status_json(&state.lock().unwrap()),
                "participants" => super::participants_json(&state.lock().unwrap()),
                other => serde_json::json!({
                    "error": format!("unknown command \"{other}\" (try \"status\" or \"participants\")")
                }),
            };
            let _ = wr.write_all(format!("{doc}\n").as_bytes()).await;
            let _ = wr.shutdown().await;
        });
    }
}

/// Pauses after a failed accept (EMFILE, ENFILE, ENOMEM, ...), doubling
/// from 10 ms to 1 s, so that the listener does not spin while the
/// condition lasts; logs once per streak.
#[derive(Default)]
pub struct AcceptBackoff {
    pause: Option<Duration>,
}

impl AcceptBackoff {
    pub fn reset(&mut self) {
        self.pause = None;
    }

    pub async fn wait(&mut self, what: &str, e: &std::io::Error) {
        let pause = match self.pause {
            None => {
                tracing::warn!("{what}: accept failed: {e}; backing off");
                Duration::from_millis(10)
            }
            Some(p) => (p * 2).min(Duration::from_secs(1)),
        };
        self.pause = Some(pause);
        tokio::time::sleep(pause).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no agent answers on {path}: {source}")]
    Unreachable {
        path: String,
        source: std::io::Error,
    },
    #[error("the agent on {path} sent an unreadable answer: {msg}")]
    Garbled { path: String, msg: String },
}

/// Asks the agent at `path` (blocking, 2 s timeout). Used by the plugin's
/// STATUS and by `doctor`.
pub fn query(path: &Path, cmd: &str) -> Result<Value, QueryError> {
    let unreachable = |source| QueryError::Unreachable {
        path: path.display().to_string(),
        source,
    };
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(unreachable)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(unreachable)?;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(unreachable)?;
    s.write_all(format!("{cmd}\n").as_bytes())
        .map_err(unreachable)?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(unreachable)?;
    serde_json::from_str(buf.trim()).map_err(|e| QueryError::Garbled {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}
