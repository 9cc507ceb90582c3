//! Trend buckets: UTC days, ISO weeks (Monday) and calendar months covering
//! a period, and the automatic choice of width.

use time::{Date, Month, OffsetDateTime};

use crate::domain::limits::MAX_REPORT_BUCKETS;
use crate::domain::{BucketSize, Period, UnixMicros};

pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The width a period gets when the request leaves it open: days up to two
/// months, weeks up to two years, months up to 400 months, years beyond;
/// the next wider one where the period's calendar buckets would still be
/// more than `MAX_REPORT_BUCKETS` (a period that starts and ends inside a
/// bucket touches one more than its length suggests). Items span at most
/// 230 years, so the automatic width always fits.
pub fn auto_size(period: &Period) -> BucketSize {
    let days = period.end.0.saturating_sub(period.start.0).max(0) / MICROS_PER_DAY;
    let widths = [
        (62, BucketSize::Day),
        (731, BucketSize::Week),
        (12_150, BucketSize::Month),
        (i64::MAX, BucketSize::Year),
    ];
    widths
        .into_iter()
        .skip_while(|&(most, _)| days > most)
        .map(|(_, size)| size)
        .find(|&size| count(size, period) <= MAX_REPORT_BUCKETS as u64)
        .unwrap_or(BucketSize::Year)
}

fn date_of_day(day: i64) -> Option<Date> {
    OffsetDateTime::from_unix_timestamp(day.checked_mul(86_400)?)
        .ok()
        .map(|t| t.date())
}

fn day_of_date(date: Date) -> i64 {
    date.midnight()
        .assume_utc()
        .unix_timestamp()
        .div_euclid(86_400)
}

/// The first day (days since the epoch) of the bucket holding `day`.
fn bucket_start(size: BucketSize, day: i64) -> i64 {
    match size {
        BucketSize::Day => day,
        // 1970-01-01 was a Thursday: Monday-based weeks start 3 days later.
        BucketSize::Week => day - (day - 4).rem_euclid(7),
        BucketSize::Month => match date_of_day(day) {
            Some(date) => date.replace_day(1).map(day_of_date).unwrap_or(day),
            None => day,
        },
        BucketSize::Year => match date_of_day(day) {
            Some(date) => Date::from_calendar_date(date.year(), Month::January, 1)
                .map(day_of_date)
                .unwrap_or(day),
            None => day,
        },
    }
}

/// The first day of the bucket after the one starting at `start`.
fn next_start(size: BucketSize, start: i64) -> i64 {
    match size {
        BucketSize::Day => start + 1,
        BucketSize::Week => start + 7,
        BucketSize::Month => match date_of_day(start) {
            Some(date) => {
                let (year, month) = match date.month() {
                    Month::December => (date.year() + 1, Month::January),
                    other => (date.year(), other.next()),
                };
                Date::from_calendar_date(year, month, 1)
                    .map(day_of_date)
                    .unwrap_or(start + 31)
            }
            None => start + 31,
        },
        BucketSize::Year => match date_of_day(start) {
            Some(date) => Date::from_calendar_date(date.year() + 1, Month::January, 1)
                .map(day_of_date)
                .unwrap_or(start + 366),
            None => start + 366,
        },
    }
}

/// The buckets covering `period`, as `[start, end)` micros (the first and
/// last clipped to the period); `None` when there would be more than `max`.
pub fn buckets(size: BucketSize, period: &Period, max: usize) -> Option<Vec<Period>> {
    if period.is_empty() {
        return Some(Vec::new());
    }
    let first_day = period.start.0.div_euclid(MICROS_PER_DAY);
    let mut start = bucket_start(size, first_day);
    let mut out = Vec::new();
    loop {
        let at = start * MICROS_PER_DAY;
        if at >= period.end.0 {
            break;
        }
        if out.len() == max {
            return None;
        }
        let next = next_start(size, start);
        out.push(Period {
            start: UnixMicros(at.max(period.start.0)),
            end: UnixMicros((next * MICROS_PER_DAY).min(period.end.0)),
        });
        start = next;
    }
    Some(out)
}

/// The number of buckets `buckets` gives `period`: the calendar days,
/// weeks, months or years it touches.
pub fn count(size: BucketSize, period: &Period) -> u64 {
    if period.is_empty() {
        return 0;
    }
    let first = period.start.0.div_euclid(MICROS_PER_DAY);
    let last = (period.end.0 - 1).div_euclid(MICROS_PER_DAY);
    let months = |day: i64| {
        date_of_day(day).map_or(day / 30, |d| i64::from(d.year()) * 12 + d.month() as i64)
    };
    let years = |day: i64| date_of_day(day).map_or(day / 365, |d| i64::from(d.year()));
    let spread = match size {
        BucketSize::Day => last - first,
        BucketSize::Week => (bucket_start(size, last) - bucket_start(size, first)) / 7,
        BucketSize::Month => months(last) - months(first),
        BucketSize::Year => years(last) - years(first),
    };
    spread.max(0) as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(date: Date) -> i64 {
        day_of_date(date) * MICROS_PER_DAY
    }

    fn period(a: Date, b: Date) -> Period {
        Period {
            start: UnixMicros(micros(a)),
            end: UnixMicros(micros(b)),
        }
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        use time::macros::date;
        // 2026-01-01 is a Thursday: its week starts Monday 2025-12-29.
        let p = period(date!(2026 - 01 - 01), date!(2026 - 02 - 01));
        let weeks = buckets(BucketSize::Week, &p, 100).unwrap();
        assert_eq!(weeks[0].start.0, p.start.0, "clipped to the period");
        assert_eq!(weeks[0].end.0, micros(date!(2026 - 01 - 05)));
        assert_eq!(weeks[1].start.0, micros(date!(2026 - 01 - 05)));
        assert_eq!(weeks.last().unwrap().end.0, p.end.0);
        assert_eq!(weeks.len(), 5);

        let p = period(date!(2025 - 11 - 15), date!(2026 - 03 - 01));
        let months = buckets(BucketSize::Month, &p, 100).unwrap();
        let starts: Vec<i64> = months.iter().map(|b| b.start.0).collect();
        assert_eq!(
            starts,
            vec![
                p.start.0,
                micros(date!(2025 - 12 - 01)),
                micros(date!(2026 - 01 - 01)),
                micros(date!(2026 - 02 - 01)),
            ]
        );
        let days = buckets(
            BucketSize::Day,
            &period(date!(2024 - 02 - 27), date!(2024 - 03 - 02)),
            100,
        )
        .unwrap();
        assert_eq!(days.len(), 4, "leap day included");
    }

    #[test]
    fn too_many_buckets_is_none_and_auto_picks_a_width() {
        use time::macros::date;
        let year = period(date!(2025 - 01 - 01), date!(2026 - 01 - 01));
        assert!(buckets(BucketSize::Day, &year, 364).is_none());
        assert_eq!(buckets(BucketSize::Day, &year, 365).unwrap().len(), 365);
        assert_eq!(auto_size(&year), BucketSize::Week);
        assert_eq!(
            auto_size(&period(date!(2026 - 01 - 01), date!(2026 - 02 - 01))),
            BucketSize::Day
        );
        assert_eq!(
            auto_size(&period(date!(2020 - 01 - 01), date!(2026 - 01 - 01))),
            BucketSize::Month
        );
        // A period that starts and ends inside a month touches one more
        // than its length: 400 months from the middle of one are 401
        // (the automatic width used to pick months and be refused).
        let mid = |d: Date| micros(d) + MICROS_PER_DAY / 2;
        let odd = Period {
            start: UnixMicros(mid(date!(1970 - 01 - 23))),
            end: UnixMicros(mid(date!(2003 - 05 - 01)) - MICROS_PER_DAY / 24),
        };
        assert_eq!(count(BucketSize::Month, &odd), 401);
        assert_eq!(auto_size(&odd), BucketSize::Year);
        // Exactly 400 days from noon touch 401 days.
        let noon = Period {
            start: UnixMicros(mid(date!(2023 - 11 - 14))),
            end: UnixMicros(mid(date!(2023 - 11 - 14)) + 400 * MICROS_PER_DAY),
        };
        assert_eq!(count(BucketSize::Day, &noon), 401);
        assert!(buckets(BucketSize::Day, &noon, 400).is_none());
        // The widest span items can have still fits in years.
        let all = period(date!(1970 - 01 - 01), date!(2200 - 01 - 01));
        assert_eq!(auto_size(&all), BucketSize::Year);
        let years = buckets(BucketSize::Year, &all, 400).unwrap();
        assert_eq!(years.len(), 230);
        assert_eq!(years[1].start.0, micros(date!(1971 - 01 - 01)));
        // `count` is the number of buckets `buckets` gives, every width.
        for (a, b) in [
            (micros(date!(2025 - 01 - 01)), micros(date!(2026 - 01 - 01))),
            (mid(date!(2025 - 12 - 31)), mid(date!(2026 - 01 - 01))),
            (
                micros(date!(2024 - 02 - 27)) + 1,
                micros(date!(2024 - 03 - 02)) - 1,
            ),
            (odd.start.0, odd.end.0),
            (micros(date!(1970 - 01 - 01)), micros(date!(2200 - 01 - 01))),
            (7, 8),
        ] {
            let p = Period {
                start: UnixMicros(a),
                end: UnixMicros(b),
            };
            for size in [
                BucketSize::Day,
                BucketSize::Week,
                BucketSize::Month,
                BucketSize::Year,
            ] {
                let n = buckets(size, &p, usize::MAX).unwrap().len() as u64;
                assert_eq!(count(size, &p), n, "{size:?} {a}..{b}");
            }
        }
        assert!(buckets(
            BucketSize::Week,
            &Period {
                start: UnixMicros(5),
                end: UnixMicros(5)
            },
            10
        )
        .unwrap()
        .is_empty());
    }
}
