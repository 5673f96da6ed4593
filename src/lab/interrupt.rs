//! Ctrl-C / SIGTERM / SIGHUP for the lab.
//!
//! [`Interrupt::install`] starts one thread that waits for the signals with
//! tokio's signal handling (a handler that only wakes that thread; tokio is
//! already a dependency for the agent). On the first signal that thread sets
//! the [`Cancel`] token and runs `on_signal` (the lab kills what runs in its
//! namespaces, so whatever the main thread is waiting for returns at once);
//! the main thread notices, unwinds and drops its test beds, which removes
//! them. If the main thread has not called [`Interrupt::finished`] within
//! the grace period, or a second signal arrives, the thread runs `force`
//! (remove everything by name) and exits the process itself.
//!
//! Why a handler and not a blocked mask with `sigwait`: a blocked mask is
//! inherited by every child, and `std::process::Command` does not clear it
//! here, so `timeout` and `ddsperf` would ignore the SIGTERM that stops a
//! probe. A handler is reset to the default by exec.

use super::probe::Cancel;
use nix::sys::signal::Signal;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// What the signal thread shares with the main thread.
#[derive(Debug, Default)]
pub struct Interrupt {
    signal: AtomicI32,
    cancel: Cancel,
    finished: AtomicBool,
}

/// The exit code of a process ended by `sig`, as shells report it.
pub fn exit_code(sig: Signal) -> i32 {
    128 + sig as i32
}

impl Interrupt {
    /// Installs handlers for SIGINT, SIGTERM and SIGHUP and starts the
    /// thread that acts on them; returns once the handlers are in place.
    pub fn install(
        grace: Duration,
        on_signal: impl Fn(Signal) + Send + 'static,
        force: impl Fn(Signal) + Send + 'static,
    ) -> std::io::Result<Arc<Interrupt>> {
        let me = Arc::new(Interrupt::default());
        let shared = me.clone();
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
        std::thread::Builder::new()
            .name("lab-signals".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let streams = (|| {
                        Ok::<_, std::io::Error>((
                            signal(SignalKind::interrupt())?,
                            signal(SignalKind::terminate())?,
                            signal(SignalKind::hangup())?,
                        ))
                    })();
                    let (mut int, mut term, mut hup) = match streams {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let sig = tokio::select! {
                        _ = int.recv() => Signal::SIGINT,
                        _ = term.recv() => Signal::SIGTERM,
                        _ = hup.recv() => Signal::SIGHUP,
                    };
                    shared.signal.store(sig as i32, Ordering::SeqCst);
                    shared.cancel.cancel();
                    on_signal(sig);
                    let watch = async {
                        while !shared.finished.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    };
                    tokio::select! {
                        _ = watch => return,
                        _ = tokio::time::sleep(grace) => {}
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                    if shared.finished.load(Ordering::SeqCst) {
                        return;
                    }
                    force(sig);
                    std::process::exit(exit_code(sig));
                });
            })?;
        ready_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the signal thread died")))?;
        Ok(me)
    }

    /// The signal that arrived, if one did.
    pub fn signal(&self) -> Option<Signal> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            n => Signal::try_from(n).ok(),
        }
    }

    /// Set when a signal arrived.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// The main thread has cleaned up: the signal thread stands down.
    pub fn finished(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(Signal::SIGINT), 130);
        assert_eq!(exit_code(Signal::SIGTERM), 143);
        assert_eq!(exit_code(Signal::SIGHUP), 129);
    }
}
