//! The serde form of the config: one field per key, typed as the JSON
//! carries it, and the check for unknown keys that runs before it.

use super::{invalid, Error, CNI_KEYS};
use crate::firewall::domains::MAX_DOMAIN;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

// The serde form: one field per key, typed as the JSON carries it. `null`
// is the same as a missing key everywhere.

/// Every key, as written. The CNI runtime's own keys are here so that the
/// plugin can read `cniVersion` and `name`; the agent's file refuses them
/// (`check_keys`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Raw {
    pub(super) cni_version: Option<String>,
    pub(super) name: Option<String>,
    #[serde(rename = "type")]
    _type: Option<Value>,
    #[serde(rename = "capabilities")]
    _capabilities: Option<Value>,
    #[serde(rename = "runtimeConfig")]
    _runtime_config: Option<Value>,
    #[serde(rename = "prevResult")]
    _prev_result: Option<Value>,
    #[serde(rename = "args")]
    _args: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    _valid_attachments: Option<Value>,
    #[serde(rename = "cni.dev/attachments")]
    _attachments: Option<Value>,

    pub(super) mode: Option<String>,
    pub(super) uplink: Option<String>,
    pub(super) subnet: Option<String>,
    pub(super) pod_range: Option<String>,
    pub(super) nodes: Option<BTreeMap<String, RawNode>>,
    pub(super) node_name: Option<String>,
    pub(super) if_name: Option<String>,
    pub(super) bridge: Option<String>,
    pub(super) data_dir: Option<String>,
    pub(super) namespaces: Option<Vec<String>>,
    pub(super) primary_multicast: Option<bool>,
    pub(super) log_file: Option<String>,
    pub(super) log_level: Option<String>,
    pub(super) log_format: Option<String>,
    pub(super) force: Option<bool>,
    pub(super) groups: Option<Vec<String>>,
    pub(super) metrics_address: Option<String>,
    pub(super) mfc_idle_seconds: Option<Whole>,
    pub(super) raise_ttl: Option<bool>,
    pub(super) fast_path: Option<bool>,
    pub(super) pod_discovery_rate: Option<Whole>,
    pub(super) pod_discovery_burst: Option<Whole>,
    pub(super) uplink_discovery_rate: Option<Whole>,
    pub(super) uplink_discovery_burst: Option<Whole>,
    pub(super) peers: Option<Vec<String>>,
    pub(super) lan_multicast: Option<bool>,
    pub(super) multicast_forwarder: Option<String>,
    pub(super) extra_multicast: Option<Vec<String>>,
    pub(super) relay_peer_rate: Option<Whole>,
    pub(super) relay_peer_burst: Option<Whole>,
    pub(super) relay_port: Option<Whole>,
    pub(super) zenoh_router: Option<Whole>,
    pub(super) zenoh_pod_router: Option<Vec<String>>,
    pub(super) domains: Option<DomainMap>,
    pub(super) default_domains: Option<DomainList>,
}

/// A node entry of the cluster form, object shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawNodeEntry {
    pub(super) pod_range: Option<String>,
    pub(super) mode: Option<String>,
    pub(super) uplink: Option<String>,
    pub(super) address: Option<String>,
    pub(super) subnet: Option<String>,
}

/// A node entry: a pool string (`"192.168.1.160/28"`) or an object.
#[derive(Debug)]
pub(super) enum RawNode {
    Pool(String),
    Entry(RawNodeEntry),
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawNode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a pool string or an object with podRange")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawNode, E> {
                Ok(RawNode::Pool(s.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawNode, A::Error> {
                RawNodeEntry::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(RawNode::Entry)
            }
        }
        d.deserialize_any(V)
    }
}

/// A whole number (0 or more); the bounds are checked by `validate`, which
/// names them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Whole(pub(super) u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Whole, E> {
                Ok(Whole(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Whole, E> {
                u64::try_from(n)
                    .map(Whole)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// `domains`: namespace -> the ROS domains its pods may use.
#[derive(Debug)]
pub(super) struct DomainMap(pub(super) Vec<(String, DomainList)>);

impl<'de> Deserialize<'de> for DomainMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DomainMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an object mapping namespaces to lists of ROS domain IDs, e.g. {\"team-a\": [0]}",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<DomainMap, A::Error> {
                let mut out = vec![];
                while let Some(e) = m.next_entry::<String, DomainList>()? {
                    out.push(e);
                }
                Ok(DomainMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A list of ROS domain IDs (0 to MAX_DOMAIN), sorted, without repeats.
#[derive(Debug)]
pub(super) struct DomainList(pub(super) Vec<u16>);

impl<'de> Deserialize<'de> for DomainList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DomainList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of ROS domain IDs (0 to {MAX_DOMAIN})")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<DomainList, A::Error> {
                let mut out = vec![];
                while let Some(DomainId(d)) = s.next_element()? {
                    out.push(d);
                }
                out.sort_unstable();
                out.dedup();
                Ok(DomainList(out))
            }
        }
        d.deserialize_seq(V)
    }
}

struct DomainId(u16);

impl<'de> Deserialize<'de> for DomainId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DomainId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a ROS domain ID (a whole number from 0 to {MAX_DOMAIN})")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<DomainId, E> {
                u16::try_from(n)
                    .ok()
                    .filter(|d| *d <= MAX_DOMAIN)
                    .map(DomainId)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<DomainId, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(n), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The names serde accepts for `T` (what `deny_unknown_fields` allows),
/// read from the derived impl itself, so that the list of known keys is the
/// struct and nothing else. Hand-written: serde has no public way to ask.
fn fields_of<T: de::DeserializeOwned>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Fields(&'static [&'static str]);
    impl fmt::Display for Fields {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("fields")
        }
    }
    impl std::error::Error for Fields {}
    impl de::Error for Fields {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Fields(&[])
        }
    }
    struct Probe;
    impl<'de> Deserializer<'de> for Probe {
        type Error = Fields;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Fields(f)) => f,
        Ok(_) => &[],
    }
}

/// The key of ours closest to an unknown one: the same but for case, or
/// at most two edits away (`podRnage`, `podrange` -> `podRange`).
fn did_you_mean(key: &str, ours: &[&'static str]) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    ours.iter()
        .map(|k| {
            (
                strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Unknown keys, before any value is looked at (so a typo is reported as
/// such even when other values are wrong too): at the top level, and in
/// object-shaped node entries.
pub(super) fn check_keys(m: &serde_json::Map<String, Value>, plugin: bool) -> Result<(), Error> {
    let all = fields_of::<Raw>();
    let ours: Vec<&'static str> = all
        .iter()
        .copied()
        .filter(|k| !CNI_KEYS.contains(k))
        .collect();
    for key in m.keys() {
        let known = ours.contains(&key.as_str()) || (plugin && CNI_KEYS.contains(&key.as_str()));
        if !known {
            return Err(Error::UnknownKey {
                key: key.clone(),
                did_you_mean: did_you_mean(key, &ours),
            });
        }
    }
    let entry_keys = fields_of::<RawNodeEntry>();
    for (name, entry) in m
        .get("nodes")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        for k in entry.as_object().into_iter().flat_map(|o| o.keys()) {
            if !entry_keys.contains(&k.as_str()) {
                return Err(Error::UnknownNodeKey {
                    key: format!("nodes.{name}.{k}"),
                    expected: entry_keys.join(", "),
                });
            }
        }
    }
    Ok(())
}

/// Reads the serde form; a value of the wrong type names its path
/// (`peers[1]`, `nodes.robot-1.address`).
pub(super) fn read(v: &Value) -> Result<Raw, Error> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let mut field = String::new();
        for seg in e.path() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => field += &format!("[{index}]"),
                serde_path_to_error::Segment::Map { key } if field.is_empty() => field += key,
                serde_path_to_error::Segment::Map { key } => field += &format!(".{key}"),
                _ => {}
            }
        }
        if field.is_empty() {
            field = "config".into();
        }
        invalid(field, e.into_inner())
    })
}
