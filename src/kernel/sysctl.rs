//! Reading /proc/sys values (the read half of read-compare-write: values are
//! written through netlink, which also works where /proc/sys is read-only).
//!
//! /proc/sys/net resolves against the namespace of the thread that opens the
//! file: call this from the namespace's own thread (see `Netns::run`).

use super::{Error, Result};
use std::path::PathBuf;

/// `key` uses slashes or dots between parts; interface names with dots must use slashes.
pub fn read(key: &str) -> Result<String> {
    let p = if key.contains('/') {
        PathBuf::from("/proc/sys").join(key)
    } else {
        PathBuf::from("/proc/sys").join(key.replace('.', "/"))
    };
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_owned())
        .map_err(|source| Error::Kernel {
            op: format!("sysctl {key}"),
            source,
            detail: None,
        })
}
