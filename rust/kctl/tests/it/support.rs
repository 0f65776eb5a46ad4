//! Helpers shared by the areas: reading a kctl run's output.

use std::process::Output;

/// Exit code, stdout and stderr of a kctl run, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Panics if `bytes` holds a control character other than the newline (C0, DEL, C1:
/// what a terminal would act on).
pub fn assert_no_control(what: &str, bytes: &[u8]) {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let bad: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(
        bad.is_empty(),
        "{what} printed raw control characters {bad:?}:\n{text:?}"
    );
}
