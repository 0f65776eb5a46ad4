//! A node storage spec turned into disko fragments, validated in levels, and planned
//! against the block devices that are really there.
//!
//! - [`spec`]: the typed storage spec and its validation (names, paths, sizes).
//! - [`render`]: tera templates to readable `.nix` fragments, every value escaped.
//! - [`syntax`]: validation level 1, Nix syntax with rnix.
//! - [`model`]: the typed disko device tree that level 2 checks an evaluated fragment against.
//! - [`eval`]: levels 2 and 3, `nix-instantiate` through kcore-nix.
//! - [`reference`]: what disko's own CLI says of a file (the verdict kctl is compared with).
//! - [`snapshot`]: the block devices of a machine (lsblk, swaps, holders, by-id links).
//! - [`plan`]: what applying a fragment would do to those devices, and whether it is refused.

pub mod eval;
pub mod model;
pub mod plan;
pub mod reference;
pub mod render;
pub mod snapshot;
pub mod spec;
pub mod syntax;

pub use eval::{DeepInputs, DeepOutput};
pub use model::DeviceTree;
pub use plan::{BuildPlan, Plan, RefusalCode};
pub use render::{render_data_disk, render_fragment, render_install_fragment};
pub use snapshot::BlockSnapshot;
pub use spec::StorageSpec;

/// A problem with one field of the spec or one option of a fragment: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// The spec field (`lvm.vgName`) or disko option path (`disko.devices.disk.os.device`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Several problems, printed one per line.
pub fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The most problems one validation reports (level-1 syntax errors, findings of a level):
/// a deeply nested fragment once produced a thousand near-identical syntax errors.
pub const MAX_REPORTED: usize = 20;

/// Fold items that repeat one message into the first of them (its message then says how
/// many more there were and where the first few are), and past `max` items replace the
/// rest by one summary made by `summary(count_left_out, first_left_out)`. Order is kept.
pub(crate) fn fold_repeats<T>(
    items: Vec<T>,
    max: usize,
    message: impl Fn(&mut T) -> &mut String,
    location: impl Fn(&T) -> String,
    summary: impl FnOnce(usize, &T) -> T,
) -> Vec<T> {
    let mut groups: Vec<(T, Vec<String>)> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for mut item in items {
        let key = message(&mut item).clone();
        match seen.get(&key) {
            Some(&i) => {
                let at = location(&item);
                let (_, more) = &mut groups[i];
                more.push(at);
            }
            None => {
                seen.insert(key, groups.len());
                groups.push((item, Vec::new()));
            }
        }
    }
    let mut out: Vec<T> = groups
        .into_iter()
        .map(|(mut item, more)| {
            if !more.is_empty() {
                let shown: Vec<&str> = more.iter().take(3).map(String::as_str).collect();
                let ellipsis = if more.len() > shown.len() {
                    ", …"
                } else {
                    ""
                };
                let text = message(&mut item);
                text.push_str(&format!(
                    " (and {} more like it, at {}{ellipsis})",
                    more.len(),
                    shown.join(", ")
                ));
            }
            item
        })
        .collect();
    if out.len() > max {
        let rest = out.split_off(max.saturating_sub(1));
        if let Some(first) = rest.first() {
            out.push(summary(rest.len(), first));
        }
    }
    out
}
