//! Money as integer micro-dollars (1 USD = 1,000,000), never a float in storage or arithmetic.

use std::fmt;

/// An amount of US dollars in millionths of a dollar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct MicroUsd(pub i64);

const MICROS_PER_USD: i64 = 1_000_000;

impl MicroUsd {
    /// Parses a decimal dollar amount such as `0.10` or `12` (at most 6 decimals, not negative).
    pub fn parse_usd(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let invalid = || format!("`{text}` is not a dollar amount like 0.10");
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        if !whole.chars().all(|c| c.is_ascii_digit())
            || !fraction.chars().all(|c| c.is_ascii_digit())
        {
            return Err(invalid());
        }
        if fraction.len() > 6 {
            return Err(format!("`{text}` has more than 6 decimals"));
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let fraction_micros: i64 = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<6}").parse().map_err(|_| invalid())?
        };
        whole
            .checked_mul(MICROS_PER_USD)
            .and_then(|w| w.checked_add(fraction_micros))
            .map(MicroUsd)
            .ok_or_else(|| format!("`{text}` is too large"))
    }

    /// The amount in dollars, for JSON responses only.
    pub fn as_usd(self) -> f64 {
        self.0 as f64 / MICROS_PER_USD as f64
    }
}

impl fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let micros = MICROS_PER_USD as u64;
        write!(f, "{sign}{}.{:06}", abs / micros, abs % micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dollar_amounts_exactly() {
        for (text, micros) in [
            ("0.10", 100_000),
            ("0.1", 100_000),
            ("1", 1_000_000),
            ("12.345678", 12_345_678),
            (".5", 500_000),
            ("0", 0),
        ] {
            assert_eq!(MicroUsd::parse_usd(text), Ok(MicroUsd(micros)), "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_dollar_amount() {
        for text in [
            "",
            ".",
            "-1",
            "1.2345678",
            "abc",
            "1e3",
            "1.2.3",
            "99999999999999999",
        ] {
            assert!(MicroUsd::parse_usd(text).is_err(), "{text}");
        }
    }

    #[test]
    fn displays_with_six_decimals() {
        assert_eq!(MicroUsd(2_500).to_string(), "0.002500");
        assert_eq!(MicroUsd(-1_000_001).to_string(), "-1.000001");
        assert_eq!(MicroUsd(2_500).as_usd(), 0.0025);
    }
}
