//! Putting values into Nix source safely: string literals and attribute names.
//!
//! kcore prefers to hand data to Nix as JSON (`builtins.fromJSON`); these functions are for
//! the places where a value must appear in Nix source itself (rendered disko fragments,
//! `-E` expressions). Every escape here is checked by evaluating it with the real
//! `nix-instantiate` in the crate's tests.

/// Why a value cannot be put into Nix source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscapeError {
    /// Nix strings are C strings inside the evaluator: a NUL byte cannot be represented.
    #[error(
        "value contains a NUL byte at byte offset {offset}; Nix strings cannot hold NUL, remove it"
    )]
    Nul { offset: usize },
}

/// Nix keywords: not usable as bare attribute names. `or` is only half a keyword (Nix accepts
/// it as an attribute name for compatibility, but not everywhere an identifier may stand);
/// quoting it is always right.
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or",
];

/// A complete double-quoted Nix string literal whose value is exactly `s`.
///
/// `\` and `"` are backslash-escaped; every `$` is written `\$` so that neither `${` nor
/// `$${` can start an interpolation; newline, carriage return and tab use `\n`, `\r`, `\t`.
/// Other control characters and non-ASCII text are copied as is (Nix has no `\x`/`\u`
/// escapes, and its lexer takes raw bytes inside a string). NUL is an error.
pub fn nix_string(s: &str) -> Result<String, EscapeError> {
    if let Some(offset) = s.find('\0') {
        return Err(EscapeError::Nul { offset });
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str(r#"\""#),
            '$' => out.push_str(r"\$"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// Whether `s` can be written as a bare (unquoted) attribute name: a Nix identifier
/// (`[A-Za-z_][A-Za-z0-9_'-]*`) that is not a keyword.
pub fn is_valid_attr_name(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '\'' | '-'))
        && !KEYWORDS.contains(&s)
}

/// `s` as an attribute name: bare when [`is_valid_attr_name`], otherwise a quoted string
/// (`"my disk"`, `"${x}"` escaped, `""`), which Nix accepts in attribute paths.
pub fn attr_name(s: &str) -> Result<String, EscapeError> {
    if is_valid_attr_name(s) {
        Ok(s.to_owned())
    } else {
        nix_string(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_characters_nix_interprets() {
        assert_eq!(nix_string("plain").unwrap(), r#""plain""#);
        assert_eq!(nix_string(r#"a"b"#).unwrap(), r#""a\"b""#);
        assert_eq!(nix_string(r"a\b").unwrap(), r#""a\\b""#);
        assert_eq!(nix_string("${x}").unwrap(), r#""\${x}""#);
        assert_eq!(nix_string("$${x}").unwrap(), r#""\$\${x}""#);
        assert_eq!(nix_string("a\nb\tc\rd").unwrap(), r#""a\nb\tc\rd""#);
        assert_eq!(nix_string("''").unwrap(), r#""''""#);
        assert_eq!(nix_string("").unwrap(), r#""""#);
        assert_eq!(nix_string("grüße ✓").unwrap(), "\"grüße ✓\"");
    }

    #[test]
    fn nul_is_refused_with_its_position() {
        let err = nix_string("ab\0c").unwrap_err();
        assert_eq!(err, EscapeError::Nul { offset: 2 });
        assert!(err.to_string().contains("NUL"));
        assert!(attr_name("\0").is_err());
    }

    #[test]
    fn attr_names() {
        for ok in ["a", "_", "vg_kcore", "disk-1", "x'", "A9", "true", "null"] {
            assert!(is_valid_attr_name(ok), "{ok}");
            assert_eq!(attr_name(ok).unwrap(), ok);
        }
        for bad in [
            "", "1a", "-a", "'a", "a b", "a.b", "a/b", "${x}", "é", "if", "in", "or", "rec",
            "inherit", "a\"",
        ] {
            assert!(!is_valid_attr_name(bad), "{bad:?}");
            assert_eq!(attr_name(bad).unwrap(), nix_string(bad).unwrap());
        }
    }
}
