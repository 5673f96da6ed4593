//! The per-node address pool.
//!
//! State lives in `dataDir`:
//! - `lock`: an flock held only while leases change (never during netlink work);
//! - `leases/<ip>`: one file per handed-out address, created with O_EXCL, holding
//!   the attachment key; its existence is the reservation;
//! - `attachments/<key>.json`: what ADD made for one attachment, so that DEL, CHECK
//!   and GC can find it without the netns;
//! - `last`: the last address handed out, so allocation walks the pool round-robin
//!   and a released address is not reused at once;
//! - `busy/<key>`: an flock per attachment, held for a whole ADD or DEL, so
//!   two invocations for one container never interleave.
//!
//! Invariant: a lease and its record are created together ([`Store::allocate`])
//! and removed together ([`Store::release`], [`Store::forget`]), always with
//! the pool lock held; a record is rewritten only with the pool lock held too.
//! So, with the pool lock held, a lease whose key has no record (or whose
//! record names another address), an empty lease and a temporary record are
//! leftovers of an invocation that was killed, never work in progress:
//! [`Store::reclaim`] removes them.

use crate::config::Pool;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not lock the address pool ({path}) within {waited_ms} ms; another ADD or DEL holds it, try again")]
    LockTimeout { path: PathBuf, waited_ms: u64 },
    #[error("address pool {pool} is exhausted ({used} addresses in use)")]
    Exhausted { pool: String, used: usize },
    #[error("attachment {key} is already recorded (ip {ip}); DEL it first")]
    AlreadyAttached { key: String, ip: Ipv4Addr },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// A record that exists but does not parse (empty or cut short).
    pub fn is_unreadable_record(&self) -> bool {
        matches!(self, Error::Io { op: "parse", .. })
    }
}

type Result<T> = std::result::Result<T, Error>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What [`Store::list`] found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub records: Vec<(String, Attachment)>,
    /// Records that exist but cannot be read: (key, why).
    pub unreadable: Vec<(String, String)>,
}

/// What ADD made for one attachment; stored as `attachments/<key>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub container_id: String,
    /// CNI_IFNAME of the chain (the pod's primary interface).
    pub ifname: String,
    /// Our interface in the pod (`ifName`, e.g. ros0).
    pub pod_if: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: String,
    /// Host side of the veth (routed mode); empty in macvlan mode.
    #[serde(default)]
    pub host_if: String,
    /// The node device the pod is reached through: the bridge (routed
    /// mode) or the macvlan shim (macvlan mode).
    #[serde(default)]
    pub node_dev: String,
    /// The node's LAN interface at ADD time (proxy ARP entry, macvlan parent).
    #[serde(default)]
    pub uplink: String,
    pub mode: String,
    /// Whether ADD cleared MULTICAST on the pod's primary interface.
    #[serde(default)]
    pub cleared_multicast: bool,
    /// The primary interface's addresses (from prevResult), so that what is
    /// seen from them (e.g. DDS bound to eth0) can be traced to this pod.
    #[serde(default)]
    pub primary_ips: Vec<String>,
    #[serde(default)]
    pub pod_namespace: String,
    #[serde(default)]
    pub pod_name: String,
    /// The network (conflist `name`) the attachment belongs to: GC only
    /// collects its own network's attachments. Empty in older records.
    #[serde(default)]
    pub network: String,
}

impl Attachment {
    /// The pod's name for metrics and status: K8S_POD_NAME, or the first 12
    /// characters of the container id when the runtime passed no name.
    pub fn pod_label(&self) -> String {
        if self.pod_name.is_empty() {
            self.container_id.chars().take(12).collect()
        } else {
            self.pod_name.clone()
        }
    }
}

/// The key of an attachment: container id and the chain's CNI_IFNAME.
pub fn attachment_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}_{ifname}")
}

/// A held pool lock; released on drop.
pub struct Lock {
    _file: File,
}

/// A held per-attachment lock ([`Store::lock_attachment`]); released on drop.
pub struct AttachmentLock {
    _file: File,
    path: PathBuf,
    remove_on_drop: bool,
}

impl AttachmentLock {
    /// Removes the lock file when released (the attachment is gone).
    pub fn remove_on_release(&mut self) {
        self.remove_on_drop = true;
    }
}

impl Drop for AttachmentLock {
    fn drop(&mut self) {
        // removed while still held: a waiter that gets the old file sees
        // that it is no longer at the path and retries
        if self.remove_on_drop {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// flock(LOCK_EX) on `file`, polling up to `timeout`.
/// Opens (creating) the lock file at `path` and takes its lock, waiting up
/// to `timeout`.
fn open_locked(path: &Path, timeout: Duration) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io("open", path))?;
    lock_file(&file, path, timeout)?;
    Ok(file)
}

fn lock_file(file: &File, path: &Path, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", path)(e)),
        }
        if start.elapsed() >= timeout {
            return Err(Error::LockTimeout {
                path: path.to_owned(),
                waited_ms: start.elapsed().as_millis() as u64,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

pub fn lock_timeout() -> Duration {
    let ms = std::env::var("ROS2_CNI_LOCK_TIMEOUT_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    Duration::from_millis(ms)
}

impl Store {
    pub fn new(data_dir: &Path) -> Store {
        Store {
            dir: data_dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn leases(&self) -> PathBuf {
        self.dir.join("leases")
    }

    fn attachments(&self) -> PathBuf {
        self.dir.join("attachments")
    }

    fn attachment_path(&self, key: &str) -> PathBuf {
        self.attachments().join(format!("{key}.json"))
    }

    fn busy(&self) -> PathBuf {
        self.dir.join("busy")
    }

    /// Creates the directories if needed.
    pub fn init(&self) -> Result<()> {
        for d in [
            self.dir.clone(),
            self.leases(),
            self.attachments(),
            self.busy(),
        ] {
            fs::create_dir_all(&d).map_err(io("create directory", &d))?;
        }
        Ok(())
    }

    /// Takes the pool lock, waiting up to `timeout`.
    pub fn lock(&self, timeout: Duration) -> Result<Lock> {
        let path = self.dir.join("lock");
        let file = open_locked(&path, timeout)?;
        Ok(Lock { _file: file })
    }

    /// Takes the per-attachment lock of `key` for a whole ADD or DEL, waiting
    /// up to `timeout`: a second invocation for the same container (a
    /// runtime retrying after its own timeout) waits for the first one.
    /// `remove_on_drop` removes the lock file when released (DEL: the
    /// attachment is gone); a waiter that then gets the removed file retries
    /// on the new one.
    pub fn lock_attachment(&self, key: &str, timeout: Duration) -> Result<AttachmentLock> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.busy();
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let path = dir.join(key);
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let file = open_locked(&path, left)?;
            // the holder before us may have removed the file: ours must
            // still be the one at the path
            let held = file.metadata().map_err(io("stat", &path))?;
            match fs::metadata(&path) {
                Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => {
                    return Ok(AttachmentLock {
                        _file: file,
                        path,
                        remove_on_drop: false,
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io("stat", &path)(e)),
            }
        }
    }

    /// Whether an ADD or DEL of `key` is running now (GC leaves it alone).
    pub fn attachment_busy(&self, key: &str) -> bool {
        let path = self.busy().join(key);
        let Ok(file) = OpenOptions::new().write(true).open(&path) else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => false,
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(std::fs::TryLockError::Error(_)) => false,
        }
    }

    /// The attachment for `key`, if ADD recorded one.
    pub fn get(&self, key: &str) -> Result<Option<Attachment>> {
        let p = self.attachment_path(key);
        match fs::read(&p) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(a) => Ok(Some(a)),
                Err(e) => Err(Error::Io {
                    op: "parse",
                    path: p,
                    source: std::io::Error::new(ErrorKind::InvalidData, e),
                }),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &p)(e)),
        }
    }

    /// All recorded attachments (GC, doctor, agent), and the keys of records
    /// that exist but do not parse (e.g. left empty by a power cut), each
    /// with the reason. Err when the directory or a file cannot be read.
    pub fn list(&self) -> Result<Listing> {
        let dir = self.attachments();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Listing::default()),
            Err(e) => return Err(io("read directory", &dir)(e)),
        };
        let mut out = Listing::default();
        for ent in rd {
            let ent = ent.map_err(io("read directory", &dir))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if let Some(key) = name.strip_suffix(".json") {
                match self.get(key) {
                    Ok(Some(a)) => out.records.push((key.to_owned(), a)),
                    Ok(None) => {} // removed meanwhile
                    Err(e) if e.is_unreadable_record() => {
                        out.unreadable.push((key.to_owned(), e.to_string()))
                    }
                    // a failing read is not a damaged record: say so, decide nothing
                    Err(e) => return Err(e),
                }
            }
        }
        out.records.sort_by_key(|(_, a)| a.ip);
        Ok(out)
    }

    /// Who holds the lease on `ip` (the attachment key), if anyone.
    pub fn lease_owner(&self, ip: Ipv4Addr) -> Option<String> {
        fs::read_to_string(self.leases().join(ip.to_string()))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// The attachment other than `key` that holds the lease on `ip`, if any.
    pub fn leased_to_another(&self, ip: Ipv4Addr, key: &str) -> Option<String> {
        self.lease_owner(ip).filter(|o| !o.is_empty() && o != key)
    }

    /// Forgets an attachment whose record cannot be read: removes every
    /// lease `key` holds (found by their contents) and the record. Returns
    /// the released addresses. Call with the lock held.
    pub fn forget(&self, _lock: &Lock, key: &str) -> Result<Vec<Ipv4Addr>> {
        let dir = self.leases();
        let mut released = vec![];
        if let Ok(rd) = fs::read_dir(&dir) {
            for ent in rd.flatten() {
                let p = ent.path();
                if fs::read_to_string(&p).is_ok_and(|o| o.trim() == key) {
                    fs::remove_file(&p)
                        .or_else(ignore_missing)
                        .map_err(io("remove", &p))?;
                    if let Some(ip) = ent.file_name().to_str().and_then(|n| n.parse().ok()) {
                        released.push(ip);
                    }
                }
            }
        }
        let p = self.attachment_path(key);
        fs::remove_file(&p)
            .or_else(ignore_missing)
            .map_err(io("remove", &p))?;
        Ok(released)
    }

    /// Number of leased addresses.
    pub fn leased(&self) -> Result<usize> {
        let dir = self.leases();
        match fs::read_dir(&dir) {
            Ok(rd) => Ok(rd.filter_map(|e| e.ok()).count()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io("read directory", &dir)(e)),
        }
    }

    /// Reserves the next free address of `pool` for `key` and records the
    /// attachment built by `make(ip)`. Call with the lock held.
    pub fn allocate(
        &self,
        _lock: &Lock,
        pool: &Pool,
        subnet: &Ipv4Net,
        key: &str,
        make: impl FnOnce(Ipv4Addr) -> Attachment,
    ) -> Result<Attachment> {
        // checked under the lock: of two ADDs of one container, the second
        // finds the first one's record and owns nothing
        if let Ok(Some(a)) = self.get(key) {
            return Err(Error::AlreadyAttached {
                key: key.to_owned(),
                ip: a.ip,
            });
        }
        let last_path = self.dir.join("last");
        let last: Option<Ipv4Addr> = fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let usable = pool.usable(subnet);
        // walk from the address after `last`, wrapping around once
        let start_after = last.filter(|a| pool.contains(*a));
        let (after, before): (Vec<_>, Vec<_>) = match start_after {
            Some(l) => usable.partition(|a| u32::from(*a) > u32::from(l)),
            None => (usable.collect(), vec![]),
        };
        let leases = self.leases();
        for ip in after.into_iter().chain(before) {
            let p = leases.join(ip.to_string());
            let open = || OpenOptions::new().write(true).create_new(true).open(&p);
            let opened = match open() {
                // leases are created and written under the lock we hold: an
                // empty one is a write that a crash cut short, owned by nobody
                Err(e)
                    if e.kind() == ErrorKind::AlreadyExists
                        && fs::metadata(&p).is_ok_and(|m| m.len() == 0) =>
                {
                    let _ = fs::remove_file(&p);
                    open()
                }
                r => r,
            };
            match opened {
                Ok(mut f) => {
                    crate::faults::point("lease created");
                    if let Err(e) = f.write_all(key.as_bytes()) {
                        // an ownerless lease would never be released
                        let _ = fs::remove_file(&p);
                        return Err(io("write", &p)(e));
                    }
                    crate::faults::point("lease written");
                    let att = make(ip);
                    if let Err(e) = self.write_attachment(key, &att) {
                        let _ = fs::remove_file(&p);
                        return Err(e);
                    }
                    let _ = write_last(&last_path, ip);
                    crate::faults::point("round-robin hint written");
                    return Ok(att);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("create", &p)(e)),
            }
        }
        Err(Error::Exhausted {
            pool: pool.to_string(),
            used: self.leased()?,
        })
    }

    /// Writes an attachment's record atomically: a temporary file renamed
    /// over the record. Call with the lock held (a temporary record seen
    /// under the lock is then always a leftover).
    ///
    /// Not synced here: a flush costs about 4 ms on the benchmark machine
    /// (twice, with the directory), on every pod's start path. The agent
    /// makes new records and leases durable within a reconcile period
    /// ([`Store::sync_changed`]); and a power cut, which ends every pod
    /// anyway, leaves nothing that is not recovered: a lost record's lease
    /// is reclaimed, an empty record is forgotten by its key, an empty lease
    /// is taken back (all tested).
    pub fn write_attachment(&self, key: &str, att: &Attachment) -> Result<()> {
        let p = self.attachment_path(key);
        let tmp = self.attachments().join(format!(".{key}.tmp"));
        let body = serde_json::to_vec_pretty(att).expect("attachment serializes");
        let written = (|| {
            let mut f = File::create(&tmp)?;
            crate::faults::point("temporary record created");
            f.write_all(&body)
        })();
        if let Err(e) = written {
            // e.g. ENOSPC: no 0-byte temporary record stays behind
            let _ = fs::remove_file(&tmp);
            return Err(io("write", &tmp)(e));
        }
        crate::faults::point("temporary record written");
        fs::rename(&tmp, &p).map_err(io("rename", &p))?;
        crate::faults::point("record renamed");
        Ok(())
    }

    /// Makes durable what changed since `since`: the records and leases
    /// modified since (fdatasync), then both directories (fsync), so that
    /// creations and removals survive a power cut too. Returns how many
    /// files were synced. For the agent, off the pods' start path.
    pub fn sync_changed(&self, since: std::time::SystemTime) -> Result<usize> {
        let mut synced = 0;
        let mut dirs_changed = false;
        for dir in [self.attachments(), self.leases()] {
            let changed = |m: &fs::Metadata| m.modified().is_ok_and(|t| t >= since);
            match fs::metadata(&dir) {
                Ok(m) if changed(&m) => dirs_changed = true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io("stat", &dir)(e)),
            }
            for ent in fs::read_dir(&dir)
                .map_err(io("read directory", &dir))?
                .flatten()
            {
                if ent.metadata().is_ok_and(|m| m.is_file() && changed(&m)) {
                    // removed meanwhile: nothing to sync
                    if let Ok(f) = File::open(ent.path()) {
                        f.sync_data().map_err(io("sync", &ent.path()))?;
                        synced += 1;
                    }
                }
            }
        }
        if dirs_changed || synced > 0 {
            for dir in [self.attachments(), self.leases()] {
                if let Ok(d) = File::open(&dir) {
                    d.sync_all().map_err(io("sync directory", &dir))?;
                }
            }
        }
        Ok(synced)
    }

    /// Removes what killed invocations left, with the pool lock held (see
    /// the invariant at the top): leases whose key has no record or whose
    /// record names another address, empty leases, and temporary records.
    /// Records that cannot be parsed are left to [`Store::forget`]; their
    /// leases stay. Returns the reclaimed leases as (address, key).
    pub fn reclaim(&self, _lock: &Lock) -> Result<Vec<(Ipv4Addr, String)>> {
        let mut out = vec![];
        let adir = self.attachments();
        if let Ok(rd) = fs::read_dir(&adir) {
            for ent in rd.flatten() {
                let name = ent.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let p = ent.path();
                    fs::remove_file(&p)
                        .or_else(ignore_missing)
                        .map_err(io("remove", &p))?;
                }
            }
        }
        let ldir = self.leases();
        let rd = match fs::read_dir(&ldir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io("read directory", &ldir)(e)),
        };
        for ent in rd {
            let ent = ent.map_err(io("read directory", &ldir))?;
            let Some(ip) = ent
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let p = ent.path();
            let owner = match fs::read_to_string(&p) {
                Ok(o) => o.trim().to_owned(),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", &p)(e)),
            };
            let orphan = owner.is_empty()
                || match self.get(&owner) {
                    Ok(None) => true,
                    Ok(Some(a)) => a.ip != ip,
                    Err(_) => false,
                };
            if orphan {
                fs::remove_file(&p)
                    .or_else(ignore_missing)
                    .map_err(io("remove", &p))?;
                out.push((ip, owner));
            }
        }
        Ok(out)
    }

    /// Whether [`Store::reclaim`] may find something: more leases than
    /// records, or a temporary record (read without the lock, as a hint).
    pub fn may_need_reclaim(&self) -> bool {
        let count = |d: PathBuf| -> (usize, bool) {
            fs::read_dir(d).map_or((0, false), |rd| {
                let names: Vec<_> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                (names.len(), names.iter().any(|n| n.ends_with(".tmp")))
            })
        };
        let (leases, _) = count(self.leases());
        let (records, tmp) = count(self.attachments());
        tmp || leases > records
    }

    /// Releases `key`'s address and record. Missing files are fine (DEL twice).
    /// Call with the lock held.
    pub fn release(&self, _lock: &Lock, key: &str, ip: Option<Ipv4Addr>) -> Result<()> {
        if let Some(ip) = ip {
            let p = self.leases().join(ip.to_string());
            // only remove the lease if it is still ours; an empty one is a
            // write a crash cut short (leases are written under the lock we
            // hold), and this record names its address
            match fs::read_to_string(&p) {
                Ok(owner) if owner.trim() == key || owner.trim().is_empty() => fs::remove_file(&p)
                    .or_else(ignore_missing)
                    .map_err(io("remove", &p))?,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io("read", &p)(e)),
            }
        }
        // the record only if it is the caller's: the attachment at `ip`
        let p = self.attachment_path(key);
        if let (Some(ip), Ok(Some(rec))) = (ip, self.get(key)) {
            if rec.ip != ip {
                return Ok(());
            }
        }
        fs::remove_file(&p)
            .or_else(ignore_missing)
            .map_err(io("remove", &p))
    }

    /// Checks that the data dir can be written (STATUS).
    pub fn check_writable(&self) -> Result<()> {
        self.init()?;
        let p = self
            .dir
            .join(format!(".status-probe-{}", std::process::id()));
        fs::write(&p, b"ok").map_err(io("write", &p))?;
        fs::remove_file(&p).map_err(io("remove", &p))
    }
}

/// Writes the round-robin hint in place: a fixed-width record overwritten
/// without truncating the file, so no data block is freed on every ADD (on a
/// file system mounted with `discard`, freeing a block costs a synchronous
/// discard: about 0.2 ms on the benchmark machine). Readers trim it.
fn write_last(path: &Path, ip: Ipv4Addr) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all_at(format!("{ip:<15}\n").as_bytes(), 0)
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a fresh directory, removed when dropped (by a failing
    /// test too), with a pool in 192.168.1.0/24.
    struct Fixture {
        dir: PathBuf,
        s: Store,
        pool: Pool,
        subnet: Ipv4Net,
    }

    impl Fixture {
        fn new(range: &str) -> Fixture {
            let dir = std::env::temp_dir().join(format!(
                "r2c-ipam-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            fs::create_dir_all(&dir).unwrap();
            let s = Store::new(&dir);
            s.init().unwrap();
            Fixture {
                dir,
                s,
                pool: Pool::parse(range).unwrap(),
                subnet: "192.168.1.0/24".parse().unwrap(),
            }
        }

        fn lock(&self) -> Lock {
            self.s.lock(Duration::from_secs(1)).unwrap()
        }

        /// Allocates an address for `key`, recorded with [`att`].
        fn alloc(&self, l: &Lock, key: &str) -> Result<Attachment> {
            self.s
                .allocate(l, &self.pool, &self.subnet, key, |ip| att(key, ip))
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn att(key: &str, ip: Ipv4Addr) -> Attachment {
        Attachment {
            container_id: key.into(),
            ifname: "eth0".into(),
            pod_if: "ros0".into(),
            netns: "/x".into(),
            ip,
            prefix_len: 24,
            mac: String::new(),
            host_if: String::new(),
            node_dev: String::new(),
            uplink: String::new(),
            mode: "routed".into(),
            cleared_multicast: false,
            primary_ips: vec![],
            pod_namespace: String::new(),
            pod_name: String::new(),
            network: String::new(),
        }
    }

    #[test]
    fn allocate_release_roundrobin_and_exhaust() {
        let f = Fixture::new("192.168.1.254-192.168.1.255");
        let s = &f.s;
        let l = f.lock();
        let a = f.alloc(&l, "a").unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(192, 168, 1, 254));
        // .255 is the broadcast address: never handed out
        let e = f.alloc(&l, "b").unwrap_err();
        assert!(matches!(e, Error::Exhausted { used: 1, .. }), "{e}");
        assert_eq!(s.get("a").unwrap().unwrap(), a);
        s.release(&l, "a", Some(a.ip)).unwrap();
        s.release(&l, "a", Some(a.ip)).unwrap();
        assert!(s.get("a").unwrap().is_none());
        assert_eq!(s.leased().unwrap(), 0);
    }

    #[test]
    fn last_hint_is_rewritten_in_place() {
        let f = Fixture::new("192.168.1.9-192.168.1.101");
        let dir = &f.dir;
        // a hint as older releases wrote it: longer than the next one, unpadded
        fs::write(dir.join("last"), "192.168.1.100").unwrap();
        let l = f.lock();
        let a = f.alloc(&l, "a").unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(192, 168, 1, 101));
        // wraps around to the start; the shorter address leaves no residue
        let b = f.alloc(&l, "b").unwrap();
        assert_eq!(b.ip, Ipv4Addr::new(192, 168, 1, 9));
        let hint = fs::read_to_string(dir.join("last")).unwrap();
        assert_eq!(hint.trim(), "192.168.1.9");
        assert_eq!(hint.len(), 16, "fixed width, overwritten in place");
        let c = f.alloc(&l, "c").unwrap();
        assert_eq!(c.ip, Ipv4Addr::new(192, 168, 1, 10));
    }

    #[test]
    fn next_address_after_last() {
        let f = Fixture::new("192.168.1.10-192.168.1.12");
        let s = &f.s;
        let l = f.lock();
        let a = f.alloc(&l, "a").unwrap();
        s.release(&l, "a", Some(a.ip)).unwrap();
        let b = f.alloc(&l, "b").unwrap();
        assert_eq!(
            b.ip,
            Ipv4Addr::new(192, 168, 1, 11),
            "released address is not reused at once"
        );
        let c = f.alloc(&l, "c").unwrap();
        let d = f.alloc(&l, "d").unwrap();
        assert_eq!((c.ip.octets()[3], d.ip.octets()[3]), (12, 10));
        assert_eq!(s.list().unwrap().records.len(), 3);
    }

    #[test]
    fn release_leaves_foreign_lease() {
        let f = Fixture::new("192.168.1.10-192.168.1.10");
        let s = &f.s;
        let l = f.lock();
        let a = f.alloc(&l, "a").unwrap();
        s.release(&l, "other", Some(a.ip)).unwrap();
        assert_eq!(s.leased().unwrap(), 1);
    }

    #[test]
    fn damaged_records_are_listed_apart_and_forgotten_by_key() {
        let f = Fixture::new("192.168.1.10-192.168.1.20");
        let (s, dir) = (&f.s, &f.dir);
        let l = f.lock();
        let a = f.alloc(&l, "a").unwrap();
        let b = f.alloc(&l, "b").unwrap();
        fs::write(dir.join("attachments/b.json"), b"").unwrap();
        let listing = s.list().unwrap();
        assert_eq!(listing.records, vec![("a".to_owned(), a.clone())]);
        assert_eq!(listing.unreadable.len(), 1);
        assert_eq!(listing.unreadable[0].0, "b");
        assert!(s.get("b").unwrap_err().is_unreadable_record());
        assert_eq!(s.lease_owner(b.ip).as_deref(), Some("b"));
        assert_eq!(s.forget(&l, "b").unwrap(), vec![b.ip]);
        assert_eq!(s.lease_owner(b.ip), None);
        assert!(s.get("b").unwrap().is_none());
        assert_eq!(s.lease_owner(a.ip).as_deref(), Some("a"), "a untouched");
        assert!(s.list().unwrap().unreadable.is_empty());
    }

    #[test]
    fn an_empty_lease_is_released_with_its_record() {
        let f = Fixture::new("192.168.1.10-192.168.1.10");
        let (s, dir) = (&f.s, &f.dir);
        let l = f.lock();
        let a = f.alloc(&l, "a").unwrap();
        // a crash cut the lease's write short
        fs::write(dir.join(format!("leases/{}", a.ip)), b"").unwrap();
        s.release(&l, "a", Some(a.ip)).unwrap();
        assert_eq!(s.leased().unwrap(), 0);
        // and one without any record (the crash came before the record):
        // the next allocation takes the address back
        fs::write(dir.join(format!("leases/{}", a.ip)), b"").unwrap();
        let b = f.alloc(&l, "b").unwrap();
        assert_eq!(b.ip, a.ip);
        assert_eq!(s.lease_owner(b.ip).as_deref(), Some("b"));
    }

    #[test]
    fn lock_times_out() {
        let f = Fixture::new("192.168.1.10-192.168.1.10");
        let s = &f.s;
        let _held = f.lock();
        let e = match s.lock(Duration::from_millis(50)) {
            Err(e) => e,
            Ok(_) => panic!("second lock must not be granted"),
        };
        assert!(matches!(e, Error::LockTimeout { .. }));
    }

    #[test]
    fn sync_changed_syncs_what_changed_since() {
        let f = Fixture::new("192.168.1.160/30");
        let store = &f.s;
        let before = std::time::SystemTime::now() - Duration::from_secs(2);
        let lock = f.lock();
        store
            .allocate(&lock, &f.pool, &f.subnet, "c1_eth0", |ip| att("c1", ip))
            .unwrap();
        // the record and its lease
        assert_eq!(store.sync_changed(before).unwrap(), 2);
        let later = std::time::SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(store.sync_changed(later).unwrap(), 0, "nothing new");
    }
}
