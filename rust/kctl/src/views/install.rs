//! What `kctl node install` prints: the plan (the node, the disks to wipe with their
//! identity, size and current content, the refusals, the rendered layout with
//! `--dry-run` or `-v`), the per-step timings and a failure naming its step. Every value
//! from the node is escaped ([`crate::escape`]): a disk's model or serial is the node's.

use std::fmt::Write as _;

use kcore_api::install::{InstallPlan, InstallStep};
use kcore_api::inventory::OperationResult;

use crate::escape::{escape, escape_lines};
use crate::exit::Refused;
use crate::views::human_bytes;

/// The plan as text, for a person deciding whether to go on.
pub fn plan_text(plan: &InstallPlan, show_layout: bool) -> String {
    let spec = &plan.spec;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} ({}), cluster {}, dc {}",
        escape(&spec.node_id),
        escape(spec.hostname.as_deref().unwrap_or("-")),
        escape(&spec.cluster),
        escape(&spec.dc_id)
    );
    let _ = writeln!(
        out,
        "storage {}, luks {} (tpm {}), joins {}{}",
        spec.storage_backend.as_str(),
        serde_json::to_value(spec.luks)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        if plan.tpm { "present" } else { "absent" },
        escape(&spec.controllers.join(", ")),
        if spec.run_controller {
            ", runs a controller"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "system {}", escape(&plan.system));
    if !plan.validated.is_empty() {
        let _ = writeln!(
            out,
            "layout validated on the node: {}",
            plan.validated.join(", ")
        );
    }
    if plan.wipes.is_empty() {
        let _ = writeln!(out, "disks wiped: none");
    } else {
        let _ = writeln!(out, "disks wiped ({}):", plan.wipes.len());
        for w in &plan.wipes {
            let _ = writeln!(
                out,
                "  {:<8} {} -> {} ({}), {}{}{}",
                escape(&w.role),
                escape(&w.given),
                escape(&w.by_id),
                escape(&w.path),
                human_bytes(w.size_bytes),
                w.model
                    .as_deref()
                    .map(|m| format!(", model {}", escape(m)))
                    .unwrap_or_default(),
                w.serial
                    .as_deref()
                    .map(|s| format!(", serial {}", escape(s)))
                    .unwrap_or_default(),
            );
            let content = if w.content.is_empty() {
                "blank".to_string()
            } else {
                w.content
                    .iter()
                    .map(|c| escape(c).into_owned())
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let _ = writeln!(out, "           now holds: {content}");
        }
    }
    for r in &plan.refusals {
        let _ = writeln!(
            out,
            "REFUSED {}: {} ({})",
            escape(&r.device),
            escape_lines(&r.message),
            r.code
        );
    }
    if show_layout {
        let _ = writeln!(out, "plan {}:", escape(&plan.plan_hash));
        for t in &plan.plan.targets {
            for a in &t.actions {
                let kind = serde_json::to_value(a.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {} {}: {} {} ({})",
                    escape(&t.name),
                    escape(&t.device),
                    kind,
                    escape(&a.detail),
                    a.class.as_str()
                );
            }
        }
        let _ = writeln!(out, "layout:\n{}", escape_lines(&plan.layout));
    }
    out
}

/// The refusal kctl exits 1 with: the first refusal's code, every refusal in the message.
pub fn refusal(plan: &InstallPlan) -> Refused {
    let code = plan
        .refusals
        .first()
        .map(|r| r.code.as_str().to_string())
        .unwrap_or_else(|| "INSTALL_REFUSED".into());
    let list: Vec<String> = plan
        .refusals
        .iter()
        .map(|r| format!("{}: {} ({})", r.device, r.message, r.code))
        .collect();
    Refused::from_wire(
        code,
        format!(
            "the node refuses this install, nothing was written: {}",
            list.join("; ")
        ),
    )
}

/// `install 12.3 s` lines from the agent's own timings.
pub fn timings_text(result: &OperationResult) -> String {
    let mut out = String::new();
    if let Some(install) = &result.install {
        for t in &install.steps {
            let _ = writeln!(out, "  {:<13} {:>8.1} s", t.step.as_str(), t.seconds);
        }
    }
    out
}

/// Why the install failed, at which step, and that the node can be retried.
pub fn failure_text(result: &OperationResult) -> String {
    let step = result
        .install
        .as_ref()
        .and_then(|i| i.failed_step)
        .map_or("an unknown step", InstallStep::as_str);
    let why = result.error.as_ref().map_or_else(
        || format!("operation ended {:?}", result.status),
        |e| format!("{} ({})", escape_lines(&e.message), e.code),
    );
    format!(
        "install operation {} failed at step {step}: {why}. The node's agent keeps serving \
         and the disks were unmounted and closed: fix the cause and run kctl node install again",
        escape(&result.operation_id)
    )
}

/// `host` of `HOST:PORT`, `[v6]:PORT` or `https://HOST:PORT`.
pub fn host_of(address: &str) -> String {
    let bare = address.trim_start_matches("https://").trim_end_matches('/');
    let host = match bare.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => bare,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcore_api::ErrorCode;
    use kcore_api::cluster::StorageBackend;
    use kcore_api::install::{
        DataDiskMode, InstallOutcome, InstallRefusal, InstallSpec, LuksChoice, StepTiming,
        WipedDisk,
    };
    use kcore_api::inventory::{OperationKind, OperationStatus};
    use kcore_api::plan::{Action, ActionKind, ChangeClass, Plan, Target};

    fn plan() -> InstallPlan {
        InstallPlan {
            spec: InstallSpec {
                cluster: "lab".into(),
                node_id: "0b5e0f3c-1111-4222-8333-444455556666".into(),
                hostname: Some("kcore-0b5e0f3c".into()),
                dc_id: "DC1".into(),
                controllers: vec!["10.0.0.1:9090".into()],
                os_disk: "/dev/disk/by-id/ata-OS".into(),
                data_disks: vec!["/dev/disk/by-id/ata-DATA".into()],
                data_disk_mode: DataDiskMode::Stripe,
                storage_backend: StorageBackend::Lvm,
                lvm_vg_name: Some("vg_kcore".into()),
                lvm_lv_prefix: None,
                zfs_pool_name: None,
                zfs_dataset_prefix: None,
                luks: LuksChoice::Tpm2,
                luks_key_device: None,
                run_controller: false,
                disable_vxlan: false,
            },
            tpm: true,
            layout: "{ disko.devices = { }; }".into(),
            validated: vec!["parse".into(), "eval".into()],
            plan: Plan::from_targets(vec![Target {
                name: "os".into(),
                device: "/dev/disk/by-id/ata-OS".into(),
                identity: None,
                actions: vec![Action {
                    kind: ActionKind::NewDisk,
                    class: ChangeClass::Destructive,
                    detail: "gpt: ESP, luks root".into(),
                }],
                refusals: vec![],
            }]),
            wipes: vec![WipedDisk {
                role: "data".into(),
                given: "/dev/sdb".into(),
                by_id: "/dev/disk/by-id/ata-DATA".into(),
                path: "/dev/sdb".into(),
                serial: Some("S123".into()),
                model: Some("Disk\u{1b}[2J".into()),
                size_bytes: 10 * 1024 * 1024 * 1024,
                content: vec![
                    "gpt partition table".into(),
                    "ext4 filesystem on sdb1".into(),
                ],
            }],
            refusals: vec![],
            plan_hash: "sha256:abc".into(),
            system: "/nix/store/xyz-nixos-system".into(),
        }
    }

    #[test]
    fn the_plan_lists_every_wipe_with_identity_size_and_content() {
        let text = plan_text(&plan(), false);
        assert!(
            text.contains("node 0b5e0f3c-1111-4222-8333-444455556666 (kcore-0b5e0f3c)"),
            "{text}"
        );
        assert!(
            text.contains("storage lvm, luks tpm2 (tpm present)"),
            "{text}"
        );
        assert!(
            text.contains("/dev/sdb -> /dev/disk/by-id/ata-DATA (/dev/sdb), 10.0 GiB"),
            "{text}"
        );
        assert!(text.contains("serial S123"), "{text}");
        assert!(
            text.contains("now holds: gpt partition table; ext4 filesystem on sdb1"),
            "{text}"
        );
        // The node's strings cannot drive the terminal.
        assert!(!text.contains('\u{1b}'), "{text:?}");
        // The layout only with --dry-run or -v.
        assert!(!text.contains("disko.devices"), "{text}");
        let text = plan_text(&plan(), true);
        assert!(text.contains("layout:\n{ disko.devices"), "{text}");
        assert!(
            text.contains("os /dev/disk/by-id/ata-OS: new-disk gpt: ESP, luks root (destructive)"),
            "{text}"
        );
    }

    #[test]
    fn refusals_are_printed_and_become_exit_1_with_the_code() {
        let mut p = plan();
        p.refusals = vec![
            InstallRefusal {
                device: "/dev/sda".into(),
                code: ErrorCode::TargetIsOsDisk,
                message: "/dev/sda carries the running system".into(),
            },
            InstallRefusal {
                device: "/dev/sdc".into(),
                code: ErrorCode::TargetMounted,
                message: "/dev/sdc1 is mounted at /data".into(),
            },
        ];
        let text = plan_text(&p, false);
        assert!(
            text.contains(
                "REFUSED /dev/sda: /dev/sda carries the running system (TARGET_IS_OS_DISK)"
            ),
            "{text}"
        );
        assert!(text.contains("REFUSED /dev/sdc"), "{text}");
        let refused = refusal(&p);
        assert_eq!(refused.code, "TARGET_IS_OS_DISK");
        assert!(
            refused.message.contains("/dev/sdc1 is mounted"),
            "{}",
            refused.message
        );
        let err: anyhow::Error = refused.into();
        assert_eq!(crate::exit::code_for(&err), crate::exit::REFUSED);
    }

    #[test]
    fn timings_and_failures_name_their_steps() {
        let result = OperationResult {
            operation_id: "op-1".into(),
            kind: OperationKind::Install,
            status: OperationStatus::Failed,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: None,
            effective_timeout_seconds: None,
            error: Some(kcore_api::ApiError {
                code: "COMMAND_FAILED".into(),
                message: "nixos-install exited 1".into(),
                details: serde_json::Value::Null,
            }),
            generation: None,
            written: vec![],
            output_tail: vec![],
            install: Some(InstallOutcome {
                steps: vec![StepTiming {
                    step: InstallStep::Format,
                    seconds: 12.25,
                }],
                failed_step: Some(InstallStep::Install),
                luks_device: None,
                system: None,
            }),
        };
        assert_eq!(timings_text(&result), "  format            12.2 s\n");
        let text = failure_text(&result);
        assert!(
            text.contains("failed at step install: nixos-install exited 1 (COMMAND_FAILED)"),
            "{text}"
        );
        assert!(text.contains("keeps serving"), "{text}");
    }

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("10.0.0.5:9091"), "10.0.0.5");
        assert_eq!(host_of("https://hv1.lab:9091/"), "hv1.lab");
        assert_eq!(host_of("[::1]:9091"), "::1");
        assert_eq!(host_of("hv1"), "hv1");
    }
}
