//! Durations and byte sizes as users write them, in flags, rules and the config file.

use std::time::Duration;

/// A byte size: a number with an optional KiB/MiB/GiB/TiB suffix.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("'{text}' is not a size; write it like 500MiB or 2GiB"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "K" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        "TiB" | "T" => 40,
        other => return Err(format!("unknown size unit '{other}' in '{text}'; use KiB, MiB, GiB or TiB")),
    };
    n.checked_mul(1 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("'{text}' must be above zero and fit in 64 bits"))
}

/// A positive duration in humantime syntax ("10s", "250ms", "1m30s"); a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("'{text}' is not a duration ({e}); write it like 10s, 500ms or 2m"))?,
    };
    if parsed.is_zero() {
        return Err(format!("'{text}' is zero; give a positive duration like 10s"));
    }
    Ok(parsed)
}

/// A duration as [`parse_duration`] reads it, where 0 is allowed (a flag whose 0 means never).
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim().parse::<u64>() == Ok(0) {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_a_duration_only_where_it_means_never() {
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration_or_zero("soon").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("abc").unwrap_err().contains("not a duration"));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("0").is_err());
    }
}
