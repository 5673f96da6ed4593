//! The CNI_* environment, validated per command as the reference `skel` does.

use super::error::{CniError, Result};
use std::collections::BTreeMap;

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
            other => {
                return Err(CniError::env(format!(
                    "CNI_COMMAND: unknown command \"{other}\" (expected ADD, DEL, CHECK, VERSION, GC or STATUS)"
                )))
            }
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
        let need = |name: &str, required: bool| -> Result<String> {
            match get(name) {
                Some(v) if !v.is_empty() => Ok(v),
                _ if required => Err(CniError::env(format!(
                    "{name} is required for {} but is not set",
                    cmd.as_str()
                ))),
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
            validate_ifname("CNI_IFNAME", &env.ifname).map_err(CniError::env)?;
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
            return Err(CniError::env(format!(
                "CNI_ARGS: invalid pair \"{pair}\" (expected KEY=VALUE)"
            )));
        };
        if k.is_empty() {
            return Err(CniError::env(format!("CNI_ARGS: empty key in \"{pair}\"")));
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
        Err(CniError::env(format!(
            "CNI_CONTAINERID: invalid characters in \"{id}\""
        )))
    }
}

/// Linux interface name rules: 1-15 bytes, no '/', ':' or whitespace, not "." or "..".
pub fn validate_ifname(field: &str, name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err(format!("{field}: interface name is empty"));
    }
    if name.len() > 15 {
        return Err(format!(
            "{field}: interface name \"{name}\" is longer than 15 bytes"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{field}: interface name \"{name}\" is not allowed"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{field}: interface name \"{name}\" contains '/', ':' or whitespace"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::error::Code;
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
            assert_eq!(err.code, Code::InvalidEnv);
            assert!(err.msg.contains(var), "{}", err.msg);
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
        assert!(err.msg.contains("CNI_CONTAINERID"));
        let mut pairs = FULL.to_vec();
        pairs[2] = ("CNI_IFNAME", "a-very-long-interface");
        let err = Env::from_lookup(Command::Add, env_of(&pairs)).unwrap_err();
        assert!(err.msg.contains("CNI_IFNAME"));
        let mut pairs = FULL.to_vec();
        pairs[4] = ("CNI_ARGS", "IgnoreUnknown=1;garbage");
        let err = Env::from_lookup(Command::Add, env_of(&pairs)).unwrap_err();
        assert!(err.msg.contains("CNI_ARGS"));
    }
}
