//! Reading YAML files people write (the daemons' configuration, kctl's config, storage
//! specs, `kctl apply` manifests) with errors they can act on: the file as the operator
//! named it, the line and column, the key's path (`storage.lvm.vgName`), and serde's
//! message in the file's own terms (`managed | install`, "a mapping") instead of Rust's
//! (`expected struct KctlConfig`, "a YAML tag").
//!
//! One mechanism for all of them: serde_yaml_ng gives the position of the YAML event a
//! failure happened at ([`serde_yaml_ng::Error::location`]) and serde_path_to_error the
//! key path ([`crate::resource::decode`]). A check that runs after decoding (a
//! [`crate::resource::FieldError`] naming `spec.target.flakeRev`) gets its line from
//! [`locate`], which walks the document to that key and stops there on purpose, so the
//! position again comes from serde_yaml_ng. Duplicate keys are found by decoding through
//! [`serde_yaml_ng::Value`] first (a plain `serde_json::Value` would keep the last one
//! silently) and placed on the second occurrence's line.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess};
use serde::{Deserialize, Deserializer};

/// A YAML file that did not decode: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct YamlError {
    /// The file as the operator named it (`<stdin>` for standard input).
    pub file: String,
    /// 1-based line and column, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The key path (`spec.strategy.batchSize`), empty for the document itself.
    pub path: String,
    /// What is wrong, in YAML terms.
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl YamlError {
    fn new(file: &str, path: String, message: String) -> YamlError {
        YamlError {
            file: file.to_string(),
            line: None,
            column: None,
            path,
            message,
        }
    }

    fn at(mut self, position: Option<(usize, usize)>) -> YamlError {
        if let Some((line, column)) = position {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }
}

/// `:LINE` for an error message's file name, empty when the line is not known.
pub fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

/// `bytes` as UTF-8 text; otherwise an error with the byte offset of the first bad byte.
pub fn text<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, YamlError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        let line = bytes[..offset].iter().filter(|b| **b == b'\n').count() + 1;
        let mut err = YamlError::new(
            file,
            String::new(),
            format!("invalid UTF-8 at byte offset {offset}: save the file as UTF-8"),
        );
        err.line = Some(line);
        err
    })
}

/// One YAML document of `text` decoded into `T`; `file` names it in errors.
pub fn from_str<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, YamlError> {
    check_duplicates(file, text, 0)?;
    decode_at(file, serde_yaml_ng::Deserializer::from_str(text))
}

/// [`text`] then [`from_str`]: a file read as bytes.
pub fn from_slice<T: DeserializeOwned>(file: &str, bytes: &[u8]) -> Result<T, YamlError> {
    from_str(file, text(file, bytes)?)
}

/// Every document of `text` (a `---` separated stream) as JSON values, empty documents
/// as `null`; a duplicate key or a syntax error is located.
pub fn documents(file: &str, text: &str) -> Result<Vec<serde_json::Value>, YamlError> {
    let mut out = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        check_duplicates(file, text, index)?;
        out.push(decode_at(file, document)?);
    }
    Ok(out)
}

/// The 1-based line and column of the value at `path` (`spec.disks[1].size`) in document
/// `index` of `text`; `None` when the path is not there.
pub fn locate(text: &str, index: usize, path: &str) -> Option<(usize, usize)> {
    let segments = parse_path(path);
    let document = serde_yaml_ng::Deserializer::from_str(text).nth(index)?;
    match (Walk {
        path: &segments,
        second: false,
    })
    .deserialize(document)
    {
        Err(err) if err.to_string().contains(FOUND) => position(&err),
        _ => None,
    }
}

/// Decodes with the key path and the position of the failure.
fn decode_at<'de, T: Deserialize<'de>>(
    file: &str,
    document: serde_yaml_ng::Deserializer<'de>,
) -> Result<T, YamlError> {
    serde_path_to_error::deserialize(document).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = err.into_inner();
        YamlError::new(
            file,
            path.clone(),
            in_yaml_terms(&bare_message(&inner, &path)),
        )
        .at(position(&inner))
    })
}

/// Decodes document `index` as a [`serde_yaml_ng::Value`], which refuses a key given
/// twice; the error names the key and the line of its second occurrence.
fn check_duplicates(file: &str, text: &str, index: usize) -> Result<(), YamlError> {
    let Some(document) = serde_yaml_ng::Deserializer::from_str(text).nth(index) else {
        return Ok(());
    };
    let Err(err) = serde_path_to_error::deserialize::<_, serde_yaml_ng::Value>(document) else {
        return Ok(());
    };
    let parent = err.path().to_string();
    let parent = if parent == "." { String::new() } else { parent };
    let inner = err.into_inner();
    let message = bare_message(&inner, &parent);
    // serde_yaml_ng: `duplicate entry with key "name"`.
    let Some(key) = message
        .split_once("duplicate entry with key ")
        .and_then(|(_, k)| serde_json::from_str::<String>(k.trim()).ok())
    else {
        // Not a duplicate (a syntax error, say): located where the parser stopped.
        return Err(YamlError::new(file, String::new(), message).at(position(&inner)));
    };
    let path = if parent.is_empty() {
        key.clone()
    } else {
        format!("{parent}.{key}")
    };
    let segments = parse_path(&path);
    let second = serde_yaml_ng::Deserializer::from_str(text)
        .nth(index)
        .and_then(|doc| {
            match (Walk {
                path: &segments,
                second: true,
            })
            .deserialize(doc)
            {
                Err(err) if err.to_string().contains(FOUND) => position(&err),
                _ => None,
            }
        });
    Err(YamlError::new(
        file,
        path,
        format!("the key `{key}` is given twice: keep one"),
    )
    .at(second.or_else(|| position(&inner))))
}

fn position(err: &serde_yaml_ng::Error) -> Option<(usize, usize)> {
    err.location().map(|l| (l.line(), l.column()))
}

/// serde_yaml_ng's message without what is shown in front of it instead, once: its own
/// ` at line L column C` and its `path: ` prefix (`path` is serde_path_to_error's, which
/// goes one key deeper for an unknown key).
fn bare_message(err: &serde_yaml_ng::Error, path: &str) -> String {
    let mut text = err.to_string();
    if let Some(l) = err.location() {
        text = text.replacen(
            &format!(" at line {} column {}", l.line(), l.column()),
            "",
            1,
        );
    }
    if let Some((prefix, rest)) = text.split_once(": ") {
        if !prefix.contains(' ') && !prefix.is_empty() && path.starts_with(prefix) {
            return rest.to_string();
        }
    }
    text
}

/// serde's messages name Rust types; say what the file should hold instead (also for a
/// document decoded from JSON after its YAML was read, as kctl apply does).
pub fn in_yaml_terms(message: &str) -> String {
    // `unknown variant `x`, expected `a` or `b`` / `expected one of `a`, `b`, `c``.
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        if let Some((given, expected)) = rest.split_once(", expected ") {
            let choices: Vec<&str> = expected
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|s| !s.is_empty())
                .collect();
            return format!(
                "unknown value {given}: use {}",
                if choices.is_empty() {
                    expected.to_string()
                } else {
                    choices.join(" | ")
                }
            );
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        if let Some((given, expected)) = rest.split_once(", expected ") {
            let keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            // Drop serde aliases that only respell a key (`batch_size` beside `batchSize`).
            let camel = |k: &str| {
                let mut out = String::new();
                let mut up = false;
                for c in k.chars() {
                    match (c, up) {
                        ('_', _) => up = true,
                        (c, true) => {
                            out.extend(c.to_uppercase());
                            up = false
                        }
                        (c, false) => out.push(c),
                    }
                }
                out
            };
            let keys: Vec<&str> = keys
                .iter()
                .copied()
                .filter(|k| !k.contains('_') || !keys.contains(&camel(k).as_str()))
                .collect();
            return format!(
                "unknown key {given}: the keys here are {}",
                if keys.is_empty() {
                    expected.to_string()
                } else {
                    keys.join(", ")
                }
            );
        }
        if let Some((given, _)) = rest.split_once(", there are no fields") {
            return format!("unknown key {given}: this mapping takes no keys");
        }
    }
    let mut text = message.to_string();
    // `expected struct KctlConfig` / `expected a map` / `expected enum Mode`.
    for (rust, yaml) in [
        ("expected struct ", "expected a mapping of keys"),
        ("expected enum ", "expected one of the listed values"),
    ] {
        if let Some(at) = text.find(rust) {
            let end = text[at + rust.len()..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(text.len(), |n| at + rust.len() + n);
            text.replace_range(at..end, yaml);
        }
    }
    text.replace("expected a map", "expected a mapping of keys")
        .replace("invalid type: map", "invalid type: a mapping")
        .replace("invalid type: sequence", "invalid type: a list")
        .replace("expected a sequence", "expected a list")
}

/// The marker [`Walk`] fails with when it reaches its target.
const FOUND: &str = "kcore-yaml-locate: here";

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// `spec.disks[1].size` to its segments.
fn parse_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Segment::Key(key.to_string()));
        }
        while let Some((n, after)) = rest.split_once(']') {
            if let Ok(n) = n.parse() {
                out.push(Segment::Index(n));
            }
            rest = after.trim_start_matches('[');
        }
    }
    out
}

/// Walks a document along `path` and fails with [`FOUND`] at the target value (with
/// `second`, at the target key's second occurrence), so serde_yaml_ng attaches that
/// value's position to the error.
struct Walk<'p> {
    path: &'p [Segment],
    second: bool,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Key(want), rest)) = self.path.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let mut seen = false;
        while let Some(key) = map.next_key::<serde_yaml_ng::Value>()? {
            let matches = key.as_str() == Some(want.as_str());
            if matches && rest.is_empty() && (!self.second || seen) {
                return map.next_value_seed(Walk {
                    path: &[],
                    second: false,
                });
            }
            if matches && !(self.second && rest.is_empty()) {
                return map.next_value_seed(Walk {
                    path: rest,
                    second: self.second,
                });
            }
            seen |= matches;
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Segment::Index(want), rest)) = self.path.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let mut i = 0;
        while seq
            .next_element_seed(Skip {
                walk: (i == *want).then_some(Walk {
                    path: rest,
                    second: self.second,
                }),
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    // Any scalar: the target when the path ends here; otherwise the path is not there.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

impl Walk<'_> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

/// A sequence element: walked when it is on the path, skipped otherwise.
struct Skip<'p> {
    walk: Option<Walk<'p>>,
}

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.walk {
            Some(walk) => walk.deserialize(deserializer),
            None => IgnoredAny::deserialize(deserializer).map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Mode {
        Managed,
        Install,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        vg_name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        node_id: String,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        lvm: Option<Inner>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }

    #[test]
    fn an_unknown_enum_value_lists_the_choices_with_its_line() {
        let err = from_str::<Config>("node.yaml", "nodeId: a\nmode: managd\n").unwrap_err();
        assert_eq!(err.path, "mode");
        assert_eq!(err.line, Some(2), "{err}");
        assert_eq!(
            err.to_string(),
            "node.yaml:2:7: mode: unknown value `managd`: use managed | install"
        );
    }

    #[test]
    fn a_wrong_shape_names_the_key_not_a_rust_type() {
        let err = from_str::<Config>("c.yaml", "- a\n- b\n").unwrap_err();
        assert!(!err.to_string().contains("Config"), "{err}");
        assert!(
            err.to_string().contains("expected a mapping of keys"),
            "{err}"
        );
        let err = from_str::<Config>("c.yaml", "nodeId: a\nlvm: 3\n").unwrap_err();
        assert_eq!(err.path, "lvm", "{err}");
        assert_eq!(err.line, Some(2), "{err}");
        assert!(!err.to_string().contains("Inner"), "{err}");
        let err = from_str::<Config>("c.yaml", "nodeId: a\nlvm:\n  vgNme: x\n").unwrap_err();
        assert_eq!(err.path, "lvm.vgNme", "{err}");
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("the keys here are vgName"), "{err}");
    }

    #[test]
    fn a_duplicate_key_gives_the_line_of_its_second_occurrence() {
        let text = "nodeId: a\nlabels:\n  rack: r1\n  tier: web\n  rack: r2\n";
        let err = from_str::<Config>("n.yaml", text).unwrap_err();
        assert_eq!(err.path, "labels.rack", "{err}");
        assert_eq!(err.line, Some(5), "{err}");
        assert!(err.message.contains("given twice"), "{err}");
        let err = from_str::<Config>("n.yaml", "nodeId: a\nnodeId: b\n").unwrap_err();
        assert_eq!((err.path.as_str(), err.line), ("nodeId", Some(2)), "{err}");
        // In a later document of a stream, the line counts from the top of the file.
        let err = documents("m.yaml", "a: 1\n---\nb: 1\nc: 2\nb: 3\n").unwrap_err();
        assert_eq!((err.path.as_str(), err.line), ("b", Some(5)), "{err}");
    }

    #[test]
    fn invalid_utf8_gives_the_byte_offset() {
        let err = from_slice::<Config>("n.yaml", b"nodeId: a\nx: \xff\n").unwrap_err();
        assert!(err.message.contains("byte offset 13"), "{err}");
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn a_syntax_error_is_located_once() {
        let err = from_str::<Config>("n.yaml", "nodeId: a\nmode: [managed\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        // Shown once, in front; the parser's context (where the list opened) stays.
        assert!(!err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn locate_finds_keys_and_list_items_across_documents() {
        let text = "kind: VM\n---\nkind: ClusterUpdate\nspec:\n  disks:\n    - size: 1\n    - size: 2\n  target:\n    flakeRev: abc\n";
        assert_eq!(locate(text, 1, "spec.target.flakeRev"), Some((9, 15)));
        assert_eq!(locate(text, 1, "spec.disks[1].size").map(|p| p.0), Some(7));
        assert_eq!(locate(text, 1, "spec.nothing"), None);
        assert_eq!(locate(text, 0, "kind").map(|p| p.0), Some(1));
    }
}
