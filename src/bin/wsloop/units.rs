//! Parsers for command-line values: sizes with units, and seconds.

use std::time::Duration;

/// A size in bytes, with an optional `k`/`KiB`/`m`/`MiB`/`g`/`GiB` suffix (powers of 1024);
/// `_` may group digits.
pub fn size(s: &str) -> Result<usize, String> {
    let lower = s.to_ascii_lowercase().replace('_', "");
    let (digits, unit) = match lower.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&lower[..i], &lower[i..]),
        None => (lower.as_str(), ""),
    };
    let unit: usize = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit (use k, m or g)")),
    };
    let n: usize = digits.parse().map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_mul(unit)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A duration in seconds (fractions allowed), at least 0.
pub fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("{s:?}: seconds must be 0 or more"))
}

/// A count, with `_` allowed between digits (`100_000`).
pub fn count(s: &str) -> Result<usize, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_seconds() {
        assert_eq!(size("16"), Ok(16));
        assert_eq!(size("64KiB"), Ok(64 << 10));
        assert_eq!(size("1m"), Ok(1 << 20));
        assert!(size("3 parsecs").is_err());
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(seconds("-1").is_err());
        assert_eq!(count("100_000"), Ok(100_000));
    }
}
