//! Tests of the strict FHIR date/dateTime parser: precision ranges, time zones, rejection.

use std::fmt::Write;

use expect_test::expect;
use medvault_policy::{parse_datetime, PolicyError};
use proptest::prelude::*;

use crate::DAY;

fn range(text: &str) -> (i64, i64) {
    let r = parse_datetime(text).unwrap();
    (r.start_ms(), r.end_ms())
}

#[test]
fn known_instants() {
    assert_eq!(range("1970"), (0, 365 * DAY));
    assert_eq!(range("1970-01-01T00:00:00Z"), (0, 1_000));
    assert_eq!(range("2024-06-15T12:00:00Z").0, 1_718_452_800_000);
    assert_eq!(range("0001-01-01T00:00:00Z").0, -62_135_596_800_000);
    assert_eq!(range("9999-12-31T23:59:59Z").0, 253_402_300_799_000);
    assert_eq!(range("1969-12-31"), (-DAY, 0));
    assert_eq!(range("2000-02-29").0, 951_782_400_000);
}

#[test]
fn partial_dates_cover_their_whole_period() {
    let june_1 = 1_717_200_000_000;
    // A period end of "2024-05" ends at the end of May; a start of "2024-06" begins June 1.
    assert_eq!(range("2024-05").1, june_1);
    assert_eq!(range("2024-06").0, june_1);
    assert_eq!(range("2024-05-31").1, june_1);
    assert_eq!(
        range("2024"),
        (range("2024-01-01").0, range("2025-01-01").0)
    );
    assert_eq!(range("2024-12").1, range("2025-01-01").0);
    assert_eq!(range("2024-02").1 - range("2024-02").0, 29 * DAY);
    assert_eq!(range("2023-02").1 - range("2023-02").0, 28 * DAY);
    assert_eq!(range("2024-12-31").1 - range("2024-12-31").0, DAY);
}

#[test]
fn time_zones_and_fractions() {
    let utc = range("2024-05-01T08:00:00Z").0;
    assert_eq!(utc, 1_714_550_400_000);
    assert_eq!(range("2024-05-01T10:00:00+02:00").0, utc);
    assert_eq!(range("2024-05-01T03:30:00-04:30").0, utc);
    assert_eq!(range("2024-05-01T08:00:00+00:00").0, utc);
    assert_eq!(range("2024-05-01T08:00:00-00:00").0, utc);
    assert_eq!(range("2024-05-01T22:00:00+14:00").0, utc);
    assert_eq!(range("2024-04-30T19:00:00-13:00").0, utc);
    // Crossing a day and year boundary through the offset.
    assert_eq!(
        range("2025-01-01T01:00:00+02:00").0,
        range("2024-12-31T23:00:00Z").0
    );
    assert_eq!(range("2024-05-01T08:00:00.5Z"), (utc + 500, utc + 600));
    assert_eq!(range("2024-05-01T08:00:00.25Z"), (utc + 250, utc + 260));
    assert_eq!(range("2024-05-01T08:00:00.123Z"), (utc + 123, utc + 124));
    assert_eq!(
        range("2024-05-01T08:00:00.123999999Z"),
        (utc + 123, utc + 124)
    );
    // A leap second is the first second of the next minute.
    assert_eq!(
        range("2016-12-31T23:59:60Z").0,
        range("2017-01-01T00:00:00Z").0
    );
}

#[test]
fn invalid_inputs_are_rejected() {
    let inputs = [
        "",
        "24",
        "0000",
        "20240",
        "+2024",
        " 2024",
        "2024 ",
        "２０２４",
        "2024-1",
        "2024-00",
        "2024-13",
        "2024/01",
        "2024-01-1",
        "2024-01-00",
        "2024-01-32",
        "2023-02-29",
        "1900-02-29",
        "2024-04-31",
        "2024-01-01T",
        "2024-01-01T10:00Z",
        "2024-01-01T10:00:00",
        "2024-01-01 10:00:00Z",
        "2024-01-01t10:00:00Z",
        "2024-01-01T10:00:00z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T10:60:00Z",
        "2024-01-01T10:00:61Z",
        "2024-01-01T1:00:00Z",
        "2024-01-01T10:00:00.Z",
        "2024-01-01T10:00:00,5Z",
        "2024-01-01T10:00:00+0200",
        "2024-01-01T10:00:00+02",
        "2024-01-01T10:00:00+14:01",
        "2024-01-01T10:00:00+15:00",
        "2024-01-01T10:00:00+02:60",
        "2024-01-01T10:00:00ZZ",
        "2024-01-01T10:00:00Z ",
        "2024-01-01T10:00:00+02:00:00",
    ];
    let mut out = String::new();
    for input in inputs {
        match parse_datetime(input) {
            Err(PolicyError::InvalidDateTime(why)) => writeln!(out, "{input:?}: {why}").unwrap(),
            other => panic!("{input:?} was not rejected: {other:?}"),
        }
    }
    expect![[r#"
        "": year
        "24": year
        "0000": year 0000
        "20240": separator after year
        "+2024": year
        " 2024": year
        "2024 ": separator after year
        "２０２４": year
        "2024-1": month
        "2024-00": month out of range
        "2024-13": month out of range
        "2024/01": separator after year
        "2024-01-1": day
        "2024-01-00": day out of range
        "2024-01-32": day out of range
        "2023-02-29": day out of range
        "1900-02-29": day out of range
        "2024-04-31": day out of range
        "2024-01-01T": hour
        "2024-01-01T10:00Z": separator after minute
        "2024-01-01T10:00:00": time zone required
        "2024-01-01 10:00:00Z": time separator
        "2024-01-01t10:00:00Z": time separator
        "2024-01-01T10:00:00z": time zone required
        "2024-01-01T24:00:00Z": time out of range
        "2024-01-01T10:60:00Z": time out of range
        "2024-01-01T10:00:61Z": time out of range
        "2024-01-01T1:00:00Z": hour
        "2024-01-01T10:00:00.Z": empty fraction
        "2024-01-01T10:00:00,5Z": time zone required
        "2024-01-01T10:00:00+0200": zone separator
        "2024-01-01T10:00:00+02": zone separator
        "2024-01-01T10:00:00+14:01": zone out of range
        "2024-01-01T10:00:00+15:00": zone out of range
        "2024-01-01T10:00:00+02:60": zone out of range
        "2024-01-01T10:00:00ZZ": trailing characters
        "2024-01-01T10:00:00Z ": trailing characters
        "2024-01-01T10:00:00+02:00:00": trailing characters
    "#]]
    .assert_eq(&out);
}

proptest! {
    /// Day, month and year values tile the timeline: each ends where the next begins.
    /// (`d` stops at 27 so that `d + 1` exists in every month, February included.)
    #[test]
    fn partial_dates_tile(y in 1i64..9999, m in 1u32..=12, d in 1u32..=27) {
        let day = range(&format!("{y:04}-{m:02}-{d:02}"));
        let next_day = range(&format!("{y:04}-{m:02}-{:02}", d + 1));
        prop_assert_eq!(day.1, next_day.0);
        prop_assert_eq!(day.1 - day.0, DAY);
        let month = range(&format!("{y:04}-{m:02}"));
        let next_month = if m == 12 { format!("{:04}-01", y + 1) } else { format!("{y:04}-{:02}", m + 1) };
        prop_assert_eq!(month.1, range(&next_month).0);
        prop_assert!(month.0 <= day.0 && day.1 <= month.1);
        let year = range(&format!("{y:04}"));
        prop_assert_eq!(year.1, range(&format!("{:04}", y + 1)).0);
        prop_assert!(year.0 <= month.0 && month.1 <= year.1);
    }

    /// A local time with offset is the UTC time minus the offset, and lies in its day's range
    /// shifted by the offset.
    #[test]
    fn offsets_shift_utc(
        y in 1i64..=9999, m in 1u32..=12, d in 1u32..=28,
        h in 0i64..24, mi in 0i64..60, s in 0i64..60,
        sign in prop::bool::ANY, oh in 0i64..14, om in 0i64..60,
    ) {
        let date = format!("{y:04}-{m:02}-{d:02}");
        let base = format!("{date}T{h:02}:{mi:02}:{s:02}");
        let z = range(&format!("{base}Z"));
        let offset = (oh * 60 + om) * 60_000 * if sign { 1 } else { -1 };
        let zone = format!("{}{oh:02}:{om:02}", if sign { '+' } else { '-' });
        let shifted = range(&format!("{base}{zone}"));
        prop_assert_eq!(shifted.0, z.0 - offset);
        prop_assert_eq!(shifted.1 - shifted.0, 1_000);
        let day = range(&date);
        prop_assert_eq!(z.0, day.0 + ((h * 60 + mi) * 60 + s) * 1_000);
    }

    /// Arbitrary text never panics the parser, and whatever it accepts is a non-empty range.
    #[test]
    fn arbitrary_text_is_safe(text in "\\PC{0,40}") {
        if let Ok(r) = parse_datetime(&text) {
            prop_assert!(r.start_ms() < r.end_ms());
        }
    }

    #[test]
    fn date_shaped_text_is_safe(text in "[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,4})?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?") {
        if let Ok(r) = parse_datetime(&text) {
            prop_assert!(r.start_ms() < r.end_ms());
        }
    }
}
