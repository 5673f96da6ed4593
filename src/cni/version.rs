//! CNI spec versions this plugin speaks, and what each allows.

use super::error::{CniError, Code};
use std::fmt;

/// A CNI spec version we accept. Ordered by release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

impl Version {
    pub const LATEST: Version = Version::V1_1_0;
    pub const ALL: [Version; 5] = [
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];

    pub fn parse(s: &str) -> Result<Version, CniError> {
        Ok(match s {
            "0.3.0" => Version::V0_3_0,
            "0.3.1" => Version::V0_3_1,
            "0.4.0" => Version::V0_4_0,
            "1.0.0" => Version::V1_0_0,
            "1.1.0" => Version::V1_1_0,
            other => {
                return Err(CniError::new(
                    Code::IncompatibleVersion,
                    format!("incompatible CNI versions: cniVersion \"{other}\" is not supported"),
                )
                .with_details(format!("supported versions: {}", SUPPORTED.join(", "))))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Results before 1.0.0 carry `ips[].version`.
    pub fn ips_have_version(self) -> bool {
        self < Version::V1_0_0
    }

    pub fn allows_check(self) -> bool {
        self >= Version::V0_4_0
    }

    pub fn allows_gc_and_status(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_roundtrip_and_order() {
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()).unwrap(), v);
        }
        assert!(Version::V0_3_1 < Version::V0_4_0);
        assert!(Version::V0_4_0.ips_have_version());
        assert!(!Version::V1_0_0.ips_have_version());
        assert!(!Version::V0_3_1.allows_check());
        assert!(Version::V0_4_0.allows_check());
        assert!(Version::V1_1_0.allows_gc_and_status());
        assert!(!Version::V1_0_0.allows_gc_and_status());
    }

    #[test]
    fn rejects_unknown() {
        for bad in ["0.2.0", "0.1.0", "2.0.0", "", "1.0"] {
            let e = Version::parse(bad).unwrap_err();
            assert_eq!(e.code, Code::IncompatibleVersion, "{bad}");
            assert!(e.msg.contains(bad));
        }
    }
}
