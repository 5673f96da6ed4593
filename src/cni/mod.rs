//! The CNI contract: spec versions, the CNI_* environment, results and errors.

pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use env::{Command, Env};
pub use error::{CniError, Code, Result};
pub use result::{Interface, PrevResult};
pub use version::Version;
