//! Table and text views of what kctl prints, one module per kind or area, so command
//! modules only fetch and decide. JSON and YAML come from the values' `Serialize`;
//! every cell and line here is escaped on the way out ([`crate::output`],
//! [`crate::escape`]).

pub mod context;
pub mod disko;
pub mod install;
pub mod inventory;
pub mod node;
pub mod operation;
pub mod resource;
pub mod storage_class;
pub mod sub_ca;
pub mod vm;

/// `1.5 GiB`-style sizes for tables (kcore-api's one spelling, also in controller messages).
pub use kcore_api::validate::human_bytes;

/// `-` for a missing or empty value.
pub fn or_dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// [`human_bytes`], or `?` when the size is not known.
pub fn size(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "?".into(), human_bytes)
}

/// The date part of an RFC 3339 timestamp (enough for a table).
pub fn date(ts: &str) -> String {
    ts.split('T').next().unwrap_or(ts).to_string()
}

/// `5s`, `3m`, `2h`, `4d` since an RFC 3339 timestamp.
pub fn age(ts: &str) -> String {
    let Ok(then) = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
    else {
        return "?".into();
    };
    let secs = (time::OffsetDateTime::now_utc() - then)
        .whole_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(10 * 1024 * 1024 * 1024), "10.0 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
