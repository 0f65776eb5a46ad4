//! `kctl version`: kctl's own version and, when there is a context (or `-s`), each
//! controller's (`GET /v1/version`), asked one by one so that a fleet in the middle of an
//! upgrade shows every version; an unreachable controller is a row with its error, not a
//! failure of the command.

use std::fmt::Write as _;

use kcore_api::version::ServerVersion;
use serde::Serialize;

use crate::controller_client::{client_for, servers};
use crate::escape::escape as e;
use crate::global::GlobalArgs;
use crate::output::print_object;
use crate::remote::{Expected, Remote};
use crate::target::ControllerTarget;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which controllers to ask (default: the context's).
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: ControllerTarget,
}

/// What `kctl version -o json|yaml` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionReport {
    pub client: String,
    /// Empty without a context.
    pub controllers: Vec<ControllerVersion>,
}

/// One controller's answer, or why there is none.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerVersion {
    pub server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<ServerVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn run(args: Args, global: &GlobalArgs, target: ControllerTarget) -> anyhow::Result<()> {
    let target = args.controllers.join(target);
    let mut report = VersionReport {
        client: env!("CARGO_PKG_VERSION").into(),
        controllers: Vec::new(),
    };
    // No kctl config at all: the client's version only (a fresh install, no cluster yet).
    // A config that exists but is broken is an error, as for every other command.
    let has_config = crate::context::config_path(global)?.exists();
    if has_config || global.context.is_some() {
        let ctx = crate::context::resolve(global)?;
        for server in servers(&target, &ctx)? {
            let remote = Remote::new(
                client_for(&ctx, std::slice::from_ref(&server))?,
                Expected::Controller(ctx.clone()),
            );
            let (version, error) = match remote.get_json::<ServerVersion>("/v1/version").await {
                Ok(v) => (Some(v), None),
                Err(err) => (None, Some(format!("{err:#}"))),
            };
            report.controllers.push(ControllerVersion {
                server,
                version,
                error,
            });
        }
    }
    print_object(&report, global.output, || text(&report))
}

fn text(report: &VersionReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Client Version: {}", report.client);
    for c in &report.controllers {
        match (&c.version, &c.error) {
            (Some(v), _) => {
                let _ = writeln!(
                    out,
                    "Controller {}: {} ({})",
                    e(&c.server),
                    e(&v.version),
                    e(&v.id)
                );
            }
            (None, err) => {
                let _ = writeln!(
                    out,
                    "Controller {}: unavailable: {}",
                    e(&c.server),
                    e(err.as_deref().unwrap_or("no answer"))
                );
            }
        }
    }
    out
}
