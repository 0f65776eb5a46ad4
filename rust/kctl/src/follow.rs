//! Following a long operation on an agent: its NDJSON progress stream
//! (`GET /v1/operations/<id>/stream`, events `started` / `step` / `output` / `finished`)
//! shown as it arrives, then its result in the `-o` format. Every command that starts a
//! long operation (apply-disko, apply-nix, and later install) ends with [`follow`] and
//! [`finish`]; `kctl node operation ID [--follow]` uses them too.

use kcore_api::inventory::{OperationEvent, OperationResult, OperationStatus};

use crate::escape::escape;
use crate::output::{OutputFormat, print};
use crate::paths;
use crate::remote::Remote;
use crate::views::operation::ResultOut;

/// Stream operation `id`'s events with a progress display (a spinner on a terminal,
/// plain lines on stderr otherwise); return its final result. A lost stream is an error
/// that says how to fetch the result later: the operation keeps running.
pub async fn follow(client: &Remote, id: &str) -> anyhow::Result<OperationResult> {
    let stream = paths::path(&["v1", "operations", id, "stream"])?;
    let result = paths::path(&["v1", "operations", id])?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let plain = bar.is_hidden();
    let mut last: Option<OperationResult> = None;
    let streamed = client
        .stream_ndjson::<(), OperationEvent, _>(
            &stream,
            None,
            // The node's tools' output: shown, with control characters escaped.
            |event| match event {
                OperationEvent::Started { kind, .. } => {
                    bar.set_message(format!("{}: started", escape(kind.as_str())))
                }
                OperationEvent::Step { name } => {
                    let name = escape(&name).into_owned();
                    if plain {
                        eprintln!("==> {name}");
                    } else {
                        bar.println(format!("==> {name}"));
                    }
                    bar.set_message(name);
                }
                OperationEvent::Output { line, .. } => {
                    let line = escape(&line);
                    if plain {
                        eprintln!("{line}");
                    } else {
                        bar.println(line);
                    }
                }
                OperationEvent::Finished { result } => last = Some(*result),
            },
        )
        .await;
    bar.finish_and_clear();
    if let Err(err) = streamed {
        // The operation keeps running on the node; its result can be fetched later.
        return Err(err.context(format!(
            "lost the progress stream; fetch the result with `kctl node operation {}`",
            escape(id)
        )));
    }
    match last {
        Some(result) => Ok(result),
        None => client.get_json(&result).await,
    }
}

/// Print the result; a failed or timed-out operation is a failure (exit 3).
pub fn finish(result: OperationResult, format: OutputFormat) -> anyhow::Result<()> {
    let status = result.status;
    let error = result.error.clone();
    let id = result.operation_id.clone();
    print(&ResultOut(result), format)?;
    match status {
        OperationStatus::Succeeded | OperationStatus::Running => Ok(()),
        OperationStatus::Failed | OperationStatus::TimedOut => {
            let err = error.map_or_else(
                || format!("operation {id} did not succeed"),
                |e| format!("{} ({})", e.message, e.code),
            );
            Err(anyhow::anyhow!(err))
        }
    }
}
