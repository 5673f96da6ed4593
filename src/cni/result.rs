//! CNI results: read a prevResult of any supported version, extend it, and
//! write it in the request's version.
//!
//! The result is kept as JSON so that whatever the primary plugin put there
//! (Calico's interfaces, DNS, fields from newer specs) passes through intact;
//! only the parts the versions disagree on are rewritten: `ips[].version`
//! exists before 1.0.0 and not after.

use super::error::{CniError, Result};
use super::version::Version;
use serde_json::{json, Map, Value};
use std::net::IpAddr;

/// An interface this plugin adds to the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// The netns path for interfaces inside the pod; empty for host side.
    pub sandbox: String,
}

/// A prevResult checked for the shape we rely on.
#[derive(Debug, Clone)]
pub struct PrevResult(pub Map<String, Value>);

impl PrevResult {
    /// Validates `v` (the config's `prevResult`). Errors name the field.
    pub fn parse(v: &Value) -> Result<PrevResult> {
        let obj = v
            .as_object()
            .ok_or_else(|| CniError::invalid_config("prevResult: must be a JSON object"))?;
        let n_ifaces = match obj.get("interfaces") {
            None | Some(Value::Null) => 0,
            Some(Value::Array(a)) => {
                for (i, iface) in a.iter().enumerate() {
                    if !iface.get("name").is_some_and(Value::is_string) {
                        return Err(CniError::invalid_config(format!(
                            "prevResult.interfaces[{i}].name: missing or not a string"
                        )));
                    }
                }
                a.len()
            }
            Some(_) => {
                return Err(CniError::invalid_config(
                    "prevResult.interfaces: must be an array",
                ))
            }
        };
        match obj.get("ips") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for (i, ip) in a.iter().enumerate() {
                    let addr = ip.get("address").and_then(Value::as_str).ok_or_else(|| {
                        CniError::invalid_config(format!(
                            "prevResult.ips[{i}].address: missing or not a string"
                        ))
                    })?;
                    addr.parse::<ipnet::IpNet>().map_err(|_| {
                        CniError::invalid_config(format!(
                            "prevResult.ips[{i}].address: \"{addr}\" is not an address/prefix"
                        ))
                    })?;
                    if let Some(idx) = ip.get("interface") {
                        let ok = idx.as_u64().is_some_and(|n| (n as usize) < n_ifaces);
                        if !ok {
                            return Err(CniError::invalid_config(format!(
                                "prevResult.ips[{i}].interface: {idx} is not an index into interfaces"
                            )));
                        }
                    }
                }
            }
            Some(_) => return Err(CniError::invalid_config("prevResult.ips: must be an array")),
        }
        Ok(PrevResult(obj.clone()))
    }

    pub fn interfaces(&self) -> &[Value] {
        self.0
            .get("interfaces")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn ips(&self) -> &[Value] {
        self.0
            .get("ips")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Index of the interface named `name` in `sandbox`, if listed.
    pub fn find_interface(&self, name: &str, sandbox: &str) -> Option<usize> {
        self.interfaces().iter().position(|i| {
            i.get("name").and_then(Value::as_str) == Some(name)
                && i.get("sandbox").and_then(Value::as_str).unwrap_or("") == sandbox
        })
    }

    /// Addresses listed for interface index `idx`.
    pub fn ips_of(&self, idx: usize) -> Vec<String> {
        self.ips()
            .iter()
            .filter(|ip| ip.get("interface").and_then(Value::as_u64) == Some(idx as u64))
            .filter_map(|ip| ip.get("address").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    /// Appends an interface and one address on it; returns the interface index.
    pub fn push_attachment(&mut self, iface: &Interface, address: ipnet::IpNet) -> usize {
        let ifaces = self
            .0
            .entry("interfaces")
            .or_insert_with(|| Value::Array(vec![]));
        if !ifaces.is_array() {
            *ifaces = Value::Array(vec![]);
        }
        let list = ifaces.as_array_mut().expect("array");
        let mut obj = Map::new();
        obj.insert("name".into(), json!(iface.name));
        if !iface.mac.is_empty() {
            obj.insert("mac".into(), json!(iface.mac));
        }
        if !iface.sandbox.is_empty() {
            obj.insert("sandbox".into(), json!(iface.sandbox));
        }
        list.push(Value::Object(obj));
        let idx = list.len() - 1;
        let ips = self.0.entry("ips").or_insert_with(|| Value::Array(vec![]));
        if !ips.is_array() {
            *ips = Value::Array(vec![]);
        }
        ips.as_array_mut().expect("array").push(json!({
            "interface": idx,
            "address": address.to_string(),
        }));
        idx
    }

    /// The result as JSON in `version`'s layout.
    pub fn to_version(&self, version: Version) -> Value {
        let mut out = self.0.clone();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if let Some(Value::Array(ips)) = out.get_mut("ips") {
            for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
                if version.ips_have_version() {
                    if !ip.contains_key("version") {
                        let v = ip
                            .get("address")
                            .and_then(Value::as_str)
                            .and_then(|a| a.parse::<ipnet::IpNet>().ok())
                            .map(|n| match n.addr() {
                                IpAddr::V4(_) => "4",
                                IpAddr::V6(_) => "6",
                            });
                        if let Some(v) = v {
                            // keep the key order readable: version first, as the reference plugins write it
                            let rest = std::mem::take(ip);
                            ip.insert("version".into(), json!(v));
                            ip.extend(rest);
                        }
                    }
                } else {
                    ip.remove("version");
                }
            }
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptp_031() -> Value {
        json!({
            "cniVersion": "0.3.1",
            "interfaces": [
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "eth0", "mac": "11:22:33:44:55:66", "sandbox": "/var/run/netns/p"}
            ],
            "ips": [{"version": "4", "interface": 1, "address": "10.1.1.5/24", "gateway": "10.1.1.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        })
    }

    fn ros0() -> Interface {
        Interface {
            name: "ros0".into(),
            mac: "0e:2c:c0:a8:01:64".into(),
            sandbox: "/var/run/netns/p".into(),
        }
    }

    #[test]
    fn extends_in_every_version() {
        for v in Version::ALL {
            let mut prev = ptp_031();
            prev["cniVersion"] = json!(v.as_str());
            if !v.ips_have_version() {
                prev["ips"][0].as_object_mut().unwrap().remove("version");
            }
            let mut r = PrevResult::parse(&prev).unwrap();
            let idx = r.push_attachment(&ros0(), "192.168.1.100/24".parse().unwrap());
            assert_eq!(idx, 2);
            let out = r.to_version(v);
            assert_eq!(out["cniVersion"], v.as_str());
            assert_eq!(out["interfaces"][2]["name"], "ros0");
            assert_eq!(out["interfaces"][2]["sandbox"], "/var/run/netns/p");
            assert_eq!(out["ips"][1]["interface"], 2);
            assert_eq!(out["ips"][1]["address"], "192.168.1.100/24");
            for ip in out["ips"].as_array().unwrap() {
                assert_eq!(ip.get("version").is_some(), v.ips_have_version(), "{v}");
                if v.ips_have_version() {
                    assert_eq!(ip["version"], "4");
                }
            }
            // passthrough of everything else
            assert_eq!(out["routes"], prev["routes"]);
            assert_eq!(out["interfaces"][0], prev["interfaces"][0]);
        }
    }

    #[test]
    fn unknown_fields_survive() {
        let mut prev = ptp_031();
        prev["x-vendor"] = json!({"a": 1});
        let out = PrevResult::parse(&prev)
            .unwrap()
            .to_version(Version::V1_1_0);
        assert_eq!(out["x-vendor"]["a"], 1);
    }

    #[test]
    fn malformed_prev_results_name_the_field() {
        let cases = [
            (json!([]), "prevResult"),
            (json!({"interfaces": {}}), "prevResult.interfaces"),
            (json!({"interfaces": [{}]}), "prevResult.interfaces[0].name"),
            (
                json!({"ips": [{"address": "nope"}]}),
                "prevResult.ips[0].address",
            ),
            (
                json!({"interfaces": [], "ips": [{"address": "10.0.0.1/8", "interface": 3}]}),
                "prevResult.ips[0].interface",
            ),
        ];
        for (v, field) in cases {
            let e = PrevResult::parse(&v).unwrap_err();
            assert!(e.msg.starts_with(field), "{} vs {field}", e.msg);
        }
    }

    #[test]
    fn finds_interfaces_and_ips() {
        let r = PrevResult::parse(&ptp_031()).unwrap();
        assert_eq!(r.find_interface("eth0", "/var/run/netns/p"), Some(1));
        assert_eq!(r.find_interface("eth0", "/other"), None);
        assert_eq!(r.ips_of(1), vec!["10.1.1.5/24".to_string()]);
    }
}
