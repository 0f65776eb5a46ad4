//! `kctl disko validate`: validation levels 1-2 (and 3 with `--deep`) on a fragment file,
//! printed as a table of its disks (or the findings), or the create/mount script.

use kcore_api::ErrorCode;
use std::path::PathBuf;

use anyhow::Context;
use kcore_disko::eval::{Validated, validate_file};

use crate::global::GlobalArgs;
use crate::output::print;
use crate::views::disko::{DiskRow, Report};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The fragment to validate (`{ disko.devices = ...; }`, or a function of `lib`/`disks`
    /// like disko's examples).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,

    /// Also evaluate through disko's own option types to the real create/mount scripts (needs
    /// the disko source and nixpkgs lib, see --disko and --nixpkgs-lib).
    #[arg(long = "deep")]
    pub deep: bool,

    /// With --deep: print disko's create script instead of the summary.
    #[arg(long = "print-create-script", requires = "deep")]
    pub print_create_script: bool,

    /// With --deep: print disko's mount script instead of the summary.
    #[arg(
        long = "print-mount-script",
        requires = "deep",
        conflicts_with = "print_create_script"
    )]
    pub print_mount_script: bool,

    #[command(flatten)]
    pub nix: super::NixArgs,
}

fn report(file: &str, v: &Validated) -> Report {
    Report {
        file: file.to_string(),
        valid: true,
        level: v.level,
        disks: v
            .tree
            .disk
            .iter()
            .map(|(name, d)| DiskRow {
                name: name.clone(),
                device: d.device.clone(),
                content: d
                    .content
                    .as_ref()
                    .map_or("untouched".into(), |c| c.describe()),
            })
            .collect(),
        findings: Vec::new(),
    }
}

/// `finding` with `file:` (as given, or as the evaluator resolved it) dropped from its
/// positions, for a message that names the file once.
fn without_file(
    finding: &kcore_disko::eval::Finding,
    file: &std::path::Path,
) -> kcore_disko::eval::Finding {
    let mut names = vec![format!("{}:", file.display())];
    if let Ok(abs) = std::fs::canonicalize(file) {
        names.push(format!("{}:", abs.display()));
    }
    if let Ok(abs) = std::path::absolute(file) {
        names.push(format!("{}:", abs.display()));
    }
    let strip = |at: &str| {
        names
            .iter()
            .find_map(|n| at.strip_prefix(n.as_str()))
            .map_or_else(|| at.to_string(), |rest| format!("line {rest}"))
    };
    let mut out = finding.clone();
    out.location = strip(&finding.location);
    out.position = finding.position.as_deref().map(strip);
    out
}

pub async fn run(args: ValidateArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let evaluator = args.nix.evaluator()?;
    let deep = if args.deep {
        Some(args.nix.deep_inputs()?.context(
            "--deep needs the disko source and nixpkgs lib: pass --disko DIR and --nixpkgs-lib DIR (or set KCORE_DISKO and KCORE_NIXPKGS_LIB)",
        )?)
    } else {
        None
    };
    let file = args.file.display().to_string();
    match validate_file(&evaluator, &args.file, deep.as_ref()).await {
        Ok(v) => {
            // What the check saw but did not evaluate (options beside `disko`, `imports`):
            // on stderr, so the table, JSON and printed scripts stay as they were.
            for note in &v.notes {
                eprintln!("note: {note}");
            }
            match (&v.deep, args.print_create_script, args.print_mount_script) {
                (Some(out), true, _) => print!("{}", out.create),
                (Some(out), _, true) => print!("{}", out.mount),
                _ => print(&report(&file, &v), global.output)?,
            }
            Ok(())
        }
        Err(kcore_disko::eval::ValidateError::Invalid(findings)) => {
            let level = findings.iter().map(|f| f.level).min().unwrap_or(1) - 1;
            // The file is named once, in front; each finding keeps its line:column.
            let summary = findings
                .iter()
                .map(|f| without_file(f, &args.file).to_string())
                .collect::<Vec<_>>()
                .join("\n");
            print(
                &Report {
                    file: file.clone(),
                    valid: false,
                    level,
                    disks: Vec::new(),
                    findings,
                },
                global.output,
            )?;
            Err(crate::exit::Refused::new(
                ErrorCode::InvalidFragment,
                format!("{file} is not a valid disko fragment:\n{summary}"),
            )
            .into())
        }
        Err(other) => Err(super::validate_error(other, &args.file)),
    }
}
