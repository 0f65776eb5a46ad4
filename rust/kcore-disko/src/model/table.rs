//! `type = "table"`: the legacy msdos/gpt table, partitions as a list (disko's
//! `lib/types/table.nix`).

use serde_json::{Map, Value};

use super::walk::{Slot, Walker, content_options, kind};
use super::{Content, Partition};

/// The options of one table partition (the submodule in `table.nix`).
const PARTITION_OPTIONS: [&str; 8] = [
    "part-type",
    "fs-type",
    "name",
    "start",
    "end",
    "flags",
    "bootable",
    "content",
];

pub(super) fn parse(w: &mut Walker, obj: &Map<String, Value>, path: &str) -> Content {
    w.keys(
        obj,
        path,
        "table",
        &content_options(&["format", "partitions"]),
        &[],
    );
    let format = w
        .string(obj, "format", path)
        .unwrap_or_else(|| "gpt".into());
    let mut partitions = Vec::new();
    match obj.get("partitions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, pv) in items.iter().enumerate() {
                let ppath = format!("{path}.partitions.[{i}]");
                let Some(p) = w.obj(pv, &ppath, "partition") else {
                    continue;
                };
                w.keys(p, &ppath, "table partition", &PARTITION_OPTIONS, &[]);
                partitions.push(Partition {
                    name: w
                        .string(p, "name", &ppath)
                        .unwrap_or_else(|| format!("{}", i + 1)),
                    size: None,
                    start: w.string(p, "start", &ppath),
                    end: w.string(p, "end", &ppath),
                    part_type: w.string(p, "part-type", &ppath),
                    content: w.content(
                        p.get("content"),
                        &format!("{ppath}.content"),
                        Slot::Partition,
                    ),
                });
            }
        }
        Some(other) => w.err(
            &format!("{path}.partitions"),
            format!("must be a list, got {}", kind(other)),
        ),
    }
    Content::Table { format, partitions }
}
