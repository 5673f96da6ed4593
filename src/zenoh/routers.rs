//! The pods' Zenoh routers: one per opted-in pod, run by the agent inside
//! the pod's network namespace (its filesystem stays the agent's), listening
//! on the pod's `localhost:7447` and connecting to the node's router.
//!
//! Read → plan → apply, on a thread of its own (every [`PERIOD`]):
//! - read: the attachment records (`dataDir/attachments`), one per pod;
//! - plan ([`plan`], pure): which routers to start and which to stop;
//! - apply: launch or stop through a [`Launcher`] (a fake in the tests).
//!
//! Invariants:
//! - a pod with a record has one router, started within a period of its
//!   record appearing; a router that exits is started again after a
//!   back-off (1 s, doubling, at most [`MAX_BACKOFF`]);
//! - a router whose record is gone (DEL) or whose pod's namespace changed
//!   is stopped (SIGTERM, then SIGKILL after 2 s), its files removed;
//! - new settings (`zenohPodRouter`, the node router's address) restart
//!   every router with the new configuration;
//! - when the agent stops, every router stops; if the agent is killed, the
//!   kernel sends the routers SIGTERM (`PR_SET_PDEATHSIG`, set for this
//!   thread, which lives as long as the agent), so no router outlives its
//!   agent and holds a deleted pod's namespace.

use crate::ipam::Store;
use crate::kernel::netns::Netns;
use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the records are read and the routers checked.
pub const PERIOD: Duration = Duration::from_millis(500);
/// The longest wait before starting an exited router again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a stopped router has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the pods' routers run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `zenohPodRouter`, `{config}` not yet replaced.
    pub argv: Vec<String>,
    /// The node's router (its LAN address and `zenohRouter`); None when the
    /// node has no address to give (then no router is started).
    pub node_router: Option<SocketAddrV4>,
    pub data_dir: PathBuf,
}

impl Settings {
    fn dir(&self) -> PathBuf {
        self.data_dir.join("zenoh")
    }
}

/// A pod as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub netns: String,
    /// namespace/name, for the status and the logs.
    pub pod: String,
}

/// A router as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Have {
    pub netns: String,
    pub running: bool,
    /// When an exited router may start again.
    pub retry_at: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Start(String),
    Stop(String),
}

/// The steps from `have` to `want` at `now`: stops first, then starts.
pub fn plan(
    want: &BTreeMap<String, Wanted>,
    have: &BTreeMap<String, Have>,
    now: Instant,
) -> Vec<Step> {
    let mut stops = vec![];
    let mut starts = vec![];
    for (key, h) in have {
        match want.get(key) {
            None => stops.push(Step::Stop(key.clone())),
            Some(w) if w.netns != h.netns => {
                stops.push(Step::Stop(key.clone()));
                starts.push(Step::Start(key.clone()));
            }
            Some(_) if !h.running && h.retry_at.is_none_or(|t| now >= t) => {
                starts.push(Step::Start(key.clone()))
            }
            Some(_) => {}
        }
    }
    for key in want.keys().filter(|k| !have.contains_key(*k)) {
        starts.push(Step::Start(key.clone()));
    }
    stops.extend(starts);
    stops
}

/// The back-off after the `restarts`-th exit: 1 s, 2 s, 4 s … 30 s.
pub fn backoff(restarts: u32) -> Duration {
    Duration::from_secs(1u64 << restarts.min(5)).min(MAX_BACKOFF)
}

/// One router to start.
pub struct Launch<'a> {
    pub netns: &'a str,
    pub argv: &'a [String],
    pub config: &'a Path,
    pub log: &'a Path,
}

/// Starts routers (the real one runs processes; tests use a fake).
pub trait Launcher {
    type Proc: Proc;
    fn launch(&mut self, l: &Launch) -> std::io::Result<Self::Proc>;
    /// Whether the namespace's loopback has `::1`.
    fn loopback6(&mut self, netns: &str) -> bool;
}

/// A running router.
pub trait Proc {
    fn pid(&self) -> u32;
    /// Some(how) once it has exited.
    fn exited(&mut self) -> Option<String>;
    fn stop(&mut self);
}

struct Entry<P> {
    want: Wanted,
    proc: Option<P>,
    restarts: u32,
    retry_at: Option<Instant>,
    last_exit: Option<String>,
    last_error: Option<String>,
}

/// The routers of one node, kept to the plan.
pub struct Supervisor<L: Launcher> {
    launcher: L,
    settings: Settings,
    entries: BTreeMap<String, Entry<L::Proc>>,
}

impl<L: Launcher> Supervisor<L> {
    pub fn new(launcher: L, settings: Settings) -> Self {
        Supervisor {
            launcher,
            settings,
            entries: BTreeMap::new(),
        }
    }

    /// New settings: every router restarts with them.
    pub fn set(&mut self, settings: Settings) {
        if settings != self.settings {
            self.stop_all();
            self.settings = settings;
        }
    }

    /// Reaps exited routers, then applies the plan for `want` at `now`.
    pub fn pass(&mut self, want: &BTreeMap<String, Wanted>, now: Instant) {
        for e in self.entries.values_mut() {
            if let Some(how) = e.proc.as_mut().and_then(|p| p.exited()) {
                tracing::warn!(pod = %e.want.pod, "the pod's Zenoh router exited ({how}); starting it again in {:?}", backoff(e.restarts));
                e.proc = None;
                e.last_exit = Some(how);
                e.retry_at = Some(now + backoff(e.restarts));
                e.restarts += 1;
            }
        }
        if self.settings.node_router.is_none() {
            return; // nothing to connect to: status says why
        }
        let have = self
            .entries
            .iter()
            .map(|(k, e)| {
                let h = Have {
                    netns: e.want.netns.clone(),
                    running: e.proc.is_some(),
                    retry_at: e.retry_at,
                };
                (k.clone(), h)
            })
            .collect();
        for step in plan(want, &have, now) {
            match step {
                Step::Stop(key) => self.stop(&key),
                Step::Start(key) => self.start(&key, &want[&key], now),
            }
        }
    }

    fn start(&mut self, key: &str, want: &Wanted, now: Instant) {
        let node = self.settings.node_router.expect("checked by pass");
        let dir = self.settings.dir();
        let config = dir.join(format!("{key}.json5"));
        let log = dir.join(format!("{key}.log"));
        let v6 = self.launcher.loopback6(&want.netns);
        let text = super::pod_router_config(node, v6).to_string();
        let argv: Vec<String> = self
            .settings
            .argv
            .iter()
            .map(|a| a.replace("{config}", &config.to_string_lossy()))
            .collect();
        let r = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&config, text))
            .and_then(|_| {
                self.launcher.launch(&Launch {
                    netns: &want.netns,
                    argv: &argv,
                    config: &config,
                    log: &log,
                })
            });
        let e = self.entries.entry(key.to_owned()).or_insert(Entry {
            want: want.clone(),
            proc: None,
            restarts: 0,
            retry_at: None,
            last_exit: None,
            last_error: None,
        });
        e.want = want.clone();
        match r {
            Ok(p) => {
                tracing::info!(pod = %want.pod, pid = p.pid(), "started the pod's Zenoh router ({})", argv.join(" "));
                e.proc = Some(p);
                e.last_error = None;
            }
            Err(err) => {
                let msg = format!("starting {}: {err}", argv[0]);
                tracing::warn!(pod = %want.pod, "the pod's Zenoh router: {msg}");
                e.last_error = Some(msg);
                e.retry_at = Some(now + backoff(e.restarts));
                e.restarts += 1;
            }
        }
    }

    fn stop(&mut self, key: &str) {
        if let Some(mut e) = self.entries.remove(key) {
            if let Some(p) = e.proc.as_mut() {
                p.stop();
                tracing::info!(pod = %e.want.pod, "stopped the pod's Zenoh router");
            }
            let dir = self.settings.dir();
            for ext in ["json5", "log"] {
                let _ = std::fs::remove_file(dir.join(format!("{key}.{ext}")));
            }
        }
    }

    pub fn stop_all(&mut self) {
        let keys: Vec<String> = self.entries.keys().cloned().collect();
        for k in keys {
            self.stop(&k);
        }
    }

    /// The routers for the status document.
    pub fn to_api(&self) -> Vec<crate::api::PodRouter> {
        self.entries
            .iter()
            .map(|(k, e)| crate::api::PodRouter {
                key: k.clone(),
                pod: e.want.pod.clone(),
                pid: e.proc.as_ref().map(|p| p.pid()),
                restarts: e.restarts,
                last_exit: e.last_exit.clone(),
                last_error: e.last_error.clone(),
            })
            .collect()
    }
}

/// The pods that should have a router: every attachment record.
pub fn wanted(data_dir: &Path) -> Result<BTreeMap<String, Wanted>, String> {
    let listing = Store::new(data_dir).list().map_err(|e| e.to_string())?;
    Ok(listing
        .records
        .into_iter()
        .filter(|(_, a)| !a.netns.is_empty())
        .map(|(k, a)| {
            let w = Wanted {
                pod: a.pod_label(),
                netns: a.netns,
            };
            (k, w)
        })
        .collect())
}

/// Runs routers as processes in the pods' network namespaces.
pub struct Spawn;

/// A router process.
pub struct Child(std::process::Child);

impl Launcher for Spawn {
    type Proc = Child;

    fn launch(&mut self, l: &Launch) -> std::io::Result<Child> {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let ns = std::fs::File::open(l.netns)?;
        let log = std::fs::File::create(l.log)?;
        let fd = ns.as_raw_fd();
        let mut cmd = std::process::Command::new(&l.argv[0]);
        cmd.args(&l.argv[1..])
            .env("ZENOH_ROUTER_CONFIG_URI", l.config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: between fork and exec the closure makes only
        // async-signal-safe system calls (setns, prctl, getppid) on an fd
        // that stays open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() == 1 {
                    // the agent died between fork and prctl
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        cmd.spawn().map(Child)
    }

    fn loopback6(&mut self, netns: &str) -> bool {
        let read = || {
            std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
                .map(|s| s.trim() == "0")
                .unwrap_or(false)
        };
        Netns::open(netns)
            .and_then(|ns| ns.run(read))
            .unwrap_or(false)
    }
}

impl Proc for Child {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn exited(&mut self) -> Option<String> {
        match self.0.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for it: {e}")),
        }
    }

    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Shared {
    settings: Mutex<Settings>,
    generation: AtomicU64,
    stop: AtomicBool,
    status: Mutex<crate::api::ZenohRouters>,
}

/// The supervisor's thread, as the agent holds it.
pub struct Routers {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Routers {
    pub fn start(settings: Settings) -> Routers {
        let shared = Arc::new(Shared {
            settings: Mutex::new(settings),
            generation: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            status: Mutex::new(Default::default()),
        });
        let s = shared.clone();
        // PR_SET_PDEATHSIG follows this thread: it must live as long as
        // the agent, so the routers are started from here only.
        let thread = std::thread::Builder::new()
            .name("zenoh-routers".into())
            .spawn(move || run(&s))
            .expect("spawning the zenoh-routers thread");
        Routers {
            shared,
            thread: Some(thread),
        }
    }

    /// New settings (reload, a new node address); applied within a period.
    pub fn update(&self, settings: Settings) {
        let mut cur = self.shared.settings.lock().unwrap();
        if *cur != settings {
            *cur = settings;
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Stops every router, then the thread.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn to_api(&self) -> crate::api::ZenohRouters {
        self.shared.status.lock().unwrap().clone()
    }
}

fn run(shared: &Shared) {
    let first = shared.settings.lock().unwrap().clone();
    let mut sup = Supervisor::new(Spawn, first);
    let mut seen = 0;
    let mut want = BTreeMap::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let generation = shared.generation.load(Ordering::SeqCst);
        if generation != seen {
            sup.set(shared.settings.lock().unwrap().clone());
            seen = generation;
        }
        let mut problem = None;
        match wanted(&sup.settings.data_dir) {
            Ok(w) => want = w,
            // keep what was wanted: a failing read decides nothing
            Err(e) => problem = Some(format!("reading the attachment records: {e}")),
        }
        if sup.settings.node_router.is_none() {
            problem = Some(
                "the node has no IPv4 address on its uplink for the pods' Zenoh routers to connect to (set the node entry's address)".into(),
            );
        }
        sup.pass(&want, Instant::now());
        *shared.status.lock().unwrap() = crate::api::ZenohRouters {
            node_router: sup.settings.node_router.map(|a| a.to_string()),
            command: sup.settings.argv.clone(),
            problem,
            pods: sup.to_api(),
        };
        std::thread::sleep(PERIOD);
    }
    sup.stop_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::tests::TempDir;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn w(ns: &str) -> Wanted {
        Wanted {
            netns: ns.into(),
            pod: format!("default/{ns}"),
        }
    }

    fn h(ns: &str, running: bool, retry_at: Option<Instant>) -> Have {
        Have {
            netns: ns.into(),
            running,
            retry_at,
        }
    }

    #[test]
    fn plan_starts_new_pods_stops_gone_ones_and_restarts_moved_ones_stops_first() {
        let now = Instant::now();
        let want = BTreeMap::from([
            ("a".to_string(), w("/ns/a")),
            ("b".to_string(), w("/ns/b2")),
            ("c".to_string(), w("/ns/c")),
        ]);
        let have = BTreeMap::from([
            ("b".to_string(), h("/ns/b", true, None)),
            ("c".to_string(), h("/ns/c", true, None)),
            ("gone".to_string(), h("/ns/g", true, None)),
        ]);
        assert_eq!(
            plan(&want, &have, now),
            vec![
                Step::Stop("b".into()),
                Step::Stop("gone".into()),
                Step::Start("b".into()),
                Step::Start("a".into()),
            ]
        );
    }

    #[test]
    fn plan_restarts_an_exited_router_only_after_its_back_off() {
        let now = Instant::now();
        let want = BTreeMap::from([("a".to_string(), w("/ns/a"))]);
        let later = BTreeMap::from([(
            "a".to_string(),
            h("/ns/a", false, Some(now + Duration::from_secs(1))),
        )]);
        assert_eq!(plan(&want, &later, now), vec![]);
        assert_eq!(
            plan(&want, &later, now + Duration::from_secs(1)),
            vec![Step::Start("a".into())]
        );
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[derive(Default)]
    struct Log {
        launched: Vec<(String, Vec<String>, String)>,
        stopped: Vec<u32>,
        exit: Vec<u32>,
        fail: bool,
    }

    struct Fake(Rc<RefCell<Log>>);
    struct FakeProc(u32, Rc<RefCell<Log>>);

    impl Launcher for Fake {
        type Proc = FakeProc;
        fn launch(&mut self, l: &Launch) -> std::io::Result<FakeProc> {
            let mut log = self.0.borrow_mut();
            if log.fail {
                return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
            }
            let config = std::fs::read_to_string(l.config).unwrap();
            log.launched
                .push((l.netns.to_string(), l.argv.to_vec(), config));
            Ok(FakeProc(log.launched.len() as u32, self.0.clone()))
        }
        fn loopback6(&mut self, _: &str) -> bool {
            false
        }
    }

    impl Proc for FakeProc {
        fn pid(&self) -> u32 {
            self.0
        }
        fn exited(&mut self) -> Option<String> {
            self.1
                .borrow()
                .exit
                .contains(&self.0)
                .then(|| "exit status: 1".into())
        }
        fn stop(&mut self) {
            self.1.borrow_mut().stopped.push(self.0);
        }
    }

    fn settings(dir: &Path) -> Settings {
        Settings {
            argv: vec!["zenohd".into(), "--config".into(), "{config}".into()],
            node_router: Some("192.168.1.11:7447".parse().unwrap()),
            data_dir: dir.to_owned(),
        }
    }

    #[test]
    fn the_supervisor_writes_the_config_launches_restarts_and_stops() {
        let dir = TempDir::new("zenoh-routers");
        let log = Rc::new(RefCell::new(Log::default()));
        let mut sup = Supervisor::new(Fake(log.clone()), settings(dir.path()));
        let now = Instant::now();
        let want = BTreeMap::from([("k1".to_string(), w("/ns/a"))]);
        sup.pass(&want, now);
        {
            let l = log.borrow();
            assert_eq!(l.launched.len(), 1);
            let (ns, argv, config) = &l.launched[0];
            assert_eq!(ns, "/ns/a");
            let path = dir.path().join("zenoh/k1.json5");
            assert_eq!(argv[2], path.to_string_lossy());
            assert!(config.contains("tcp/192.168.1.11:7447"), "{config}");
        }
        // it exits: not started again before the back-off, then started
        log.borrow_mut().exit.push(1);
        sup.pass(&want, now);
        assert_eq!(log.borrow().launched.len(), 1);
        assert_eq!(sup.to_api()[0].last_exit.as_deref(), Some("exit status: 1"));
        sup.pass(&want, now + Duration::from_secs(1));
        assert_eq!(log.borrow().launched.len(), 2);
        assert_eq!(sup.to_api()[0].restarts, 1);
        // the pod is deleted: stopped, files gone
        sup.pass(&BTreeMap::new(), now + Duration::from_secs(2));
        assert_eq!(log.borrow().stopped, vec![2]);
        assert!(!dir.path().join("zenoh/k1.json5").exists());
        assert!(sup.to_api().is_empty());
    }

    #[test]
    fn a_router_that_cannot_start_is_reported_and_tried_again_later() {
        let dir = TempDir::new("zenoh-routers");
        let log = Rc::new(RefCell::new(Log {
            fail: true,
            ..Default::default()
        }));
        let mut sup = Supervisor::new(Fake(log.clone()), settings(dir.path()));
        let now = Instant::now();
        let want = BTreeMap::from([("k1".to_string(), w("/ns/a"))]);
        sup.pass(&want, now);
        let api = sup.to_api();
        assert_eq!(api[0].pid, None);
        assert!(
            api[0]
                .last_error
                .as_deref()
                .unwrap()
                .starts_with("starting zenohd: "),
            "{api:?}"
        );
        log.borrow_mut().fail = false;
        sup.pass(&want, now + Duration::from_millis(500));
        assert!(log.borrow().launched.is_empty(), "back-off first");
        sup.pass(&want, now + Duration::from_secs(1));
        assert_eq!(log.borrow().launched.len(), 1);
        assert_eq!(sup.to_api()[0].last_error, None);
    }

    #[test]
    fn new_settings_restart_every_router_and_no_node_address_starts_none() {
        let dir = TempDir::new("zenoh-routers");
        let log = Rc::new(RefCell::new(Log::default()));
        let mut sup = Supervisor::new(Fake(log.clone()), settings(dir.path()));
        let now = Instant::now();
        let want = BTreeMap::from([("k1".to_string(), w("/ns/a"))]);
        sup.pass(&want, now);
        let mut s = settings(dir.path());
        s.node_router = Some("192.168.1.11:7500".parse().unwrap());
        sup.set(s.clone());
        sup.pass(&want, now);
        let l = log.borrow();
        assert_eq!(l.stopped, vec![1]);
        assert!(l.launched[1].2.contains(":7500"));
        drop(l);
        s.node_router = None;
        sup.set(s);
        sup.pass(&want, now);
        assert_eq!(log.borrow().launched.len(), 2);
        assert_eq!(log.borrow().stopped, vec![1, 2]);
    }
}
