//! `kctl rotate sub-ca`: issue a new sub-CA from the root CA (on this machine) and install
//! it on every controller of the context. Certificates signed by the old sub-CA keep
//! working, because controllers and agents trust the root; the old sub-CA is retired:
//! each controller reissues its own certificate from the new one and nodes renew at their
//! next heartbeat. `kctl revoke sub-ca SERIAL` then revokes the retired one (refused while
//! anything still holds a certificate it issued, unless `--force`); `kctl get sub-cas`
//! shows who does.

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

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// Which controllers to call.
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: crate::target::ControllerTarget,
    #[command(subcommand)]
    pub command: RevokeCommand,
}

#[derive(Debug, Subcommand)]
pub enum RevokeCommand {
    /// Revoke a retired sub-CA (`kctl get sub-cas` lists them): every controller then
    /// refuses every certificate it issued. The revocation replicates.
    SubCa(RevokeSubCaArgs),
}

#[derive(Debug, clap::Args)]
pub struct RevokeSubCaArgs {
    /// The sub-CA's serial (hex, as `kctl get sub-cas` prints it).
    #[arg(value_name = "SERIAL")]
    pub serial: String,
    /// Revoke even though nodes or controllers still hold certificates it issued: they
    /// are cut off at once and must be enrolled again (after a key compromise).
    #[arg(long)]
    pub force: bool,
}

pub async fn revoke(
    args: RevokeArgs,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    let RevokeCommand::SubCa(sub) = args.command;
    let serial = sub.serial.trim().trim_start_matches("0x").replace(':', "");
    if serial.is_empty() || !serial.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(crate::exit::Refused::new(
            kcore_api::ErrorCode::InvalidField,
            format!(
                "SERIAL: {:?} is not a hex serial; give it as `kctl get sub-cas` prints it",
                sub.serial
            ),
        )
        .into());
    }
    let (_, client) = crate::controller_client::connect(global, controllers)?;
    let revocation: kcore_api::controller::Revocation = client
        .post_json(
            &crate::paths::path(&["v1", "pki", "sub-cas", &serial, "revoke"])?,
            &kcore_api::controller::RevokeSubCa { force: sub.force },
        )
        .await?;
    print_object(&revocation, global.output, || {
        format!(
            "{} revoked at {}: every controller refuses the certificates it issued once it has the revocation\n",
            escape(&revocation.subject),
            escape(&revocation.revoked_at)
        )
    })
}
