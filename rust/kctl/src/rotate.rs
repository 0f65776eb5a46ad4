//! `kctl rotate sub-ca`: issue a new sub-CA from the root CA (on this machine) and install
//! it on every controller of the context. Certificates signed by the old sub-CA keep
//! working until they expire, because controllers and agents trust the root.

use anyhow::Context as _;
use clap::Subcommand;
use kcore_api::cluster::{InstallSubCa, SubCaInstalled};

use crate::context;
use crate::controller_client::{client_for, servers};
use crate::create::SUB_CA_VALIDITY;
use crate::escape::{escape, escape_lines};
use crate::global::GlobalArgs;
use crate::output::{OutputFormat, print_object};
use crate::remote::{Expected, Remote};
use crate::target::ControllerTarget;

/// One controller's outcome, as `-o json|yaml` prints it (a list, one per controller).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotated {
    pub server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed: Option<SubCaInstalled>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which controllers to call.
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: crate::target::ControllerTarget,
    #[command(subcommand)]
    pub command: RotateCommand,
}

#[derive(Debug, Subcommand)]
pub enum RotateCommand {
    /// Issue a new sub-CA and install it on every controller (each one, not failover).
    /// The key goes only to servers that prove a controller identity of this cluster.
    SubCa(SubCaArgs),
}

#[derive(Debug, clap::Args)]
pub struct SubCaArgs {
    /// Install the sub-CA even if it ends before a node certificate issued now would
    /// (the root CA expires soon); nodes then renew early and must be re-enrolled when
    /// it ends.
    #[arg(long = "allow-short")]
    pub allow_short: bool,
}

pub async fn run(
    args: Args,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    match args.command {
        RotateCommand::SubCa(sub) => rotate_sub_ca(global, controllers, sub.allow_short).await,
    }
}

async fn rotate_sub_ca(
    global: &GlobalArgs,
    target: &ControllerTarget,
    allow_short: bool,
) -> anyhow::Result<()> {
    let ctx = context::resolve(global)?;
    let controllers = servers(target, &ctx)?;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let root = kcore_pki::Authority::from_pem(&read(&ctx.ca_file)?, &read(&ctx.ca_key_file)?)
        .context("loading the root CA of the context")?;
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let sub = root
        .new_sub_ca(&format!("controllers-{stamp}"), SUB_CA_VALIDITY)
        .context("issuing the new sub-CA")?;
    let body = InstallSubCa {
        certificate_pem: sub.cert_pem().to_string(),
        key_pem: sub.key_pem().to_string(),
        allow_short,
    };
    let data = matches!(global.output, OutputFormat::Json | OutputFormat::Yaml);
    let mut failed = Vec::new();
    let mut report = Vec::new();
    for controller in &controllers {
        // One client per controller: every controller must get it, so no failover here.
        // `client_for` verifies that the server is a controller of this cluster before
        // any byte of the request (and so the key) is sent (security review D1).
        let client = Remote::new(
            client_for(&ctx, std::slice::from_ref(controller))?,
            Expected::Controller(ctx.clone()),
        );
        match client
            .put_json::<_, SubCaInstalled>("/v1/pki/sub-ca", &body)
            .await
        {
            Ok(done) => {
                if !data {
                    println!(
                        "{controller}: controller {} now signs with sub-CA serial {} (expires {})",
                        escape(&done.controller_id),
                        escape(&done.certificate.serial),
                        escape(&done.certificate.not_after)
                    );
                }
                report.push(Rotated {
                    server: controller.clone(),
                    installed: Some(done),
                    error: None,
                });
            }
            Err(err) => {
                let message = format!("{err:#}");
                eprintln!("{controller}: {}", escape_lines(&message));
                failed.push(controller.clone());
                report.push(Rotated {
                    server: controller.clone(),
                    installed: None,
                    error: Some(message),
                });
            }
        }
    }
    if data {
        // Printed before the exit status is decided, so a script sees which ones failed.
        print_object(&report, global.output, String::new)?;
    }
    if failed.is_empty() {
        Ok(())
    } else {
        // A failure (exit 3), not a refusal: some controllers were not changed.
        Err(anyhow::anyhow!(
            "the new sub-CA is not installed on {}; run `kctl rotate sub-ca` again when they are reachable (old certificates keep working meanwhile)",
            failed.join(", ")
        ))
    }
}
