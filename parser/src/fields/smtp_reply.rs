//! SMTP replies inside log text: `454 4.7.0 Temporary authentication failure`,
//! `250  host Hello [1.2.3.4] ...` (collapsed multi-line reply, no enhanced code),
//! `550 4.4.7 QUEUE.Expired;message expired` (recipient-status item), and the shapes tracking
//! `source-context` wraps them in (`;250 2.0.0 OK;ClientSubmitTime:`,
//! `EX02.contoso.com = 250 2.6.0 <id> Queued mail for redundancy`).
//!
//! Only the outermost reply is split out here; looking through wrapper errors such as
//! `451 4.4.0 ... responded with: "421 4.4.1 ..."` is diagnosis, and belongs to `enrich`.

use nom::IResult;

/// A reply code and, when present, its RFC 3463 enhanced status code (as text, e.g. `4.7.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmtpReply<'a> {
    /// Three-digit reply code, 200 to 599.
    pub code: u16,
    /// `class.subject.detail`, borrowed from the input.
    pub enhanced: Option<&'a [u8]>,
}

/// Parses a reply at the very start of `input`.
///
/// Written over the bytes rather than with nom's combinators: it runs on every data field of the
/// protocol logs and on every recipient-status item, and the combinators cost about 140
/// instructions a call (callgrind, SMTP receive; 8% of the parse). The grammar is the one
/// `reference::parse_smtp_reply` states with nom, which the tests check this against.
pub fn parse_smtp_reply(input: &[u8]) -> IResult<&[u8], SmtpReply<'_>> {
    match scan_reply(input) {
        Some((used, reply)) => Ok((&input[used..], reply)),
        None => Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::OneOf,
        ))),
    }
}

/// A reply at the start of `input`, with the bytes it spans.
#[inline]
fn scan_reply(input: &[u8]) -> Option<(usize, SmtpReply<'_>)> {
    let &[a, b, c, ref rest @ ..] = input else {
        return None;
    };
    if !matches!(a, b'2'..=b'5') || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return None;
    }
    // A reply code is a word of its own: `2500 bytes` is not a reply.
    if !matches!(rest.first(), None | Some(b' ' | b'-')) {
        return None;
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    let enhanced = enhanced_code(rest);
    Some((
        3 + enhanced.map_or(0, |(end, _)| end),
        SmtpReply {
            code,
            enhanced: enhanced.map(|(_, e)| e),
        },
    ))
}

/// `class.subject.detail` after a reply code (past an optional `-` and spaces): where it ends in
/// `rest`, and the code.
fn enhanced_code(rest: &[u8]) -> Option<(usize, &[u8])> {
    let mut i = usize::from(rest.first() == Some(&b'-'));
    while matches!(rest.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    let start = i;
    if !matches!(rest.get(i), Some(b'2' | b'4' | b'5')) {
        return None;
    }
    i += 1;
    for _ in 0..2 {
        if rest.get(i) != Some(&b'.') {
            return None;
        }
        i += 1;
        let digits = rest[i..]
            .iter()
            .take(3)
            .take_while(|d| d.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        i += digits;
    }
    // `2.1.5Recipient OK` (glued, seen in sanitised samples) is still a code; `4.4.7.1` is not.
    if matches!(rest.get(i), Some(d) if d.is_ascii_digit() || *d == b'.') {
        return None;
    }
    Some((i, &rest[start..i]))
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

/// The reply grammar in nom's combinators: what [`parse_smtp_reply`] implements over the bytes,
/// kept as the reference the tests compare it with.
#[cfg(test)]
mod reference {
    use super::SmtpReply;
    use nom::{
        IResult, Parser,
        bytes::complete::{tag, take_while_m_n},
        character::complete::{one_of, satisfy, space0},
        combinator::{eof, not, opt, peek, recognize},
        sequence::preceded,
    };

    pub(super) fn parse_smtp_reply(input: &[u8]) -> IResult<&[u8], SmtpReply<'_>> {
        let (rest, code) = recognize((
            one_of("2345"),
            satisfy(|c| c.is_ascii_digit()),
            satisfy(|c| c.is_ascii_digit()),
        ))
        .parse(input)?;
        let (rest, _) = peek(nom::branch::alt((eof, tag(" "), tag("-")))).parse(rest)?;
        let (rest, enhanced) = opt(preceded((opt(tag("-")), space0), enhanced_code)).parse(rest)?;
        let code = code
            .iter()
            .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
        Ok((rest, SmtpReply { code, enhanced }))
    }

    fn enhanced_code(input: &[u8]) -> IResult<&[u8], &[u8]> {
        let num = || take_while_m_n(1, 3, |c: u8| c.is_ascii_digit());
        let (rest, code) =
            recognize((one_of("245"), tag("."), num(), tag("."), num())).parse(input)?;
        let (rest, _) = not(satisfy(|c| c.is_ascii_digit() || c == '.')).parse(rest)?;
        Ok((rest, code))
    }
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
        // Spaces and tabs between the code (or its `-`) and the enhanced code.
        assert_eq!(reply("250- \t2.1.0 ok"), Some((250, Some("2.1.0"))));
        assert_eq!(reply("451 \t 4.7.0 x"), Some((451, Some("4.7.0"))));
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

    /// Strings near the grammar (most of them a code, many an enhanced code, with the edge
    /// cases around each part), and strings of the characters that matter in any order.
    fn reply_like() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::strategy::Strategy;
        let near = proptest::string::string_regex(
            "[;\" ]{0,1}[1-6][0-9]{1,3}[- a]{0,2}[ \t]{0,2}[1-6]{0,1}[.]{0,1}[0-9]{0,4}[.]{0,1}[0-9]{0,4}[.0-9a ]{0,2}",
        )
        .expect("a valid regex")
        .prop_map(String::into_bytes);
        let loose = proptest::collection::vec(
            proptest::sample::select(b"0123456789.- \t;\"2345xA".to_vec()),
            0..14,
        );
        proptest::prop_oneof![near, loose]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8192))]

        /// The byte-level parser agrees with the nom grammar on what it accepts, the code, the
        /// enhanced code and where it stops.
        #[test]
        fn agrees_with_the_nom_grammar(s in reply_like()) {
            let ours = parse_smtp_reply(&s).ok();
            let theirs = reference::parse_smtp_reply(&s).ok();
            proptest::prop_assert_eq!(ours, theirs);
        }
    }
}
