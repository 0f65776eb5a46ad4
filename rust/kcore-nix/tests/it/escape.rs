//! Escaping checked by the real evaluator: every escaped value is evaluated by
//! `nix-instantiate --eval --readonly-mode --json` through the runner and must come back
//! byte for byte.

use std::time::Duration;

use kcore_nix::programs::NIX_INSTANTIATE;
use kcore_nix::{Invocation, Program, attr_name, nix_string};

use crate::support::tool_or_skip;

async fn eval_json<T: serde::de::DeserializeOwned>(nix: &Program, expr: &str) -> T {
    Invocation::new(nix)
        .args([
            "--eval",
            "--strict",
            "--readonly-mode",
            "--json",
            "-E",
            expr,
        ])
        .timeout(Duration::from_secs(60))
        .capture_json()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The values the issue names, plus neighbours that break naive escapers.
fn tricky() -> Vec<String> {
    [
        "plain",
        "",
        "\"",
        "\\",
        "\\\\\"",
        "${",
        "${x}",
        "$${x}",
        "\\${x}",
        "$",
        "$$",
        "a$",
        "$\\",
        "''",
        "''${x}",
        "'''",
        "''\\n",
        "\n",
        "a\nb\n",
        "\r\n",
        "\t",
        "\u{1}\u{1b}[31m\u{7f}",
        "grüße",
        "日本語",
        "emoji 😀",
        "# not a comment",
        "/* not a comment */",
        "let x = 1; in x",
        "\" + builtins.toString 1 + \"",
    ]
    .into_iter()
    .map(str::to_owned)
    // Every ASCII character but NUL, and code points at the edges of UTF-8 encodings.
    .chain([
        (1u8..=127).map(char::from).collect(),
        "\u{80}\u{7ff}\u{800}\u{2028}\u{feff}\u{ffff}\u{10000}\u{10ffff}".to_owned(),
    ])
    .collect()
}

/// Deterministic pseudo-random strings over characters that matter to the Nix lexer.
fn generated(count: usize) -> Vec<String> {
    const PIECES: &[&str] = &[
        "\"", "\\", "$", "{", "}", "${", "$${", "'", "''", "\n", "\r", "\t", "\u{1}", "é", "😀",
        "a", " ", "#", "/*", "*/", ";", "=",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let len = (next() % 12) as usize;
            (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn strings_round_trip_through_nix() {
    let Some(nix) = tool_or_skip(NIX_INSTANTIATE, "strings_round_trip_through_nix") else {
        return;
    };
    let mut values = tricky();
    values.extend(generated(400));
    let list: Vec<String> = values.iter().map(|v| nix_string(v).unwrap()).collect();
    let expr = format!("[ {} ]", list.join(" "));
    let back: Vec<String> = eval_json(&nix, &expr).await;
    assert_eq!(back.len(), values.len());
    for (want, got) in values.iter().zip(&back) {
        assert_eq!(got, want, "escaped as {}", nix_string(want).unwrap());
    }
}

#[tokio::test]
async fn escaped_strings_compose_inside_larger_expressions() {
    let Some(nix) = tool_or_skip(NIX_INSTANTIATE, "escaped_strings_compose") else {
        return;
    };
    // A value that tries to close the string and inject code must stay a value.
    let evil = "\"; x = throw \"injected\"; y = \"";
    let expr = format!(
        "let v = {}; in {{ inherit v; len = builtins.stringLength v; }}",
        nix_string(evil).unwrap()
    );
    let got: serde_json::Value = eval_json(&nix, &expr).await;
    assert_eq!(got["v"], evil);
    assert_eq!(got["len"], evil.len());
}

#[tokio::test]
async fn attribute_names_round_trip_through_nix() {
    let Some(nix) = tool_or_skip(NIX_INSTANTIATE, "attribute_names_round_trip_through_nix") else {
        return;
    };
    let mut names = tricky();
    names.extend(generated(200));
    names.extend(
        [
            "vg_kcore", "disk-1", "x'", "if", "in", "or", "rec", "true", "_", "a.b",
        ]
        .map(str::to_owned),
    );
    names.sort();
    names.dedup();
    let body: String = names
        .iter()
        .map(|n| format!("{} = 0; ", attr_name(n).unwrap()))
        .collect();
    // attrNames sorts by bytes, as does Rust's `String` ordering.
    let back: Vec<String> = eval_json(&nix, &format!("builtins.attrNames {{ {body}}}")).await;
    assert_eq!(back, names);

    // Bare names also work in attribute paths and `inherit`, where quoting rules differ.
    let got: serde_json::Value = eval_json(
        &nix,
        &format!(
            "let s = {{ {a} = 1; }}; in {{ inherit (s) {a}; p = s.{a}; }}",
            a = attr_name("vg_kcore").unwrap()
        ),
    )
    .await;
    assert_eq!(got, serde_json::json!({"p": 1, "vg_kcore": 1}));
}
