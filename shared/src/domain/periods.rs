//! Periods of scheduled credit grants and budget resets (`1d`, `7d`, `30d`, `1mo`) and their
//! boundaries. A schedule is anchored at the moment it was set; its boundaries fall at
//! anchor + k x period for k = 1, 2, ... A calendar month (`1mo`, UTC) counts from the anchor's
//! day of month, on the month's last day when it has no such day, and always from the anchor,
//! never from the previous boundary: Jan 31 -> Feb 28 (29) -> Mar 31 -> Apr 30.

use chrono::{DateTime, Months, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The length of one period.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text")]
pub enum Period {
    #[serde(rename = "1d")]
    #[sqlx(rename = "1d")]
    Day,
    #[serde(rename = "7d")]
    #[sqlx(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    #[sqlx(rename = "30d")]
    ThirtyDays,
    #[serde(rename = "1mo")]
    #[sqlx(rename = "1mo")]
    Month,
}

/// A period name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of 1d, 7d, 30d, 1mo")]
pub struct UnknownPeriod;

impl Period {
    /// Every period, in the order they are documented.
    pub const ALL: [Period; 4] = [Period::Day, Period::Week, Period::ThirtyDays, Period::Month];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "1d",
            Period::Week => "7d",
            Period::ThirtyDays => "30d",
            Period::Month => "1mo",
        }
    }

    /// Parses a wire name (exact, case-sensitive, like LiteLLM's `budget_duration`).
    pub fn parse(text: &str) -> Result<Self, UnknownPeriod> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or(UnknownPeriod)
    }

    /// Fixed length in days; `None` for the calendar month.
    fn days(self) -> Option<i64> {
        match self {
            Period::Day => Some(1),
            Period::Week => Some(7),
            Period::ThirtyDays => Some(30),
            Period::Month => None,
        }
    }

    /// The `k`-th boundary after `anchor`; `None` past the last representable date.
    pub fn boundary(self, anchor: DateTime<Utc>, k: u32) -> Option<DateTime<Utc>> {
        match self.days() {
            Some(days) => anchor.checked_add_signed(TimeDelta::try_days(days * i64::from(k))?),
            None => anchor.checked_add_months(Months::new(k)),
        }
    }

    /// The first boundary strictly after `after` (and after `anchor`): where a schedule goes
    /// next once the boundaries up to `after` are applied. Boundaries missed during an outage
    /// are skipped, not replayed. Far beyond the representable dates it is `DateTime::MAX_UTC`.
    pub fn next_after(self, anchor: DateTime<Utc>, after: DateTime<Utc>) -> DateTime<Utc> {
        // How many boundaries lie in (anchor, after], never overestimated; the loop then steps
        // to the first boundary past `after`.
        let elapsed = (after - anchor).num_seconds().max(0);
        let estimate = match self.days() {
            Some(days) => elapsed / (days * 86_400),
            // No month is longer than 31 days, so this is never too high; it falls behind by
            // about one month in four years, so the loop takes a few steps even after years.
            None => elapsed / (31 * 86_400),
        };
        let mut k = u32::try_from(estimate).unwrap_or(u32::MAX).max(1);
        loop {
            match self.boundary(anchor, k) {
                Some(at) if at > after => return at,
                Some(_) if k < u32::MAX => k += 1,
                _ => return DateTime::<Utc>::MAX_UTC,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("valid date")
    }

    #[test]
    fn names_round_trip_and_others_are_refused() {
        for period in Period::ALL {
            assert_eq!(Period::parse(period.as_str()), Ok(period));
        }
        for bad in ["", "1D", "1m", "month", "2d", "1mo ", "30"] {
            assert_eq!(Period::parse(bad), Err(UnknownPeriod), "{bad}");
        }
    }

    #[test]
    fn calendar_months_count_from_the_anchor_and_clamp_to_the_last_day() {
        let anchor = at(2027, 1, 31, 9);
        let boundaries: Vec<_> = (1..=4)
            .map(|k| Period::Month.boundary(anchor, k).expect("in range"))
            .collect();
        assert_eq!(
            boundaries,
            vec![
                at(2027, 2, 28, 9),
                at(2027, 3, 31, 9),
                at(2027, 4, 30, 9),
                at(2027, 5, 31, 9)
            ]
        );
        // A leap year's February has its 29th.
        assert_eq!(
            Period::Month.boundary(at(2028, 1, 31, 0), 1),
            Some(at(2028, 2, 29, 0))
        );
    }

    #[test]
    fn the_next_boundary_is_strictly_after_the_given_time() {
        let anchor = at(2027, 1, 31, 9);
        let cases = [
            (Period::Month, anchor, at(2027, 2, 28, 9)),
            (Period::Month, at(2027, 2, 28, 9), at(2027, 3, 31, 9)),
            (Period::Month, at(2027, 3, 1, 0), at(2027, 3, 31, 9)),
            (Period::Day, anchor, at(2027, 2, 1, 9)),
            (Period::Week, at(2027, 2, 7, 9), at(2027, 2, 14, 9)),
            (Period::ThirtyDays, at(2027, 2, 1, 0), at(2027, 3, 2, 9)),
        ];
        for (period, now, next) in cases {
            assert_eq!(
                period.next_after(anchor, now),
                next,
                "{period:?} after {now}"
            );
        }
    }

    #[test]
    fn after_a_long_outage_the_next_boundary_is_in_the_future_not_the_first_missed_one() {
        let anchor = at(2027, 1, 31, 9);
        let later = at(2030, 7, 15, 12);
        for period in Period::ALL {
            let next = period.next_after(anchor, later);
            assert!(next > later, "{period:?}: {next}");
            let previous = (1..)
                .map(|k| period.boundary(anchor, k).expect("in range"))
                .take_while(|b| *b < next)
                .last()
                .expect("earlier boundaries");
            assert!(previous <= later, "{period:?}: skipped {previous}");
        }
        assert_eq!(Period::Month.next_after(anchor, later), at(2030, 7, 31, 9));
    }

    #[test]
    fn dates_beyond_the_calendar_give_the_maximum_instead_of_panicking() {
        let anchor = DateTime::<Utc>::MAX_UTC - TimeDelta::days(1);
        assert_eq!(
            Period::Week.next_after(anchor, anchor),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            Period::Month.next_after(anchor, anchor),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
