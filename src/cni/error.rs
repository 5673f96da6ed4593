//! CNI error codes and the wire error the plugin prints.
//!
//! The spec's well-known codes are 1-11 and 50/51; 100 and up are ours. Every
//! error is printed as `{cniVersion, code, msg, details}` on stdout and the
//! process exits non-zero. The layers below the plugin have their own error
//! types; src/plugin/error.rs maps them to these codes.

use serde::Serialize;

/// Error codes from the CNI spec (SPEC.md, "Error") plus ros2-cni's own (>= 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u32")]
#[repr(u32)]
pub enum Code {
    /// Incompatible CNI version.
    IncompatibleVersion = 1,
    /// Unsupported field in network configuration.
    UnsupportedField = 2,
    /// Container unknown or does not exist.
    UnknownContainer = 3,
    /// Invalid necessary environment variables.
    InvalidEnv = 4,
    /// I/O failure.
    Io = 5,
    /// Failed to decode content.
    Decode = 6,
    /// Invalid network config.
    InvalidConfig = 7,
    /// Try again later.
    TryAgainLater = 11,
    /// STATUS: the plugin cannot serve ADD.
    NotAvailable = 50,
    /// STATUS: existing containers may have limited connectivity.
    LimitedConnectivity = 51,
    /// A kernel operation (netlink, nftables, sysctl) failed.
    Kernel = 100,
    /// The address pool is exhausted.
    PoolExhausted = 101,
    /// CHECK found state that differs from what ADD made.
    CheckMismatch = 102,
    /// The requested setup is refused on this node (e.g. macvlan on Wi-Fi).
    Refused = 103,
    /// The attachment already exists.
    AlreadyAttached = 104,
    /// A bug: the plugin panicked.
    Internal = 199,
}

impl From<Code> for u32 {
    fn from(c: Code) -> u32 {
        c as u32
    }
}

/// A CNI error: a code, a message and optional details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(Code::InvalidConfig, msg)
    }

    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(Code::InvalidEnv, msg)
    }

    pub fn kernel(msg: impl Into<String>) -> Self {
        Self::new(Code::Kernel, msg)
    }

    /// The JSON object the spec prescribes, in the request's version.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code as u32,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = serde_json::Value::String(self.details.clone());
        }
        v
    }
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_fields() {
        let e = CniError::new(Code::InvalidEnv, "CNI_NETNS is required").with_details("ADD");
        let j = e.to_json("0.3.1");
        assert_eq!(j["cniVersion"], "0.3.1");
        assert_eq!(j["code"], 4);
        assert_eq!(j["msg"], "CNI_NETNS is required");
        assert_eq!(j["details"], "ADD");
        let j = CniError::new(Code::Decode, "x").to_json("1.1.0");
        assert!(j.get("details").is_none());
    }
}
