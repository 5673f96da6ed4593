//! The CNI plugin: parse → validate everything → apply with undo → print.
//!
//! Stdout carries only protocol JSON (a result, VERSION's answer, or an
//! error); logs go to `logFile` or stderr.

mod add;
mod error;

use crate::api::{self, Handoff};
use crate::cni::{env::Command, CniError, Code, Env, PrevResult, Result, Version};
use crate::config::{Config, ANNOTATIONS_CAPABILITY, OPT_IN_ANNOTATION};
use crate::dataplane::{self, host_veth_name, pod_mac_ip, undo_all, Kernel};
use crate::ipam::{attachment_key, lock_timeout, Attachment, Store};
use crate::kernel::netns::Netns;
use crate::kernel::rtnl::Handle;
use add::add;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;

/// What one invocation prints on success.
pub enum Output {
    Json(Value),
    Nothing,
}

/// Entry point when CNI_COMMAND is set. Returns the exit code.
pub fn main() -> i32 {
    // room for a config with its prevResult in one read (an empty Vec
    // starts with 32-byte reads and doubles)
    let mut stdin = Vec::with_capacity(64 * 1024);
    let read = std::io::stdin().read_to_end(&mut stdin);
    // parsed once: for the version errors are reported in, and for the command
    let parsed = serde_json::from_slice::<Value>(&stdin);
    // errors are reported in the request's version when we can tell it
    let req_version = parsed
        .as_ref()
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|v| Version::parse(v).is_ok())
        .unwrap_or_else(|| Version::LATEST.as_str().to_owned());

    // a panic must still produce an error JSON: silence the default hook's
    // stdout-free message only after logging it
    std::panic::set_hook(Box::new(|info| {
        eprintln!("ros2-cni: internal error: {info}");
    }));
    let read = read.map_err(|e| e.to_string());
    // AssertUnwindSafe: `parsed` (its error may hold a `dyn Error`) moves
    // in, and nothing captured is used after a panic
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        if let Err(e) = read {
            return Err(CniError::new(Code::Io, format!("reading stdin: {e}")));
        }
        let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
        run_parsed(&cmd, parsed, |k| std::env::var(k).ok())
    }));
    let result = match outcome {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(CniError::new(
                Code::Internal,
                format!("internal error (please report): {what}"),
            ))
        }
    };
    let mut out = std::io::stdout().lock();
    match result {
        Ok(Output::Json(v)) => {
            let _ = writeln!(out, "{v}");
            0
        }
        Ok(Output::Nothing) => 0,
        Err(e) => {
            tracing::error!(code = e.code as u32, "{e}");
            let _ = writeln!(out, "{}", e.to_json(&req_version));
            1
        }
    }
}

/// Runs one command on `stdin` with the environment given by `getenv`.
pub fn run(cmd: &str, stdin: &[u8], getenv: impl Fn(&str) -> Option<String>) -> Result<Output> {
    run_parsed(cmd, serde_json::from_slice(stdin), getenv)
}

/// [`run`] with stdin already parsed as JSON (`main` parses it once, for the
/// version of its errors too).
fn run_parsed(
    cmd: &str,
    stdin: serde_json::Result<Value>,
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<Output> {
    let cmd = Command::parse(cmd)?;
    if getenv("ROS2_CNI_TEST_PANIC").is_some_and(|v| v == "1") {
        // lets the tests prove that a panic still yields an error JSON
        panic!("panic requested through ROS2_CNI_TEST_PANIC");
    }
    // VERSION needs neither environment nor config; the others read both
    let request = || Request::read(cmd, stdin, &getenv);
    // ADD, CHECK and STATUS validate the whole config; DEL and GC must not
    // fail because it stopped validating since ADD (runtimes stop the DEL
    // chain at the first failure, so the primary plugin's DEL would not run
    // either): they tear down from the records
    let strict = |raw: &Value| Config::from_value(raw, true, None);
    match cmd {
        Command::Version => Ok(Output::Json(json!({
            "cniVersion": Version::LATEST.as_str(),
            "supportedVersions": crate::cni::version::SUPPORTED,
        }))),
        Command::Add => {
            let r = request()?;
            add(&strict(&r.raw)?, &r.env, &r.raw, r.version)
        }
        Command::Del => {
            let r = request()?;
            del(&TeardownConfig::from_raw(&r.raw)?, &r.env).map(|_| Output::Nothing)
        }
        Command::Gc => {
            let r = request()?;
            if !r.version.allows_gc_and_status() {
                return Err(CniError::new(
                    Code::IncompatibleVersion,
                    format!(
                        "config version {} does not allow GC (needs 1.1.0)",
                        r.version
                    ),
                ));
            }
            gc(&TeardownConfig::from_raw(&r.raw)?, &r.raw).map(|_| Output::Nothing)
        }
        Command::Check => {
            let r = request()?;
            let cfg = strict(&r.raw)?;
            if !r.version.allows_check() {
                return Err(CniError::new(
                    Code::IncompatibleVersion,
                    format!(
                        "config version {} does not allow CHECK (needs 0.4.0 or later)",
                        r.version
                    ),
                ));
            }
            check(&cfg, &r.env, &r.raw).map(|_| Output::Nothing)
        }
        Command::Status => {
            let r = request()?;
            if !r.version.allows_gc_and_status() {
                return Err(CniError::new(
                    Code::IncompatibleVersion,
                    format!(
                        "config version {} does not allow STATUS (needs 1.1.0)",
                        r.version
                    ),
                ));
            }
            status(&strict(&r.raw)?).map(|_| Output::Nothing)
        }
    }
}

/// What every command but VERSION reads: the environment, and the config
/// on stdin with its version.
struct Request {
    env: Env,
    raw: Value,
    version: Version,
}

impl Request {
    fn read(
        cmd: Command,
        stdin: serde_json::Result<Value>,
        getenv: impl Fn(&str) -> Option<String>,
    ) -> Result<Request> {
        let env = Env::from_lookup(cmd, &getenv)?;
        let raw: Value = stdin.map_err(|e| {
            CniError::new(
                Code::Decode,
                format!("config on stdin is not valid JSON: {e}"),
            )
        })?;
        let version_s = raw
            .get("cniVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| CniError::invalid_config("cniVersion: missing or not a string"))?;
        let version = Version::parse(version_s)?;
        Ok(Request { env, raw, version })
    }
}

/// Whether the pod asked for a ros0: annotation "true", or its namespace is
/// listed in `namespaces` (an annotation "false" still opts it out).
pub fn opted_in(cfg: &Config, env: &Env, raw: &Value) -> bool {
    let ann = raw
        .get("runtimeConfig")
        .and_then(|r| r.get(ANNOTATIONS_CAPABILITY))
        .and_then(|a| a.get(OPT_IN_ANNOTATION))
        .and_then(Value::as_str);
    match ann {
        Some("true") => true,
        Some("false") => false,
        _ => env
            .pod_namespace()
            .is_some_and(|ns| cfg.namespaces.iter().any(|n| n == ns)),
    }
}

fn init_logging(cfg: &Config) {
    crate::logging::init_plugin(cfg.log_file.as_deref(), &cfg.log_level);
}

/// What DEL and GC need of the config: the data dir (records, leases, the
/// agent's socket), the pod interface's name, the network and logging.
/// Taken from a config that validates, or else key by key from one that no
/// longer does, with a warning naming the problem.
pub struct TeardownConfig {
    pub data_dir: std::path::PathBuf,
    pub if_name: String,
    pub name: String,
    log_file: Option<std::path::PathBuf>,
    log_level: String,
}

impl TeardownConfig {
    pub fn from_raw(raw: &Value) -> Result<TeardownConfig> {
        match Config::from_value(raw, true, None) {
            Ok(cfg) => Ok(TeardownConfig {
                if_name: cfg.if_name.clone(),
                name: cfg.name.clone().unwrap_or_default(),
                log_level: cfg.log_level.clone(),
                log_file: cfg.log_file.clone(),
                data_dir: cfg.data_dir,
            }),
            Err(e) => {
                let s = |k: &str| raw.get(k).and_then(Value::as_str);
                // the one key teardown cannot guess: where the records are
                let data_dir = std::path::PathBuf::from(
                    s("dataDir").unwrap_or(crate::config::DEFAULT_DATA_DIR),
                );
                if !data_dir.is_absolute() {
                    return Err(CniError::invalid_config(format!(
                        "dataDir: \"{}\" is not an absolute path (needed to find the attachment records)",
                        data_dir.display()
                    )));
                }
                let td = TeardownConfig {
                    data_dir,
                    if_name: s("ifName")
                        .filter(|n| crate::ifname::check(n).is_ok())
                        .unwrap_or(crate::config::DEFAULT_IFNAME)
                        .to_owned(),
                    name: s("name").unwrap_or_default().to_owned(),
                    log_file: s("logFile")
                        .map(std::path::PathBuf::from)
                        .filter(|p| p.is_absolute()),
                    log_level: "info".into(),
                };
                td.init_logging();
                tracing::warn!(
                    "the config no longer validates ({e}); tearing down from the attachment records"
                );
                Ok(td)
            }
        }
    }

    fn init_logging(&self) {
        crate::logging::init_plugin(self.log_file.as_deref(), &self.log_level);
    }

    fn agent_socket(&self) -> std::path::PathBuf {
        self.data_dir.join("agent.sock")
    }
}

fn open_netns(path: &str) -> Result<Netns> {
    Netns::open(path).map_err(|e| CniError::env(format!("CNI_NETNS: {e}")))
}

/// The pod's namespace must be a network namespace, and not the one the
/// plugin runs in (the node's): ros0 and its routes would land in the node.
fn check_pod_netns(path: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let bad = |why: String| CniError::env(format!("CNI_NETNS: \"{path}\" {why}"));
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let fs = nix::sys::statfs::statfs(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(bad("is not a network namespace (not on nsfs)".into()));
    }
    if let Ok(own) = std::fs::metadata("/proc/self/ns/net") {
        if own.dev() == meta.dev() && own.ino() == meta.ino() {
            return Err(bad(
                "is the node's own network namespace, not a pod's".into()
            ));
        }
    }
    Ok(())
}

/// What the agent is asked to finish for `att`: the link (by index, so a new
/// link by the same name is safe) and the anti-spoofing element.
fn handoff_for(
    att: &Attachment,
    k: &mut Kernel,
    pod: Option<&mut Handle>,
    ns_path: &str,
) -> Result<Option<Handoff>> {
    if att.host_if.is_empty() {
        // macvlan: the link lives in the pod
        let Some(pod) = pod else { return Ok(None) };
        return Ok(pod
            .link_by_name(&att.pod_if)?
            .filter(|l| l.kind.as_deref() == Some("macvlan"))
            .map(|l| Handoff {
                ifindex: l.index,
                name: l.name,
                netns: ns_path.to_owned(),
                element: None,
            }));
    }
    let link = k.node()?.link_by_name(&att.host_if)?;
    Ok(Some(Handoff {
        ifindex: link.as_ref().map_or(0, |l| l.index),
        name: att.host_if.clone(),
        netns: String::new(),
        element: Some((att.host_if.clone(), att.mac.clone(), att.ip)),
    }))
}

/// Gives `h` to the agent; false when no agent takes it.
fn hand_over(sock: &Path, h: &Handoff) -> bool {
    api::teardown(sock, h).unwrap_or(false)
}

/// Tears down a recorded attachment and releases its address. The slow
/// kernel work (link and element deletion) goes to the agent when one
/// answers on `agent_sock`, so DEL does not wait out grace periods; without
/// an agent it is done here.
pub fn teardown(
    store: &Store,
    key: &str,
    att: &Attachment,
    netns_hint: &str,
    agent_sock: &Path,
) -> Result<()> {
    let dp = dataplane::for_attachment(att);
    let mut k = Kernel::new();
    // the pod's namespace may be gone; then only node-side state remains
    let ns_path = if !netns_hint.is_empty() {
        netns_hint
    } else {
        att.netns.as_str()
    };
    let mut pod = if !ns_path.is_empty() && Path::new(ns_path).exists() {
        Netns::open(ns_path)
            .ok()
            .and_then(|ns| Handle::open_in(&ns).ok())
    } else {
        None
    };
    // the address already leased to another pod: an earlier DEL released it
    // and was cut short before removing this record; the node's entries for
    // that address are the new pod's now
    let reused_by = store.leased_to_another(att.ip, key);
    if let Some(owner) = &reused_by {
        tracing::warn!(ip = %att.ip, %owner, "address reused since: leaving its node entries alone");
    }
    let plan = dataplane::plan::teardown(dp, reused_by.is_some());
    undo_all(&mut k, pod.as_mut(), att, &plan.fast)?;
    let handed = match handoff_for(att, &mut k, pod.as_mut(), ns_path)? {
        Some(h) => hand_over(agent_sock, &h),
        None => false,
    };
    if !handed {
        undo_all(&mut k, pod.as_mut(), att, &plan.slow)?;
    }
    let lock = store.lock(lock_timeout())?;
    store.release(&lock, key, Some(att.ip))?;
    Ok(())
}

fn del(cfg: &TeardownConfig, env: &Env) -> Result<()> {
    let store = Store::new(&cfg.data_dir);
    if !store.dir().exists() {
        return Ok(()); // nothing was ever attached on this node
    }
    let key = attachment_key(&env.container_id, &env.ifname);
    // an ADD of this container still running finishes first
    let mut busy = store.lock_attachment(&key, lock_timeout())?;
    let r = match store.get(&key) {
        Ok(Some(att)) => {
            cfg.init_logging();
            teardown(&store, &key, &att, &env.netns, &cfg.agent_socket()).map(|()| {
                tracing::info!(container = %env.container_id, ip = %att.ip, "detached {}", att.pod_if);
            })
        }
        Ok(None) => Ok(()), // never attached, already deleted, or an ADD killed early
        Err(e) if e.is_unreadable_record() => {
            cfg.init_logging();
            forget_unreadable(cfg, &store, &key, Some(env), &e.to_string())
        }
        Err(e) => Err(e.into()),
    };
    if r.is_ok() {
        busy.remove_on_release();
        reclaim(cfg, &store)?;
    }
    r
}

/// Takes back what killed invocations left in the pool (see
/// [`Store::reclaim`]); looks under the lock only when a cheap look
/// without it suggests something is there.
fn reclaim(cfg: &TeardownConfig, store: &Store) -> Result<()> {
    if !store.may_need_reclaim() {
        return Ok(());
    }
    let lock = store.lock(lock_timeout())?;
    let reclaimed = store.reclaim(&lock)?;
    if !reclaimed.is_empty() {
        cfg.init_logging();
        tracing::warn!(?reclaimed, "reclaimed leases left by killed invocations");
    }
    Ok(())
}

fn check(cfg: &Config, env: &Env, raw: &Value) -> Result<()> {
    let store = Store::new(&cfg.data_dir);
    let key = attachment_key(&env.container_id, &env.ifname);
    let att = match store.get(&key)? {
        Some(a) => a,
        None if !opted_in(cfg, env, raw) => return Ok(()),
        None => {
            return Err(CniError::new(
                Code::CheckMismatch,
                format!(
                    "no ros2-cni attachment is recorded for container {} ({}) although the pod opted in",
                    env.container_id, env.ifname
                ),
            ))
        }
    };
    let mut diffs = vec![];
    match raw.get("prevResult").filter(|v| !v.is_null()) {
        None => diffs.push("prevResult is missing".to_owned()),
        Some(p) => {
            let prev = PrevResult::parse(p)?;
            match prev.find_interface(&att.pod_if, &env.netns) {
                None => diffs.push(format!(
                    "prevResult.interfaces lacks {} in sandbox {}",
                    att.pod_if, env.netns
                )),
                Some(i) => {
                    let want = format!("{}/{}", att.ip, att.prefix_len);
                    if !prev.ips_of(i).contains(&want) {
                        diffs.push(format!(
                            "prevResult.ips lacks {want} on interface {i} ({})",
                            att.pod_if
                        ));
                    }
                }
            }
        }
    }
    if att.pod_if != cfg.if_name {
        diffs.push(format!(
            "ifName is \"{}\" but the pod got \"{}\"",
            cfg.if_name, att.pod_if
        ));
    }
    let netns = open_netns(&env.netns)?;
    let mut pod = Handle::open_in(&netns)?;
    let dp = dataplane::for_attachment(&att);
    let mut k = Kernel::new();
    diffs.extend(dataplane::check(dp, &mut k, &mut pod, cfg, &att)?);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            Code::CheckMismatch,
            format!("CHECK failed: {}", diffs.join("; ")),
        ))
    }
}

/// `(containerID, ifname)` pairs from GC's valid-attachments list.
fn valid_attachments(raw: &Value) -> Result<Vec<(String, String)>> {
    let list = raw
        .get("cni.dev/valid-attachments")
        .or_else(|| raw.get("cni.dev/attachments"));
    let Some(list) = list else {
        return Err(CniError::invalid_config(
            "cni.dev/valid-attachments: missing; GC needs the list of attachments to keep",
        ));
    };
    // libcni 1.3 sends null when the runtime has no attachment left: none is valid
    if list.is_null() {
        return Ok(vec![]);
    }
    let arr = list.as_array().ok_or_else(|| {
        CniError::invalid_config("cni.dev/valid-attachments: must be an array or null")
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, a)| {
            let id = a.get("containerID").and_then(Value::as_str);
            let ifn = a.get("ifname").and_then(Value::as_str);
            match (id, ifn) {
                (Some(id), Some(ifn)) => Ok((id.to_owned(), ifn.to_owned())),
                _ => Err(CniError::invalid_config(format!(
                    "cni.dev/valid-attachments[{i}]: needs string containerID and ifname"
                ))),
            }
        })
        .collect()
}

/// DEL or GC of an attachment whose record cannot be read (e.g. left empty
/// by a power cut): releases what the key holds by name (its leases, and for
/// DEL its link), so it neither fails forever nor leaks addresses. The node's
/// address-keyed entries are left to the agent, which removes leftovers
/// without a record.
fn forget_unreadable(
    cfg: &TeardownConfig,
    store: &Store,
    key: &str,
    env: Option<&Env>,
    why: &str,
) -> Result<()> {
    tracing::warn!("{why}: forgetting the attachment {key}");
    if let Some(env) = env {
        let mut k = Kernel::new();
        let host_if = host_veth_name(&env.container_id, &env.ifname);
        if let Some(l) = k.node()?.link_by_name(&host_if)? {
            k.node()?.delete_link(l.index)?;
        }
        // macvlan: the link is in the pod, and carries our MAC
        if !env.netns.is_empty() && Path::new(&env.netns).exists() {
            if let Ok(mut pod) = open_netns(&env.netns).and_then(|ns| Ok(Handle::open_in(&ns)?)) {
                if let Some(l) = pod.link_by_name(&cfg.if_name)? {
                    if l.mac.and_then(pod_mac_ip).is_some() {
                        pod.delete_link(l.index)?;
                    }
                }
            }
        }
    }
    let lock = store.lock(lock_timeout())?;
    let released = store.forget(&lock, key)?;
    tracing::info!(?released, "released the addresses of {key}");
    Ok(())
}

fn gc(cfg: &TeardownConfig, raw: &Value) -> Result<()> {
    let keep = valid_attachments(raw)?;
    let store = Store::new(&cfg.data_dir);
    let mut errors = vec![];
    let listing = store.list()?;
    // an attachment whose ADD or DEL is running is not GC's to take
    let claim = |key: &str| store.lock_attachment(key, std::time::Duration::ZERO).ok();
    for (key, why) in &listing.unreadable {
        if keep.iter().any(|(id, ifn)| attachment_key(id, ifn) == *key) {
            continue; // still valid: its DEL will come
        }
        let Some(mut busy) = claim(key) else { continue };
        cfg.init_logging();
        match forget_unreadable(cfg, &store, key, None, why) {
            Ok(()) => busy.remove_on_release(),
            Err(e) => errors.push(format!("{key}: {}", e.msg)),
        }
    }
    let network = cfg.name.as_str();
    for (key, att) in listing.records {
        // another network's attachments are not in this list
        if !att.network.is_empty() && att.network != network {
            continue;
        }
        if keep
            .iter()
            .any(|(id, ifn)| *id == att.container_id && *ifn == att.ifname)
        {
            continue;
        }
        let Some(mut busy) = claim(&key) else {
            continue;
        };
        cfg.init_logging();
        // re-read under the attachment lock: a DEL may have finished meanwhile
        let Ok(Some(att)) = store.get(&key) else {
            continue;
        };
        match teardown(&store, &key, &att, "", &cfg.agent_socket()) {
            Ok(()) => {
                busy.remove_on_release();
                tracing::info!(container = %att.container_id, ip = %att.ip, "GC released")
            }
            Err(e) => errors.push(format!("{}: {}", att.container_id, e.msg)),
        }
    }
    if let Err(e) = reclaim(cfg, &store) {
        errors.push(format!("reclaiming leftover leases: {}", e.msg));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::kernel(format!(
            "GC incomplete: {}",
            errors.join("; ")
        )))
    }
}

fn status(cfg: &Config) -> Result<()> {
    let unavailable = |msg: String| CniError::new(Code::NotAvailable, msg);
    let pool = cfg.pool().map_err(|e| unavailable(e.to_string()))?;
    let dp = dataplane::for_mode(cfg.mode);
    let mut k = Kernel::new();
    dp.preflight(&mut k, cfg)
        .map_err(|e| unavailable(e.to_string()))?;
    let store = Store::new(&cfg.data_dir);
    store
        .check_writable()
        .map_err(|e| unavailable(format!("dataDir is not writable: {e}")))?;
    let used = store.leased().map_err(|e| unavailable(e.to_string()))?;
    let size = pool.usable(&cfg.subnet).count();
    if used >= size {
        return Err(unavailable(format!(
            "address pool {pool} is exhausted ({used} of {size} addresses in use)"
        )));
    }
    // ADD works without the agent, but discovery across computers does not
    if let Err(e) = api::status(&cfg.agent_socket()) {
        return Err(CniError::new(
            Code::LimitedConnectivity,
            format!(
                "the ros2-cni agent is not running on this node ({e}); pods still get {} but RTPS multicast is not routed to or from other computers",
                cfg.if_name
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_fn(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn base_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/nonexistent/netns"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"),
        ]
    }

    fn conf(extra: Value) -> Vec<u8> {
        let mut v = json!({"cniVersion": "0.3.1", "name": "net", "type": "ros2-cni",
            "subnet": "192.168.1.0/24", "podRange": "192.168.1.160/28", "dataDir": "/nonexistent/r2c",
            "prevResult": {"cniVersion": "0.3.1", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
                "ips": [{"version": "4", "interface": 0, "address": "10.1.1.5/32"}]}});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn version_needs_nothing() {
        let Output::Json(v) = run("VERSION", b"", env_fn(&[])).unwrap() else {
            panic!()
        };
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn opted_out_add_passes_prev_result_through_untouched() {
        let stdin = conf(json!({}));
        let Output::Json(out) = run("ADD", &stdin, env_fn(&base_env())).unwrap() else {
            panic!()
        };
        let sent: Value = serde_json::from_slice(&stdin).unwrap();
        assert_eq!(out, sent["prevResult"]);
    }

    #[test]
    fn opt_in_rules() {
        let cfg_v: Value =
            serde_json::from_slice(&conf(json!({"namespaces": ["robots"]}))).unwrap();
        let cfg = Config::from_value(&cfg_v, true, None).unwrap();
        let mut env = Env::default();
        assert!(!opted_in(&cfg, &env, &cfg_v));
        env.args.insert("K8S_POD_NAMESPACE".into(), "robots".into());
        assert!(opted_in(&cfg, &env, &cfg_v));
        let mut raw = cfg_v.clone();
        raw["runtimeConfig"] = json!({ANNOTATIONS_CAPABILITY: {OPT_IN_ANNOTATION: "false"}});
        assert!(!opted_in(&cfg, &env, &raw));
        env.args.clear();
        raw["runtimeConfig"] = json!({ANNOTATIONS_CAPABILITY: {OPT_IN_ANNOTATION: "true"}});
        assert!(opted_in(&cfg, &env, &raw));
    }

    #[test]
    fn add_without_prev_result_fails() {
        let mut v: Value = serde_json::from_slice(&conf(json!({}))).unwrap();
        v.as_object_mut().unwrap().remove("prevResult");
        let e = run("ADD", &serde_json::to_vec(&v).unwrap(), env_fn(&base_env()))
            .err()
            .unwrap();
        assert_eq!(e.code, Code::InvalidConfig);
        assert!(e.msg.contains("prevResult"));
    }

    #[test]
    fn del_without_record_succeeds() {
        assert!(run("DEL", &conf(json!({})), env_fn(&base_env())).is_ok());
    }

    #[test]
    fn version_gates() {
        let e = run("CHECK", &conf(json!({})), env_fn(&base_env()))
            .err()
            .unwrap();
        assert_eq!(e.code, Code::IncompatibleVersion);
        let e = run(
            "STATUS",
            &conf(json!({"cniVersion": "1.0.0"})),
            env_fn(&base_env()),
        )
        .err()
        .unwrap();
        assert_eq!(e.code, Code::IncompatibleVersion);
        let e = run(
            "ADD",
            &conf(json!({"cniVersion": "0.2.0"})),
            env_fn(&base_env()),
        )
        .err()
        .unwrap();
        assert_eq!(e.code, Code::IncompatibleVersion);
    }

    #[test]
    fn gc_requires_list() {
        let e = run("GC", &conf(json!({"cniVersion": "1.1.0"})), env_fn(&[]))
            .err()
            .unwrap();
        assert!(e.msg.contains("cni.dev/valid-attachments"));
        // with an empty list and no data dir, nothing to do
        assert!(run(
            "GC",
            &conf(json!({"cniVersion": "1.1.0", "cni.dev/attachments": []})),
            env_fn(&[])
        )
        .is_ok());
    }
}
