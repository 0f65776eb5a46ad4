//! `kctl apply -f FILE [-f FILE ...] [--dry-run=server]`: create or update objects of any
//! kind from YAML documents (`---` between them, `-f -` for stdin).
//!
//! Every document is checked first, with kcore-api's decoder and validation, the ones the
//! controller runs ([`crate::documents`]); nothing is sent unless all of them pass. Each
//! object is then `PUT /v1/<plural>/<name>` in order. With `--dry-run=server` the
//! controller checks and diffs each object but stores nothing, and kctl prints the diff.
//! A refusal from the controller stops the run and names the document; the objects
//! before it stay applied (they were printed).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::ValueEnum;
use kcore_api::resource::ApplyResponse;

use crate::controller_client::connect;
use crate::documents::{self, Document};
use crate::global::GlobalArgs;
use crate::kinds;
use crate::output::{OutputFormat, print_object};
use crate::paths;
use crate::target::ControllerTarget;
use crate::views::resource::applied;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which controllers to call.
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: crate::target::ControllerTarget,
    /// A file of one or several YAML documents (separated by `---`); `-` reads stdin.
    /// Repeat for more files; they are applied in order.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// `server`: the controller checks and diffs every object and stores nothing; the
    /// diff is printed.
    #[arg(long = "dry-run", value_enum, value_name = "MODE")]
    pub dry_run: Option<DryRun>,
}

/// Who decides what a dry run would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// The controller: the same decoding, validation and diff as a real apply.
    Server,
}

/// The route for `doc`, with `?dryRun=server` when asked.
fn put_path(doc: &Document, dry_run: Option<DryRun>) -> anyhow::Result<String> {
    let path = kinds::object_path(doc.kind, "metadata.name", &doc.name)?;
    Ok(match dry_run {
        Some(DryRun::Server) => paths::with_query(&path, "dryRun", "server"),
        None => path,
    })
}

pub async fn run(
    args: Args,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    let mut docs = Vec::new();
    for (source, text) in documents::read_sources(&args.files)? {
        docs.extend(documents::parse(&source, &text)?);
    }
    let (_, client) = connect(global, controllers)?;
    apply_documents(&client, &docs, args.dry_run, global).await
}

/// `PUT`s each document in order and prints what happened to it (the table as it goes,
/// so a later refusal still shows what was applied before it; JSON/YAML at the end).
/// `kctl create vm` and `kctl vm start|stop` send their objects through here too.
pub async fn apply_documents(
    client: &crate::remote::Remote,
    docs: &[Document],
    dry_run: Option<DryRun>,
    global: &GlobalArgs,
) -> anyhow::Result<()> {
    let mut results: Vec<(String, ApplyResponse)> = Vec::new();
    let table = matches!(global.output, OutputFormat::Table | OutputFormat::Wide);
    for doc in docs {
        let answer: ApplyResponse = client
            .put_json(&put_path(doc, dry_run)?, &doc.body)
            .await
            .with_context(|| format!("{}: {}", doc.origin(), doc.label()))?;
        if dry_run.is_some() && !answer.dry_run {
            // An older controller ignores the parameter: it has written the object.
            anyhow::bail!(
                "{}: {}: the controller did not treat this as a dry run and stored the object",
                doc.origin(),
                doc.label()
            );
        }
        if table {
            let diff = dry_run.is_some() || global.output == OutputFormat::Wide;
            print!("{}", applied(&[(doc.label(), answer.clone())], diff));
        }
        results.push((doc.label(), answer));
    }
    if !table {
        let answers: Vec<&ApplyResponse> = results.iter().map(|(_, a)| a).collect();
        print_object(&answers, global.output, String::new)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_carries_the_name_and_the_dry_run() {
        let doc = documents::parse(
            "v.yaml",
            "kind: VM\nmetadata: {name: web-1}\nspec: {storageBackend: zfs, storageSizeBytes: 1G}\n",
        )
        .unwrap()
        .remove(0);
        assert_eq!(put_path(&doc, None).unwrap(), "/v1/vms/web-1");
        assert_eq!(
            put_path(&doc, Some(DryRun::Server)).unwrap(),
            "/v1/vms/web-1?dryRun=server"
        );
    }
}
