//! `_lastUpdated` bounds: FHIR date prefixes turned into a millisecond range over the
//! server's own (plaintext, non-clinical) modification times.

use medvault_fhir::{DateBound, DatePrefix, Day};

use crate::clock::days_from_civil;

const DAY_MS: i64 = 86_400_000;

fn start_ms(day: Day) -> i64 {
    let (y, m, d) = day.ymd();
    days_from_civil(y as i64, m, d) * DAY_MS
}

/// `[from, until)` in milliseconds for all bounds combined (intersection).
pub fn last_updated_range(bounds: &[DateBound]) -> (Option<i64>, Option<i64>) {
    let mut from: Option<i64> = None;
    let mut until: Option<i64> = None;
    let mut lower = |v: i64| from = Some(from.map_or(v, |f: i64| f.max(v)));
    let mut uppers = Vec::new();
    for b in bounds {
        let start = start_ms(b.start);
        let end = start_ms(b.end) + DAY_MS; // exclusive end of the bound's range
        match b.prefix {
            DatePrefix::Eq => {
                lower(start);
                uppers.push(end);
            }
            DatePrefix::Ge => lower(start),
            DatePrefix::Gt => lower(end),
            DatePrefix::Le => uppers.push(end),
            DatePrefix::Lt => uppers.push(start),
        }
    }
    for u in uppers {
        until = Some(until.map_or(u, |x: i64| x.min(u)));
    }
    (from, until)
}
