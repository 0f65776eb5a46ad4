//! A node storage spec turned into disko fragments, validated in levels, and planned
//! against the block devices that are really there.
//!
//! - [`spec`]: the typed storage spec and its validation (names, paths, sizes).
//! - [`render`]: tera templates to readable `.nix` fragments, every value escaped.
//! - [`syntax`]: validation level 1, Nix syntax with rnix.
//! - [`model`]: the typed disko device tree that level 2 checks an evaluated fragment against.
//! - [`eval`]: levels 2 and 3, `nix-instantiate` through kcore-nix.
//! - [`snapshot`]: the block devices of a machine (lsblk, swaps, holders, by-id links).
//! - [`plan`]: what applying a fragment would do to those devices, and whether it is refused.

pub mod eval;
pub mod model;
pub mod plan;
pub mod render;
pub mod snapshot;
pub mod spec;
pub mod syntax;

pub use eval::{DeepInputs, DeepOutput};
pub use model::DeviceTree;
pub use plan::{Plan, RefusalCode};
pub use render::{render_data_disk, render_fragment};
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
