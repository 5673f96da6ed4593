//! Installing ros2-cni into a node's CNI directories, and keeping it there.
//!
//! - [`install_binary`] copies the running binary into the CNI bin dir under
//!   its own name (`ros2-cni`), atomically; no other name is ever touched.
//! - [`apply`] puts exactly one `ros2-cni` entry at the end of `plugins` in
//!   the conf file the runtime actually loads (the lexically first `*.conf`,
//!   `*.conflist` or `*.json`, as libcni's `ConfFiles` lists them), as text
//!   surgery that leaves every other byte alone ([`conflist`]).
//! - [`uninstall`] removes the entry and the binary; the conflist is then
//!   byte-for-byte what its owner last wrote.
//! - [`Watcher`] re-applies the entry when another writer (calico-node's
//!   install-cni) rewrites the file.
//!
//! State lives outside the conf dir (containerd would load anything there
//! whose name sorts first and ends in .conf/.conflist/.json): in
//! `<dataDir>/install/`, `<file>.orig` holds the bytes the owner wrote before
//! our latest insertion and `<file>.installed` the bytes we wrote.
//!
//! # Agent usage
//!
//! ```no_run
//! use ros2_cni::install::{Entry, Target, Watcher, WatchOptions};
//! # fn main() -> Result<(), ros2_cni::install::InstallError> {
//! let entry = Entry::from_config_file("/etc/ros2-cni/config.json".as_ref(), Some("robot-1"))?;
//! let target = Target::new("/var/snap/microk8s/current/args/cni-network", entry)
//!     .with_binary("/var/snap/microk8s/current/opt/cni/bin", std::env::current_exe().unwrap());
//! let watcher = Watcher::spawn(target, WatchOptions::default())?;
//! // ... on SIGTERM:
//! watcher.stop();
//! # Ok(()) }
//! ```

pub mod conflist;
mod fsutil;
pub mod watch;

pub use conflist::{Change, Conflist, PLUGIN_TYPE};
pub use watch::{WatchOptions, WatchStats, Watcher};

use crate::config::{default_node_name, Config, ANNOTATIONS_CAPABILITY, DEFAULT_DATA_DIR};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// The binary's name in the CNI bin dir (and the conflist entry's `type`).
pub const BINARY_NAME: &str = "ros2-cni";

/// Keys of the cluster config that the plugin uses and that go into the entry.
/// Agent-only keys (`nodes`, `nodeName`, `groups`, `metricsAddress`,
/// `mfcIdleSeconds`, `logFormat`) stay out of the conflist.
const ENTRY_KEYS: &[&str] = &[
    "subnet",
    "podRange",
    "mode",
    "uplink",
    "ifName",
    "bridge",
    "dataDir",
    "namespaces",
    "primaryMulticast",
    "logFile",
    "logLevel",
    "force",
];

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("no CNI config in {dir} (looked for *.conf, *.conflist, *.json). Install the primary network first (MicroK8s: Calico writes 10-calico.conflist) and check that --cni-conf-dir is the directory the container runtime reads (MicroK8s: /var/snap/microk8s/current/args/cni-network, elsewhere usually /etc/cni/net.d). Nothing was changed.")]
    NoConf { dir: PathBuf },
    #[error("{file}: {what}. Nothing was changed. {hint}")]
    Refused {
        file: PathBuf,
        what: String,
        hint: String,
    },
    #[error("cluster config {path}: {msg}. Nothing was changed.")]
    Config { path: PathBuf, msg: String },
    #[error("{msg}. Nothing was changed.")]
    NoPool { msg: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} kept changing while ros2-cni tried to update it (another writer is busy); try again")]
    Busy { file: PathBuf },
}

impl InstallError {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> InstallError {
        InstallError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

const PARSE_HINT: &str = "Fix or restore that file (calico-node rewrites its conflist when it restarts: `microk8s kubectl -n kube-system rollout restart ds/calico-node`), then run install again.";

fn refused(file: &Path, what: impl Into<String>, hint: impl Into<String>) -> InstallError {
    InstallError::Refused {
        file: file.to_path_buf(),
        what: what.into(),
        hint: hint.into(),
    }
}

/// The `ros2-cni` conflist entry for one node, built from the cluster config.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry object, in the order it is written.
    pub map: Map<String, Value>,
    /// The node the entry was resolved for.
    pub node: String,
    /// The plugin's `dataDir` (where install state is kept, under `install/`).
    pub data_dir: PathBuf,
    /// The whole validated cluster config, resolved for `node`.
    pub config: Config,
}

impl Entry {
    /// Reads and validates the cluster (or node) config at `path` and builds
    /// the entry for `node` (default: `nodeName`, then `NODE_NAME`, then the
    /// hostname). A node without a pool is an error.
    pub fn from_config_file(path: &Path, node: Option<&str>) -> Result<Entry, InstallError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InstallError::io("cannot read cluster config", path, e))?;
        let raw: Value = serde_json::from_str(&text).map_err(|e| InstallError::Config {
            path: path.to_path_buf(),
            msg: format!("not valid JSON: {e}"),
        })?;
        Entry::from_value(&raw, path, node)
    }

    /// Like [`Entry::from_config_file`] with the config already parsed.
    pub fn from_value(raw: &Value, path: &Path, node: Option<&str>) -> Result<Entry, InstallError> {
        let cfg_err = |msg: String| InstallError::Config {
            path: path.to_path_buf(),
            msg,
        };
        let first = Config::from_value(raw, false, node).map_err(|e| cfg_err(e.to_string()))?;
        let name = first
            .node_name
            .clone()
            .or_else(default_node_name)
            .unwrap_or_default();
        let config =
            Config::from_value(raw, false, Some(&name)).map_err(|e| cfg_err(e.to_string()))?;
        config.pool().map_err(|e| InstallError::NoPool {
            msg: format!(
                "cluster config {}: {} (or pass --node with the name used there)",
                path.display(),
                e
            ),
        })?;
        let m = raw.as_object().expect("validated as an object");
        let node_entry = m
            .get("nodes")
            .and_then(|n| n.get(&name))
            .filter(|_| !m.contains_key("podRange"));
        let mut map = Map::new();
        map.insert("type".into(), json!(PLUGIN_TYPE));
        map.insert(
            "capabilities".into(),
            json!({ ANNOTATIONS_CAPABILITY: true }),
        );
        for &key in ENTRY_KEYS {
            let from_node = match (key, node_entry) {
                ("podRange", Some(Value::String(s))) => Some(Value::String(s.clone())),
                (_, Some(Value::Object(o))) => o.get(key).cloned(),
                _ => None,
            };
            let v = from_node.or_else(|| m.get(key).cloned());
            if let Some(v) = v.filter(|v| !v.is_null()) {
                map.insert(key.into(), v);
            }
        }
        // the plugin must accept exactly what we write
        let mut probe = map.clone();
        probe.insert("cniVersion".into(), json!("1.0.0"));
        probe.insert("name".into(), json!("probe"));
        Config::from_value(&Value::Object(probe), true, None).map_err(|e| {
            cfg_err(format!(
                "the entry built for node \"{name}\" is not valid: {e}"
            ))
        })?;
        Ok(Entry {
            map,
            node: name,
            data_dir: config.data_dir.clone(),
            config,
        })
    }
}

/// Where to install: the conf dir, which file (default: the one the runtime
/// loads), the entry, and where to keep the backup.
#[derive(Debug, Clone)]
pub struct Target {
    pub conf_dir: PathBuf,
    /// A file name inside `conf_dir` to use instead of the lexically first.
    pub conf_file: Option<String>,
    pub entry: Entry,
    /// Backup and state directory (default `<dataDir>/install`).
    pub state_dir: PathBuf,
    /// The binary to keep in a bin dir: `(bin_dir, source)`. Only the
    /// [`Watcher`] uses it (an entry without its binary makes every pod
    /// creation on the node fail, not just the opted-in ones).
    pub binary: Option<(PathBuf, PathBuf)>,
}

impl Target {
    pub fn new(conf_dir: impl Into<PathBuf>, entry: Entry) -> Target {
        let state_dir = entry.data_dir.join("install");
        Target {
            conf_dir: conf_dir.into(),
            conf_file: None,
            entry,
            state_dir,
            binary: None,
        }
    }

    /// Also keep `source` (normally `std::env::current_exe()`) installed as
    /// `<bin_dir>/ros2-cni`.
    pub fn with_binary(
        mut self,
        bin_dir: impl Into<PathBuf>,
        source: impl Into<PathBuf>,
    ) -> Target {
        self.binary = Some((bin_dir.into(), source.into()));
        self
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The conf file (after following a symlink).
    pub file: PathBuf,
    pub change: Change,
}

/// The conf file the runtime loads, or the one named by `conf_file`.
pub fn choose_conf(conf_dir: &Path, conf_file: Option<&str>) -> Result<PathBuf, InstallError> {
    if let Some(name) = conf_file {
        let p = conf_dir.join(name);
        if name.contains('/') || !p.is_file() {
            return Err(refused(
                &p,
                "--conf-file must name a file inside --cni-conf-dir",
                "",
            ));
        }
        return Ok(p);
    }
    let files = conflist::conf_files(conf_dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            InstallError::NoConf {
                dir: conf_dir.to_path_buf(),
            }
        } else {
            InstallError::io("cannot list CNI conf dir", conf_dir, e)
        }
    })?;
    files
        .into_iter()
        .next()
        .ok_or_else(|| InstallError::NoConf {
            dir: conf_dir.to_path_buf(),
        })
}

/// Reads `file` and checks that it is a conflist we may change.
fn read_conflist(file: &Path) -> Result<(Vec<u8>, Conflist), InstallError> {
    let bytes = std::fs::read(file).map_err(|e| InstallError::io("cannot read", file, e))?;
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let value: Option<Value> = serde_json::from_slice(&bytes).ok();
    if conflist::is_multus(file, value.as_ref()) {
        return Err(refused(
            file,
            "the runtime loads Multus' config first (the lexically first file in the conf dir), so a ros2-cni entry must go into the network Multus delegates to, not into Multus' own file",
            "Run install with --conf-file naming the cluster network's conflist (e.g. --conf-file 10-calico.conflist) so ros2-cni is chained there, and make sure Multus reads that file (clusterNetwork / its delegate) rather than an embedded copy. This layout is not tested.",
        ));
    }
    if ext != "conflist" {
        let what = match &value {
            Some(v) if v.get("plugins").is_some() && v.get("type").is_none() => format!(
                "it holds a plugin list but is named .{ext}: containerd only reads \"plugins\" from *.conflist files and fails on this one"
            ),
            Some(v) => format!(
                "it is a single-plugin config (\"type\": {}): the runtime runs only that plugin, so there is no chain to add ros2-cni to",
                v.get("type").map(Value::to_string).unwrap_or_else(|| "none".into())
            ),
            None => "it is not valid JSON".into(),
        };
        return Err(refused(
            file,
            what,
            "Convert it to a conflist: {\"cniVersion\": ..., \"name\": ..., \"plugins\": [<the existing plugin object>]} saved as a .conflist file that sorts first (and remove the .conf), then run install again.",
        ));
    }
    let c = Conflist::parse(&bytes, file).map_err(|e| match e {
        InstallError::Refused { file, what, .. } => InstallError::Refused {
            file,
            what,
            hint: PARSE_HINT.into(),
        },
        e => e,
    })?;
    if c.types().iter().all(|t| *t == PLUGIN_TYPE) {
        return Err(refused(
            file,
            "its plugins list holds only ros2-cni entries: ros2-cni is a chained plugin and needs a primary plugin before it",
            PARSE_HINT,
        ));
    }
    Ok((bytes, c))
}

/// Checks that [`apply`] would succeed, changing nothing.
pub fn check(target: &Target) -> Result<Applied, InstallError> {
    let file = resolve(&choose_conf(&target.conf_dir, target.conf_file.as_deref())?)?;
    let (_, c) = read_conflist(&file)?;
    let (_, change) = c.with_entry(&target.entry.map);
    Ok(Applied { file, change })
}

/// Follows a symlinked conf file to the file that holds the bytes.
fn resolve(file: &Path) -> Result<PathBuf, InstallError> {
    let md =
        std::fs::symlink_metadata(file).map_err(|e| InstallError::io("cannot stat", file, e))?;
    if md.file_type().is_symlink() {
        std::fs::canonicalize(file).map_err(|e| InstallError::io("cannot resolve symlink", file, e))
    } else {
        Ok(file.to_path_buf())
    }
}

fn state_paths(state_dir: &Path, file: &Path) -> (PathBuf, PathBuf) {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (
        state_dir.join(format!("{name}.orig")),
        state_dir.join(format!("{name}.installed")),
    )
}

/// Inserts or updates the entry in the runtime's conf file (idempotent).
/// Keeps a backup of the owner's bytes in `target.state_dir`.
pub fn apply(target: &Target) -> Result<Applied, InstallError> {
    let file = resolve(&choose_conf(&target.conf_dir, target.conf_file.as_deref())?)?;
    for _ in 0..5 {
        let (bytes, c) = read_conflist(&file)?;
        let (text, change) = c.with_entry(&target.entry.map);
        if change == Change::Unchanged {
            return Ok(Applied { file, change });
        }
        let (orig_p, inst_p) = state_paths(&target.state_dir, &file);
        let installed = std::fs::read(&inst_p).ok();
        // the owner's bytes: the file as it is when it has no entry of ours;
        // kept from before when the file is still our own last write
        let orig = if c.ours().is_empty() {
            Some(bytes.clone())
        } else if installed.as_deref() == Some(&bytes[..]) {
            None
        } else {
            c.without_entry().map(String::into_bytes)
        };
        if let Some(orig) = orig {
            fsutil::create_dir_all(&target.state_dir)?;
            fsutil::write_plain(&orig_p, &orig, None)?;
        }
        match fsutil::write_atomic(&file, text.as_bytes(), None, Some(&bytes)) {
            Ok(()) => {}
            Err(fsutil::WriteError::Changed) => continue,
            Err(fsutil::WriteError::Install(e)) => return Err(e),
        }
        fsutil::create_dir_all(&target.state_dir)?;
        fsutil::write_plain(&inst_p, text.as_bytes(), None)?;
        return Ok(Applied { file, change });
    }
    Err(InstallError::Busy { file })
}

/// Copies `from` (normally the running binary) to `<bin_dir>/ros2-cni`
/// atomically with mode 0755. Returns false when it was already identical.
pub fn install_binary(bin_dir: &Path, from: &Path) -> Result<bool, InstallError> {
    if !bin_dir.is_dir() {
        return Err(InstallError::io(
            "CNI bin dir does not exist (check --cni-bin-dir; MicroK8s: /var/snap/microk8s/current/opt/cni/bin):",
            bin_dir,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let dest = bin_dir.join(BINARY_NAME);
    let new =
        std::fs::read(from).map_err(|e| InstallError::io("cannot read own binary", from, e))?;
    let same = std::fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_file())
        && std::fs::read(&dest).is_ok_and(|old| old == new);
    if same {
        return Ok(false);
    }
    fsutil::write_plain(&dest, &new, Some(0o755))?;
    Ok(true)
}

/// What to remove.
#[derive(Debug, Clone, Default)]
pub struct Uninstall {
    pub conf_dir: PathBuf,
    /// Remove `<bin_dir>/ros2-cni` too.
    pub bin_dir: Option<PathBuf>,
    /// Where the install state is (default: the entry's `dataDir`, else
    /// /var/lib/ros2-cni).
    pub data_dir: Option<PathBuf>,
}

/// What [`uninstall`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uninstalled {
    /// Conf files whose entry was removed, and whether the backup was restored
    /// (true) or the entry cut out of a file someone else changed (false).
    pub files: Vec<(PathBuf, bool)>,
    pub binary_removed: bool,
    /// Things the user should know (e.g. pods still holding addresses).
    pub warnings: Vec<String>,
}

/// Removes every ros2-cni entry from the conflists in `conf_dir` and the
/// binary. A file that is still exactly our last write gets the owner's bytes
/// back from the backup; otherwise only the entry's text is cut out.
/// Files that cannot be parsed are left alone (and reported as warnings).
pub fn uninstall(u: &Uninstall) -> Result<Uninstalled, InstallError> {
    let mut out = Uninstalled::default();
    let files = match conflist::conf_files(&u.conf_dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(InstallError::io("cannot list CNI conf dir", &u.conf_dir, e)),
    };
    let mut data_dirs = Vec::new();
    for f in files {
        let file = resolve(&f)?;
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        let c = match Conflist::parse(&bytes, &file) {
            Ok(c) => c,
            Err(e) => {
                if bytes
                    .windows(PLUGIN_TYPE.len())
                    .any(|w| w == PLUGIN_TYPE.as_bytes())
                {
                    out.warnings.push(format!("left alone: {e}"));
                }
                continue;
            }
        };
        let ours = c.ours();
        let Some(&first) = ours.first() else {
            continue;
        };
        let data_dir = u.data_dir.clone().unwrap_or_else(|| {
            c.plugins()[first]
                .get("dataDir")
                .and_then(Value::as_str)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
        });
        let state_dir = data_dir.join("install");
        let (orig_p, inst_p) = state_paths(&state_dir, &file);
        let installed = std::fs::read(&inst_p).ok();
        let orig = std::fs::read(&orig_p)
            .ok()
            .filter(|o| Conflist::parse(o, &file).is_ok_and(|oc| oc.ours().is_empty()));
        let (new, restored) = match (installed.as_deref() == Some(&bytes[..]), orig) {
            (true, Some(orig)) => (orig, true),
            _ => (c.without_entry().expect("has an entry").into_bytes(), false),
        };
        match fsutil::write_atomic(&file, &new, None, Some(&bytes)) {
            Ok(()) => {}
            Err(fsutil::WriteError::Changed) => return Err(InstallError::Busy { file }),
            Err(fsutil::WriteError::Install(e)) => return Err(e),
        }
        for p in [&orig_p, &inst_p] {
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_dir(&state_dir);
        out.files.push((file, restored));
        data_dirs.push(data_dir);
    }
    if let Some(bin) = &u.bin_dir {
        let dest = bin.join(BINARY_NAME);
        match std::fs::remove_file(&dest) {
            Ok(()) => out.binary_removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(InstallError::io("cannot remove", &dest, e)),
        }
    }
    for d in data_dirs {
        if let Ok(n) = crate::ipam::Store::new(&d).leased() {
            if n > 0 {
                out.warnings.push(format!(
                    "{n} pod(s) still hold ros2-cni addresses (leases in {}); the runtime will no longer call ros2-cni for them, so delete or restart those pods to release their LAN addresses",
                    d.display()
                ));
            }
        }
    }
    Ok(out)
}

/// Checks this node's own addresses against the cluster config: the uplink's
/// addresses in `subnet` must lie outside every node's pool (the plugin can
/// only check its own pool at ADD; this checks all of them). Returns
/// warnings for what could not be checked; an address inside a pool is an
/// error.
pub fn check_host(cfg: &Config) -> Result<Vec<String>, InstallError> {
    let mut warnings = Vec::new();
    let mut h = match crate::kernel::rtnl::Handle::new() {
        Ok(h) => h,
        Err(e) => {
            warnings.push(format!("cannot check this node's addresses: {e}"));
            return Ok(warnings);
        }
    };
    let link = match &cfg.uplink {
        Some(name) => h.link_by_name(name),
        None => h.default_route_link(),
    };
    let link = match link {
        Ok(Some(l)) => l,
        Ok(None) => {
            warnings.push(format!(
                "uplink {} not found on this node: pods cannot be attached until it exists (set \"uplink\")",
                cfg.uplink.as_deref().unwrap_or("(default route)")
            ));
            return Ok(warnings);
        }
        Err(e) => {
            warnings.push(format!("cannot look up the uplink: {e}"));
            return Ok(warnings);
        }
    };
    let addrs = h.addresses4(link.index).unwrap_or_default();
    let addrs: Vec<_> = addrs.into_iter().map(|(a, _)| a).collect();
    check_addresses(cfg, &link.name, &addrs, &mut warnings)?;
    Ok(warnings)
}

/// The pure part of [`check_host`].
pub fn check_addresses(
    cfg: &Config,
    uplink: &str,
    addrs: &[std::net::Ipv4Addr],
    warnings: &mut Vec<String>,
) -> Result<(), InstallError> {
    let in_subnet: Vec<_> = addrs.iter().filter(|a| cfg.subnet.contains(*a)).collect();
    if in_subnet.is_empty() {
        warnings.push(format!(
            "{uplink} has no address in subnet {} yet: the plugin refuses ADD until it has one",
            cfg.subnet
        ));
    }
    for a in in_subnet {
        let hit = cfg
            .pool
            .iter()
            .map(|p| ("this node", p))
            .chain(cfg.nodes.iter().map(|(n, e)| (n.as_str(), &e.pool)))
            .find(|(_, p)| p.contains(*a));
        if let Some((owner, p)) = hit {
            return Err(InstallError::Config {
                path: PathBuf::from("(cluster config)"),
                msg: format!(
                    "this node's own address {a} on {uplink} lies inside the pool of {owner} ({p}); pools must exclude every node's address, or pods would get it"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A temporary directory removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "ros2-cni-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub fn cluster(data_dir: &Path) -> Value {
        json!({
            "subnet": "192.168.1.0/24",
            "uplink": "eth0",
            "dataDir": data_dir.to_str().unwrap(),
            "logLevel": "debug",
            "groups": ["239.255.0.1"],
            "metricsAddress": "",
            "nodes": {
                "robot-base": "192.168.1.160/28",
                "robot-arm": {"podRange": "192.168.1.176-192.168.1.190", "uplink": "wlan0"}
            }
        })
    }

    pub fn entry(data_dir: &Path, node: &str) -> Entry {
        Entry::from_value(&cluster(data_dir), Path::new("cluster.json"), Some(node)).unwrap()
    }

    fn tree(tag: &str) -> (TempDir, PathBuf, PathBuf) {
        let t = TempDir::new(tag);
        let conf = t.path().join("cni-network");
        let data = t.path().join("data");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("10-calico.conflist"), CALICO).unwrap();
        std::fs::write(conf.join("cni.yaml"), "kind: DaemonSet\n").unwrap();
        (t, conf, data)
    }

    const CALICO: &str = "{\n  \"name\": \"k8s-pod-network\",\n  \"cniVersion\": \"0.3.1\",\n  \"plugins\": [\n    {\n      \"type\": \"calico\",\n      \"mtu\": 1440\n    },\n    {\n      \"type\": \"portmap\",\n      \"snat\": true,\n      \"capabilities\": {\"portMappings\": true}\n    }\n  ]\n}\n";

    #[test]
    fn entry_resolves_the_node_and_keeps_only_plugin_keys() {
        let d = Path::new("/var/lib/x");
        let e = entry(d, "robot-arm");
        let keys: Vec<_> = e.map.keys().cloned().collect();
        assert_eq!(
            keys,
            vec![
                "type",
                "capabilities",
                "subnet",
                "podRange",
                "uplink",
                "dataDir",
                "logLevel"
            ]
        );
        assert_eq!(e.map["podRange"], "192.168.1.176-192.168.1.190");
        assert_eq!(e.map["uplink"], "wlan0");
        assert_eq!(
            e.map["capabilities"],
            json!({"io.kubernetes.cri.pod-annotations": true})
        );
        let e = entry(d, "robot-base");
        assert_eq!(e.map["podRange"], "192.168.1.160/28");
        assert_eq!(e.map["uplink"], "eth0");
        assert_eq!(e.data_dir, d);
    }

    #[test]
    fn node_without_pool_is_a_clear_error() {
        let e = Entry::from_value(
            &cluster(Path::new("/d")),
            Path::new("c.json"),
            Some("robot-x"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"robot-x\"")
                && e.contains("robot-arm, robot-base")
                && e.contains("Nothing was changed"),
            "{e}"
        );
    }

    #[test]
    fn bad_cluster_config_names_the_problem() {
        let mut v = cluster(Path::new("/d"));
        v["nodes"]["robot-arm"] = json!("192.168.1.160/29");
        let e = Entry::from_value(&v, Path::new("c.json"), Some("robot-arm")).unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        let mut v = cluster(Path::new("/d"));
        v["cniVersion"] = json!("0.3.1");
        let e = Entry::from_value(&v, Path::new("c.json"), Some("robot-arm")).unwrap_err();
        assert!(e.to_string().contains("cniVersion"), "{e}");
    }

    #[test]
    fn node_form_config_is_accepted() {
        let v = json!({"subnet": "192.168.1.0/24", "podRange": "192.168.1.160/28"});
        let e = Entry::from_value(&v, Path::new("c.json"), None).unwrap();
        assert_eq!(e.map["podRange"], "192.168.1.160/28");
    }

    #[test]
    fn apply_then_uninstall_restores_bytes_and_backup_is_outside_conf_dir() {
        let (_t, conf, data) = tree("apply");
        let target = Target::new(&conf, entry(&data, "robot-base"));
        let a = apply(&target).unwrap();
        assert_eq!(a.change, Change::Inserted);
        assert_eq!(apply(&target).unwrap().change, Change::Unchanged);
        // the conf dir holds exactly what it held, no backup or temp file
        let mut names: Vec<_> = std::fs::read_dir(&conf)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["10-calico.conflist", "cni.yaml"]);
        assert_eq!(
            std::fs::read(data.join("install/10-calico.conflist.orig")).unwrap(),
            CALICO.as_bytes()
        );
        let u = uninstall(&Uninstall {
            conf_dir: conf.clone(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(u.files.len(), 1);
        assert!(u.files[0].1, "restored from backup");
        assert_eq!(
            std::fs::read_to_string(conf.join("10-calico.conflist")).unwrap(),
            CALICO
        );
        assert!(!data.join("install").exists());
    }

    #[test]
    fn uninstall_warns_about_leases_and_honours_data_dir() {
        let (t, conf, data) = tree("leases");
        apply(&Target::new(&conf, entry(&data, "robot-base"))).unwrap();
        // a pod still attached: one lease in the entry's dataDir
        std::fs::create_dir_all(data.join("leases")).unwrap();
        std::fs::write(data.join("leases/192.168.1.160"), "c1_eth0").unwrap();
        // --data-dir elsewhere: the backup is looked for there (none: the
        // entry is cut out instead) and the leases counted there (none)
        let other = t.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        let u = uninstall(&Uninstall {
            conf_dir: conf.clone(),
            data_dir: Some(other.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(u.files.len(), 1);
        assert!(!u.files[0].1, "no backup in --data-dir: entry cut out");
        assert!(u.warnings.is_empty(), "{:?}", u.warnings);
        assert_eq!(
            std::fs::read_to_string(conf.join("10-calico.conflist")).unwrap(),
            CALICO,
            "cutting the entry out gives the same bytes here"
        );
        // again, with the entry's dataDir: the lease is reported
        apply(&Target::new(&conf, entry(&data, "robot-base"))).unwrap();
        let u = uninstall(&Uninstall {
            conf_dir: conf.clone(),
            ..Default::default()
        })
        .unwrap();
        assert!(u.files[0].1, "restored from the backup in dataDir");
        assert_eq!(u.warnings.len(), 1, "{:?}", u.warnings);
        assert!(
            u.warnings[0].contains("1 pod(s)") && u.warnings[0].contains(data.to_str().unwrap()),
            "{}",
            u.warnings[0]
        );
    }

    #[test]
    fn owner_rewrite_then_reapply_then_uninstall_gives_the_owners_bytes() {
        let (_t, conf, data) = tree("rewrite");
        let target = Target::new(&conf, entry(&data, "robot-base"));
        apply(&target).unwrap();
        let owners = CALICO.replace("1440", "1410");
        std::fs::write(conf.join("10-calico.conflist"), &owners).unwrap();
        assert_eq!(apply(&target).unwrap().change, Change::Inserted);
        uninstall(&Uninstall {
            conf_dir: conf.clone(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(conf.join("10-calico.conflist")).unwrap(),
            owners
        );
    }

    #[test]
    fn someone_else_edit_after_install_is_kept_on_uninstall() {
        let (_t, conf, data) = tree("edit");
        let target = Target::new(&conf, entry(&data, "robot-base"));
        apply(&target).unwrap();
        let f = conf.join("10-calico.conflist");
        let edited = std::fs::read_to_string(&f).unwrap().replace("1440", "1300");
        std::fs::write(&f, &edited).unwrap();
        let u = uninstall(&Uninstall {
            conf_dir: conf.clone(),
            ..Default::default()
        })
        .unwrap();
        assert!(!u.files[0].1, "cut, not restored");
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            CALICO.replace("1440", "1300")
        );
    }

    #[test]
    fn settings_change_updates_in_place_and_keeps_the_original_backup() {
        let (_t, conf, data) = tree("update");
        apply(&Target::new(&conf, entry(&data, "robot-base"))).unwrap();
        let a = apply(&Target::new(&conf, entry(&data, "robot-arm"))).unwrap();
        assert_eq!(a.change, Change::Updated);
        let text = std::fs::read_to_string(conf.join("10-calico.conflist")).unwrap();
        assert_eq!(text.matches("\"type\": \"ros2-cni\"").count(), 1);
        assert!(text.contains("192.168.1.176-192.168.1.190"));
        uninstall(&Uninstall {
            conf_dir: conf.clone(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(conf.join("10-calico.conflist")).unwrap(),
            CALICO
        );
    }

    #[test]
    fn lexically_first_file_is_chosen_and_refusals_change_nothing() {
        let (_t, conf, data) = tree("choose");
        let target = Target::new(&conf, entry(&data, "robot-base"));
        // a single-plugin .conf sorting first
        std::fs::write(
            conf.join("05-bridge.conf"),
            r#"{"cniVersion":"0.4.0","name":"b","type":"bridge"}"#,
        )
        .unwrap();
        let e = apply(&target).unwrap_err().to_string();
        assert!(
            e.contains("05-bridge.conf") && e.contains("single-plugin") && e.contains("Convert"),
            "{e}"
        );
        std::fs::remove_file(conf.join("05-bridge.conf")).unwrap();
        // Multus first
        std::fs::write(
            conf.join("00-multus.conf"),
            r#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus","delegates":[]}"#,
        )
        .unwrap();
        let e = apply(&target).unwrap_err().to_string();
        assert!(
            e.contains("00-multus.conf") && e.contains("Multus") && e.contains("--conf-file"),
            "{e}"
        );
        // ...unless the user names the delegate's file
        let mut t2 = target.clone();
        t2.conf_file = Some("10-calico.conflist".into());
        assert_eq!(apply(&t2).unwrap().change, Change::Inserted);
        std::fs::remove_file(conf.join("00-multus.conf")).unwrap();
        // a hidden conflist sorts first too
        std::fs::write(conf.join(".a.conflist"), "{broken").unwrap();
        let before = std::fs::read(conf.join(".a.conflist")).unwrap();
        let e = apply(&target).unwrap_err().to_string();
        assert!(
            e.contains(".a.conflist") && e.contains("not valid JSON"),
            "{e}"
        );
        assert_eq!(std::fs::read(conf.join(".a.conflist")).unwrap(), before);
        // no conf at all
        let empty = conf.parent().unwrap().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = apply(&Target::new(&empty, entry(&data, "robot-base"))).unwrap_err();
        assert!(matches!(e, InstallError::NoConf { .. }), "{e}");
    }

    #[test]
    fn mode_is_preserved() {
        use std::os::unix::fs::PermissionsExt;
        let (_t, conf, data) = tree("mode");
        let f = conf.join("10-calico.conflist");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        apply(&Target::new(&conf, entry(&data, "robot-base"))).unwrap();
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    fn binary_is_copied_under_its_own_name_only() {
        use std::os::unix::fs::PermissionsExt;
        let t = TempDir::new("bin");
        let bin = t.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink("/usr/lib/cni/ptp", bin.join("ptp")).unwrap();
        let src = t.path().join("src");
        std::fs::write(&src, b"\x7fELF fake").unwrap();
        assert!(install_binary(&bin, &src).unwrap());
        assert!(!install_binary(&bin, &src).unwrap());
        let dest = bin.join("ros2-cni");
        assert_eq!(std::fs::read(&dest).unwrap(), b"\x7fELF fake");
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read_link(bin.join("ptp")).unwrap(),
            Path::new("/usr/lib/cni/ptp")
        );
        assert_eq!(std::fs::read_dir(&bin).unwrap().count(), 2);
        let e = install_binary(&t.path().join("nope"), &src).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn node_address_inside_any_pool_is_refused() {
        let e = entry(Path::new("/d"), "robot-base");
        let mut w = Vec::new();
        check_addresses(
            &e.config,
            "eth0",
            &["192.168.1.10".parse().unwrap()],
            &mut w,
        )
        .unwrap();
        assert!(w.is_empty());
        let err = check_addresses(
            &e.config,
            "eth0",
            &["192.168.1.180".parse().unwrap()],
            &mut w,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("192.168.1.180") && err.contains("robot-arm"),
            "{err}"
        );
        check_addresses(&e.config, "eth0", &["10.0.0.1".parse().unwrap()], &mut w).unwrap();
        assert!(w[0].contains("no address in subnet"), "{w:?}");
    }
}
