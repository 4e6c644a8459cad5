//! Hand-written parsers for the FHIR R4 date/time primitive formats (no regex crate),
//! shared by validation and by the date search machinery.

/// Precision of a parsed date-ish value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Precision {
    Year,
    Month,
    Day,
}

/// A parsed FHIR date, dateTime or instant: the calendar part plus whether a time was present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub precision: Precision,
    pub has_time: bool,
}

pub(crate) fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub(crate) fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Parses exactly `n` ASCII digits at the start of `s`.
fn digits(s: &[u8], n: usize) -> Option<u32> {
    if s.len() < n {
        return None;
    }
    let mut v = 0u32;
    for &b in &s[..n] {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Some(v)
}

/// Parses `YYYY[-MM[-DD]]` at the start of `s`; returns the parse and the bytes consumed.
/// FHIR forbids year 0000, and month/day must exist in the calendar (leap years included).
fn parse_date_part(s: &[u8]) -> Option<(Parsed, usize)> {
    let year = digits(s, 4)?;
    if year == 0 {
        return None;
    }
    let year = i32::try_from(year).ok()?;
    let mut p = Parsed {
        year,
        month: 1,
        day: 1,
        precision: Precision::Year,
        has_time: false,
    };
    if s.len() == 4 || s[4] != b'-' {
        return Some((p, 4));
    }
    let month = digits(&s[5..], 2)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    p.month = month;
    p.precision = Precision::Month;
    if s.len() == 7 || s[7] != b'-' {
        return Some((p, 7));
    }
    let day = digits(&s[8..], 2)?;
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    p.day = day;
    p.precision = Precision::Day;
    Some((p, 10))
}

/// Validates `hh:mm:ss(.f+)?` exactly (FHIR `time`, also the time part of dateTime/instant).
pub(crate) fn is_time(s: &str) -> bool {
    time_len(s.as_bytes()) == Some(s.len())
}

/// Length of a valid `hh:mm:ss(.f+)?` prefix of `s`.
fn time_len(s: &[u8]) -> Option<usize> {
    let h = digits(s, 2)?;
    if h > 23 || s.get(2) != Some(&b':') {
        return None;
    }
    let m = digits(s.get(3..)?, 2)?;
    if m > 59 || s.get(5) != Some(&b':') {
        return None;
    }
    // 60 is allowed for leap seconds, as in the R4 regex.
    let sec = digits(s.get(6..)?, 2)?;
    if sec > 60 {
        return None;
    }
    let mut n = 8;
    if s.get(n) == Some(&b'.') {
        let frac = s[n + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if frac == 0 {
            return None;
        }
        n += 1 + frac;
    }
    Some(n)
}

/// Validates a timezone `Z` or `(+|-)hh:mm` with offsets limited to -13:59..+14:00 as in R4.
fn is_tz(s: &[u8]) -> bool {
    match s {
        [b'Z'] => true,
        [b'+' | b'-', rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            match (digits(rest, 2), digits(&rest[3..], 2)) {
                (Some(h), Some(m)) => (h <= 13 && m <= 59) || (h == 14 && m == 0),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Parses a FHIR `dateTime`: a date at any precision, or a full date with
/// `Thh:mm:ss(.f)` and a mandatory timezone.
pub(crate) fn parse_datetime(s: &str) -> Option<Parsed> {
    let b = s.as_bytes();
    let (mut p, n) = parse_date_part(b)?;
    if n == b.len() {
        return Some(p);
    }
    if p.precision != Precision::Day || b[n] != b'T' {
        return None;
    }
    let rest = &b[n + 1..];
    let t = time_len(rest)?;
    if !is_tz(&rest[t..]) {
        return None;
    }
    p.has_time = true;
    Some(p)
}

/// Parses a FHIR `date` (no time part allowed).
pub(crate) fn parse_date(s: &str) -> Option<Parsed> {
    let (p, n) = parse_date_part(s.as_bytes())?;
    (n == s.len()).then_some(p)
}

/// Parses a FHIR `instant`: full date, time and timezone required.
pub(crate) fn parse_instant(s: &str) -> Option<Parsed> {
    parse_datetime(s).filter(|p| p.has_time)
}

/// Lenient parse for search values: the date part must be valid; anything after it must
/// start with `T` (the time part is not needed for day-granular matching).
pub(crate) fn parse_date_prefix(s: &str) -> Option<Parsed> {
    let b = s.as_bytes();
    let (p, n) = parse_date_part(b)?;
    if n == b.len() {
        return Some(p);
    }
    (p.precision == Precision::Day && b[n] == b'T' && b.len() > n + 1).then_some(p)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400;
    let m = m as i32;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = (if z >= 0 { z } else { z - 146_096 }) / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert!(parse_date("2020").is_some());
        assert!(parse_date("2020-02").is_some());
        assert!(parse_date("2020-02-29").is_some());
        assert!(parse_date("2000-02-29").is_some());
        assert!(parse_date("1900-02-29").is_none());
        assert!(parse_date("2021-02-29").is_none());
        assert!(parse_date("2020-13-01").is_none());
        assert!(parse_date("2020-04-31").is_none());
        assert!(parse_date("2020-00").is_none());
        assert!(parse_date("0000").is_none());
        assert!(parse_date("20").is_none());
        assert!(parse_date("2020-1-01").is_none());
        assert!(parse_date("2020-01-01T00:00:00Z").is_none());
        assert!(parse_date("2020-").is_none());
        assert!(parse_date("2020-01-").is_none());
    }

    #[test]
    fn datetimes() {
        assert!(parse_datetime("2020-01-01T10:00:00Z").is_some());
        assert!(parse_datetime("2020-01-01T10:00:00.123+05:30").is_some());
        assert!(parse_datetime("2020-01-01T23:59:60-14:01").is_none());
        assert!(parse_datetime("2020-01-01T23:59:60+14:00").is_some());
        assert!(parse_datetime("2020-01-01T10:00:00").is_none());
        assert!(parse_datetime("2020-01-01T10:00Z").is_none());
        assert!(parse_datetime("2020-01-01T24:00:00Z").is_none());
        assert!(parse_datetime("2020-01-01T10:00:00.Z").is_none());
        assert!(parse_datetime("2020-01T10:00:00Z").is_none());
        assert!(parse_instant("2020-01-01").is_none());
        assert!(parse_instant("2020-01-01T10:00:00Z").is_some());
        assert!(is_time("10:11:12"));
        assert!(is_time("10:11:12.5"));
        assert!(!is_time("10:11"));
        assert!(parse_date_prefix("2020-01-01T10:00").is_some());
        assert!(parse_date_prefix("2020-01T10").is_none());
    }

    #[test]
    fn civil_roundtrip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        for z in [-800_000, -1, 0, 1, 18_000, 100_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(
            days_from_civil(2020, 3, 1) - days_from_civil(2020, 2, 28),
            2
        );
    }
}
