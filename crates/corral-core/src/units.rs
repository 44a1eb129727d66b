//! Durations and sizes as people write them: `500ms`, `1h30m`, `50MB`, `2GiB`.
//!
//! Every file and API of corral writes durations and sizes as strings (see SPEC, "Paths and defaults").
//! This module is the one place that parses and prints them, so `timeout = "10m"` in a pipeline file,
//! `"grace": "5s"` in a JSON body and `?wait=30s` in a query string all mean the same thing.
//!
//! - [`parse_duration`] / [`format_duration`]: `500ms`, `30s`, `5m`, `1h`, `1h30m`, `1.5s`. A number
//!   without a unit is refused (is `30` seconds or milliseconds?), and so is a negative one.
//! - [`parse_size`] / [`format_size`]: `512` (bytes), `1KiB`, `1MiB`, `2GiB` (binary, powers of 1024),
//!   `1kB`, `50MB` (decimal, powers of 1000); the suffix is case-insensitive.
//! - Serde helpers for struct fields: [`duration`], [`option_duration`], [`size`], [`option_size`].
//!
//! [`format_duration`] and [`format_size`] are exact: parsing what they print gives back the same value,
//! so a serialized spec deserializes to an equal one.

use std::fmt;
use std::time::Duration;

/// Which kind of quantity a [`UnitError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// A duration such as `30s`.
    Duration,
    /// A size such as `50MB`.
    Size,
}

impl Quantity {
    fn example(self) -> &'static str {
        match self {
            Quantity::Duration => "\"500ms\", \"30s\", \"5m\", \"1h30m\"",
            Quantity::Size => "\"512\", \"64KiB\", \"1MiB\", \"50MB\"",
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantity::Duration => "duration",
            Quantity::Size => "size",
        })
    }
}

/// A duration or size that could not be parsed. The message quotes the input and shows valid examples.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text was empty (or only whitespace).
    #[error("empty {kind}: write it with a unit, such as {}", kind.example())]
    Empty {
        /// Duration or size.
        kind: Quantity,
    },
    /// A duration that is a bare number: `30` could mean seconds or milliseconds. (A bare size is bytes.)
    #[error(
        "duration {input:?} has no unit: write e.g. \"{input}s\" or \"{input}ms\" (units: ns, us, ms, s, m, h, d)"
    )]
    MissingUnit {
        /// The text as given.
        input: String,
    },
    /// A negative value.
    #[error("{kind} {input:?} is negative: write a positive value, such as {}", kind.example())]
    Negative {
        /// Duration or size.
        kind: Quantity,
        /// The text as given.
        input: String,
    },
    /// The value does not fit (more than `u64` bytes, or a duration of centuries).
    #[error("{kind} {input:?} is too large")]
    Overflow {
        /// Duration or size.
        kind: Quantity,
        /// The text as given.
        input: String,
    },
    /// Anything else: an unknown unit, a stray character.
    #[error("invalid {kind} {input:?}: {reason}; write it such as {}", kind.example())]
    Invalid {
        /// Duration or size.
        kind: Quantity,
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Parses a duration: one or more `<number><unit>` parts, such as `500ms`, `30s`, `5m`, `1h30m`, `1.5s`,
/// `2h 15m`.
///
/// Units: `ns`, `us`/`µs`, `ms`, `s`/`sec`, `m`/`min`, `h`/`hr`, `d`/`day`, `w`/`week` and their
/// long forms. `0` alone is accepted (zero needs no unit); any other bare number, a negative value, the
/// empty string, and months and years (no fixed length; `5M` would read as months) are refused with a
/// message that shows the expected form.
///
/// ```
/// use std::time::Duration;
/// use corral_core::units::parse_duration;
///
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
/// assert!(parse_duration("30").expect_err("should be refused").to_string().contains("\"30s\""));
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let kind = Quantity::Duration;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty { kind });
    }
    if trimmed.starts_with('-') {
        return Err(UnitError::Negative {
            kind,
            input: text.to_owned(),
        });
    }
    let trimmed = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if is_bare_number(trimmed) {
        if trimmed.bytes().all(|b| b == b'0' || b == b'.') {
            return Ok(Duration::ZERO);
        }
        return Err(UnitError::MissingUnit {
            input: trimmed.to_owned(),
        });
    }
    if let Some(unit) = calendar_unit(trimmed) {
        return Err(UnitError::Invalid {
            kind,
            input: text.to_owned(),
            reason: format!("{unit:?} is a calendar unit with no fixed length (and \"M\" is not minutes): use days, such as \"30d\""),
        });
    }
    humantime::parse_duration(trimmed).map_err(|err| match err {
        humantime::DurationError::NumberOverflow if !has_sub_nanosecond_fraction(trimmed) => UnitError::Overflow {
            kind,
            input: text.to_owned(),
        },
        err => UnitError::Invalid {
            kind,
            input: text.to_owned(),
            reason: err.to_string(),
        },
    })
}

/// The first month or year unit in `text`, which humantime would accept (`5M` is five months there).
fn calendar_unit(text: &str) -> Option<&str> {
    text.split(|c: char| !c.is_alphabetic())
        .find(|unit| matches!(*unit, "M" | "month" | "months" | "y" | "yr" | "yrs" | "year" | "years"))
}

/// True for `123` and `1.5`: digits with at most one dot and nothing else.
fn is_bare_number(text: &str) -> bool {
    let mut dots = 0;
    let mut digits = 0;
    for byte in text.bytes() {
        match byte {
            b'0'..=b'9' => digits += 1,
            b'.' => dots += 1,
            _ => return false,
        }
    }
    digits > 0 && dots <= 1
}

/// humantime reports `1.5ns` as an overflow; it is a precision problem, not a size one.
fn has_sub_nanosecond_fraction(text: &str) -> bool {
    text.contains('.') && text.contains("ns")
}

/// Formats a duration compactly and exactly: `0s`, `250ms`, `1.5s`, `2m`, `1h30m`, `1m0.25s`, `1d2h`.
///
/// Under a second it uses the largest of `ms`, `us`, `ns` that is at least one, with a decimal fraction
/// when needed; from a second on it writes days, hours, minutes and seconds, leaving out zero parts.
/// [`parse_duration`] reads back exactly the same duration.
///
/// ```
/// use std::time::Duration;
/// use corral_core::units::format_duration;
///
/// assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
/// assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
/// assert_eq!(format_duration(Duration::from_secs(120)), "2m");
/// ```
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.subsec_nanos();
    let secs = duration.as_secs();
    if secs == 0 {
        return match nanos {
            0 => "0s".to_owned(),
            n if n >= 1_000_000 => with_fraction(u64::from(n / 1_000_000), n % 1_000_000, 6, "ms"),
            n if n >= 1_000 => with_fraction(u64::from(n / 1_000), n % 1_000, 3, "us"),
            n => format!("{n}ns"),
        };
    }
    let mut out = String::new();
    let days = secs / 86_400;
    let hours = secs % 86_400 / 3_600;
    let minutes = secs % 3_600 / 60;
    let seconds = secs % 60;
    for (value, unit) in [(days, "d"), (hours, "h"), (minutes, "m")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    if seconds > 0 || nanos > 0 {
        out.push_str(&with_fraction(seconds, nanos, 9, "s"));
    }
    out
}

/// `whole.fraction<unit>`, with the fraction (of `digits` digits) trimmed of trailing zeros.
fn with_fraction(whole: u64, fraction: u32, digits: usize, unit: &str) -> String {
    if fraction == 0 {
        return format!("{whole}{unit}");
    }
    let fraction = format!("{fraction:0digits$}");
    format!("{whole}.{}{unit}", fraction.trim_end_matches('0'))
}

/// Binary (IEC) size units, largest first.
const BINARY_UNITS: &[(&str, u64)] = &[
    ("EiB", 1 << 60),
    ("PiB", 1 << 50),
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];

/// Decimal (SI) size units, largest first.
const DECIMAL_UNITS: &[(&str, u64)] = &[
    ("EB", 1_000_000_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("kB", 1_000),
];

/// The multiplier of a size suffix, matched case-insensitively: `B`, `KiB`/`Ki`, `kB`/`K`, ...
fn size_multiplier(suffix: &str) -> Option<u64> {
    let lower = suffix.to_ascii_lowercase();
    let unit = lower.strip_suffix('b').unwrap_or(&lower);
    let (prefix, binary) = match unit.strip_suffix('i') {
        Some(prefix) => (prefix, true),
        None => (unit, false),
    };
    let power = match prefix {
        "" if !binary => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        "e" => 6,
        _ => return None,
    };
    let base: u64 = if binary { 1024 } else { 1000 };
    Some(base.pow(power))
}

/// Parses a size in bytes: a bare number of bytes (`512`), or a number and a unit, decimal (`1kB`,
/// `50MB`, `1GB`: powers of 1000) or binary (`1KiB`, `1MiB`, `2GiB`: powers of 1024).
///
/// The suffix is case-insensitive (`50mb` is `50MB`), the `B` may be left out (`64Ki`, `10M`), and a
/// fraction is allowed (`1.5GiB`; rounded down to whole bytes). Values above `u64::MAX` are refused.
///
/// ```
/// use corral_core::units::parse_size;
///
/// assert_eq!(parse_size("1MiB").unwrap(), 1_048_576);
/// assert_eq!(parse_size("50MB").unwrap(), 50_000_000);
/// assert_eq!(parse_size("512").unwrap(), 512);
/// ```
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let kind = Quantity::Size;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty { kind });
    }
    let invalid = |reason: &str| UnitError::Invalid {
        kind,
        input: text.to_owned(),
        reason: reason.to_owned(),
    };
    if trimmed.starts_with('-') {
        return Err(UnitError::Negative {
            kind,
            input: text.to_owned(),
        });
    }
    let trimmed = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let number_len = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(number_len);
    let number = number.replace('_', "");
    let suffix = suffix.trim_start();
    if number.is_empty() || number == "." {
        return Err(invalid("expected a number first"));
    }
    let multiplier = size_multiplier(suffix).ok_or_else(|| {
        invalid(&format!(
            "unknown unit {suffix:?} (units: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB; case does not matter)"
        ))
    })?;
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number.as_str(), ""),
    };
    if fraction.contains('.') {
        return Err(invalid("more than one decimal point"));
    }
    let overflow = || UnitError::Overflow {
        kind,
        input: text.to_owned(),
    };
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| overflow())?
    };
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(overflow)?;
    if !fraction.is_empty() {
        // Exact in u128: at most 19 significant fraction digits matter for a u64 multiplier.
        let digits = &fraction[..fraction.len().min(19)];
        let numerator: u128 = digits.parse().map_err(|_| invalid("bad fraction"))?;
        let denominator = 10u128.pow(digits.len() as u32);
        let extra = numerator * u128::from(multiplier) / denominator;
        let extra = u64::try_from(extra).map_err(|_| overflow())?;
        bytes = bytes.checked_add(extra).ok_or_else(overflow)?;
    }
    Ok(bytes)
}

/// Formats a size exactly, in the unit that gives the shortest number: `512B`, `1KiB`, `50MB`, `2GiB`.
///
/// ```
/// use corral_core::units::format_size;
///
/// assert_eq!(format_size(1_048_576), "1MiB");
/// assert_eq!(format_size(50_000_000), "50MB");
/// assert_eq!(format_size(1_500), "1500B");
/// ```
pub fn format_size(bytes: u64) -> String {
    let mut best = (bytes, "B");
    for &(unit, multiplier) in BINARY_UNITS.iter().chain(DECIMAL_UNITS) {
        if bytes != 0 && bytes % multiplier == 0 && bytes / multiplier < best.0 {
            best = (bytes / multiplier, unit);
        }
    }
    format!("{}{}", best.0, best.1)
}

/// Serde helper for a [`Duration`] field: `#[serde(with = "corral_core::units::duration")]`.
///
/// Serializes as a string such as `"1.5s"`. Deserializes from such a string, or from an integer number of
/// nanoseconds (tailkit's JSON files write timeouts that way).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Writes the duration as a string such as `"1.5s"`.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*duration))
    }

    /// Reads a string such as `"30s"` or an integer number of nanoseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(super::DurationVisitor)
    }
}

/// Serde helper for an `Option<Duration>` field: `#[serde(default, with =
/// "corral_core::units::option_duration")]` (`default` makes a missing field `None`).
///
/// `None` serializes as null (add `skip_serializing_if = "Option::is_none"` to leave the field out); a
/// value as with [`duration`]. Null deserializes to `None`.
pub mod option_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Writes `Some` as a string such as `"1.5s"` and `None` as null.
    pub fn serialize<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => super::duration::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads null, a string such as `"30s"`, or an integer number of nanoseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        deserializer.deserialize_option(super::OptionVisitor(super::DurationVisitor))
    }
}

/// Serde helper for a size field in bytes (`u64`): `#[serde(with = "corral_core::units::size")]`.
///
/// Serializes as a string such as `"50MB"`. Deserializes from such a string or an integer number of bytes.
pub mod size {
    use serde::{Deserializer, Serializer};

    /// Writes the size as a string such as `"1MiB"`.
    pub fn serialize<S: Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_size(*bytes))
    }

    /// Reads a string such as `"50MB"` or an integer number of bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(super::SizeVisitor)
    }
}

/// Serde helper for an `Option<u64>` size field: `#[serde(default, with = "corral_core::units::option_size")]`.
pub mod option_size {
    use serde::{Deserializer, Serializer};

    /// Writes `Some` as a string such as `"1MiB"` and `None` as null.
    pub fn serialize<S: Serializer>(bytes: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::size::serialize(bytes, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads null, a string such as `"50MB"`, or an integer number of bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        deserializer.deserialize_option(super::OptionVisitor(super::SizeVisitor))
    }
}

/// Reads a duration from a string or an integer number of nanoseconds.
struct DurationVisitor;

impl<'de> serde::de::Visitor<'de> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"500ms\", \"30s\", \"5m\" or \"1h30m\" (or an integer of nanoseconds)")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        parse_duration(text).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, nanos: u64) -> Result<Duration, E> {
        Ok(Duration::from_nanos(nanos))
    }

    fn visit_i64<E: serde::de::Error>(self, nanos: i64) -> Result<Duration, E> {
        u64::try_from(nanos).map(Duration::from_nanos).map_err(|_| {
            E::custom(UnitError::Negative {
                kind: Quantity::Duration,
                input: nanos.to_string(),
            })
        })
    }
}

/// Reads a size from a string or an integer number of bytes.
struct SizeVisitor;

impl<'de> serde::de::Visitor<'de> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as \"512\", \"64KiB\", \"1MiB\" or \"50MB\" (or an integer of bytes)")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
        parse_size(text).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<u64, E> {
        Ok(bytes)
    }

    fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<u64, E> {
        u64::try_from(bytes).map_err(|_| {
            E::custom(UnitError::Negative {
                kind: Quantity::Size,
                input: bytes.to_string(),
            })
        })
    }
}

/// Wraps a visitor to also accept null / none as `None`.
struct OptionVisitor<V>(V);

impl<'de, V: serde::de::Visitor<'de>> serde::de::Visitor<'de> for OptionVisitor<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)?;
        f.write_str(", or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self.0).map(Some)
    }

    // Formats without a separate "some" (TOML has no null) hand the value straight over.
    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        self.0.visit_str(text).map(Some)
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
        self.0.visit_u64(value).map(Some)
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
        self.0.visit_i64(value).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_durations() {
        let cases = [
            ("500ms", ms(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1h 30m", Duration::from_secs(5400)),
            ("1.5s", ms(1500)),
            ("  2m  ", Duration::from_secs(120)),
            ("250us", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
            ("1d", Duration::from_secs(86400)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("+3s", Duration::from_secs(3)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_bad_durations_with_examples() {
        let empty = parse_duration(" ").expect_err("should be refused");
        assert_eq!(
            empty,
            UnitError::Empty {
                kind: Quantity::Duration
            }
        );
        assert!(empty.to_string().contains("\"30s\""), "{empty}");

        let bare = parse_duration("30").expect_err("should be refused");
        assert!(matches!(bare, UnitError::MissingUnit { .. }));
        assert!(bare.to_string().contains("\"30s\""), "{bare}");
        assert!(matches!(parse_duration("1.5"), Err(UnitError::MissingUnit { .. })));

        let negative = parse_duration("-5s").expect_err("should be refused");
        assert!(matches!(negative, UnitError::Negative { .. }));
        assert!(negative.to_string().contains("negative"), "{negative}");

        for bad in ["5 parsecs", "s", "abc", "1x", "5s!", "5M", "1y", "2months", "1h 1year"] {
            let err = parse_duration(bad).expect_err("should be refused");
            assert!(matches!(err, UnitError::Invalid { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(UnitError::Overflow { .. })
        ));
    }

    #[test]
    fn formats_durations_compactly() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1_500), "1.5us"),
            (ms(250), "250ms"),
            (Duration::from_micros(1_250), "1.25ms"),
            (ms(1500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(3600), "1h"),
            (ms(60_250), "1m0.25s"),
            (Duration::from_secs(93_600), "1d2h"),
            (Duration::new(1, 1), "1.000000001s"),
        ];
        for (duration, want) in cases {
            assert_eq!(format_duration(duration), want, "{duration:?}");
        }
    }

    #[test]
    fn duration_format_round_trips() {
        let samples = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(999_999_999),
            Duration::new(59, 999_999_999),
            Duration::new(3_661, 5),
            Duration::new(86_400 * 400 + 7, 120_000_000),
            Duration::from_micros(1_000_001),
        ];
        for duration in samples {
            let text = format_duration(duration);
            assert_eq!(parse_duration(&text), Ok(duration), "{text}");
        }
    }

    #[test]
    fn parses_sizes() {
        let cases = [
            ("512", 512),
            ("512B", 512),
            ("1KiB", 1024),
            ("1kib", 1024),
            ("1kB", 1000),
            ("1KB", 1000),
            ("1k", 1000),
            ("64Ki", 65_536),
            ("1MiB", 1_048_576),
            ("50MB", 50_000_000),
            ("50mb", 50_000_000),
            ("2GiB", 2 * 1_073_741_824),
            ("1.5KiB", 1536),
            ("1.5GB", 1_500_000_000),
            (" 10 MiB ", 10 * 1_048_576),
            ("1_000", 1000),
            ("0", 0),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        assert_eq!(parse_size("15EiB"), Ok(15 << 60));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn refuses_bad_sizes() {
        assert_eq!(parse_size(""), Err(UnitError::Empty { kind: Quantity::Size }));
        assert!(matches!(parse_size("-1MB"), Err(UnitError::Negative { .. })));
        assert!(matches!(
            parse_size("18446744073709551616"),
            Err(UnitError::Overflow { .. })
        ));
        assert!(matches!(parse_size("20000PB"), Err(UnitError::Overflow { .. })));
        assert!(matches!(parse_size("16EiB"), Err(UnitError::Overflow { .. })));
        for bad in ["MB", "5 parsecs", "1.2.3MB", "1QB", "1iB", "."] {
            let err = parse_size(bad).expect_err("should be refused");
            assert!(matches!(err, UnitError::Invalid { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains("\"50MB\""), "{err}");
        }
    }

    #[test]
    fn formats_sizes_exactly() {
        let cases = [
            (0, "0B"),
            (512, "512B"),
            (1024, "1KiB"),
            (1000, "1kB"),
            (1500, "1500B"),
            (1_048_576, "1MiB"),
            (50_000_000, "50MB"),
            (2 * 1_073_741_824, "2GiB"),
            (1_024_000, "1000KiB"),
            (u64::MAX, "18446744073709551615B"),
        ];
        for (bytes, want) in cases {
            assert_eq!(format_size(bytes), want);
            assert_eq!(parse_size(want), Ok(bytes), "{want}");
        }
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Limits {
        #[serde(with = "duration")]
        timeout: Duration,
        #[serde(default, with = "option_duration", skip_serializing_if = "Option::is_none")]
        grace: Option<Duration>,
        #[serde(with = "size")]
        max_size: u64,
        #[serde(default, with = "option_size")]
        ring: Option<u64>,
    }

    #[test]
    fn serde_helpers_read_strings_and_integers() {
        let limits: Limits =
            serde_json::from_str(r#"{"timeout": "1m30s", "grace": "5s", "max_size": "50MB", "ring": "1MiB"}"#)
                .expect("UNWRAP: valid");
        assert_eq!(
            limits,
            Limits {
                timeout: Duration::from_secs(90),
                grace: Some(Duration::from_secs(5)),
                max_size: 50_000_000,
                ring: Some(1_048_576),
            }
        );
        // tailkit compatibility: integer nanoseconds; sizes as integer bytes; null and missing options.
        let limits: Limits =
            serde_json::from_str(r#"{"timeout": 30000000000, "max_size": 1024, "ring": null}"#).expect("UNWRAP: valid");
        assert_eq!(limits.timeout, Duration::from_secs(30));
        assert_eq!(limits.grace, None);
        assert_eq!(limits.max_size, 1024);
        assert_eq!(limits.ring, None);
    }

    #[test]
    fn serde_helpers_write_strings_and_round_trip() {
        let limits = Limits {
            timeout: Duration::from_millis(1500),
            grace: None,
            max_size: 2 << 30,
            ring: Some(4096),
        };
        let json = serde_json::to_string(&limits).expect("UNWRAP: serializable");
        assert_eq!(json, r#"{"timeout":"1.5s","max_size":"2GiB","ring":"4KiB"}"#);
        let back: Limits = serde_json::from_str(&json).expect("UNWRAP: round trip");
        assert_eq!(back, limits);
    }

    #[test]
    fn serde_helpers_report_bad_values() {
        let err = serde_json::from_str::<Limits>(r#"{"timeout": "30", "max_size": 1}"#).expect_err("should be refused");
        assert!(err.to_string().contains("\"30s\""), "{err}");
        let err = serde_json::from_str::<Limits>(r#"{"timeout": -5, "max_size": 1}"#).expect_err("should be refused");
        assert!(err.to_string().contains("negative"), "{err}");
        let err =
            serde_json::from_str::<Limits>(r#"{"timeout": "1s", "max_size": "lots"}"#).expect_err("should be refused");
        assert!(err.to_string().contains("size"), "{err}");
        let err = serde_json::from_str::<Limits>(r#"{"timeout": true, "max_size": 1}"#).expect_err("should be refused");
        assert!(err.to_string().contains("duration such as"), "{err}");
    }
}
