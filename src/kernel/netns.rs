//! Network namespaces by path, and running code inside one on its own thread.

use super::{Error, Result};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// NSFS_MAGIC from linux/magic.h: what statfs reports for a namespace file.
const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens `path` and checks that it is a namespace file.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns> {
        let path = path.as_ref();
        let err = |source| Error::Netns {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(err)?;
        let st = nix::sys::statfs::fstatfs(&file).map_err(|e| err(e.into()))?;
        let magic = st.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a network namespace file",
            )));
        }
        Ok(Netns {
            file,
            path: path.to_owned(),
        })
    }

    /// The calling thread's namespace.
    pub fn current() -> Result<Netns> {
        Netns::open("/proc/thread-self/ns/net")
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a new thread that has entered this namespace. The thread
    /// ends with `f`, so no thread is ever left in a foreign namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
                    path: self.path.display().to_string(),
                    source: e.into(),
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}
