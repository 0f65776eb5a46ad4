//! The documents `kctl apply -f` reads: each `-f FILE` holds one or several YAML
//! documents (separated by `---`), `-f -` reads stdin. Every document is parsed, its
//! `kind` dispatched and the whole object checked with kcore-api's
//! [`canonical_any`] (the decoder and validation the controller runs) before anything is
//! sent, so a typo in the third document leaves the first two unapplied. Errors name the
//! file, the document's number (from 1) and the field path.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use kcore_api::ErrorCode;
use kcore_api::resource::{Kind, ObjectError, canonical_any};

use crate::exit::Refused;

/// One checked document, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The file it came from, or `<stdin>`.
    pub source: String,
    /// Its place in that file, from 1 (empty documents are counted too, so the number
    /// is what an editor's document count says).
    pub index: usize,
    pub kind: Kind,
    pub name: String,
    /// The object in its canonical form (`{kind, metadata, spec}`, camelCase, sizes in
    /// bytes, defaults filled in); the controller decodes it again.
    pub body: serde_json::Value,
}

impl Document {
    /// `FILE document N`, for messages.
    pub fn origin(&self) -> String {
        format!("{} document {}", self.source, self.index)
    }

    /// `vm/web-1`, as kctl prints objects.
    pub fn label(&self) -> String {
        format!("{}/{}", self.kind.as_str().to_ascii_lowercase(), self.name)
    }
}

/// The text of every `-f` in order; `-` is stdin, read once.
pub fn read_sources(files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let stdin = Path::new("-");
    if files.iter().filter(|f| f.as_path() == stdin).count() > 1 {
        return Err(Refused::new(
            ErrorCode::BadFlags,
            "-f - appears more than once: stdin can be read only once",
        )
        .into());
    }
    files
        .iter()
        .map(|file| {
            if file.as_path() == stdin {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).map_err(|e| {
                    Refused::new(ErrorCode::UnreadableFile, format!("cannot read stdin: {e}"))
                })?;
                Ok(("<stdin>".to_string(), text))
            } else {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    Refused::new(
                        ErrorCode::UnreadableFile,
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                Ok((file.display().to_string(), text))
            }
        })
        .collect()
}

/// Splits `text` into documents and checks each one. Empty documents (a leading or
/// trailing `---`) are skipped; a source with no document at all is refused.
/// One document from a value (a parsed YAML document, or one kctl built from flags as
/// `kctl create vm` does), through kcore-api's dispatch and check, the ones the
/// controller's routes run: unknown or missing kinds, Node and Controller are refused
/// naming `kind`, fields with their path; the body sent is the canonical form it returns.
pub fn from_value(
    source: &str,
    index: usize,
    body: serde_json::Value,
) -> Result<Document, kcore_api::resource::ObjectError> {
    let (kind, body) = canonical_any(body)?;
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(Document {
        source: source.to_string(),
        index,
        kind,
        name,
        body,
    })
}

pub fn parse(source: &str, text: &str) -> Result<Vec<Document>, Refused> {
    // `FILE:LINE: document N: problem`: the line of the offending key when it is there.
    let refuse = |index: usize, path: &str, problem: String| {
        // A missing key: the document's first line.
        let line = kcore_api::yaml::locate(text, index - 1, path)
            .or_else(|| kcore_api::yaml::locate(text, index - 1, ""))
            .map(|p| p.0);
        Refused::new(
            ErrorCode::InvalidField,
            format!(
                "{source}{}: document {index}: {problem}",
                kcore_api::yaml::line_suffix(line)
            ),
        )
    };
    // Syntax errors and keys given twice, located (kcore_api::yaml).
    let bodies = kcore_api::yaml::documents(source, text)
        .map_err(|e| Refused::new(ErrorCode::InvalidField, e.to_string()))?;
    let mut documents = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let index = i + 1;
        if body.is_null() {
            continue;
        }
        if !body.is_object() {
            return Err(refuse(
                index,
                "",
                "(document): expected an object with kind, metadata and spec".into(),
            ));
        }
        // kcore-api's dispatch and check, the ones the controller's routes run: unknown
        // or missing kinds, Node and Controller are refused naming `kind`, fields with
        // their path; the body sent is the canonical form it returns.
        documents.push(from_value(source, index, body).map_err(|e| {
            let problem = match &e {
                ObjectError::Decode(d) if !d.path.is_empty() => {
                    format!("{}: {}", d.path, kcore_api::yaml::in_yaml_terms(&d.message))
                }
                _ => e.to_string(),
            };
            refuse(index, e.path(), problem)
        })?);
    }
    if documents.is_empty() {
        return Err(Refused::new(
            ErrorCode::InvalidField,
            format!("{source}: no documents (expected kind, metadata and spec)"),
        ));
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    fn update() -> String {
        format!(
            "kind: ClusterUpdate\nmetadata: {{name: release-1}}\nspec:\n  target: {{flakeRef: \"github:o/r\", flakeRev: \"{REV}\"}}\n  selector: {{allNodes: true}}\n  strategy: {{strategyType: one-at-a-time}}\n"
        )
    }

    const VM: &str = "kind: VM\nmetadata:\n  name: web-1\n  labels: {tier: web}\nspec: {storageBackend: lvm, storageSizeBytes: 10G}\n";

    #[test]
    fn several_documents_dispatch_on_their_kind() {
        // A leading `---` opens the first document; the empty one in between is counted.
        let text = format!("---\n{}---\n---\n{VM}---\n", update());
        let docs = parse("two.yaml", &text).unwrap();
        let seen: Vec<(usize, Kind, &str)> = docs
            .iter()
            .map(|d| (d.index, d.kind, d.name.as_str()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, Kind::ClusterUpdate, "release-1"),
                (3, Kind::Vm, "web-1")
            ]
        );
        assert_eq!(docs[1].label(), "vm/web-1");
        assert_eq!(docs[1].origin(), "two.yaml document 3");
        assert_eq!(docs[1].body["spec"]["storageSizeBytes"], 10u64 << 30);
    }

    #[test]
    fn an_unknown_kind_names_kind_the_file_and_the_document() {
        let text = format!("{VM}---\nkind: Pod\nmetadata: {{name: p}}\nspec: {{}}\n");
        let err = parse("pods.yaml", &text).unwrap_err();
        assert_eq!(err.code, "INVALID_FIELD");
        assert!(
            err.message
                .starts_with("pods.yaml:7: document 2: kind: \"Pod\" is not a kind of resource"),
            "{}",
            err.message
        );
        let err = parse("x.yaml", "metadata: {name: p}\n").unwrap_err();
        assert!(
            err.message
                .starts_with("x.yaml:1: document 1: kind: \"\" is missing"),
            "{}",
            err.message
        );
        for (kind, problem) in [
            ("Node", "is not applied"),
            ("Controller", "is not applied from a file"),
        ] {
            let err = parse(
                "k.yaml",
                &format!("kind: {kind}\nmetadata: {{name: a}}\nspec: {{}}\n"),
            )
            .unwrap_err();
            assert!(
                err.message
                    .starts_with(&format!("k.yaml:1: document 1: kind: \"{kind}\" {problem}")),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn an_unknown_field_names_its_path() {
        let text = update().replace("strategyType:", "batchSzie: 2, strategyType:");
        let err = parse("r.yaml", &text).unwrap_err();
        assert!(
            err.message
                .starts_with("r.yaml:6: document 1: spec.strategy.batchSzie: unknown key `batchSzie`: the keys here are strategyType, maxUnavailable, batchSize, canaryCount"),
            "{}",
            err.message
        );
        let err = parse("r.yaml", &VM.replace("lvm", "btrfs")).unwrap_err();
        assert!(
            err.message.starts_with(
                "r.yaml:5: document 1: spec.storageBackend: unknown value `btrfs`: use"
            ),
            "{}",
            err.message
        );
    }

    #[test]
    fn empty_input_and_non_objects_are_refused() {
        for empty in ["", "---\n", "# nothing\n"] {
            let err = parse("e.yaml", empty).unwrap_err();
            assert!(err.message.contains("no documents"), "{}", err.message);
        }
        let err = parse("l.yaml", "- a\n- b\n").unwrap_err();
        assert!(err.message.contains("(document)"), "{}", err.message);
        let err = parse("b.yaml", "kind: VM\n  bad: [\n").unwrap_err();
        assert!(
            err.message
                .starts_with("b.yaml:2:6: mapping values are not allowed"),
            "{}",
            err.message
        );
    }
}
