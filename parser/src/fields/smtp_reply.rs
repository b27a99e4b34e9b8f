//! SMTP replies inside log text: `454 4.7.0 Temporary authentication failure`,
//! `250  host Hello [1.2.3.4] ...` (collapsed multi-line reply, no enhanced code),
//! `550 4.4.7 QUEUE.Expired;message expired` (recipient-status item), and the shapes tracking
//! `source-context` wraps them in (`;250 2.0.0 OK;ClientSubmitTime:`,
//! `EX02.contoso.com = 250 2.6.0 <id> Queued mail for redundancy`).
//!
//! Only the outermost reply is split out here; looking through wrapper errors such as
//! `451 4.4.0 ... responded with: "421 4.4.1 ..."` is diagnosis, and belongs to `enrich`.

use nom::{
    IResult, Parser,
    bytes::complete::{tag, take_while_m_n},
    character::complete::{one_of, satisfy, space0},
    combinator::{eof, not, opt, peek, recognize},
    sequence::preceded,
};

/// A reply code and, when present, its RFC 3463 enhanced status code (as text, e.g. `4.7.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmtpReply<'a> {
    /// Three-digit reply code, 200 to 599.
    pub code: u16,
    /// `class.subject.detail`, borrowed from the input.
    pub enhanced: Option<&'a [u8]>,
}

/// Parses a reply at the very start of `input`.
pub fn parse_smtp_reply(input: &[u8]) -> IResult<&[u8], SmtpReply<'_>> {
    // Most fields this runs on are not replies (commands, text, empty context): turn them away
    // on their first bytes before the combinators run.
    if !matches!(input, [b'2'..=b'5', b'0'..=b'9', b'0'..=b'9', ..]) {
        return Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::OneOf,
        )));
    }
    let (rest, code) = recognize((
        one_of("2345"),
        satisfy(|c| c.is_ascii_digit()),
        satisfy(|c| c.is_ascii_digit()),
    ))
    .parse(input)?;
    // A reply code is a word of its own: `2500 bytes` is not a reply.
    let (rest, _) = peek(nom::branch::alt((eof, tag(" "), tag("-")))).parse(rest)?;
    let (rest, enhanced) = opt(preceded((opt(tag("-")), space0), enhanced_code)).parse(rest)?;
    let code = code
        .iter()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    Ok((rest, SmtpReply { code, enhanced }))
}

fn enhanced_code(input: &[u8]) -> IResult<&[u8], &[u8]> {
    let num = || take_while_m_n(1, 3, |c: u8| c.is_ascii_digit());
    let (rest, code) = recognize((one_of("245"), tag("."), num(), tag("."), num())).parse(input)?;
    // `2.1.5Recipient OK` (glued, seen in sanitised samples) is still a code; `4.4.7.1` is not.
    let (rest, _) = not(satisfy(|c| c.is_ascii_digit() || c == '.')).parse(rest)?;
    Ok((rest, code))
}

/// The reply at the start of a field (after `;`, quotes or spaces): where protocol, agent and
/// connectivity logs put one. Only tracking `source-context` also has the ` = ` shape
/// [`find_smtp_reply`] looks for.
pub fn leading_smtp_reply(field: &[u8]) -> Option<SmtpReply<'_>> {
    let start = field
        .iter()
        .position(|b| !matches!(b, b';' | b' ' | b'"'))
        .unwrap_or(field.len());
    parse_smtp_reply(&field[start..])
        .ok()
        .map(|(_, reply)| reply)
}

/// Finds the reply a log field carries: at its start (after `;`, quotes or spaces), or after the
/// ` = ` that tracking `source-context` puts between a server name and the reply it gave.
pub fn find_smtp_reply(field: &[u8]) -> Option<SmtpReply<'_>> {
    if let Some(reply) = leading_smtp_reply(field) {
        return Some(reply);
    }
    // `memchr` for the `=` rather than a substring search: this runs on every data field, and
    // building a substring searcher per call costs more than the scan.
    memchr::memchr_iter(b'=', field)
        .filter(|&i| i > 0 && field[i - 1] == b' ' && field.get(i + 1) == Some(&b' '))
        .find_map(|i| parse_smtp_reply(&field[i + 2..]).ok().map(|(_, r)| r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(s: &str) -> Option<(u16, Option<&str>)> {
        find_smtp_reply(s.as_bytes())
            .map(|r| (r.code, r.enhanced.map(|e| std::str::from_utf8(e).unwrap())))
    }

    #[test]
    fn plain_and_enhanced() {
        assert_eq!(
            reply("454 4.7.0 Temporary authentication failure"),
            Some((454, Some("4.7.0")))
        );
        assert_eq!(
            reply("250  host Hello [1.2.3.4] SIZE 37748736"),
            Some((250, None))
        );
        assert_eq!(
            reply("220 2.0.0 SMTP server ready"),
            Some((220, Some("2.0.0")))
        );
        assert_eq!(
            reply("550 5.7.606 Access denied, banned sending IP"),
            Some((550, Some("5.7.606")))
        );
        assert_eq!(reply("250-PIPELINING"), Some((250, None)));
        assert_eq!(reply("421"), Some((421, None)));
    }

    #[test]
    fn recipient_status_and_source_context_shapes() {
        assert_eq!(
            reply("550 4.4.7 QUEUE.Expired;message expired"),
            Some((550, Some("4.4.7")))
        );
        assert_eq!(reply("250 2.1.5Recipient OK"), Some((250, Some("2.1.5"))));
        assert_eq!(
            reply(";250 2.0.0 OK;ClientSubmitTime:"),
            Some((250, Some("2.0.0")))
        );
        assert_eq!(
            reply("EX02.contoso.com = 250 2.6.0 <id@x> [InternalId=1] Queued mail for redundancy"),
            Some((250, Some("2.6.0")))
        );
        assert_eq!(
            reply(
                "451 4.4.0 Primary target IP address responded with: \"421 4.4.1 Connection timed out.\""
            ),
            Some((451, Some("4.4.0")))
        );
    }

    #[test]
    fn only_tracking_source_context_needs_the_equals_search() {
        let context = b"EX02.contoso.com = 250 2.6.0 <id@x> Queued mail for redundancy";
        assert_eq!(leading_smtp_reply(context), None);
        assert_eq!(find_smtp_reply(context).map(|r| r.code), Some(250));
        assert_eq!(
            leading_smtp_reply(b";250 2.0.0 OK;ClientSubmitTime:").map(|r| r.code),
            Some(250)
        );
    }

    #[test]
    fn not_replies() {
        for s in [
            "",
            "EHLO mail.contoso.com",
            "2500 bytes",
            "100 continue",
            "To",
            "None",
            "25",
        ] {
            assert_eq!(reply(s), None, "{s}");
        }
        assert_eq!(reply("550 4.4.7.1 odd"), Some((550, None)));
        assert_eq!(reply("550 1.2.3 odd"), Some((550, None)));
    }
}
