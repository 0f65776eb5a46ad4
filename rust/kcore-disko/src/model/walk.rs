//! The walker that every disko type's checker uses: option-path problems, known and
//! required options, typed reads of strings and attribute sets, and the small helpers for
//! paths and hints (`attr_path`, "did you mean").

use serde_json::{Map, Value};

use crate::Problem;

/// Shell hooks every disko sub-type accepts (`diskoLib.mkSubType`).
const HOOKS: [&str; 6] = [
    "preCreateHook",
    "postCreateHook",
    "preMountHook",
    "postMountHook",
    "preUnmountHook",
    "postUnmountHook",
];

/// Options every content type has (disko's `type` tag and the `device` its parent passes).
const COMMON: [&str; 2] = ["type", "device"];

/// A content type's known options: the common ones plus its own.
pub(super) fn content_options(extra: &[&'static str]) -> Vec<&'static str> {
    COMMON.iter().chain(extra).copied().collect()
}

/// Where content may appear: partitions cannot hold partition tables.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Device,
    Partition,
}

/// Collects every problem of one walk, in the order they are found.
pub(super) struct Walker {
    pub(super) problems: Vec<Problem>,
}

impl Walker {
    pub(super) fn err(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Check that `obj` has only `known` keys and all `required` ones.
    pub(super) fn keys(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        what: &str,
        known: &[&str],
        required: &[&str],
    ) {
        for key in obj.keys() {
            if !known.contains(&key.as_str()) && !HOOKS.contains(&key.as_str()) {
                let hint = closest(key, known)
                    .map(|k| format!(" (did you mean {k:?}?)"))
                    .unwrap_or_default();
                self.err(
                    &format!("{path}.{key}"),
                    format!(
                        "{what} has no option {key:?}{hint}: known options are {}",
                        known.join(", ")
                    ),
                );
            }
        }
        for key in required {
            if obj.get(*key).is_none_or(Value::is_null) {
                self.err(
                    &format!("{path}.{key}"),
                    format!("{what} needs option {key:?}: set it"),
                );
            }
        }
    }

    pub(super) fn obj<'a>(
        &mut self,
        v: &'a Value,
        path: &str,
        what: &str,
    ) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.err(
                    path,
                    format!("{what} must be an attribute set, got {}", kind(other)),
                );
                None
            }
        }
    }

    pub(super) fn string(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.err(
                    &format!("{path}.{key}"),
                    format!("must be a string, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// A file the create script reads (`passwordFile`, `keyFile`, `settings.keyFile`): it
    /// must be absolute, because disko's script runs from whatever directory the operator
    /// happens to be in (disko's own types only check `passwordFile`, at level 3).
    pub(super) fn absolute_file(&mut self, obj: &Map<String, Value>, key: &str, path: &str) {
        if let Some(file) = self.string(obj, key, path)
            && !file.starts_with('/')
        {
            self.err(
                &format!("{path}.{key}"),
                format!(
                    "{file:?} is not an absolute path: disko's create script reads it from the directory it is started in; write the full path, e.g. \"/tmp/{}\"",
                    file.rsplit('/').next().unwrap_or("secret.key")
                ),
            );
        }
    }

    /// ZFS properties (`options`, `rootFsOptions`): every value must be a string, as zfs
    /// reads `-o name=value` (disko's types say `attrsOf str`, at level 3 only).
    pub(super) fn zfs_properties(&mut self, obj: &Map<String, Value>, key: &str, path: &str) {
        let Some(v) = obj.get(key) else { return };
        let Some(props) = self.obj(v, &format!("{path}.{key}"), key) else {
            return;
        };
        for (name, value) in props {
            let fix = match value {
                Value::String(_) => continue,
                Value::Bool(true) => "write \"on\"".to_string(),
                Value::Bool(false) => "write \"off\"".to_string(),
                Value::Number(n) => format!("write \"{n}\""),
                _ => "write the property value as a string".to_string(),
            };
            self.err(
                &format!("{path}.{key}.{}", attr_path(name)),
                format!(
                    "a ZFS property must be a string, got {}: zfs takes -o {name}=VALUE; {fix}",
                    kind(value)
                ),
            );
        }
    }

    /// The entries of attribute set `key` as (name, value, option path).
    pub(super) fn map<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Vec<(String, &'a Value, String)> {
        match obj.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), v, format!("{path}.{key}.{}", attr_path(k))))
                .collect(),
            Some(other) => {
                self.err(
                    &format!("{path}.{key}"),
                    format!("must be an attribute set, got {}", kind(other)),
                );
                Vec::new()
            }
        }
    }

    /// The `type` of a top-level device, which defaults to the collection's own type.
    pub(super) fn top_type(&mut self, obj: &Map<String, Value>, path: &str, expected: &str) {
        match obj.get("type") {
            None => {}
            Some(Value::String(t)) if t == expected => {}
            Some(other) => self.err(
                &format!("{path}.type"),
                format!("must be {expected:?} here, got {other}"),
            ),
        }
    }
}

/// An attribute name as it appears in an option path: bare when it is a plain identifier,
/// quoted otherwise (`partitions."my part"`).
pub fn attr_path(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_'-".contains(c));
    if plain {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// What a JSON value is, as a problem message says it.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an attribute set",
    }
}

/// The known name closest to a misspelt one (edit distance at most 2).
pub(super) fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
