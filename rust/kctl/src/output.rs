//! Printing data: a readable table by default, or JSON / YAML for scripts (`-o`). What is
//! printed carries no raw control characters ([`crate::escape`]).

use clap::ValueEnum;
use serde::Serialize;

use crate::escape;

/// How a command prints the data it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// A readable table (the default).
    #[default]
    Table,
    /// A table with more columns.
    Wide,
    /// JSON, pretty-printed.
    Json,
    /// YAML.
    Yaml,
}

/// A value that can show itself as a table; JSON and YAML come from `Serialize`.
pub trait Tabular: Serialize {
    /// Column headers; `wide` asks for the extended set.
    fn headers(&self, wide: bool) -> Vec<String>;
    /// One row per item, each as long as `headers(wide)`.
    fn rows(&self, wide: bool) -> Vec<Vec<String>>;
}

/// `value` as JSON or YAML, with no raw control characters (see [`crate::escape`]).
fn render_data<T: Serialize + ?Sized>(value: &T, format: OutputFormat) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Yaml => escape::yaml(value)?,
        _ => format!("{}\n", escape::json(serde_json::to_string_pretty(value)?)),
    })
}

/// Render `value` in `format` to a string ending in a newline. Table cells are escaped
/// here, in one place: most of them hold what nodes and agents reported.
pub fn render<T: Tabular>(value: &T, format: OutputFormat) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Json | OutputFormat::Yaml => render_data(value, format)?,
        OutputFormat::Table | OutputFormat::Wide => {
            let wide = format == OutputFormat::Wide;
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            table.set_header(value.headers(wide));
            for row in value.rows(wide) {
                table.add_row(
                    row.iter()
                        .map(|cell| escape::escape(cell).into_owned())
                        .collect::<Vec<_>>(),
                );
            }
            // comfy-table pads the last column; trim so output diffs cleanly.
            let text: Vec<String> = table
                .to_string()
                .lines()
                .map(|line| {
                    let line = line.trim_end();
                    line.strip_prefix(' ').unwrap_or(line).to_string()
                })
                .collect();
            format!("{}\n", text.join("\n"))
        }
    })
}

/// Print `value` to stdout in `format`.
pub fn print<T: Tabular>(value: &T, format: OutputFormat) -> anyhow::Result<()> {
    print!("{}", render(value, format)?);
    Ok(())
}

/// Print one object: JSON or YAML as data, otherwise `text()`, which must escape what
/// it takes from the object ([`crate::escape::escape`]).
pub fn print_object<T: Serialize>(
    value: &T,
    format: OutputFormat,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json | OutputFormat::Yaml => print!("{}", render_data(value, format)?),
        OutputFormat::Table | OutputFormat::Wide => print!("{}", text()),
    }
    Ok(())
}
