//! Conflist surgery on the file's own bytes.
//!
//! The entry is inserted, updated and removed as text: every byte outside the
//! `ros2-cni` element stays exactly as its owner wrote it (indentation, key
//! order, number formatting, escapes), so removing the entry gives back the
//! original bytes. The JSON is parsed with serde_json first (it must be valid,
//! with a non-empty `plugins` list of objects that each have a `type`); a
//! small scanner then finds the byte spans of the `plugins` elements.

use super::InstallError;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The `type` of our entry.
pub const PLUGIN_TYPE: &str = "ros2-cni";

/// The extensions libcni's `ConfFiles` accepts (what containerd and CRI-O pass).
pub const CONF_EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

/// A parsed conflist and where its `plugins` elements are in the text.
#[derive(Debug, Clone)]
pub struct Conflist {
    pub text: String,
    pub value: Map<String, Value>,
    /// Byte spans `[start, end)` of the elements of `plugins`, in order.
    elems: Vec<(usize, usize)>,
    /// Position of the `[` of `plugins`.
    open: usize,
}

/// What [`Conflist::with_entry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The entry was already there with the same settings.
    Unchanged,
    /// The entry was appended to `plugins`.
    Inserted,
    /// An existing entry was replaced in place (settings changed, or duplicates removed).
    Updated,
}

impl Conflist {
    /// Parses `bytes` as a conflist (`file` is only used in messages).
    pub fn parse(bytes: &[u8], file: &Path) -> Result<Conflist, InstallError> {
        let refuse = |what: String| InstallError::Refused {
            file: file.to_path_buf(),
            what,
            hint: String::new(),
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| refuse(format!("it is not UTF-8 text ({e})")))?
            .to_owned();
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| refuse(format!("it is not valid JSON ({e})")))?;
        let Value::Object(value) = value else {
            return Err(refuse("its top level is not a JSON object".into()));
        };
        match value.get("plugins") {
            Some(Value::Array(list)) => {
                if list.is_empty() {
                    return Err(refuse("its \"plugins\" list is empty: there is no primary plugin to chain after".into()));
                }
                for (i, p) in list.iter().enumerate() {
                    if p.get("type").and_then(Value::as_str).is_none() {
                        return Err(refuse(format!(
                            "plugins[{i}] is not an object with a string \"type\""
                        )));
                    }
                }
            }
            Some(_) => return Err(refuse("its \"plugins\" is not a list".into())),
            None if value.contains_key("type") => {
                return Err(refuse(
                    "it is a single-plugin config (a \"type\" and no \"plugins\" list) although it is named .conflist; containerd cannot load it either".into(),
                ))
            }
            None => return Err(refuse("it has no \"plugins\" list".into())),
        }
        let (open, elems) = plugins_spans(&text).ok_or_else(|| {
            refuse(
                "its \"plugins\" list could not be located in the text (please report this file)"
                    .into(),
            )
        })?;
        let n = value["plugins"].as_array().map_or(0, Vec::len);
        if elems.len() != n {
            return Err(refuse(format!(
                "its text has {} plugins but the JSON {n} (duplicate \"plugins\" keys?)",
                elems.len()
            )));
        }
        Ok(Conflist {
            text,
            value,
            elems,
            open,
        })
    }

    pub fn plugins(&self) -> &[Value] {
        self.value["plugins"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The `type` of each plugin, in order.
    pub fn types(&self) -> Vec<&str> {
        self.plugins()
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
            .collect()
    }

    /// Indexes of our entries.
    pub fn ours(&self) -> Vec<usize> {
        self.types()
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == PLUGIN_TYPE)
            .map(|(i, _)| i)
            .collect()
    }

    pub fn cni_version(&self) -> Option<&str> {
        self.value.get("cniVersion").and_then(Value::as_str)
    }

    /// The text with exactly one entry equal to `entry`: appended at the end
    /// of `plugins` if there was none, replaced in place if it differed,
    /// duplicates removed.
    pub fn with_entry(&self, entry: &Map<String, Value>) -> (String, Change) {
        let ours = self.ours();
        let Some((&first, extra)) = ours.split_first() else {
            return (self.insert_text(entry), Change::Inserted);
        };
        let same = self.plugins()[first].as_object() == Some(entry);
        if same && extra.is_empty() {
            return (self.text.clone(), Change::Unchanged);
        }
        // remove duplicates from the back so earlier spans stay valid
        let mut text = self.text.clone();
        for &i in extra.iter().rev() {
            let (a, b) = self.removal_span(i);
            text.replace_range(a..b, "");
        }
        if !same {
            let (a, b) = self.elems[first];
            let rendered = render(entry, &self.indent_of(first), &self.unit());
            text.replace_range(a..b, &rendered);
        }
        (text, Change::Updated)
    }

    /// The text with every entry of ours removed (`None` if there is none).
    pub fn without_entry(&self) -> Option<String> {
        let ours = self.ours();
        if ours.is_empty() {
            return None;
        }
        let mut text = self.text.clone();
        // from the back, and never two spans that share a separator
        let mut removed = Vec::new();
        for &i in ours.iter().rev() {
            let (a, b) = self.removal_span_excluding(i, &removed);
            text.replace_range(a..b, "");
            removed.push(i);
        }
        Some(text)
    }

    fn insert_text(&self, entry: &Map<String, Value>) -> String {
        let last = self.elems.len() - 1;
        let (_, end) = self.elems[last];
        let pretty = self.is_pretty();
        let sep = if pretty {
            format!("\n{}", self.indent_of(last))
        } else if self.elems.len() > 1 {
            // copy what follows the comma between the last two elements
            let (_, prev_end) = self.elems[last - 1];
            let between = &self.text[prev_end..self.elems[last].0];
            between.trim_start().trim_start_matches(',').to_owned()
        } else {
            String::new()
        };
        let rendered = if pretty {
            render(entry, &self.indent_of(last), &self.unit())
        } else {
            Value::Object(entry.clone()).to_string()
        };
        let mut text = String::with_capacity(self.text.len() + rendered.len() + 8);
        text.push_str(&self.text[..end]);
        text.push(',');
        text.push_str(&sep);
        text.push_str(&rendered);
        text.push_str(&self.text[end..]);
        text
    }

    /// Whether the plugins list is laid out one element per line.
    fn is_pretty(&self) -> bool {
        self.text[self.open..self.elems[0].0].contains('\n')
    }

    /// The whitespace before element `i` on its line ("" if it is not at the
    /// start of a line).
    fn indent_of(&self, i: usize) -> String {
        let start = self.elems[i].0;
        let line_start = self.text[..start].rfind('\n').map_or(0, |p| p + 1);
        let ws = &self.text[line_start..start];
        if ws.chars().all(|c| c == ' ' || c == '\t') {
            ws.to_owned()
        } else {
            String::new()
        }
    }

    /// The file's indentation step: the indentation of the first key inside
    /// the first plugin minus that plugin's own (two spaces if unclear).
    fn unit(&self) -> String {
        let (a, b) = self.elems[0];
        let inner = &self.text[a..b];
        let base = self.indent_of(0);
        if let Some(nl) = inner.find('\n') {
            let line = &inner[nl + 1..];
            let ws: String = line
                .chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect();
            if let Some(step) = ws.strip_prefix(base.as_str()) {
                if !step.is_empty() {
                    return step.to_owned();
                }
            }
        }
        "  ".to_owned()
    }

    /// The span to cut to remove element `i` with one separator.
    fn removal_span(&self, i: usize) -> (usize, usize) {
        self.removal_span_excluding(i, &[])
    }

    fn removal_span_excluding(&self, i: usize, removed: &[usize]) -> (usize, usize) {
        // the nearest preceding element still present
        let prev = (0..i).rev().find(|j| !removed.contains(j));
        let next = (i + 1..self.elems.len()).find(|j| !removed.contains(j));
        match (prev, next) {
            (Some(p), _) => (self.elems[p].1, self.elems[i].1),
            (None, Some(n)) => (self.elems[i].0, self.elems[n].0),
            (None, None) => self.elems[i],
        }
    }
}

/// Renders `entry` pretty-printed with `unit` per level, its continuation
/// lines indented by `indent` (the first line is not indented).
fn render(entry: &Map<String, Value>, indent: &str, unit: &str) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(unit.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    entry
        .serialize(&mut ser)
        .expect("serializing a JSON map cannot fail");
    let s = String::from_utf8(buf).expect("serde_json writes UTF-8");
    s.lines()
        .enumerate()
        .map(|(n, l)| {
            if n == 0 {
                l.to_owned()
            } else {
                format!("{indent}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Finds the top-level `"plugins"` array in valid JSON text: the position of
/// its `[` and the spans of its elements. The last `plugins` key wins (as in
/// serde_json and Go's encoding/json).
fn plugins_spans(text: &str) -> Option<(usize, Vec<(usize, usize)>)> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut found = None;
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b'}' => break,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let kend = skip_string(b, i)?;
        let key: String = serde_json::from_str(&text[i..kend]).ok()?;
        i = skip_ws(b, kend);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let vend = skip_value(b, i)?;
        if key == "plugins" && b[i] == b'[' {
            found = Some((i, array_elems(b, i)?));
        }
        i = vend;
    }
    found
}

fn array_elems(b: &[u8], open: usize) -> Option<Vec<(usize, usize)>> {
    let mut i = open + 1;
    let mut out = Vec::new();
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b']' => return Some(out),
            b',' => i += 1,
            _ => {
                let end = skip_value(b, i)?;
                out.push((i, end));
                i = end;
            }
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `b[i]` is `"`: returns the position after the closing quote.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Returns the position just after the value starting at `b[i]`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// The files libcni's `ConfFiles` would return for `dir`, in the order
/// containerd sorts them (byte-wise): regular files and symlinks whose
/// extension is `.conf`, `.conflist` or `.json`. Hidden files count too.
pub fn conf_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            continue;
        }
        let p = e.path();
        let ext_ok = p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| CONF_EXTENSIONS.contains(&x));
        if ext_ok {
            out.push(p);
        }
    }
    out.sort_by(|a, b| {
        a.file_name()
            .map(|n| n.as_bytes())
            .cmp(&b.file_name().map(|n| n.as_bytes()))
    });
    Ok(out)
}

/// Whether a plugin config or file name is Multus'.
pub fn is_multus(file: &Path, value: Option<&Value>) -> bool {
    let name_says = file
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().contains("multus"));
    let type_is = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("multus"))
    };
    let value_says = value.is_some_and(|v| {
        type_is(v)
            || v.get("plugins")
                .and_then(Value::as_array)
                .is_some_and(|l| l.iter().any(type_is))
    });
    name_says || value_says
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub const CALICO: &str = r#"{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "calico",
      "log_level": "info",
      "mtu": 1440,
      "ipam": {
        "type": "calico-ipam"
      },
      "kubernetes": {
        "kubeconfig": "/var/snap/microk8s/current/args/cni-network/calico-kubeconfig"
      }
    },
    {
      "type": "portmap",
      "snat": true,
      "capabilities": {"portMappings": true}
    },
    {
      "type": "bandwidth",
      "capabilities": {
        "bandwidth": true
      }
    }
  ]
}
"#;

    fn entry(range: &str) -> Map<String, Value> {
        json!({"type": "ros2-cni",
               "capabilities": {"io.kubernetes.cri.pod-annotations": true},
               "subnet": "192.168.1.0/24", "podRange": range})
        .as_object()
        .unwrap()
        .clone()
    }

    fn parse(s: &str) -> Conflist {
        Conflist::parse(s.as_bytes(), Path::new("10-calico.conflist")).unwrap()
    }

    #[test]
    fn insert_appends_one_entry_at_the_end_and_keeps_the_rest() {
        let c = parse(CALICO);
        let (text, change) = c.with_entry(&entry("192.168.1.160/28"));
        assert_eq!(change, Change::Inserted);
        let after = parse(&text);
        assert_eq!(
            after.types(),
            vec!["calico", "portmap", "bandwidth", "ros2-cni"]
        );
        assert_eq!(after.cni_version(), Some("0.3.1"));
        // top-level key order and the first three plugins are untouched
        let keys: Vec<_> = after.value.keys().cloned().collect();
        assert_eq!(keys, vec!["name", "cniVersion", "plugins"]);
        let cut = CALICO.rfind('}').unwrap();
        let last_plugin_end = CALICO[..cut].rfind('}').unwrap() + 1;
        assert!(text.starts_with(&CALICO[..last_plugin_end]));
        assert!(text.ends_with(&CALICO[last_plugin_end..]));
        // the entry is indented like its neighbours
        assert!(
            text.contains("    },\n    {\n      \"type\": \"ros2-cni\",\n      \"capabilities\": {\n        \"io.kubernetes.cri.pod-annotations\": true\n      },"),
            "{text}"
        );
        // the entry's own key order is kept
        let e = &after.plugins()[3];
        let ek: Vec<_> = e.as_object().unwrap().keys().cloned().collect();
        assert_eq!(ek, vec!["type", "capabilities", "subnet", "podRange"]);
    }

    #[test]
    fn insert_twice_is_one_entry_and_remove_restores_bytes() {
        let c = parse(CALICO);
        let (once, _) = c.with_entry(&entry("192.168.1.160/28"));
        let (twice, change) = parse(&once).with_entry(&entry("192.168.1.160/28"));
        assert_eq!(change, Change::Unchanged);
        assert_eq!(once, twice);
        assert_eq!(parse(&twice).ours(), vec![3]);
        let removed = parse(&twice).without_entry().unwrap();
        assert_eq!(removed, CALICO);
        assert!(parse(CALICO).without_entry().is_none());
    }

    #[test]
    fn changed_settings_update_in_place() {
        let (once, _) = parse(CALICO).with_entry(&entry("192.168.1.160/28"));
        let (upd, change) = parse(&once).with_entry(&entry("192.168.1.176/28"));
        assert_eq!(change, Change::Updated);
        let p = parse(&upd);
        assert_eq!(p.ours(), vec![3]);
        assert_eq!(p.plugins()[3]["podRange"], "192.168.1.176/28");
        assert_eq!(p.without_entry().unwrap(), CALICO);
    }

    #[test]
    fn entry_not_last_is_updated_where_it_is_and_duplicates_go() {
        // someone chained another plugin after ours, and a second copy of ours
        let text = CALICO.replacen(
            "    {\n      \"type\": \"portmap\"",
            "    {\"type\": \"ros2-cni\", \"subnet\": \"192.168.1.0/24\", \"podRange\": \"192.168.1.0/28\"},\n    {\n      \"type\": \"portmap\"",
            1,
        );
        let (with_dup, _) = parse(&text).with_entry(&entry("192.168.1.0/28"));
        // with_entry on a file that already has one updates it, not appends
        let p = parse(&with_dup);
        assert_eq!(
            p.types(),
            vec!["calico", "ros2-cni", "portmap", "bandwidth"]
        );
        assert_eq!(p.plugins()[1], Value::Object(entry("192.168.1.0/28")));
        // two copies: the first is kept, the other removed
        let two = with_dup.replacen("  ]\n}", "  ,{\"type\": \"ros2-cni\"}\n  ]\n}", 1);
        let p2 = parse(&two);
        assert_eq!(p2.ours(), vec![1, 4]);
        let (one, change) = p2.with_entry(&entry("192.168.1.0/28"));
        assert_eq!(change, Change::Updated);
        assert_eq!(parse(&one).ours(), vec![1]);
        assert_eq!(parse(&one).types().len(), 4);
        // removing every copy leaves valid JSON with the others in order
        let gone = parse(&two).without_entry().unwrap();
        assert_eq!(parse(&gone).types(), vec!["calico", "portmap", "bandwidth"]);
    }

    #[test]
    fn compact_files_stay_compact() {
        let text =
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"portmap"}]}"#;
        let (out, _) = parse(text).with_entry(&entry("192.168.1.160/28"));
        assert!(!out.contains('\n'), "{out}");
        assert!(out.starts_with(r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"portmap"},{"type":"ros2-cni""#), "{out}");
        assert_eq!(parse(&out).without_entry().unwrap(), text);
    }

    #[test]
    fn tabs_and_four_spaces_are_followed() {
        let text = "{\n\t\"cniVersion\": \"0.4.0\",\n\t\"name\": \"n\",\n\t\"plugins\": [\n\t\t{\n\t\t\t\"type\": \"ptp\"\n\t\t}\n\t]\n}";
        let (out, _) = parse(text).with_entry(&entry("192.168.1.160/28"));
        assert!(out.contains("\t\t},\n\t\t{\n\t\t\t\"type\": \"ros2-cni\",\n\t\t\t\"capabilities\": {\n\t\t\t\t\"io"), "{out:?}");
        assert_eq!(parse(&out).without_entry().unwrap(), text);
        let four = "{\n    \"cniVersion\": \"0.4.0\",\n    \"plugins\": [\n        {\n            \"type\": \"ptp\"\n        }\n    ]\n}\n";
        let (out, _) = parse(four).with_entry(&entry("192.168.1.160/28"));
        assert!(
            out.contains("        },\n        {\n            \"type\": \"ros2-cni\","),
            "{out}"
        );
    }

    #[test]
    fn strings_with_brackets_and_escapes_do_not_confuse_the_scanner() {
        let text =
            r#"{"a": "]}\"[{", "plugins": [{"type": "x", "s": "\\\"]"}], "b": {"plugins": []}}"#;
        let c = parse(text);
        assert_eq!(c.types(), vec!["x"]);
        let (out, _) = c.with_entry(&entry("192.168.1.160/28"));
        let p = parse(&out);
        assert_eq!(p.types(), vec!["x", "ros2-cni"]);
        assert_eq!(p.value["b"], json!({"plugins": []}));
        assert_eq!(p.without_entry().unwrap(), text);
    }

    #[test]
    fn refusals_say_what_was_found() {
        let cases = [
            ("{\"plugins\": [", "not valid JSON"),
            ("[1]", "not a JSON object"),
            ("{\"plugins\": []}", "empty"),
            ("{\"plugins\": {}}", "not a list"),
            ("{\"plugins\": [{\"x\": 1}]}", "plugins[0]"),
            ("{\"type\": \"bridge\"}", "single-plugin"),
            ("{\"name\": \"n\"}", "no \"plugins\""),
        ];
        for (text, want) in cases {
            let e = Conflist::parse(text.as_bytes(), Path::new("f.conflist")).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(want) && msg.contains("f.conflist"),
                "{text}: {msg}"
            );
        }
        let e = Conflist::parse(b"\xff\xfe", Path::new("f.conflist")).unwrap_err();
        assert!(e.to_string().contains("UTF-8"));
    }

    #[test]
    fn conf_files_sort_like_libcni() {
        let d = crate::install::tests::TempDir::new("conffiles");
        for n in [
            "10-calico.conflist",
            "05-x.json",
            "00-multus.conf",
            "cni.yaml",
            "calico-kubeconfig",
            ".hidden.conflist",
            "Z.conf",
            "10-calico.conflist.orig",
        ] {
            std::fs::write(d.path().join(n), "{}").unwrap();
        }
        std::fs::create_dir(d.path().join("00-dir.conf")).unwrap();
        let names: Vec<_> = conf_files(d.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            vec![
                ".hidden.conflist",
                "00-multus.conf",
                "05-x.json",
                "10-calico.conflist",
                "Z.conf"
            ]
        );
    }

    #[test]
    fn multus_is_recognised() {
        assert!(is_multus(Path::new("00-multus.conf"), None));
        assert!(is_multus(
            Path::new("00-a.conf"),
            Some(&json!({"type": "multus-shim"}))
        ));
        assert!(is_multus(
            Path::new("00-a.conflist"),
            Some(&json!({"plugins": [{"type": "multus"}]}))
        ));
        assert!(!is_multus(
            Path::new("10-calico.conflist"),
            Some(&json!({"plugins": [{"type": "calico"}]}))
        ));
    }
}
