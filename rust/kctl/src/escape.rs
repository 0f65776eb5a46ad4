//! Text that came from elsewhere (a node's report, an agent's inventory or output, a
//! server's error message) is printed with its control characters escaped, so a node
//! cannot drive the operator's terminal (colours, title, screen clears, cursor moves,
//! fake lines) through kctl.
//!
//! "Unsafe" means every Unicode control character (C0, DEL, C1: what terminals act on)
//! and the bidirectional-text controls (which reorder what the operator reads). Tables
//! and `describe` show them the way Rust's `escape_debug` spells them (`\u{1b}`, `\r`,
//! `\n`), so they stay visible; JSON uses `\uXXXX` escapes and YAML its double-quoted
//! escapes, so scripts still get the exact data. Backslashes are not doubled: the escapes
//! are for people to see, the JSON/YAML output is the exact form.

use std::borrow::Cow;

/// Characters that reorder text: the bidi embeddings, overrides, isolates and marks.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether `c` must not reach a terminal raw.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

fn escape_where(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) && !keep(c) {
            // `escape_debug` of a control character is `\n`, `\r`, `\t` or `\u{..}`.
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One value for one line (a table cell, a `describe` field): every unsafe character,
/// newlines included, is escaped.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_where(s, |_| false)
}

/// A message that may span lines (an error, a line of command output): newlines are kept,
/// every other unsafe character is escaped.
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| c == '\n')
}

/// Serialized JSON with the unsafe characters `serde_json` leaves raw (DEL, C1, bidi
/// controls) turned into `\uXXXX` escapes. It only escapes C0 itself. Outside strings
/// JSON holds no such characters (the newlines of pretty-printing are kept), so the
/// result decodes to the same value.
pub fn json(text: String) -> String {
    if !text.chars().any(|c| is_unsafe(c) && c != '\n') {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) && c != '\n' {
            // Every unsafe character is in the Basic Multilingual Plane: one escape each.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Serialized YAML, checked: the emitter double-quotes and escapes control characters
/// itself, but writes bidi controls raw (it counts them as printable). When any unsafe
/// character is left, the value is written as JSON instead, which is valid YAML, with
/// every one of them escaped.
pub fn yaml<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    let text = serde_yaml_ng::to_string(value)?;
    if text.chars().any(|c| is_unsafe(c) && c != '\n') {
        return Ok(format!("{}\n", json(serde_json::to_string_pretty(value)?)));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_visibly() {
        assert_eq!(
            escape("\u{1b}[31mEVIL\u{1b}]0;x\u{7}\r\n\t\u{7f}\u{9b}\u{202e}ok"),
            "\\u{1b}[31mEVIL\\u{1b}]0;x\\u{7}\\r\\n\\t\\u{7f}\\u{9b}\\u{202e}ok"
        );
        assert_eq!(escape_lines("a\u{1b}[2J\nb"), "a\\u{1b}[2J\nb");
        // Ordinary text, quotes and non-ASCII letters are left alone (and not copied).
        assert!(matches!(escape("Zürich \"x\" \\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_and_yaml_keep_the_data_and_drop_raw_controls() {
        let value = serde_json::json!({"h\u{1b}": "a\u{7f}b\u{9b}c\u{202e}d\u{1b}e", "n": 1});
        for text in [
            json(serde_json::to_string_pretty(&value).unwrap()),
            yaml(&value).unwrap(),
        ] {
            assert!(!text.chars().any(|c| is_unsafe(c) && c != '\n'), "{text:?}");
            let back: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
            assert_eq!(back, value, "{text}");
        }
        let back: serde_json::Value =
            serde_json::from_str(&json(serde_json::to_string(&value).unwrap())).unwrap();
        assert_eq!(back, value);
        // Control characters alone stay in YAML form: the emitter escapes them.
        let plain = serde_json::json!({"h": "a\u{1b}b\u{85}\u{9b}\u{7f}"});
        let text = yaml(&plain).unwrap();
        assert!(text.starts_with("h: \""), "{text}");
    }
}
