//! Printing data: a readable table by default, or JSON / YAML for scripts (`-o`).

use clap::ValueEnum;
use serde::Serialize;

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

/// Render `value` in `format` to a string ending in a newline.
pub fn render<T: Tabular>(value: &T, format: OutputFormat) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(value)?),
        OutputFormat::Yaml => serde_yaml_ng::to_string(value)?,
        OutputFormat::Table | OutputFormat::Wide => {
            let wide = format == OutputFormat::Wide;
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            table.set_header(value.headers(wide));
            for row in value.rows(wide) {
                table.add_row(row);
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
