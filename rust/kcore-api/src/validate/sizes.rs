//! Sizes: byte counts and human sizes (`40G`, `40GiB`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{FieldError, describe, max_len, not_empty};

/// A size as disko, sgdisk and LVM take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// An exact number of bytes.
    Bytes(u64),
    /// A percentage (1-100) of the space that remains, written `N%` (disko's `"100%"`).
    Percent(u8),
    /// A percentage (1-100) of the free space in an LVM volume group, written `N%FREE`.
    PercentFree(u8),
}

impl Size {
    /// The exact byte count, when the size is one.
    pub fn bytes(&self) -> Option<u64> {
        match self {
            Size::Bytes(b) => Some(*b),
            _ => None,
        }
    }
}

const UNITS: &[(char, u64)] = &[
    ('P', 1 << 50),
    ('T', 1 << 40),
    ('G', 1 << 30),
    ('M', 1 << 20),
    ('K', 1 << 10),
];

/// The disko spelling: the largest binary unit that divides the byte count exactly
/// (`10G`, `1536M`), else plain bytes; `N%` and `N%FREE` as parsed. [`parse_size`] reads it
/// back to the same value.
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Bytes(b) => {
                for (unit, factor) in UNITS {
                    if *b >= *factor && b % factor == 0 {
                        return write!(f, "{}{unit}", b / factor);
                    }
                }
                write!(f, "{b}")
            }
            Size::Percent(p) => write!(f, "{p}%"),
            Size::PercentFree(p) => write!(f, "{p}%FREE"),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_size("size", &text).map_err(serde::de::Error::custom)
    }
}

/// Parse a size: a whole number of bytes (`1048576`, `512B`), a whole number with a binary
/// unit (`512M`, `10G`, `1T`; `K M G T P`, either case, optionally `KiB`..`PiB`: all
/// 1024-based, as disko, sgdisk and LVM read them), `N%` or `N%FREE` with N in 1-100.
///
/// Refused with a fix: `GB`-style units (ambiguous between 10^9 and 2^30), fractions
/// (`1.5G`: write `1536M`), signs, spaces, zero, and values that overflow 64 bits.
pub fn parse_size(field: &str, value: &str) -> Result<Size, FieldError> {
    let err = |problem: String, fix: &str| Err(FieldError::new(field, value, problem, fix));
    not_empty(field, value, "10G")?;
    max_len(field, value, 32)?;
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return err(
            format!("contains {}", describe(c)),
            "write the number and unit together, e.g. 10G",
        );
    }
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(digits_end);
    if number.is_empty() {
        return err(
            "does not start with a number".to_owned(),
            "write a whole number with an optional unit, e.g. 512M, 10G or 100%",
        );
    }
    if suffix.starts_with(['.', ',']) {
        return err(
            "is not a whole number".to_owned(),
            "use a smaller unit instead of a fraction, e.g. 1536M rather than 1.5G",
        );
    }
    let Ok(n) = number.parse::<u64>() else {
        return err(
            "is too large".to_owned(),
            "sizes must fit in 64 bits of bytes",
        );
    };
    if n == 0 {
        return err("is zero".to_owned(), "give a size greater than zero");
    }
    let percent = |n: u64, make: fn(u8) -> Size| match u8::try_from(n) {
        Ok(p @ 1..=100) => Ok(make(p)),
        _ => Err(FieldError::new(
            field,
            value,
            format!("is {n}%, more than 100%"),
            "give a percentage from 1 to 100",
        )),
    };
    let factor: u64 = match suffix {
        "" | "B" | "b" => 1,
        "%" => return percent(n, Size::Percent),
        "%FREE" => return percent(n, Size::PercentFree),
        s => {
            let mut chars = s.chars();
            let unit = chars.next().map(|c| c.to_ascii_uppercase());
            let rest = chars.as_str();
            match (UNITS.iter().find(|(u, _)| Some(*u) == unit), rest) {
                (Some((_, factor)), "" | "iB" | "i") => *factor,
                (Some((u, _)), "B" | "b") => {
                    return err(
                        format!("uses the unit \"{u}B\", which can mean 10^n or 2^n bytes"),
                        &format!("write {n}{u} or {n}{u}iB (1024-based, as disko and LVM read it)"),
                    );
                }
                _ => {
                    return err(
                        format!("has the unknown unit {s:?}"),
                        "use B, K, M, G, T or P (1024-based), N% or N%FREE, e.g. 10G",
                    );
                }
            }
        }
    };
    match n.checked_mul(factor) {
        Some(bytes) => Ok(Size::Bytes(bytes)),
        None => err(
            "is too large".to_owned(),
            "sizes must fit in 64 bits of bytes",
        ),
    }
}

/// A size for people: `1.5 GiB` (binary units, one decimal), `512 B` below 1 KiB. Tables
/// in kctl and the controller's messages ("largest free 12.0 GiB") use this one spelling.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
