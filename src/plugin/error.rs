//! The plugin's edge: every layer's error becomes the CNI error the runtime
//! reads (code, msg, details), here and nowhere else. The layers below keep
//! their own types (config::Error names the key, ipam::Error the lease,
//! kernel::Error the operation and errno, ...) and know nothing of CNI codes.

use crate::cni::{CniError, Code};

impl From<crate::config::Error> for CniError {
    fn from(e: crate::config::Error) -> Self {
        use crate::config::Error as E;
        let code = match &e {
            E::UnknownKey { .. } | E::UnknownNodeKey { .. } => Code::UnsupportedField,
            E::NotAnObject | E::Json { .. } => Code::Decode,
            E::Read { .. } => Code::Io,
            E::Invalid { .. } | E::NoPool(_) => Code::InvalidConfig,
        };
        match e {
            // the suggestion goes to `details`, the key to `msg`
            E::UnknownKey { key, did_you_mean } => {
                let e = CniError::new(
                    code,
                    format!("unknown key \"{key}\" in the ros2-cni config"),
                );
                match did_you_mean {
                    Some(k) => e.with_details(format!("did you mean \"{k}\"?")),
                    None => e,
                }
            }
            e => CniError::new(code, e.to_string()),
        }
    }
}

impl From<crate::cni::env::Error> for CniError {
    fn from(e: crate::cni::env::Error) -> Self {
        CniError::new(Code::InvalidEnv, e.to_string())
    }
}

impl From<crate::ipam::Error> for CniError {
    fn from(e: crate::ipam::Error) -> Self {
        use crate::ipam::Error as E;
        let code = match &e {
            E::LockTimeout { .. } => Code::TryAgainLater,
            E::Exhausted { .. } => Code::PoolExhausted,
            E::AlreadyAttached { .. } => Code::AlreadyAttached,
            E::Io { .. } => Code::Io,
        };
        CniError::new(code, e.to_string())
    }
}

impl From<crate::dataplane::Error> for CniError {
    fn from(e: crate::dataplane::Error) -> Self {
        use crate::dataplane::Error as E;
        let code = match &e {
            E::Config { .. } => Code::InvalidConfig,
            E::Refused(_) => Code::Refused,
            E::NoPrimary(_) => Code::InvalidEnv,
            E::LinkExists(_) => Code::AlreadyAttached,
            E::Missing(_) | E::Teardown(_) | E::Kernel(_) => Code::Kernel,
        };
        CniError::new(code, e.to_string())
    }
}

impl From<crate::kernel::Error> for CniError {
    fn from(e: crate::kernel::Error) -> Self {
        CniError::kernel(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_layer_maps_to_its_code() {
        use crate::config::Config;
        let conf = |v| CniError::from(Config::from_value(&v, false, None).unwrap_err());
        let e = conf(json!({"subnet": "192.168.1.0/24", "podRnage": "x"}));
        assert_eq!(e.code, Code::UnsupportedField);
        assert_eq!(e.msg, "unknown key \"podRnage\" in the ros2-cni config");
        assert_eq!(e.details, "did you mean \"podRange\"?");
        let e = conf(json!({"subnet": 24}));
        assert_eq!(e.code, Code::InvalidConfig);
        assert!(e.msg.starts_with("subnet: "), "{}", e.msg);
        assert_eq!(conf(json!([1])).code, Code::Decode);
        let e = CniError::from(
            crate::config::Config::from_file(
                std::path::Path::new("/nonexistent/ros2-cni.json"),
                None,
            )
            .unwrap_err(),
        );
        assert_eq!(e.code, Code::Io);
        let e = CniError::from(crate::cni::env::Error::UnknownCommand("FROB".into()));
        assert_eq!(
            (e.code, e.msg.contains("CNI_COMMAND")),
            (Code::InvalidEnv, true)
        );
        let e = CniError::from(crate::ipam::Error::Exhausted {
            pool: "p".into(),
            used: 1,
        });
        assert_eq!(e.code, Code::PoolExhausted);
    }
}
