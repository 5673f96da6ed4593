//! The CNI_* environment, validated per command as the reference `skel` does.

use std::collections::BTreeMap;

/// A CNI_* variable that is missing or invalid; the message names it. The
/// plugin's edge answers every one with code 4 (invalid environment).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "CNI_COMMAND: unknown command \"{0}\" (expected ADD, DEL, CHECK, VERSION, GC or STATUS)"
    )]
    UnknownCommand(String),
    #[error("{name} is required for {command} but is not set")]
    Missing {
        name: &'static str,
        command: &'static str,
    },
    #[error("CNI_ARGS: invalid pair \"{0}\" (expected KEY=VALUE)")]
    ArgsPair(String),
    #[error("CNI_ARGS: empty key in \"{0}\"")]
    ArgsEmptyKey(String),
    #[error("CNI_CONTAINERID: invalid characters in \"{0}\"")]
    ContainerId(String),
    #[error("CNI_IFNAME: {0}")]
    IfName(#[from] crate::ifname::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => return Err(Error::UnknownCommand(other.to_owned())),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub container_id: String,
    /// Empty when CNI_NETNS was unset or empty (allowed for DEL).
    pub netns: String,
    pub ifname: String,
    pub path: String,
    /// CNI_ARGS as key/value pairs (K8S_POD_NAMESPACE, K8S_POD_NAME, ...).
    pub args: BTreeMap<String, String>,
}

impl Env {
    pub fn pod_namespace(&self) -> Option<&str> {
        self.args.get("K8S_POD_NAMESPACE").map(String::as_str)
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.args.get("K8S_POD_NAME").map(String::as_str)
    }

    /// Reads the environment for `cmd` through `get` (std::env::var in
    /// production, a map in tests).
    pub fn from_lookup(cmd: Command, get: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let need = |name: &'static str, required: bool| -> Result<String> {
            match get(name) {
                Some(v) if !v.is_empty() => Ok(v),
                _ if required => Err(Error::Missing {
                    name,
                    command: cmd.as_str(),
                }),
                _ => Ok(String::new()),
            }
        };
        use Command::*;
        let add_check = matches!(cmd, Add | Check);
        let add_check_del = matches!(cmd, Add | Check | Del);
        let env = Env {
            container_id: need("CNI_CONTAINERID", add_check_del)?,
            netns: need("CNI_NETNS", add_check)?,
            ifname: need("CNI_IFNAME", add_check_del)?,
            path: need("CNI_PATH", add_check_del)?,
            args: parse_args(&get("CNI_ARGS").unwrap_or_default())?,
        };
        if add_check_del {
            validate_container_id(&env.container_id)?;
            crate::ifname::check(&env.ifname)?;
        }
        Ok(env)
    }
}

/// `K=V;K2=V2`. Keys we do not know are ignored (the runtime sends
/// `IgnoreUnknown=1`); a pair without `=` is an error.
pub fn parse_args(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(Error::ArgsPair(pair.to_owned()));
        };
        if k.is_empty() {
            return Err(Error::ArgsEmptyKey(pair.to_owned()));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn validate_container_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(Error::ContainerId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=robots;K8S_POD_NAME=talker",
        ),
    ];

    #[test]
    fn add_reads_everything() {
        let e = Env::from_lookup(Command::Add, env_of(FULL)).unwrap();
        assert_eq!(e.container_id, "abc123");
        assert_eq!(e.pod_namespace(), Some("robots"));
        assert_eq!(e.pod_name(), Some("talker"));
    }

    #[test]
    fn each_missing_variable_is_named() {
        for (cmd, var) in [
            (Command::Add, "CNI_CONTAINERID"),
            (Command::Add, "CNI_NETNS"),
            (Command::Add, "CNI_IFNAME"),
            (Command::Add, "CNI_PATH"),
            (Command::Check, "CNI_NETNS"),
            (Command::Del, "CNI_CONTAINERID"),
            (Command::Del, "CNI_IFNAME"),
        ] {
            let pairs: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != var).collect();
            let err = Env::from_lookup(cmd, env_of(&pairs)).unwrap_err();
            assert!(matches!(err, Error::Missing { .. }), "{err}");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn del_allows_empty_netns() {
        let pairs: Vec<_> = FULL
            .iter()
            .copied()
            .map(|(k, v)| if k == "CNI_NETNS" { (k, "") } else { (k, v) })
            .collect();
        let e = Env::from_lookup(Command::Del, env_of(&pairs)).unwrap();
        assert!(e.netns.is_empty());
    }

    #[test]
    fn status_needs_nothing() {
        assert!(Env::from_lookup(Command::Status, env_of(&[])).is_ok());
        assert!(Env::from_lookup(Command::Gc, env_of(&[])).is_ok());
    }

    #[test]
    fn bad_values() {
        let mut pairs = FULL.to_vec();
        pairs[0] = ("CNI_CONTAINERID", "../etc");
        let err = Env::from_lookup(Command::Add, env_of(&pairs)).unwrap_err();
        assert!(err.to_string().contains("CNI_CONTAINERID"));
        let mut pairs = FULL.to_vec();
        pairs[2] = ("CNI_IFNAME", "a-very-long-interface");
        let err = Env::from_lookup(Command::Add, env_of(&pairs)).unwrap_err();
        assert!(err.to_string().contains("CNI_IFNAME"));
        let mut pairs = FULL.to_vec();
        pairs[4] = ("CNI_ARGS", "IgnoreUnknown=1;garbage");
        let err = Env::from_lookup(Command::Add, env_of(&pairs)).unwrap_err();
        assert!(err.to_string().contains("CNI_ARGS"));
    }
}
