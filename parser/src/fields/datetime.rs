//! Exchange record timestamps: `yyyy-MM-ddTHH:mm:ss.fffZ`, always UTC.
//!
//! A fixed-width hand parser, because it runs once per row and a general date library costs
//! several times more. It is checked against chrono in the property tests. It accepts 0 to 9
//! fractional digits (other Exchange logs write 7) and a missing `Z`, since copies of logs made by
//! other tools sometimes drop it; anything else is an error, never a guess.

/// Milliseconds since the Unix epoch for an Exchange timestamp, or `None` if it is not one.
pub fn parse_datetime_ms(s: &[u8]) -> Option<i64> {
    let date = s.get(..10)?;
    time_of_day_ms(s, parse_days(date)?)
}

/// [`parse_datetime_ms`] for a stream of timestamps: a log's rows share their date for hours, so
/// the date of the previous row is remembered and only its ten bytes are compared.
#[derive(Debug, Clone, Default)]
pub struct DatetimeParser {
    day: Option<([u8; 10], i64)>,
}

impl DatetimeParser {
    /// Same result as [`parse_datetime_ms`].
    #[inline]
    pub fn parse(&mut self, s: &[u8]) -> Option<i64> {
        let date: [u8; 10] = s.get(..10)?.try_into().ok()?;
        let days = match self.day {
            Some((last, days)) if last == date => days,
            _ => {
                let days = parse_days(&date)?;
                self.day = Some((date, days));
                days
            }
        };
        time_of_day_ms(s, days)
    }
}

/// `yyyy-MM-dd` as days since 1970-01-01.
fn parse_days(s: &[u8]) -> Option<i64> {
    let year = digits(&s[0..4])? as i64;
    if s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let month = digits(&s[5..7])?;
    let day = digits(&s[8..10])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// The rest of a timestamp whose date (its first ten bytes) is `days`.
fn time_of_day_ms(s: &[u8], days: i64) -> Option<i64> {
    if s.len() < 19 || !(s[10] == b'T' || s[10] == b' ') || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let hour = digits(&s[11..13])?;
    let minute = digits(&s[14..16])?;
    let second = digits(&s[17..19])?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0u32;
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        // Truncate to milliseconds, as .NET's "fff" does when it writes the value.
        for (i, b) in tail[..n.min(3)].iter().enumerate() {
            millis += u32::from(b - b'0') * [100, 10, 1][i];
        }
        rest = &tail[n..];
    }
    match rest {
        [] | [b'Z'] => {}
        _ => return None,
    }
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Some(secs * 1000 + i64::from(millis))
}

#[inline]
fn digits(s: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u32::from(d);
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub(crate) fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Howard Hinnant's `days_from_civil`: proleptic Gregorian date to days since 1970-01-01.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats milliseconds since the epoch as `YYYY-MM-DD` (for partitioning and reports).
pub fn format_date(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, NaiveDateTime};
    use proptest::prelude::*;

    #[test]
    fn exchange_timestamp() {
        assert_eq!(parse_datetime_ms(b"1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_datetime_ms(b"2024-01-25T15:16:09.843Z"),
            Some(1_706_195_769_843)
        );
        assert_eq!(
            parse_datetime_ms(b"2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        assert_eq!(
            parse_datetime_ms(b"2023-05-12T07:55:40.0000000Z"),
            Some(1_683_878_140_000)
        );
    }

    #[test]
    fn rejects_non_timestamps() {
        for bad in [
            &b""[..],
            b"2024-01-25",
            b"2024-13-01T00:00:00.000Z",
            b"2023-02-29T00:00:00.000Z",
            b"2024-01-25T24:00:00.000Z",
            b"2024-01-25T15:16:09.Z",
            b"2024-01-25T15:16:09.843+01:00",
            b"x024-01-25T15:16:09.843Z",
            b"2024-01-25T15:16:09.843ZZ",
        ] {
            assert_eq!(
                parse_datetime_ms(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn date_formatting_round_trips() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(1_706_195_769_843), "2024-01-25");
        assert_eq!(format_date(-1), "1969-12-31");
    }

    proptest! {
        // chrono is the oracle: any valid date-time it formats, we parse to the same instant.
        #[test]
        fn agrees_with_chrono(secs in -2_208_988_800i64..7_258_118_400i64, ms in 0u32..1000) {
            let dt = chrono::DateTime::from_timestamp(secs, ms * 1_000_000).unwrap().naive_utc();
            let text = dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            prop_assert_eq!(parse_datetime_ms(text.as_bytes()), Some(secs * 1000 + i64::from(ms)));
            prop_assert_eq!(format_date(secs * 1000 + i64::from(ms)), dt.format("%Y-%m-%d").to_string());
        }

        // The streaming parser remembers a date: it must give what the plain one gives on every
        // input, after any other, valid or not (same date, another date, garbage).
        #[test]
        fn remembered_date_changes_nothing(
            inputs in proptest::collection::vec("(2024-0[12]-[0-3][0-9]|[0-9x-]{10})[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,4})?Z?", 1..8)
        ) {
            let mut parser = DatetimeParser::default();
            for s in &inputs {
                prop_assert_eq!(parser.parse(s.as_bytes()), parse_datetime_ms(s.as_bytes()));
            }
        }

        #[test]
        fn never_accepts_what_chrono_rejects(s in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z") {
            let ours = parse_datetime_ms(s.as_bytes());
            let theirs = NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.3fZ").ok()
                .filter(|d| d.and_utc().timestamp() >= NaiveDate::from_ymd_opt(0, 1, 1).unwrap().and_hms_opt(0,0,0).unwrap().and_utc().timestamp());
            // chrono accepts leap second 60 only as :59 + 1000ms; we accept :60 as a real second,
            // so only compare where the seconds field is a normal one.
            if &s[17..19] != "60" {
                prop_assert_eq!(ours, theirs.map(|d| d.and_utc().timestamp_millis()));
            }
        }
    }
}
