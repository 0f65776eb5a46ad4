//! What a program produced: the [`Output`] of a finished run, [`StreamLine`]s as they
//! arrive, the line readers and the sink that collects both streams under an optional
//! bound, and [`stderr_tail`], the end of stderr an error keeps.

use std::process::ExitStatus;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

/// How much of stderr an error keeps: enough to show Nix's error trace, small enough for a log.
const TAIL_MAX_BYTES: usize = 4096;
const TAIL_MAX_LINES: usize = 40;

/// One line of output from [`Invocation::stream`](super::Invocation::stream), without its line terminator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamLine {
    Stdout(String),
    Stderr(String),
}

/// What a finished program produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// stdout as text, invalid UTF-8 replaced.
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text, invalid UTF-8 replaced.
    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// The last lines of `bytes` (at most 40 lines and about 4 KiB), as text. A leading `…`
/// marks a cut.
pub fn stderr_tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let mut start = text.len().saturating_sub(TAIL_MAX_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let mut cut = start > 0;
    let mut tail = &text[start..];
    let lines: Vec<&str> = tail.lines().collect();
    if lines.len() > TAIL_MAX_LINES {
        let mut offset = 0;
        for _ in 0..(lines.len() - TAIL_MAX_LINES) {
            match tail[offset..].find('\n') {
                Some(i) => offset += i + 1,
                None => break,
            }
        }
        tail = &tail[offset..];
        cut = true;
    }
    if cut {
        format!("…{tail}")
    } else {
        tail.to_owned()
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

pub(super) struct Sink<'a> {
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) on_line: Option<&'a mut (dyn FnMut(StreamLine) + Send)>,
}

impl Sink<'_> {
    /// More than `max` bytes of stdout and stderr together.
    pub(super) fn over(&self, max: Option<usize>) -> bool {
        max.is_some_and(|max| self.stdout.len() + self.stderr.len() > max)
    }

    pub(super) fn push(&mut self, (stream, bytes): (Stream, Vec<u8>)) {
        if let Some(on_line) = self.on_line.as_mut() {
            let mut line = bytes.as_slice();
            line = line.strip_suffix(b"\n").unwrap_or(line);
            line = line.strip_suffix(b"\r").unwrap_or(line);
            let text = String::from_utf8_lossy(line).into_owned();
            on_line(match stream {
                Stream::Stdout => StreamLine::Stdout(text),
                Stream::Stderr => StreamLine::Stderr(text),
            });
        }
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(&bytes),
            Stream::Stderr => self.stderr.extend_from_slice(&bytes),
        }
    }
}

/// Forward `reader` line by line (terminator kept, so the bytes add up exactly). A read error
/// ends the stream; what arrived before it is kept. With a bound (`max`), a line is read in
/// pieces of at most `max + 1` bytes and reading stops once more than `max` bytes came, so
/// neither a single huge line nor a flood is held in memory past the bound.
pub(super) async fn read_lines(
    reader: impl AsyncRead + Unpin,
    stream: Stream,
    tx: mpsc::UnboundedSender<(Stream, Vec<u8>)>,
    max: Option<usize>,
) {
    let mut reader = BufReader::new(reader);
    let mut total = 0usize;
    loop {
        let mut line = Vec::new();
        let read = match max {
            None => reader.read_until(b'\n', &mut line).await,
            Some(max) => {
                let room = (max - total.min(max)) as u64 + 1;
                (&mut reader).take(room).read_until(b'\n', &mut line).await
            }
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                total = total.saturating_add(n);
                if tx.send((stream, line)).is_err() {
                    break;
                }
                if max.is_some_and(|max| total > max) {
                    break;
                }
            }
            Err(e) => {
                if !line.is_empty() {
                    let _ = tx.send((stream, line));
                }
                tracing::debug!("reading child output failed: {e}");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_keeps_the_end() {
        let short = stderr_tail(b"error: boom\n");
        assert_eq!(short, "error: boom");
        let many: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(many.as_bytes());
        assert!(tail.starts_with('…'), "{tail}");
        assert!(tail.ends_with("line 99"));
        assert_eq!(tail.lines().count(), TAIL_MAX_LINES);
        assert!(tail.contains("line 60") && !tail.contains("line 59\n"));
        let huge = "é".repeat(10_000);
        let tail = stderr_tail(huge.as_bytes());
        assert!(tail.len() <= TAIL_MAX_BYTES + '…'.len_utf8());
    }
}
