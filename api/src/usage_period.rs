//! The period of a usage report: a calendar month (`period=YYYY-MM`) or a range of whole UTC
//! days (`from`/`to`), checked strictly so that only dates PostgreSQL can hold reach a query.

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;

/// Longest `from`..`to` range, so one request cannot ask for an unbounded daily series.
const MAX_RANGE_DAYS: u64 = 732;

/// Years a report may cover. No job predates 2000, and chrono parses years far outside what
/// PostgreSQL timestamps hold (`-262143-01-01`), which would fail the query instead of the check.
const YEARS: std::ops::RangeInclusive<i32> = 2000..=9999;

fn within_years(name: &str, text: &str, day: NaiveDate) -> Result<NaiveDate, ApiError> {
    use chrono::Datelike;
    if YEARS.contains(&day.year()) {
        return Ok(day);
    }
    Err(ApiError::BadRequest(format!(
        "Invalid {name} '{text}': the year must be between {} and {}",
        YEARS.start(),
        YEARS.end()
    )))
}

/// The period: a calendar month, or a range of UTC days.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeriodQuery {
    /// A calendar month, `YYYY-MM` (UTC), year 2000 to 9999. Required unless `from` and `to`
    /// are given.
    #[param(pattern = "^[2-9][0-9]{3}-(0[1-9]|1[0-2])$")]
    period: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC), inclusive; with `to`, instead of `period`.
    #[param(pattern = "^[2-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC), inclusive, not before `from` and at most 732 days after.
    #[param(pattern = "^[2-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    to: Option<String>,
}

/// A resolved period: its label, the half-open instant range, and its first and last day.
pub(crate) struct Range {
    pub(crate) label: String,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    pub(crate) first_day: NaiveDate,
    pub(crate) last_day: NaiveDate,
}

/// Whether `text` has exactly the shape given, `d` standing for an ASCII digit.
fn digits_in_shape(text: &str, shape: &str) -> bool {
    text.len() == shape.len()
        && text.bytes().zip(shape.bytes()).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            other => c == other,
        })
}

/// A day `YYYY-MM-DD` given as parameter `name`, strictly: exactly that shape (chrono alone
/// would also take `2025-1-5` or `+2025-01-01`) and a year a report may cover.
pub(crate) fn day(name: &str, text: &str) -> Result<NaiveDate, ApiError> {
    let invalid = || {
        ApiError::BadRequest(format!(
            "Invalid {name} '{text}': expected YYYY-MM-DD, e.g. 2025-10-01"
        ))
    };
    if !digits_in_shape(text, "dddd-dd-dd") {
        return Err(invalid());
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| invalid())?;
    within_years(name, text, day)
}

/// The instant a UTC day starts.
pub(crate) fn at_midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

impl PeriodQuery {
    pub(crate) fn range(&self) -> Result<Range, ApiError> {
        match (&self.period, &self.from, &self.to) {
            (Some(period), None, None) => month(Some(period)),
            (None, Some(from), Some(to)) => days(from, to),
            (None, None, None) => month(None),
            (Some(_), _, _) => Err(ApiError::BadRequest(
                "Give either period (YYYY-MM) or from and to (YYYY-MM-DD), not both".into(),
            )),
            _ => Err(ApiError::BadRequest(
                "from and to must be given together (YYYY-MM-DD, both inclusive)".into(),
            )),
        }
    }
}

/// `YYYY-MM` -> the calendar month.
fn month(period: Option<&str>) -> Result<Range, ApiError> {
    let period = period.ok_or_else(|| {
        ApiError::BadRequest(
            "period query parameter is required (YYYY-MM), or from and to (YYYY-MM-DD)".into(),
        )
    })?;
    let invalid = || {
        ApiError::BadRequest(format!(
            "Invalid period '{period}': expected YYYY-MM, e.g. 2025-10"
        ))
    };
    if !digits_in_shape(period, "dddd-dd") {
        return Err(invalid());
    }
    let (year, month) = period.split_once('-').ok_or_else(invalid)?;
    let (year, month): (i32, u32) = (
        year.parse().map_err(|_| invalid())?,
        month.parse().map_err(|_| invalid())?,
    );
    let first_day = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(invalid)?;
    let first_day = within_years("period", period, first_day)?;
    let next_month = first_day
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(invalid)?;
    let last_day = next_month.pred_opt().ok_or_else(invalid)?;
    Ok(Range {
        label: period.to_owned(),
        start: at_midnight(first_day),
        end: at_midnight(next_month),
        first_day,
        last_day,
    })
}

/// `from`..=`to`, whole UTC days.
fn days(from: &str, to: &str) -> Result<Range, ApiError> {
    let (first_day, last_day) = (day("from", from)?, day("to", to)?);
    if last_day < first_day {
        return Err(ApiError::BadRequest(format!(
            "to ({last_day}) is before from ({first_day})"
        )));
    }
    let span = (last_day - first_day).num_days() as u64 + 1;
    if span > MAX_RANGE_DAYS {
        return Err(ApiError::BadRequest(format!(
            "from..to may span at most {MAX_RANGE_DAYS} days, not {span}"
        )));
    }
    let end = last_day
        .checked_add_days(Days::new(1))
        .ok_or_else(|| ApiError::BadRequest(format!("Invalid to '{to}'")))?;
    Ok(Range {
        label: format!("{first_day}/{last_day}"),
        start: at_midnight(first_day),
        end: at_midnight(end),
        first_day,
        last_day,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_months() {
        let range = month(Some("2025-12")).expect("valid");
        assert_eq!(range.start.to_rfc3339(), "2025-12-01T00:00:00+00:00");
        assert_eq!(range.end.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(range.last_day.to_string(), "2025-12-31");
        let february = month(Some("2024-02")).expect("valid");
        assert_eq!(february.last_day.to_string(), "2024-02-29");
        for bad in [
            None,
            Some("2025-13"),
            Some("2025-1"),
            Some("25-10"),
            Some("2025/10"),
            Some("abcd-ef"),
            Some("2025-+1"),
            Some("+025-01"),
        ] {
            assert!(month(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn day_ranges_are_inclusive_and_bounded() {
        let range = days("2025-10-30", "2025-11-02").expect("valid");
        assert_eq!(range.start.to_rfc3339(), "2025-10-30T00:00:00+00:00");
        assert_eq!(range.end.to_rfc3339(), "2025-11-03T00:00:00+00:00");
        assert_eq!(range.label, "2025-10-30/2025-11-02");
        assert!(days("2025-10-02", "2025-10-01").is_err());
        assert!(days("2025-10-01", "2025-13-01").is_err());
        assert!(days("2020-01-01", "2025-01-01").is_err());
        assert!(days("2025-10-01", "2025-10-01").is_ok());
        assert!(days("2025-1-01", "2025-10-01").is_err());
        assert!(days("2025-10-01", "2025-10-1").is_err());
        assert!(days("+2025-10-01", "2025-10-01").is_err());
    }

    #[test]
    fn years_outside_2000_to_9999_are_refused_before_reaching_the_database() {
        assert!(days("-262143-01-01", "2025-01-01").is_err());
        assert!(days("9999-12-01", "+10000-01-01").is_err());
        assert!(days("1999-12-31", "2000-01-01").is_err());
        assert!(days("9999-12-01", "9999-12-31").is_ok());
        assert!(month(Some("1999-12")).is_err());
        assert!(month(Some("9999-12")).is_ok());
    }
}
