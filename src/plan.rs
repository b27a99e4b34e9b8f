//! In what order the files of a series are read.
//!
//! A run's files fall into series: one server's files of one kind, each series read file after
//! file in time order (an SMTP session may continue into the next file). The agent's
//! coordinator (`crate::agent`) moves every series through log time together; this module says
//! when a file starts and how files sort.
//!
//! Time order is the file's first row's time (its `#Date` if it has no row yet). Names are not
//! enough: Exchange numbers the files of one day or hour `-1`, `-2`, … `-10`, and `-10` sorts
//! before `-2` as text. Ties fall back to the path in natural order (digit runs as numbers).

use std::cmp::Ordering;
use std::path::Path;

use mailflow_parser::directive::{Directive, parse_directive};
use mailflow_parser::fields::datetime::parse_datetime_ms;

/// The time a log file starts at, from its first bytes: the first data row's `date-time` (the
/// first field of every Exchange transport log), else the `#Date` header.
pub fn start_time(head: &[u8]) -> Option<i64> {
    let head = head
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(head);
    let mut date = None;
    // Only complete lines: the last one may be cut at the end of the head.
    let complete = head
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&[][..], |i| &head[..i]);
    for line in complete.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'#') {
            if let Ok((_, Directive::Date(d))) = parse_directive(line) {
                date = parse_datetime_ms(d.trim_ascii());
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let first = line.split(|&b| b == b',').next().unwrap_or_default();
        if let Some(t) = parse_datetime_ms(first) {
            return Some(t);
        }
    }
    date
}

/// Text order with runs of digits compared as numbers: `-2` before `-10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (run(a), run(b));
                let (da, db) = (&a[..na], &b[..nb]);
                // Without leading zeros, a longer run is a larger number.
                let strip = |d: &[u8]| {
                    let z = d.iter().take_while(|&&c| c == b'0').count();
                    d.len() - z
                };
                let order = strip(da)
                    .cmp(&strip(db))
                    .then_with(|| da[da.len() - strip(da)..].cmp(&db[db.len() - strip(db)..]))
                    .then_with(|| na.cmp(&nb));
                if order != Ordering::Equal {
                    return order;
                }
                (a, b) = (&a[na..], &b[nb..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

/// Orders files by first-row time, then path in natural order.
pub fn time_order(a: (Option<i64>, &Path), b: (Option<i64>, &Path)) -> Ordering {
    a.0.cmp(&b.0)
        .then_with(|| natural_cmp(&a.1.to_string_lossy(), &b.1.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_file_numbers_sort_as_numbers() {
        let mut v = vec![
            "MSGTRK20250114-10.LOG",
            "MSGTRK20250114-2.LOG",
            "MSGTRK20250114-1.LOG",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "MSGTRK20250114-1.LOG",
                "MSGTRK20250114-2.LOG",
                "MSGTRK20250114-10.LOG"
            ]
        );
        assert_eq!(natural_cmp("a007", "a7"), Ordering::Greater);
        assert_eq!(natural_cmp("EX01/x", "EX01/x"), Ordering::Equal);
        assert_eq!(natural_cmp("b", "a9"), Ordering::Greater);
    }

    #[test]
    fn a_file_starts_at_its_first_row_or_else_its_date() {
        let head = b"\xEF\xBB\xBF#Software: Microsoft Exchange Server\r\n#Date: 2025-01-14T00:00:00.000Z\r\n#Fields: date-time,x\r\n2025-01-15T10:00:00.000Z,a\r\n2025-01-15T11";
        assert_eq!(start_time(head), Some(1_736_935_200_000));
        let only_headers = b"#Date: 2025-01-14T00:00:00.000Z\r\n#Fields: date-time,x\r\n";
        assert_eq!(start_time(only_headers), Some(1_736_812_800_000));
        assert_eq!(start_time(b"not a log"), None);
    }
}
