//! Human durations (`60s`, `500ms`, `2m`, `1h`, or a bare number of seconds) for flags, the
//! config file and the admin API. Parsing only: no clock is read here.

use std::time::Duration;

/// Parse `"60s"`, `"500ms"`, `"2m"`, `"1h"`, `"1.5s"` or a bare number of seconds (`"60"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 60s, 500ms, 2m, 1h"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("invalid duration unit {other:?} in {s:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Format a duration the way [`parse_duration`] reads it back (`"60s"`, `"250ms"`).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Serde helpers: a duration is a number of seconds or a string with a unit.
pub(crate) mod serde_duration {
    use super::{format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub(crate) fn from_value(v: &serde_json::Value) -> Result<Duration, String> {
        match v {
            serde_json::Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| "invalid number".to_string())
                .and_then(|f| Duration::try_from_secs_f64(f).map_err(|e| e.to_string())),
            serde_json::Value::String(s) => parse_duration(s),
            other => Err(format!("expected a duration, got {other}")),
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        from_value(&v).map_err(D::Error::custom)
    }
}

/// Serde helpers for an optional lifetime: `null`, `0`, `"never"` or `"none"` mean no limit.
pub(crate) mod serde_opt_duration {
    use super::format_duration;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub(crate) fn from_value(v: &serde_json::Value) -> Result<Option<Duration>, String> {
        match v {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) if matches!(s.trim(), "never" | "none") => Ok(None),
            other => super::serde_duration::from_value(other).map(|d| (!d.is_zero()).then_some(d)),
        }
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_str("never"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        from_value(&v).map_err(D::Error::custom)
    }
}

/// Serde helper for a field that may be absent: a present field holds a duration.
pub(crate) mod serde_some_duration {
    use serde::Deserializer;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::serde_duration::deserialize(d).map(Some)
    }
}

/// Serde helper for a field that may be absent: a present field holds a lifetime, `null` and
/// `"never"` included.
pub(crate) mod serde_some_opt_duration {
    use serde::Deserializer;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Duration>>, D::Error> {
        super::serde_opt_duration::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_bare_seconds() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn formats_what_it_parses() {
        for d in [Duration::from_secs(60), Duration::from_millis(250)] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
