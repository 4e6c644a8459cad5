//! `_lastUpdated`: FHIR date prefixes over the server's own (plaintext, non-clinical)
//! modification times, at the precision the client gave, time and time zone included.

use crate::clock::days_from_civil;

const DAY_MS: i64 = 86_400_000;

/// Why a `_lastUpdated` value was refused (safe to show: no values echoed).
pub type BadValue = &'static str;

fn num(s: &str, len: usize) -> Option<i64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `[start, end)` in milliseconds covered by a FHIR date/dateTime/instant at its precision.
pub fn instant_range(v: &str) -> Result<(i64, i64), BadValue> {
    const BAD: BadValue = "_lastUpdated must be a FHIR date or dateTime with a time zone";
    let (date, time) = match v.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (v, None),
    };
    let mut parts = date.split('-');
    let y = parts.next().and_then(|p| num(p, 4)).ok_or(BAD)?;
    let m = match parts.next() {
        Some(p) => Some(num(p, 2).filter(|m| (1..=12).contains(m)).ok_or(BAD)? as u32),
        None => None,
    };
    let d = match parts.next() {
        Some(p) => {
            let d = num(p, 2).ok_or(BAD)? as u32;
            let m = m.ok_or(BAD)?;
            // The FHIR crate's calendar decides which days exist (leap years included).
            medvault_fhir::Day::from_ymd(y as i32, m, d)
                .map(|_| d)
                .ok_or(BAD)?
        }
        None => 0,
    };
    if parts.next().is_some() {
        return Err(BAD);
    }
    let Some(time) = time else {
        return Ok(match (m, d) {
            (None, _) => (
                days_from_civil(y, 1, 1) * DAY_MS,
                days_from_civil(y + 1, 1, 1) * DAY_MS,
            ),
            (Some(m), 0) => {
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (
                    days_from_civil(y, m, 1) * DAY_MS,
                    days_from_civil(ny, nm, 1) * DAY_MS,
                )
            }
            (Some(m), d) => {
                let s = days_from_civil(y, m, d) * DAY_MS;
                (s, s + DAY_MS)
            }
        });
    };
    let (Some(m), true) = (m, d > 0) else {
        return Err(BAD);
    };
    // Split off the zone: Z, +hh:mm or -hh:mm (required when a time is given).
    // An unencoded '+' in a query string arrives as a space.
    let time = time.replace(' ', "+");
    let time = time.as_str();
    let (clock, offset_ms) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-']).ok_or(BAD)?;
        let (c, z) = time.split_at(at);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (hh, mm) = z[1..].split_once(':').ok_or(BAD)?;
        let (hh, mm) = (num(hh, 2).ok_or(BAD)?, num(mm, 2).ok_or(BAD)?);
        if hh > 14 || mm > 59 || (hh == 14 && mm > 0) {
            return Err(BAD);
        }
        (c, sign * (hh * 3600 + mm * 60) * 1000)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (a, Some(f)),
        Some(_) => return Err(BAD),
        None => (clock, None),
    };
    let fields: Vec<&str> = hms.split(':').collect();
    let (h, min, sec) = match fields.as_slice() {
        [h, mi] => (num(h, 2), num(mi, 2), None),
        [h, mi, s] => (num(h, 2), num(mi, 2), Some(num(s, 2).ok_or(BAD)?)),
        _ => return Err(BAD),
    };
    let (h, min) = (h.ok_or(BAD)?, min.ok_or(BAD)?);
    if h > 23 || min > 59 || sec.is_some_and(|s| s > 59) || (frac.is_some() && sec.is_none()) {
        return Err(BAD);
    }
    let ms_frac = frac.map_or(0, |f| {
        let digits: String = f.chars().chain("000".chars()).take(3).collect();
        digits.parse::<i64>().unwrap_or(0)
    });
    let start = days_from_civil(y, m, d) * DAY_MS
        + (h * 3600 + min * 60 + sec.unwrap_or(0)) * 1000
        + ms_frac
        - offset_ms;
    // The value covers the interval its precision names: .5 is [.500, .600).
    let width = match (sec, frac) {
        (None, _) => 60_000,
        (Some(_), None) => 1000,
        (Some(_), Some(f)) => 10_i64.pow(3 - f.len().min(3) as u32),
    };
    Ok((start, start + width))
}

/// `[from, until)` in milliseconds for all `_lastUpdated` values combined (intersection).
pub fn last_updated_range(values: &[&str]) -> Result<(Option<i64>, Option<i64>), BadValue> {
    let mut from: Option<i64> = None;
    let mut until: Option<i64> = None;
    for v in values {
        let (prefix, rest) = match v.get(..2) {
            Some(p @ ("eq" | "ge" | "gt" | "le" | "lt")) => (p, &v[2..]),
            Some("ne" | "sa" | "eb" | "ap") => {
                return Err("_lastUpdated supports only the eq, ge, gt, le and lt prefixes")
            }
            _ => ("eq", *v),
        };
        let (start, end) = instant_range(rest)?;
        let (lo, hi) = match prefix {
            "ge" => (Some(start), None),
            "gt" => (Some(end), None),
            "le" => (None, Some(end)),
            "lt" => (None, Some(start)),
            _ => (Some(start), Some(end)),
        };
        if let Some(lo) = lo {
            from = Some(from.map_or(lo, |f| f.max(lo)));
        }
        if let Some(hi) = hi {
            until = Some(until.map_or(hi, |u| u.min(hi)));
        }
    }
    Ok((from, until))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_714_557_600_000; // 2024-05-01T10:00:00Z

    #[test]
    fn ranges_at_every_precision() {
        let day = days_from_civil(2024, 5, 1) * DAY_MS;
        assert_eq!(
            instant_range("2024"),
            Ok((
                days_from_civil(2024, 1, 1) * DAY_MS,
                days_from_civil(2025, 1, 1) * DAY_MS
            ))
        );
        assert_eq!(
            instant_range("2024-12"),
            Ok((
                days_from_civil(2024, 12, 1) * DAY_MS,
                days_from_civil(2025, 1, 1) * DAY_MS
            ))
        );
        assert_eq!(instant_range("2024-05-01"), Ok((day, day + DAY_MS)));
        assert_eq!(instant_range("2024-05-01T10:00Z"), Ok((T, T + 60_000)));
        assert_eq!(instant_range("2024-05-01T10:00:00Z"), Ok((T, T + 1000)));
        assert_eq!(
            instant_range("2024-05-01T10:00:00.25Z"),
            Ok((T + 250, T + 260))
        );
        assert_eq!(
            instant_range("2024-05-01T10:00:00.5Z"),
            Ok((T + 500, T + 600))
        );
        assert_eq!(
            instant_range("2024-05-01T10:00:00.1234Z"),
            Ok((T + 123, T + 124))
        );
        assert_eq!(
            instant_range("2024-05-01T12:00:00 02:00"),
            Ok((T, T + 1000))
        );
        assert_eq!(
            instant_range("2024-05-01T12:00:00+02:00"),
            Ok((T, T + 1000))
        );
        assert_eq!(
            instant_range("2024-05-01T05:30:00-04:30"),
            Ok((T, T + 1000))
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for v in [
            "",
            "24",
            "2024-13",
            "2023-02-29",
            "2024-05-01T10:00:00",
            "2024-05-01T25:00Z",
            "2024-05-01T10:00:00+2",
            "2024-05-01T10:00:00.Z",
            "2024-05T10:00Z",
            "x2024",
        ] {
            assert!(instant_range(v).is_err(), "{v}");
        }
    }

    #[test]
    fn prefixes_combine_into_one_window() {
        assert_eq!(
            last_updated_range(&["gt2024-05-01T10:00:00Z"]),
            Ok((Some(T + 1000), None))
        );
        assert_eq!(
            last_updated_range(&["ge2024-05-01T10:00:00Z", "lt2024-05-01T10:00:05Z"]),
            Ok((Some(T), Some(T + 5000)))
        );
        assert_eq!(
            last_updated_range(&["le2024-05-01T10:00Z"]),
            Ok((None, Some(T + 60_000)))
        );
        assert_eq!(
            last_updated_range(&["2024-05-01T10:00Z"]),
            Ok((Some(T), Some(T + 60_000)))
        );
        assert!(last_updated_range(&["ne2024"]).is_err());
    }
}
