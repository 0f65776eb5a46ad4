//! `kctl config ...`: list contexts, switch the current one, print it.

use clap::Subcommand;
use kcore_api::ErrorCode;

use crate::context::{self, KctlConfig};
use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::output::{print, print_object};
use crate::views::context::{ContextRow, ContextRows};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List the contexts; `*` marks the current one.
    GetContexts,
    /// Make NAME the current context.
    UseContext {
        /// The context to switch to.
        name: String,
    },
    /// Print the current context's name.
    CurrentContext,
}

/// `use-context` and `current-context` with `-o json|yaml`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Current<'a> {
    current_context: &'a str,
}

pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<()> {
    let path = context::config_path(global)?;
    let mut config = KctlConfig::load_existing(&path)?;
    match args.command {
        ConfigCommand::GetContexts => {
            let rows = config
                .contexts
                .iter()
                .map(|c| ContextRow {
                    current: config.current_context.as_deref() == Some(c.name.as_str()),
                    name: c.name.clone(),
                    cluster: c.cluster.clone(),
                    controllers: c.controllers.clone(),
                })
                .collect();
            print(&ContextRows(rows), global.output)
        }
        ConfigCommand::UseContext { name } => {
            if config.find(&name).is_none() {
                let known: Vec<&str> = config.contexts.iter().map(|c| c.name.as_str()).collect();
                return Err(Refused::new(
                    ErrorCode::UnknownContext,
                    format!(
                        "no context {name:?} in {} (known: {})",
                        path.display(),
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
                .into());
            }
            config.current_context = Some(name.clone());
            config.save(&path)?;
            print_object(
                &Current {
                    current_context: &name,
                },
                global.output,
                || format!("switched to context {name:?}\n"),
            )
        }
        ConfigCommand::CurrentContext => match &config.current_context {
            Some(name) => print_object(
                &Current {
                    current_context: name,
                },
                global.output,
                || format!("{name}\n"),
            ),
            None => Err(Refused::new(
                ErrorCode::NoContext,
                format!("no current context in {}", path.display()),
            )
            .into()),
        },
    }
}
