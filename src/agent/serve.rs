//! The running agent: its tokio tasks (status socket, metrics, upcalls,
//! capture), the main loop (reconcile ticks, signals) and the exit on panic.

use super::*;

/// A task that ended by panicking: the agent stops (exit code 70 through the
/// panic hook, or this error), so that its supervisor restarts it.
fn task_died(what: &str, e: tokio::task::JoinError) -> AgentError {
    AgentError::Setup(format!("the agent's {what} task died: {e}"))
}

/// Exit code of an agent that panicked (EX_SOFTWARE).
pub const PANIC_EXIT: i32 = 70;

/// Any panic in any thread or task ends the process: an agent whose state
/// lock is poisoned, or whose upcall or status task is gone, would keep
/// running without routing or answering; exiting lets systemd or the
/// DaemonSet restart it (kernel state survives, as after kill -9).
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info); // to stderr; a closed stderr is ignored there
        std::process::exit(PANIC_EXIT);
    }));
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(opts: Options) -> Result<(), AgentError> {
    exit_on_panic();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::Io {
            what: "tokio runtime".into(),
            source: e,
        })?;
    let mut state = start(&opts)?;
    let data_dir = state.cfg.data_dir.clone();
    let watcher = match &opts.install {
        Some(hook) => Some(hook.watch(&opts)?),
        None => None,
    };
    state.install = watcher.as_ref().map(|w| w.stats_handle());
    let watcher = Arc::new(Mutex::new(watcher));
    let r = rt.block_on(serve(
        state,
        opts.period.unwrap_or(Duration::from_secs(2)),
        Reinstall {
            opts: opts.clone(),
            watcher: watcher.clone(),
        },
    ));
    if let Some(w) = watcher.lock().unwrap().take() {
        w.stop();
    }
    if let Some(hook) = opts.install.as_ref().filter(|h| h.uninstall_on_exit) {
        hook.uninstall(&data_dir);
    }
    r
}

/// What SIGHUP needs to re-apply the conflist entry from the new config.
struct Reinstall {
    opts: Options,
    watcher: Arc<Mutex<Option<crate::install::Watcher>>>,
}

impl Reinstall {
    /// Restarts the watcher with the entry built from the (reloaded) config.
    fn restart(&self, st: &mut State) {
        let Some(hook) = &self.opts.install else {
            return;
        };
        match hook.watch(&self.opts) {
            Ok(w) => {
                st.install = Some(w.stats_handle());
                if let Some(old) = self.watcher.lock().unwrap().replace(w) {
                    old.stop();
                }
            }
            Err(e) => tracing::error!("reload: keeping the conflist entry as it was: {e}"),
        }
    }
}

struct Fd(RawFd);
impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.to_owned();
    move |source| AgentError::Io { what, source }
}

/// Runs the agent's tasks and its main loop until a signal ends it or a
/// task dies; then stops the tasks and shuts down.
async fn serve(state: State, period: Duration, reinstall: Reinstall) -> Result<(), AgentError> {
    let sock_path = state.cfg.agent_socket();
    let state = Arc::new(Mutex::new(state));
    let mut tasks = Tasks::spawn(&state, &sock_path).await?;
    let outcome = main_loop(&state, &mut tasks, &sock_path, period, &reinstall).await;
    tasks.stop().await;
    shutdown(&mut state.lock().unwrap());
    outcome
}

/// The tasks that run beside the main loop.
struct Tasks {
    status: tokio::task::JoinHandle<()>,
    metrics: Option<tokio::task::JoinHandle<()>>,
    /// None once it has ended (it is not awaited twice).
    upcalls: Option<tokio::task::JoinHandle<()>>,
    capture: Option<tokio::task::JoinHandle<()>>,
}

impl Tasks {
    /// Starts the status socket, the metrics listener, the upcall reader
    /// (routed mode) and the discovery capture reader.
    async fn spawn(state: &Arc<Mutex<State>>, sock_path: &Path) -> Result<Tasks, AgentError> {
        use tokio::io::unix::AsyncFd;
        let (metrics_addr, fd, cap_fd) = {
            let st = state.lock().unwrap();
            let cap_fd = st.discovery.capture.as_ref().map(|c| c.raw_fd());
            (st.cfg.metrics_address.clone(), st.mroute_fd(), cap_fd)
        };
        let status = tokio::spawn(status::serve(sock_path.to_owned(), state.clone()));
        let metrics = if metrics_addr.is_empty() {
            None
        } else {
            let listener = tokio::net::TcpListener::bind(&metrics_addr)
                .await
                .map_err(io_err(&format!("metrics address {metrics_addr}")))?;
            tracing::info!("metrics on http://{metrics_addr}/metrics");
            Some(tokio::spawn(metrics::serve(listener, state.clone())))
        };
        let readable = |fd: RawFd, what: &str| {
            // SAFETY: see the callers: each fd outlives the task that polls it.
            unsafe { AsyncFd::register_with_interest(Fd(fd), tokio::io::Interest::READABLE) }
                .map_err(|e| io_err(what)(e.into_parts().1))
        };
        // the fd belongs to the router's MrouteSocket, which lives in
        // `state` until after the task that polls it is aborted and awaited
        // (stop); it is never replaced.
        let upcalls = match fd {
            Some(fd) => Some(upcall_task(
                readable(fd, "multicast routing socket")?,
                state,
            )),
            None => None,
        };
        // the fd belongs to the Capture in `state`, which is only taken out
        // for a drain under the lock and always put back; the task that
        // polls it is aborted and awaited before `state` is shut down.
        let capture = match cap_fd {
            Some(fd) => Some(capture_task(readable(fd, "capture socket")?, state)),
            None => None,
        };
        Ok(Tasks {
            status,
            metrics,
            upcalls,
            capture,
        })
    }

    /// Aborts every task; those that poll a descriptor in the state are
    /// awaited, so that the state may be shut down after.
    async fn stop(self) {
        self.status.abort();
        if let Some(t) = self.metrics {
            t.abort();
        }
        for t in [self.upcalls, self.capture].into_iter().flatten() {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Discovery traffic is read in batches, at most every DRAIN_EVERY.
fn capture_task(
    afd: tokio::io::unix::AsyncFd<Fd>,
    state: &Arc<Mutex<State>>,
) -> tokio::task::JoinHandle<()> {
    let st = state.clone();
    tokio::spawn(async move {
        while let Ok(mut guard) = afd.readable().await {
            handle_capture(&mut st.lock().unwrap());
            guard.clear_ready();
            tokio::time::sleep(observe::DRAIN_EVERY).await;
        }
    })
}

/// Upcalls (new sources) are served by a task of their own, so they never
/// wait for the main loop (a reconcile pass, a reload).
fn upcall_task(
    afd: tokio::io::unix::AsyncFd<Fd>,
    state: &Arc<Mutex<State>>,
) -> tokio::task::JoinHandle<()> {
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            match afd.readable().await {
                Ok(mut guard) => {
                    handle_upcalls(&mut st.lock().unwrap());
                    guard.clear_ready();
                }
                Err(e) => {
                    tracing::error!("multicast routing socket: {e}");
                    return;
                }
            }
        }
    })
}

/// Reconciles every `period`, reloads on SIGHUP, ends on SIGTERM/SIGINT or
/// when the status or upcall task ends.
async fn main_loop(
    state: &Arc<Mutex<State>>,
    tasks: &mut Tasks,
    sock_path: &Path,
    period: Duration,
    reinstall: &Reinstall,
) -> Result<(), AgentError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(io_err("SIGHUP handler"))?;
    let mut term = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let notify = crate::sdnotify::Notifier::from_env();
    if let Some(n) = &notify {
        n.send("READY=1");
    }
    let mut upcall_done = false;
    let outcome = loop {
        tokio::select! {
            _ = tick.tick() => {
                let st = state.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || reconcile_shared(&st)).await {
                    break Err(task_died("reconcile", e));
                }
                // systemd's watchdog is fed only while the status socket answers
                if let Some(n) = notify.clone() {
                    let sock = sock_path.to_owned();
                    tokio::task::spawn_blocking(move || {
                        if crate::api::status(&sock).is_ok() {
                            n.send("WATCHDOG=1");
                        }
                    });
                }
            }
            _ = hup.recv() => {
                let st = state.clone();
                match tokio::task::spawn_blocking(move || reload_shared(&st)).await {
                    Ok(true) => reinstall.restart(&mut state.lock().unwrap()),
                    Ok(false) => {}
                    Err(e) => break Err(task_died("reload", e)),
                }
            }
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            // a task that ends (rather than panics) leaves the agent deaf:
            // stop, so that the supervisor restarts it
            r = &mut tasks.status => {
                break Err(AgentError::Setup(format!("the status socket task ended: {r:?}")));
            }
            Some(r) = async { match tasks.upcalls.as_mut() { Some(t) => Some(t.await), None => std::future::pending().await } } => {
                upcall_done = true;
                break Err(AgentError::Setup(format!("the multicast upcall task ended: {r:?}")));
            }
        }
    };
    if upcall_done {
        tasks.upcalls = None; // ended: not to be awaited again
    }
    outcome
}
