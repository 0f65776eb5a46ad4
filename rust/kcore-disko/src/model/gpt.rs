//! `type = "gpt"`: a GPT partition table, partitions as an attribute set (disko's
//! `lib/types/gpt.nix`).

use serde_json::{Map, Value};

use super::walk::{Slot, Walker, content_options};
use super::{Content, Partition};

/// The options of one GPT partition (the submodule in `gpt.nix`).
const PARTITION_OPTIONS: [&str; 13] = [
    "type",
    "attributes",
    "device",
    "priority",
    "name",
    "uuid",
    "label",
    "size",
    "alignment",
    "start",
    "end",
    "content",
    "hybrid",
];

pub(super) fn parse(w: &mut Walker, obj: &Map<String, Value>, path: &str) -> Content {
    w.keys(
        obj,
        path,
        "gpt",
        &content_options(&["partitions", "efiGptPartitionFirst"]),
        &[],
    );
    let mut partitions = Vec::new();
    for (name, pv, ppath) in w.map(obj, "partitions", path) {
        let Some(p) = w.obj(pv, &ppath, "partition") else {
            continue;
        };
        w.keys(p, &ppath, "gpt partition", &PARTITION_OPTIONS, &[]);
        if let Some(size) = w.string(p, "size", &ppath) {
            if !valid_gpt_size(&size) {
                w.err(
                    &format!("{ppath}.size"),
                    format!(
                        "{size:?} is not a GPT size: use 100% or a number with an optional K, M, G, T or P suffix"
                    ),
                );
            }
        }
        partitions.push(Partition {
            name,
            size: w.string(p, "size", &ppath),
            start: w.string(p, "start", &ppath),
            end: w.string(p, "end", &ppath),
            part_type: w.string(p, "type", &ppath),
            content: w.content(
                p.get("content"),
                &format!("{ppath}.content"),
                Slot::Partition,
            ),
        });
    }
    Content::Gpt { partitions }
}

fn valid_gpt_size(size: &str) -> bool {
    if size == "100%" {
        return true;
    }
    let digits = size.strip_suffix(['K', 'M', 'G', 'T', 'P']).unwrap_or(size);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}
