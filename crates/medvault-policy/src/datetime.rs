//! Strict parser for FHIR R4 `date`, `dateTime` and `instant` values into unix-millisecond ranges.
//!
//! A FHIR value denotes every instant that matches it at its precision ("2024-05" is all of
//! May), so the parser returns a half-open range. Period starts use the range's start and
//! period ends its end, which makes "end 2024-05" last until the end of May, as FHIR's
//! Period definition says ("the end value includes any matching date/time").
//!
//! Date-only values carry no time zone; they are read as UTC (the policy has no notion of
//! a local zone, and the server runs in one). Anything outside the R4 regular expressions
//! is rejected, because a guessed date could grant access that was never given.

use crate::error::PolicyError;

const MS_PER_SECOND: i64 = 1_000;
const MS_PER_MINUTE: i64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// The instants a FHIR date/time value matches: `[start_ms, end_ms)` in unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTimeRange {
    start_ms: i64,
    end_ms: i64,
}

impl DateTimeRange {
    /// First matching millisecond (inclusive).
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// First millisecond after the value (exclusive); always greater than [`Self::start_ms`].
    pub fn end_ms(&self) -> i64 {
        self.end_ms
    }
}

/// Parses `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or `YYYY-MM-DDThh:mm:ss[.f+](Z|±hh:mm)`.
///
/// Years 0001..=9999, real calendar days (leap years checked), hours 00..=23, seconds
/// 00..=60 (a leap second is counted as the first second of the next minute), time-zone
/// offsets up to ±14:00. A time without a zone, or any surrounding whitespace, is rejected.
/// Fraction digits beyond milliseconds are truncated; fewer digits widen the range
/// (".5" matches 500..600 ms).
pub fn parse_datetime(text: &str) -> Result<DateTimeRange, PolicyError> {
    let b = text.as_bytes();
    let year = digits(b, 0, 4).ok_or(PolicyError::InvalidDateTime("year"))?;
    if year == 0 {
        return Err(PolicyError::InvalidDateTime("year 0000"));
    }
    let year = i64::from(year);
    if b.len() == 4 {
        return Ok(range(
            days_from_civil(year, 1, 1),
            days_from_civil(year + 1, 1, 1),
        ));
    }
    expect_byte(b, 4, b'-', "separator after year")?;
    let month = digits(b, 5, 2).ok_or(PolicyError::InvalidDateTime("month"))?;
    if !(1..=12).contains(&month) {
        return Err(PolicyError::InvalidDateTime("month out of range"));
    }
    if b.len() == 7 {
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        return Ok(range(
            days_from_civil(year, month, 1),
            days_from_civil(next_year, next_month, 1),
        ));
    }
    expect_byte(b, 7, b'-', "separator after month")?;
    let day = digits(b, 8, 2).ok_or(PolicyError::InvalidDateTime("day"))?;
    if day == 0 || day > days_in_month(year, month) {
        return Err(PolicyError::InvalidDateTime("day out of range"));
    }
    let day_start = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Ok(range(day_start, day_start + 1));
    }
    expect_byte(b, 10, b'T', "time separator")?;
    let hour = digits(b, 11, 2).ok_or(PolicyError::InvalidDateTime("hour"))?;
    expect_byte(b, 13, b':', "separator after hour")?;
    let minute = digits(b, 14, 2).ok_or(PolicyError::InvalidDateTime("minute"))?;
    expect_byte(b, 16, b':', "separator after minute")?;
    let second = digits(b, 17, 2).ok_or(PolicyError::InvalidDateTime("second"))?;
    if hour > 23 || minute > 59 || second > 60 {
        return Err(PolicyError::InvalidDateTime("time out of range"));
    }
    let mut pos = 19;
    // Without a fraction the value matches its whole second.
    let (mut fraction_ms, mut width_ms) = (0i64, MS_PER_SECOND);
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let first = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        let count = pos - first;
        if count == 0 {
            return Err(PolicyError::InvalidDateTime("empty fraction"));
        }
        // Digits past milliseconds are truncated; fewer digits match a wider range.
        let mut scaled = 0i64;
        for d in b.get(first..pos).unwrap_or_default().iter().take(3) {
            scaled = scaled * 10 + i64::from(d - b'0');
            width_ms /= 10;
        }
        fraction_ms = scaled * width_ms;
    }
    let offset_ms = match b.get(pos) {
        Some(b'Z') => {
            pos += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, pos + 1, 2).ok_or(PolicyError::InvalidDateTime("zone hour"))?;
            expect_byte(b, pos + 3, b':', "zone separator")?;
            let om = digits(b, pos + 4, 2).ok_or(PolicyError::InvalidDateTime("zone minute"))?;
            if om > 59 || oh > 14 || (oh == 14 && om != 0) {
                return Err(PolicyError::InvalidDateTime("zone out of range"));
            }
            pos += 6;
            let magnitude = i64::from(oh) * MS_PER_HOUR + i64::from(om) * MS_PER_MINUTE;
            if sign == b'+' {
                magnitude
            } else {
                -magnitude
            }
        }
        _ => return Err(PolicyError::InvalidDateTime("time zone required")),
    };
    if pos != b.len() {
        return Err(PolicyError::InvalidDateTime("trailing characters"));
    }
    let local_ms = day_start * MS_PER_DAY
        + i64::from(hour) * MS_PER_HOUR
        + i64::from(minute) * MS_PER_MINUTE
        + i64::from(second) * MS_PER_SECOND
        + fraction_ms;
    let start_ms = local_ms - offset_ms;
    Ok(DateTimeRange {
        start_ms,
        end_ms: start_ms + width_ms,
    })
}

/// A range of whole days `[start_day, end_day)` since the epoch.
fn range(start_day: i64, end_day: i64) -> DateTimeRange {
    DateTimeRange {
        start_ms: start_day * MS_PER_DAY,
        end_ms: end_day * MS_PER_DAY,
    }
}

fn expect_byte(b: &[u8], at: usize, want: u8, what: &'static str) -> Result<(), PolicyError> {
    if b.get(at) == Some(&want) {
        Ok(())
    } else {
        Err(PolicyError::InvalidDateTime(what))
    }
}

/// Exactly `n` ASCII digits at `b[at..at + n]`.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let slice = b.get(at..at.checked_add(n)?)?;
    slice.iter().try_fold(0u32, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
