//! Validation level 1: Nix syntax, checked with rnix without evaluating anything.
//! Errors carry `file:line:column` (1-based, columns in characters).

use rnix::parser::ParseError;

/// One syntax error at a position in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyntaxError {
    /// The file name as given by the caller (used only for messages).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What the parser expected or found.
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// 1-based (line, column) of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Parse `text` (from `file`) and return its syntax errors, first one first. Empty: valid.
/// Errors with the same message are folded into the first (which then names how many more
/// and where), and at most [`crate::MAX_REPORTED`] are returned, the last counting the rest.
pub fn check(file: &str, text: &str) -> Vec<SyntaxError> {
    let parse = rnix::Root::parse(text);
    let mut errors: Vec<SyntaxError> = parse
        .errors()
        .iter()
        .map(|err| {
            let (offset, message) = describe(err, text);
            let (line, column) = line_column(text, offset);
            SyntaxError {
                file: file.to_string(),
                line,
                column,
                message,
            }
        })
        .collect();
    errors.sort_by_key(|e| (e.line, e.column));
    errors.dedup();
    crate::fold_repeats(
        errors,
        crate::MAX_REPORTED,
        |e| &mut e.message,
        |e| format!("{}:{}", e.line, e.column),
        |rest, first| SyntaxError {
            message: format!(
                "{rest} more syntax errors not shown (from here on); fix the ones above first"
            ),
            ..first.clone()
        },
    )
}

fn describe(err: &ParseError, text: &str) -> (usize, String) {
    let eof = text.len();
    let kinds = |k: &[rnix::SyntaxKind]| {
        k.iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match err {
        ParseError::Unexpected(r) => (
            r.start().into(),
            format!("unexpected {:?}", snippet(text, r)),
        ),
        ParseError::UnexpectedExtra(r) => (
            r.start().into(),
            format!(
                "unexpected {:?} after the end of the expression",
                snippet(text, r)
            ),
        ),
        ParseError::UnexpectedWanted(found, r, wanted) => (
            r.start().into(),
            format!("found {found:?}, expected one of: {}", kinds(wanted)),
        ),
        ParseError::UnexpectedDoubleBind(r) => {
            (r.start().into(), "pattern bound twice".to_string())
        }
        ParseError::UnexpectedEOF => (eof, "unexpected end of file".to_string()),
        ParseError::UnexpectedEOFWanted(wanted) => (
            eof,
            format!("unexpected end of file, expected one of: {}", kinds(wanted)),
        ),
        ParseError::DuplicatedArgs(r, name) => {
            (r.start().into(), format!("argument {name:?} given twice"))
        }
        ParseError::RecursionLimitExceeded => (0, "nesting too deep to parse".to_string()),
        other => (0, other.to_string()),
    }
}

fn snippet(text: &str, range: &rnix::TextRange) -> String {
    let start: usize = range.start().into();
    let end: usize = range.end().into();
    let s = text.get(start..end).unwrap_or("");
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_nix_has_no_errors() {
        assert!(check("f.nix", "{ a = 1; b = [ \"x\" ]; }").is_empty());
    }

    #[test]
    fn missing_semicolon_points_at_its_line() {
        let errors = check("f.nix", "{\n  a = 1;\n  b = 2\n}\n");
        assert!(!errors.is_empty());
        assert_eq!(
            (errors[0].line, errors[0].file.as_str()),
            (4, "f.nix"),
            "{errors:?}"
        );
    }

    /// D12: a deeply nested fragment produced 1,025 near-identical findings (234 KB).
    #[test]
    fn deep_nesting_gives_a_short_list() {
        for text in [
            format!("{}1{}", "{ a = ".repeat(5000), " ; }".repeat(5000)),
            format!(
                "{{ disko.devices = {}1{}; }}",
                "{ a = ".repeat(20000),
                " ; }".repeat(20000)
            ),
            "{ a = ; b = ; c = ; d = ; e = ; }".repeat(500),
            (0..500).map(|i| format!("{{ a{i} = ; }}\n")).collect(),
        ] {
            let raw = rnix::Root::parse(&text).errors().len();
            assert!(raw >= 500, "the case must be a bad one: {raw} errors");
            let errors = check("f.nix", &text);
            assert!(!errors.is_empty());
            assert!(
                errors.len() <= crate::MAX_REPORTED,
                "{} errors",
                errors.len()
            );
            let total: usize = errors.iter().map(|e| e.to_string().len()).sum();
            assert!(total < 8 * 1024, "{total} bytes: {errors:?}");
        }
    }

    #[test]
    fn repeated_messages_are_folded_into_the_first() {
        let errors = check("f.nix", "{ a = ; b = ; c = ; d = ; e = ; }");
        assert!(errors[0].message.contains("more like it, at"), "{errors:?}");
        assert_eq!(errors[0].line, 1);
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_column("", 0), (1, 1));
    }
}
