//! Reading /proc/sys values (the read half of read-compare-write: values are
//! written through netlink, which also works where /proc/sys is read-only).
//!
//! /proc/sys/net resolves against the namespace of the thread that opens the
//! file: call this from the namespace's own thread (see `Netns::run`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("sysctl {key}: {source}")]
pub struct Error {
    pub key: String,
    #[source]
    pub source: std::io::Error,
}

/// `key` uses slashes or dots between parts; interface names with dots must use slashes.
pub fn read(key: &str) -> Result<String, Error> {
    let p = if key.contains('/') {
        PathBuf::from("/proc/sys").join(key)
    } else {
        PathBuf::from("/proc/sys").join(key.replace('.', "/"))
    };
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_owned())
        .map_err(|source| Error {
            key: key.to_owned(),
            source,
        })
}
