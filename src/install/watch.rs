//! Keeps the entry in place while other writers rewrite the conf dir.
//!
//! calico-node's install-cni rewrites `10-calico.conflist` (temp file +
//! rename) every time it starts, dropping anything spliced in. The
//! [`Watcher`] runs on a dedicated std thread with an inotify watch on the
//! conf dir; any change to a `*.conf`/`*.conflist`/`*.json` name (or an
//! inotify queue overflow, or the directory itself being replaced) schedules
//! [`apply`](super::apply) after a short debounce. A periodic resync covers
//! what inotify cannot see (a conf file that is a symlink into another
//! directory). Our own writes come back as events too; they find the entry in
//! place and change nothing, so there is no loop.

use super::{apply, install_binary, Change, InstallError, Target, BINARY_NAME};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Timing of the [`Watcher`].
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Quiet time after an event before re-applying (a writer may still be busy).
    pub debounce: Duration,
    /// Re-check this often even without events.
    pub resync: Duration,
    /// After a failed apply (e.g. a half-written file), try again after this long.
    pub retry: Duration,
    /// How often the thread checks whether it should stop.
    pub tick: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_millis(100),
            resync: Duration::from_secs(60),
            retry: Duration::from_secs(1),
            tick: Duration::from_millis(200),
        }
    }
}

/// Counters the watcher keeps (for logs, metrics and tests).
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Times the entry was written (inserted or updated), the first apply included.
    pub applied: AtomicU64,
    /// Applies that failed.
    pub errors: AtomicU64,
    /// Applies that found everything in place.
    pub unchanged: AtomicU64,
    /// Times the thread woke up (events, ticks, retries): bounded by the
    /// tick while nothing happens, even when the conf dir is gone.
    pub wakeups: AtomicU64,
}

/// A running watcher. Dropping it stops it too.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    stats: Arc<WatchStats>,
    thread: Option<JoinHandle<()>>,
}

const MASK: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_MODIFY)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

/// The bin dir: only our own name matters there.
const BIN_MASK: AddWatchFlags = AddWatchFlags::IN_DELETE
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_ONLYDIR);

impl Watcher {
    /// Starts watching `target.conf_dir` (and the bin dir of
    /// `target.binary`), applies the entry once right away, then again within
    /// `debounce` of every change. Fails only if inotify cannot be set up on
    /// those directories.
    pub fn spawn(target: Target, opts: WatchOptions) -> Result<Watcher, InstallError> {
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| {
                InstallError::io(
                    "cannot create an inotify instance for",
                    &target.conf_dir,
                    e.into(),
                )
            })?;
        let wd = inotify
            .add_watch(&target.conf_dir, MASK)
            .map_err(|e| InstallError::io("cannot watch", &target.conf_dir, e.into()))?;
        let bin_wd = match &target.binary {
            Some((bin_dir, _)) => Some(
                inotify
                    .add_watch(bin_dir, BIN_MASK)
                    .map_err(|e| InstallError::io("cannot watch", bin_dir, e.into()))?,
            ),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(WatchStats::default());
        let (s, st) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("ros2-cni-install-watch".into())
            .spawn(move || Loop::new(inotify, wd, bin_wd, target, opts, s, st).run())
            .map_err(|e| {
                InstallError::io("cannot start the watcher thread for", Path::new(""), e)
            })?;
        Ok(Watcher {
            stop,
            stats,
            thread: Some(thread),
        })
    }

    pub fn stats(&self) -> &WatchStats {
        &self.stats
    }

    /// A handle on the counters that outlives a borrow (for status reports).
    pub fn stats_handle(&self) -> Arc<WatchStats> {
        self.stats.clone()
    }

    /// Times the entry was written so far (first apply included).
    pub fn applied(&self) -> u64 {
        self.stats.applied.load(Ordering::Relaxed)
    }

    /// Whether the thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the thread and waits for it (at most one `tick` plus an apply).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

use std::path::Path;

fn is_conf_name(name: &std::ffi::OsStr) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| super::conflist::CONF_EXTENSIONS.contains(&e))
}

/// The watcher thread's state.
struct Loop {
    inotify: Inotify,
    /// The conf dir's watch; `None` while the directory is gone (removed or
    /// replaced) and not watched again yet.
    wd: Option<WatchDescriptor>,
    /// The bin dir's watch, when the binary is kept in place too.
    bin_wd: Option<WatchDescriptor>,
    target: Target,
    opts: WatchOptions,
    stop: Arc<AtomicBool>,
    stats: Arc<WatchStats>,
    /// When the next apply is due (debounced events, retries); `None`: no
    /// change seen since the last apply.
    due: Option<Instant>,
    next_resync: Instant,
    /// The last apply error, logged once until it changes or clears.
    last_error: Option<String>,
    /// Before the first apply: logs say "inserted"/"installed" rather than
    /// "re-applied"/"re-installed".
    first: bool,
}

impl Loop {
    /// The state before the first pass: an apply due at once (the entry is
    /// put in place right away), the resync one period away.
    fn new(
        inotify: Inotify,
        wd: WatchDescriptor,
        bin_wd: Option<WatchDescriptor>,
        target: Target,
        opts: WatchOptions,
        stop: Arc<AtomicBool>,
        stats: Arc<WatchStats>,
    ) -> Loop {
        let next_resync = Instant::now() + opts.resync;
        Loop {
            inotify,
            wd: Some(wd),
            bin_wd,
            target,
            opts,
            stop,
            stats,
            due: Some(Instant::now()),
            next_resync,
            last_error: None,
            first: true,
        }
    }

    /// Until stopped: wait for events (at most a tick), keep the conf dir
    /// watched, and apply when an apply is due or the resync comes round.
    fn run(mut self) {
        let dir = self.target.conf_dir.display().to_string();
        tracing::info!(conf_dir = %dir, node = %self.target.entry.node, "watching the CNI conf dir to keep the ros2-cni entry in place");
        while !self.stop.load(Ordering::Relaxed) {
            self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            if self.wait_for_events() {
                self.read_events(&dir);
            }
            if !self.watch_again() {
                continue; // not there yet: try again next tick
            }
            let now = Instant::now();
            let resync = now >= self.next_resync;
            if !(resync || self.due.is_some_and(|d| now >= d)) {
                continue;
            }
            self.due = None;
            self.next_resync = now + self.opts.resync;
            self.keep_binary();
            self.keep_entry();
            self.first = false;
        }
        tracing::info!(conf_dir = %dir, "stopped watching the CNI conf dir");
    }

    /// Polls inotify until an event, the tick, the resync or a due apply;
    /// true if events are ready.
    fn wait_for_events(&self) -> bool {
        let now = Instant::now();
        let mut wait = self
            .opts
            .tick
            .min(self.next_resync.saturating_duration_since(now));
        // while the conf dir is gone, an apply that is due waits for it: a
        // tick between attempts to watch it again, never a busy loop
        if let Some(d) = self.due.filter(|_| self.wd.is_some()) {
            wait = wait.min(d.saturating_duration_since(now));
        }
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0
    }

    /// Reads every pending event. An event on one of our names (or a queue
    /// overflow) schedules an apply after the debounce, unless one is
    /// already due; losing the conf dir drops its watch and schedules one too.
    fn read_events(&mut self, dir: &str) {
        let mut lost = false;
        let mut relevant = false;
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                lost |= Some(ev.wd) == self.wd && ev.mask.intersects(DIR_GONE);
                relevant |= ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                    || self.is_ours(ev.wd, ev.name.as_deref());
            }
        }
        if lost {
            tracing::warn!(conf_dir = %dir, "the conf dir was removed or replaced; watching it again");
            if let Some(w) = self.wd.take() {
                let _ = self.inotify.rm_watch(w);
            }
            relevant = true;
        }
        if relevant && self.due.is_none() {
            self.due = Some(Instant::now() + self.opts.debounce);
        }
    }

    /// Whether an event names a file we keep: our binary in the bin dir, a
    /// conf file in the conf dir.
    fn is_ours(&self, wd: WatchDescriptor, name: Option<&std::ffi::OsStr>) -> bool {
        if self.bin_wd.is_some() && Some(wd) == self.bin_wd {
            name.is_some_and(|n| n == BINARY_NAME)
        } else {
            name.is_some_and(is_conf_name)
        }
    }

    /// Makes sure the conf dir is watched; watching it again makes an apply
    /// due at once. False while the directory is not there.
    fn watch_again(&mut self) -> bool {
        if self.wd.is_some() {
            return true;
        }
        match self.inotify.add_watch(&self.target.conf_dir, MASK) {
            Ok(w) => {
                self.wd = Some(w);
                self.due.get_or_insert(Instant::now());
                true
            }
            Err(_) => false,
        }
    }

    /// Puts the binary back if it is missing or differs; retries on error.
    fn keep_binary(&mut self) {
        let Some((bin_dir, source)) = &self.target.binary else {
            return;
        };
        match install_binary(bin_dir, source) {
            Ok(true) => {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    dest = %bin_dir.join(BINARY_NAME).display(),
                    "{} the ros2-cni binary",
                    if self.first { "installed" } else { "re-installed" }
                );
            }
            Ok(false) => {}
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("cannot keep the ros2-cni binary in place: {e}");
                self.due = Some(Instant::now() + self.opts.retry);
            }
        }
    }

    /// Applies the entry and counts the result; retries on error.
    fn keep_entry(&mut self) {
        let node = &self.target.entry.node;
        match apply(&self.target) {
            Ok(a) if a.change == Change::Unchanged => {
                self.stats.unchanged.fetch_add(1, Ordering::Relaxed);
                if self.last_error.take().is_some() {
                    tracing::info!(file = %a.file.display(), "the ros2-cni entry is in place again");
                }
                tracing::debug!(file = %a.file.display(), "ros2-cni entry in place");
            }
            Ok(a) => {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                self.last_error = None;
                let how = if a.change == Change::Inserted {
                    "inserted"
                } else {
                    "updated"
                };
                if self.first {
                    tracing::info!(file = %a.file.display(), node = %node, "ros2-cni entry {how}");
                } else {
                    tracing::info!(
                        file = %a.file.display(),
                        node = %node,
                        "re-applied the ros2-cni entry ({how}) after another writer changed the file"
                    );
                }
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(&msg) {
                    tracing::error!("cannot keep the ros2-cni entry in place: {msg}");
                }
                self.last_error = Some(msg);
                self.due = Some(Instant::now() + self.opts.retry);
            }
        }
    }
}

/// Events that say the watched directory itself is gone.
const DIR_GONE: AddWatchFlags = AddWatchFlags::IN_IGNORED
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::tests::{entry, TempDir};

    const CALICO: &str = "{\n  \"name\": \"k8s-pod-network\",\n  \"cniVersion\": \"0.3.1\",\n  \"plugins\": [\n    {\n      \"type\": \"calico\"\n    }\n  ]\n}\n";

    fn wait_for(what: &str, limit: Duration, f: impl Fn() -> bool) -> Duration {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        t.elapsed()
    }

    #[test]
    fn reapplies_after_rename_and_in_place_writes_and_stops() {
        let t = TempDir::new("watch");
        let conf = t.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        let f = conf.join("10-calico.conflist");
        std::fs::write(&f, CALICO).unwrap();
        let target = Target::new(&conf, entry(&t.path().join("data"), "robot-base"));
        let opts = WatchOptions {
            resync: Duration::from_secs(3600),
            ..Default::default()
        };
        let w = Watcher::spawn(target, opts).unwrap();
        let has = || {
            std::fs::read_to_string(&f)
                .unwrap_or_default()
                .contains("ros2-cni")
        };
        wait_for("first apply", Duration::from_secs(2), has);
        wait_for("counter 1", Duration::from_secs(2), || w.applied() == 1);
        // calico-style: temp + rename
        let tmp = conf.join("calico.tmp");
        std::fs::write(&tmp, CALICO).unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        wait_for("re-apply after rename", Duration::from_secs(2), has);
        wait_for("counter 2", Duration::from_secs(2), || w.applied() == 2);
        // in place
        std::fs::write(&f, CALICO).unwrap();
        wait_for("re-apply after write", Duration::from_secs(2), has);
        wait_for("counter", Duration::from_secs(2), || w.applied() == 3);
        // a quiet period: our own writes do not trigger more writes
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(w.applied(), 3);
        // a file that is not a conf file does not matter
        std::fs::write(conf.join("cni.yaml"), "x").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(w.applied(), 3);
        assert!(w.is_running());
        let start = Instant::now();
        w.stop();
        assert!(start.elapsed() < Duration::from_secs(2));
        std::fs::write(&f, CALICO).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert!(!has(), "a stopped watcher must not write");
    }

    #[test]
    fn keeps_the_binary_in_place() {
        let t = TempDir::new("watch-bin");
        let conf = t.path().join("conf");
        let bin = t.path().join("bin");
        std::fs::create_dir(&conf).unwrap();
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(conf.join("10-calico.conflist"), CALICO).unwrap();
        std::os::unix::fs::symlink("/usr/lib/cni/ptp", bin.join("ptp")).unwrap();
        let src = t.path().join("ros2-cni-src");
        std::fs::write(&src, b"binary v1").unwrap();
        let target =
            Target::new(&conf, entry(&t.path().join("data"), "robot-base")).with_binary(&bin, &src);
        let w = Watcher::spawn(target, WatchOptions::default()).unwrap();
        let dest = bin.join("ros2-cni");
        let present = || std::fs::read(&dest).is_ok_and(|b| b == b"binary v1");
        wait_for("first install", Duration::from_secs(2), present);
        std::fs::remove_file(&dest).unwrap();
        wait_for("re-install after delete", Duration::from_secs(2), present);
        assert_eq!(
            std::fs::read_link(bin.join("ptp")).unwrap(),
            Path::new("/usr/lib/cni/ptp")
        );
        // an unrelated name in the bin dir does not trigger anything (after
        // the echo of our own write has settled)
        std::thread::sleep(Duration::from_millis(400));
        let before = w.stats().unchanged.load(Ordering::Relaxed);
        std::fs::write(bin.join("other"), b"x").unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(w.stats().unchanged.load(Ordering::Relaxed), before);
        w.stop();
    }

    #[test]
    fn waits_its_tick_while_the_dir_is_gone_and_resumes() {
        let t = TempDir::new("watch-gone");
        let conf = t.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        let f = conf.join("10-calico.conflist");
        std::fs::write(&f, CALICO).unwrap();
        let target = Target::new(&conf, entry(&t.path().join("data"), "robot-base"));
        let opts = WatchOptions {
            tick: Duration::from_millis(50),
            ..Default::default()
        };
        let w = Watcher::spawn(target, opts).unwrap();
        wait_for("first apply", Duration::from_secs(2), || w.applied() == 1);
        std::fs::remove_dir_all(&conf).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let before = w.stats().wakeups.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(1));
        let woke = w.stats().wakeups.load(Ordering::Relaxed) - before;
        // one wake-up per 50 ms tick is 20; a busy loop is hundreds of thousands
        assert!(woke <= 60, "woke {woke} times in 1 s with the dir gone");
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(&f, CALICO).unwrap();
        wait_for(
            "re-applied once the dir is back",
            Duration::from_secs(3),
            || std::fs::read_to_string(&f).is_ok_and(|s| s.contains("ros2-cni")),
        );
        w.stop();
    }

    #[test]
    fn spawn_fails_clearly_without_the_dir() {
        let t = TempDir::new("watch-missing");
        let target = Target::new(t.path().join("nope"), entry(t.path(), "robot-base"));
        let e = Watcher::spawn(target, WatchOptions::default())
            .err()
            .expect("must fail");
        assert!(e.to_string().contains("cannot watch"), "{e}");
    }
}
