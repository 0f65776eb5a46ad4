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

/// Parse `text` (from `file`) and return every syntax error, first one first. Empty: valid.
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
    errors
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

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_column("", 0), (1, 1));
    }
}
