//! The agent's health socket: a Unix socket (mode 0600, root only) in the data
//! dir. A client writes one request line and reads one JSON document; the
//! protocol's types and the client are in [`crate::api`].

use super::State;
use crate::api::{reply_line, ErrorReply, Queued, Request};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
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
        tokio::spawn(answer(stream, state.clone()));
    }
}

/// Reads one request line and writes one reply.
async fn answer(stream: tokio::net::UnixStream, state: Arc<Mutex<State>>) {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(rd);
    let _ = tokio::time::timeout(Duration::from_secs(1), rd.read_line(&mut line)).await;
    if line.trim() == "test-panic"
        && std::env::var("ROS2_CNI_TEST_PANIC").is_ok_and(|v| v == "agent")
    {
        // tests only: a task that panics holding the state lock
        let _held = state.lock().unwrap();
        panic!("panic requested through ROS2_CNI_TEST_PANIC");
    }
    let reply = match Request::parse(&line) {
        Ok(Request::Teardown(h)) => {
            // the kernel waits out grace periods here: off the caller's path
            tokio::task::spawn_blocking(move || {
                if let Err(e) = super::pods::run_handoff(&h) {
                    tracing::warn!(link = %h.name, "handed-over teardown: {e}");
                }
            });
            reply_line(&Queued { queued: true })
        }
        Ok(Request::Status) => reply_line(&super::status_reply(&state.lock().unwrap())),
        Ok(Request::Participants) => reply_line(&super::participants_reply(&state.lock().unwrap())),
        Err(e) => reply_line(&ErrorReply {
            error: e.to_string(),
        }),
    };
    let _ = wr.write_all(reply.as_bytes()).await;
    let _ = wr.shutdown().await;
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
