//! Money as integer micro-dollars (1 USD = 1,000,000), never a float in storage or arithmetic;
//! `Usd` is the one way an amount leaves as a JSON number.

use std::fmt;

use serde::{Serialize, Serializer};

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

    /// The amount in dollars, for JSON responses only (see `Usd`, which serializes through it).
    pub fn as_usd(self) -> f64 {
        self.0 as f64 / MICROS_PER_USD as f64
    }

    /// The amount as a response field: a number with at most 6 decimals.
    pub fn usd(self) -> Usd {
        Usd(self)
    }

    /// `self / count` rounded to the nearest micro-dollar (halves away from zero); zero when
    /// `count` is not positive. Averages are taken here, in integers, so none is a float with
    /// sixteen decimals.
    pub fn mean(self, count: i64) -> Self {
        if count <= 0 {
            return Self(0);
        }
        let (total, count) = (i128::from(self.0), i128::from(count));
        let half = count / 2;
        let rounded = if total >= 0 {
            (total + half) / count
        } else {
            (total - half) / count
        };
        // |rounded| <= |total|, so it fits back into i64.
        Self(rounded as i64)
    }
}

/// A dollar amount in a response: serialized as a JSON number rounded to the micro-dollar (at
/// most 6 decimals), since it is whole micro-dollars divided once by a million. Every USD field
/// of every response has this type, so no computed float can show more digits than money has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Usd(pub MicroUsd);

impl From<MicroUsd> for Usd {
    fn from(amount: MicroUsd) -> Self {
        Self(amount)
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The nearest double to n / 10^6 prints back as that decimal (at most 6 decimals):
        // serializers print the shortest form that reads back as the same double.
        serializer.serialize_f64(self.0.as_usd())
    }
}

impl utoipa::PartialSchema for Usd {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some(
                "US dollars, rounded to the micro-dollar: a JSON number with at most 6 decimals \
                 (below 0.00001 it may be written with an exponent, as 5e-6).",
            ))
            .examples([serde_json::json!(0.000259)])
            .into()
    }
}

impl utoipa::ToSchema for Usd {}

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

    #[test]
    fn means_round_to_the_nearest_micro_dollar() {
        for (total, count, mean) in [
            (259, 3, 86),
            (260, 3, 87),
            (5, 2, 3),
            (-5, 2, -3),
            (0, 7, 0),
            (42, 0, 0),
            (42, -1, 0),
            (i64::MAX, 1, i64::MAX),
            (i64::MIN, 2, i64::MIN / 2),
        ] {
            assert_eq!(
                MicroUsd(total).mean(count),
                MicroUsd(mean),
                "{total}/{count}"
            );
        }
    }

    #[test]
    fn usd_serializes_with_at_most_six_decimals() {
        for (micros, json) in [
            (259, "0.000259"),
            (86, "0.000086"),
            (1, "1e-6"), // below 0.00001 serde_json writes the exponent form
            (100_000, "0.1"),
            (12_345_678, "12.345678"),
            (0, "0.0"),
            (-1_000_001, "-1.000001"),
        ] {
            let text = serde_json::to_string(&MicroUsd(micros).usd()).expect("serializes");
            assert_eq!(text, json, "{micros}");
        }
    }
}
