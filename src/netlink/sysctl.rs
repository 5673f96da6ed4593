//! Read-compare-write of /proc/sys values, so re-running changes nothing.
//!
//! /proc/sys/net resolves against the namespace of the thread that opens the
//! file: call these from the namespace's own thread (see `Netns::run`).

use std::io::ErrorKind;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("sysctl {key}: {source}")]
pub struct Error {
    pub key: String,
    #[source]
    pub source: std::io::Error,
}

fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// `key` uses slashes or dots between parts; interface names with dots must use slashes.
pub fn read(key: &str) -> Result<String, Error> {
    let p = if key.contains('/') {
        PathBuf::from("/proc/sys").join(key)
    } else {
        path(key)
    };
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_owned())
        .map_err(|source| Error {
            key: key.to_owned(),
            source,
        })
}

/// Writes `value` unless the key already holds it; returns whether it changed.
pub fn ensure(key: &str, value: &str) -> Result<bool, Error> {
    if read(key)? == value {
        return Ok(false);
    }
    let p = if key.contains('/') {
        PathBuf::from("/proc/sys").join(key)
    } else {
        path(key)
    };
    std::fs::write(&p, value).map_err(|source| Error {
        key: key.to_owned(),
        source,
    })?;
    Ok(true)
}

/// Like `ensure`, but a missing key (e.g. IPv6 disabled) is not an error.
pub fn ensure_if_present(key: &str, value: &str) -> Result<bool, Error> {
    match ensure(key, value) {
        Err(e) if e.source.kind() == ErrorKind::NotFound => Ok(false),
        r => r,
    }
}
