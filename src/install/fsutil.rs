//! Atomic file replacement: a temporary file in the same directory, fsync,
//! rename, fsync of the directory.
//!
//! Temporary names are `.<name>.ros2-cni-<pid>.tmp`: they end in `.tmp`, so
//! libcni never takes one for a conf file even for the instant it exists.

use super::InstallError;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub(crate) enum WriteError {
    /// The file no longer holds the expected bytes: someone else wrote it.
    Changed,
    Install(InstallError),
}

impl From<InstallError> for WriteError {
    fn from(e: InstallError) -> Self {
        WriteError::Install(e)
    }
}

pub(crate) fn create_dir_all(dir: &Path) -> Result<(), InstallError> {
    std::fs::create_dir_all(dir).map_err(|e| InstallError::io("cannot create", dir, e))
}

/// [`write_atomic`] without an expectation.
pub(crate) fn write_plain(
    path: &Path,
    bytes: &[u8],
    mode: Option<u32>,
) -> Result<(), InstallError> {
    match write_atomic(path, bytes, mode, None) {
        Ok(()) => Ok(()),
        Err(WriteError::Install(e)) => Err(e),
        Err(WriteError::Changed) => unreachable!("no expectation given"),
    }
}

/// Replaces `path` with `bytes`. The mode is `mode`, else the existing
/// file's, else 0644; the owner is the existing file's when we may set it.
/// With `expect`, the replacement happens only if the file still holds
/// exactly those bytes right before the rename.
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: Option<u32>,
    expect: Option<&[u8]>,
) -> Result<(), WriteError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.ros2-cni-{}.tmp", std::process::id()));
    let old = std::fs::metadata(path).ok();
    let mode = mode
        .or(old.as_ref().map(|m| m.mode() & 0o7777))
        .unwrap_or(0o644);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| -> Result<(), WriteError> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| InstallError::io("cannot create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| InstallError::io("cannot write", &tmp, e))?;
        // the umask may have narrowed the mode given to open
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| InstallError::io("cannot set mode of", &tmp, e))?;
        if let Some(m) = &old {
            let (uid, gid) = (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            );
            if m.uid() != uid || m.gid() != gid {
                if let Err(e) = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid())) {
                    tracing::warn!(
                        file = %path.display(),
                        "cannot keep the file's owner {}:{} ({e}); it will be owned by {uid}:{gid}",
                        m.uid(),
                        m.gid()
                    );
                }
            }
        }
        f.sync_all()
            .map_err(|e| InstallError::io("cannot sync", &tmp, e))?;
        drop(f);
        if let Some(expect) = expect {
            let now = std::fs::read(path).map_err(|e| InstallError::io("cannot read", path, e))?;
            if now != expect {
                return Err(WriteError::Changed);
            }
        }
        std::fs::rename(&tmp, path).map_err(|e| InstallError::io("cannot replace", path, e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
