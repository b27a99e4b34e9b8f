//! Message tracking `custom-data`: `S:Key=Value;S:Key2=Value2;...`.
//!
//! The type tag (`S:`, `I32:`, `F:`, `Dbl:`) is dropped from the key: every value is kept as the
//! text Exchange wrote, so nothing is lost and readers need not know the tags. Values may hold `=`,
//! `|`, `,` and even `;` (a `;` separates entries only where a tagged key follows it), so the split
//! is on `;<Tag>:` and the key/value split is on the first `=`.

/// One `key=value` entry; `value` is `None` for an entry with no `=`.
pub type Entry<'a> = (&'a [u8], Option<&'a [u8]>);

/// Parses a type tag such as `S:` or `I32:` (a letter, up to three letters or digits, a colon)
/// at the start of `input`; returns the rest and the tag. Hand-written rather than nom: it runs
/// at every `;` of every custom-data field, and the combinator version cost 5% of a parse.
pub fn parse_type_tag(input: &[u8]) -> Option<(&[u8], &[u8])> {
    if !input.first()?.is_ascii_alphabetic() {
        return None;
    }
    let colon = input.iter().take(5).position(|&b| b == b':')?;
    input[1..colon]
        .iter()
        .all(u8::is_ascii_alphanumeric)
        .then(|| (&input[colon + 1..], &input[..=colon]))
}

/// Iterates the entries of a custom-data field, skipping empty ones.
pub fn entries(field: &[u8]) -> CustomData<'_> {
    CustomData {
        rest: field,
        tagged: parse_type_tag(field).is_some(),
    }
}

/// Iterator returned by [`entries`].
#[derive(Debug, Clone)]
pub struct CustomData<'a> {
    rest: &'a [u8],
    tagged: bool,
}

impl<'a> Iterator for CustomData<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let end = self.entry_end();
            let raw = &self.rest[..end];
            self.rest = self.rest.get(end + 1..).unwrap_or(&[]);
            let body = if self.tagged {
                parse_type_tag(raw).map_or(raw, |(body, _)| body)
            } else {
                raw
            };
            if body.is_empty() {
                continue;
            }
            return Some(match memchr::memchr(b'=', body) {
                Some(eq) => (&body[..eq], Some(&body[eq + 1..])),
                None => (body, None),
            });
        }
    }
}

impl CustomData<'_> {
    fn entry_end(&self) -> usize {
        for semi in memchr::memchr_iter(b';', self.rest) {
            if !self.tagged
                || parse_type_tag(&self.rest[semi + 1..]).is_some()
                || semi + 1 == self.rest.len()
            {
                return semi;
            }
        }
        self.rest.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(s: &str) -> Vec<(String, Option<String>)> {
        entries(s.as_bytes())
            .map(|(k, v)| {
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    v.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                )
            })
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, Option<String>) {
        (k.to_string(), Some(v.to_string()))
    }

    #[test]
    fn tagged_entries() {
        assert_eq!(
            kv("S:E2ELatency=1.928;S:MsgRecipCount=1;S:IncludeInSla=True"),
            vec![
                pair("E2ELatency", "1.928"),
                pair("MsgRecipCount", "1"),
                pair("IncludeInSla", "True")
            ]
        );
    }

    #[test]
    fn values_with_separators_inside() {
        assert_eq!(
            kv(
                "S:AMA=SUM|action=p|error=|atch=0;S:CompCost=|ETR=0;I32:X=1;S:Odd=a;b=c;S:OriginalFromAddress=<>"
            ),
            vec![
                pair("AMA", "SUM|action=p|error=|atch=0"),
                pair("CompCost", "|ETR=0"),
                pair("X", "1"),
                pair("Odd", "a;b=c"),
                pair("OriginalFromAddress", "<>"),
            ]
        );
        assert_eq!(
            kv("S:Microsoft.Exchange.Transport.MailRecipient.RequiredTlsAuthLevel=Opportunistic;"),
            vec![pair(
                "Microsoft.Exchange.Transport.MailRecipient.RequiredTlsAuthLevel",
                "Opportunistic"
            )]
        );
    }

    #[test]
    fn type_tags() {
        assert_eq!(parse_type_tag(b"S:k=v"), Some((&b"k=v"[..], &b"S:"[..])));
        assert_eq!(parse_type_tag(b"Dbl:x"), Some((&b"x"[..], &b"Dbl:"[..])));
        assert_eq!(parse_type_tag(b"I32:"), Some((&b""[..], &b"I32:"[..])));
        for bad in [&b""[..], b":", b"1S:", b"Long5:x", b"S-:x", b"S"] {
            assert_eq!(
                parse_type_tag(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn untagged_and_degenerate() {
        assert_eq!(kv("a=1;b=2"), vec![pair("a", "1"), pair("b", "2")]);
        assert_eq!(kv("S:;S:flag;"), vec![("flag".to_string(), None)]);
        assert_eq!(kv(""), vec![]);
    }
}
