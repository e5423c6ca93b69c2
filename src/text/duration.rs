//! The one syntax every duration flag takes: a number and its unit, as `100ms`, `0.5s`, `10s`,
//! `15m`, `12h` or `730d`. A bare number is refused: `--request-timeout 10` and
//! `--lease-duration 15s` once meant seconds two different ways.

use std::time::Duration;

/// The longest any flag takes: ten years.
const MAX_SECONDS: f64 = 3650.0 * 86400.0;

const EXAMPLE: &str = "100ms, 10s, 15m, 12h or 730d";

/// Parses a duration flag's value.
pub fn duration(text: &str) -> Result<Duration, String> {
    let at = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(at);
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "" => return Err(format!("{text:?} has no unit: write it like {EXAMPLE}")),
        _ => return Err(format!("{text:?}: the unit is ms, s, m, h or d")),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like {EXAMPLE}"))?;
    let seconds = n * scale;
    if seconds.is_finite() && seconds > 0.0 && seconds <= MAX_SECONDS {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(format!("{text:?} must be more than 0 and at most 3650d"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_and_its_unit() {
        assert_eq!(duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(duration("730d"), Ok(Duration::from_secs(730 * 86400)));
        for bad in [
            "90", "1w", "s", "", "0s", "-1s", "3651d", "infs", "NaNs", "1e3s", "1 s",
        ] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
    }
}
