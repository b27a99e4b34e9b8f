//! Header lines: `#Software:`, `#Version:`, `#Log-type:`, `#Date:`, `#Fields:`.
//!
//! Any line starting with `#` is a directive wherever it appears; a new header block mid-file
//! (service restart, server upgrade) is how Exchange announces a changed column set.

use nom::{
    IResult, Parser,
    bytes::complete::{tag, take_till},
    character::complete::space0,
    combinator::{opt, rest},
    sequence::preceded,
};

/// One parsed directive line. Values borrow the line and are trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive<'a> {
    /// `#Software:` (e.g. `Microsoft Exchange Server`).
    Software(&'a [u8]),
    /// `#Version:` (server build or `15.0.0.0`).
    Version(&'a [u8]),
    /// `#Log-type:` (e.g. `Message Tracking Log`).
    LogType(&'a [u8]),
    /// `#Date:` (file creation time).
    Date(&'a [u8]),
    /// `#Fields:` raw comma-separated list; see [`field_names`].
    Fields(&'a [u8]),
    /// Any other `#` line (kept only for completeness; ignored by the decoder).
    Other(&'a [u8]),
}

/// Parses a line that starts with `#`.
pub fn parse_directive(line: &[u8]) -> IResult<&[u8], Directive<'_>> {
    let (input, _) = tag("#").parse(line)?;
    let (input, name) = take_till(|c| c == b':').parse(input)?;
    let (input, value) = opt(preceded((tag(":"), space0), rest)).parse(input)?;
    let Some(value) = value else {
        return Ok((input, Directive::Other(line)));
    };
    let value = value.trim_ascii();
    let directive = match name.trim_ascii().to_ascii_lowercase().as_slice() {
        b"software" => Directive::Software(value),
        b"version" => Directive::Version(value),
        b"log-type" | b"logtype" => Directive::LogType(value),
        b"date" => Directive::Date(value),
        b"fields" => Directive::Fields(value),
        _ => Directive::Other(line),
    };
    Ok((input, directive))
}

/// The column names of a `#Fields:` value, trimmed.
pub fn field_names(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Header names compared the way Exchange's own readers do: case-insensitive, and blind to `-`
/// and `_`, so `date-time`, `dateTime` and `Timestamp`-style PascalCase all map alike.
pub fn normalize_name(name: &[u8]) -> String {
    name.iter()
        .filter(|b| !matches!(b, b'-' | b'_' | b' '))
        .map(|b| b.to_ascii_lowercase() as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Directive<'_> {
        parse_directive(s.as_bytes()).unwrap().1
    }

    #[test]
    fn known_directives() {
        assert_eq!(
            d("#Software: Microsoft Exchange Server"),
            Directive::Software(b"Microsoft Exchange Server")
        );
        assert_eq!(d("#Version: 15.0.0.0"), Directive::Version(b"15.0.0.0"));
        assert_eq!(
            d("#Log-type: SMTP Send Protocol Log "),
            Directive::LogType(b"SMTP Send Protocol Log")
        );
        assert_eq!(
            d("#Date: 2023-01-11T16:00:04.113Z"),
            Directive::Date(b"2023-01-11T16:00:04.113Z")
        );
        assert_eq!(d("#Fields: a,b"), Directive::Fields(b"a,b"));
        assert_eq!(d("#fields:a,b"), Directive::Fields(b"a,b"));
    }

    #[test]
    fn other_lines() {
        assert_eq!(d("# just a comment"), Directive::Other(b"# just a comment"));
        assert_eq!(d("#"), Directive::Other(b"#"));
        assert_eq!(d("#X-Custom: 1"), Directive::Other(b"#X-Custom: 1"));
    }

    #[test]
    fn names() {
        let got: Vec<&[u8]> = field_names(b"date-time, connector-id ,event").collect();
        assert_eq!(got, vec![&b"date-time"[..], b"connector-id", b"event"]);
        assert_eq!(normalize_name(b"date-time"), "datetime");
        assert_eq!(normalize_name(b"dateTime"), "datetime");
        assert_eq!(normalize_name(b"P2FromAddresses"), "p2fromaddresses");
    }
}
