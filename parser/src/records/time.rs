//! The times Windows tools print: ISO 8601 with a zone (event XML's `SystemTime`, PowerShell 7's
//! JSON), .NET's `\/Date(ms)\/` (PowerShell 5.1's JSON), and the culture-formatted local times
//! of Event Viewer's text and `Format-List`/`Export-Csv` (`11/30/2026 8:12:01 AM`,
//! `30.11.2026 08:12:01`, `2026-11-30 08:12:01`).
//!
//! A culture-formatted time has no zone; it is read as UTC (the README says so) because nothing
//! in the text says otherwise. Day and month order follow the separators and the clock: a
//! 12-hour clock (`AM`/`PM`) is the US order (month first); `.` and a 24-hour `/` date are day
//! first; `-` is ISO order.

use crate::fields::datetime::{days_from_civil, days_in_month, parse_datetime_ms};

/// Milliseconds since the epoch for any of the forms above, or `None`.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim().trim_matches('"');
    if let Some(ms) = dotnet_date(s) {
        return Some(ms);
    }
    iso(s).or_else(|| culture(s))
}

/// `/Date(1701331800000)/`, `\/Date(1701331800000)\/`, `/Date(1701331800000+0100)/`: the offset
/// only says which zone the value was shown in; the number is UTC already.
fn dotnet_date(s: &str) -> Option<i64> {
    let rest = s.trim_start_matches(['\\', '/']).strip_prefix("Date(")?;
    let end = rest.find(')')?;
    let body = &rest[..end];
    let digits_end = body
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(body.len(), |(i, _)| i);
    body[..digits_end].parse().ok()
}

fn num(s: &str) -> Option<u32> {
    (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn date_ms(y: i64, m: u32, d: u32, h: u32, mi: u32, sec: u32, ms: u32) -> Option<i64> {
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    let days = days_from_civil(y, m, d);
    Some(
        (days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(sec)) * 1000
            + i64::from(ms),
    )
}

/// `HH:mm[:ss[.fffffff]]`: hours, minutes, seconds, milliseconds.
fn clock(s: &str) -> Option<(u32, u32, u32, u32)> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.split(':');
    let h = num(parts.next()?)?;
    let mi = num(parts.next()?)?;
    let sec = parts.next().map_or(Some(0), num)?;
    if parts.next().is_some() || !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let mut ms = 0;
    for (i, b) in frac.bytes().take(3).enumerate() {
        ms += u32::from(b - b'0') * [100, 10, 1][i];
    }
    Some((h, mi, sec, ms))
}

/// `2026-11-30T08:12:01.1234567Z`, `…+01:00`, `2026-11-30 08:12:01`: the transport logs'
/// timestamp parser, after the zone (which it does not take) is split off.
fn iso(s: &str) -> Option<i64> {
    let (time, offset_min) = match s.get(19..).and_then(|t| t.rfind(['+', '-'])) {
        Some(i) => {
            let (t, z) = s.split_at(19 + i);
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let z = &z[1..];
            let (zh, zm) = z
                .split_once(':')
                .unwrap_or((z.get(..2)?, z.get(2..).unwrap_or("0")));
            (t, sign * (i64::from(num(zh)?) * 60 + i64::from(num(zm)?)))
        }
        None => (s, 0i64),
    };
    Some(parse_datetime_ms(time.as_bytes())? - offset_min * 60_000)
}

/// Culture-formatted: a date of three numbers, a time, and perhaps `AM`/`PM`.
fn culture(s: &str) -> Option<i64> {
    let mut words = s.split_whitespace();
    let date = words.next()?;
    let time = words.next()?;
    let meridiem = words.next().map(str::to_ascii_uppercase);
    if words.next().is_some() {
        return None;
    }
    let sep = date.chars().find(|c| matches!(c, '/' | '.' | '-'))?;
    let parts: Vec<&str> = date.trim_end_matches('.').split(sep).collect();
    let [a, b, c] = parts.as_slice() else {
        return None;
    };
    let (a, b, c) = (num(a)?, num(b)?, num(c)?);
    let (y, m, d) = if a > 31 {
        (a, b, c)
    } else if meridiem.is_some() && sep == '/' {
        (c, a, b)
    } else {
        (c, b, a)
    };
    let y = if y < 100 { 2000 + y } else { y };
    let (mut h, mi, sec, ms) = clock(time)?;
    match meridiem.as_deref() {
        None => {}
        Some("AM") if (1..=12).contains(&h) => h %= 12,
        Some("PM") if (1..=12).contains(&h) => h = h % 12 + 12,
        Some(_) => return None,
    }
    date_ms(i64::from(y), m, d, h, mi, sec, ms)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    fn at(s: &str) -> i64 {
        parse_time(s).unwrap_or_else(|| panic!("{s:?} did not parse"))
    }

    #[test]
    fn every_form_gives_the_same_instant() {
        // 2026-11-30T08:12:01.250Z
        let want = 1_796_026_321_250;
        assert_eq!(at("2026-11-30T08:12:01.2500000Z"), want);
        assert_eq!(at("2026-11-30T08:12:01.250000000Z"), want);
        assert_eq!(at("2026-11-30T09:12:01.25+01:00"), want);
        assert_eq!(at("2026-11-30T03:12:01.25-05:00"), want);
        assert_eq!(at("\\/Date(1796026321250)\\/"), want);
        assert_eq!(at("/Date(1796026321250+0100)/"), want);
        let whole = want - 250;
        assert_eq!(at("11/30/2026 8:12:01 AM"), whole);
        assert_eq!(at("30.11.2026 08:12:01"), whole);
        assert_eq!(at("30/11/2026 08:12:01"), whole);
        assert_eq!(at("2026-11-30 08:12:01"), whole);
        assert_eq!(at("11/30/2026 8:12:01 PM"), whole + 12 * 3_600_000);
        assert_eq!(at("11/30/2026 12:12:01 AM"), whole - 8 * 3_600_000);
    }

    #[test]
    fn nonsense_is_none() {
        for s in [
            "",
            "yesterday",
            "13/13/2026 8:00:00 AM",
            "2026-02-30T00:00:00Z",
            "11/30/2026 13:00:00 PM",
            "1/2/3/4 5:6:7",
            "/Date(abc)/",
        ] {
            assert_eq!(parse_time(s), None, "{s:?}");
        }
    }
}
