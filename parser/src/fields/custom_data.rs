//! Message tracking `custom-data`: `S:Key=Value;S:Key2=Value2;...`.
//!
//! Keys are kept as Exchange writes them, type tag included (`S:E2ELatency`): that is the name
//! Microsoft's documentation and every admin's script use. Values are kept as the text Exchange
//! wrote, whatever the tag says, so nothing is lost. Values may hold `=`,
//! `|`, `,` and even `;` (a `;` separates entries only where a tagged key follows it), so the split
//! is on `;<Tag>:` and the key/value split is on the first `=`.

/// One `key=value` entry, the key with its type tag; `value` is `None` for an entry with no `=`.
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
    let tag = parse_type_tag(field).map(|(_, tag)| tag.len());
    let [semis, eqs] = separators(field, 0);
    CustomData {
        field,
        tagged: tag.is_some(),
        tag: tag.unwrap_or(0),
        start: 0,
        block: 0,
        semis,
        eqs,
        done: field.is_empty(),
    }
}

/// Bits of the `;` and of the `=` in the 64 bytes of `field` from `at`.
#[inline]
fn separators(field: &[u8], at: usize) -> [u64; 2] {
    crate::scan::masks_at(field, at, [b';', b'='])
}

/// Bits 0 to `bit` of a word.
#[inline]
fn up_to(bit: usize) -> u64 {
    u64::MAX >> (63 - bit)
}

/// Iterator returned by [`entries`]. One pass over the field: the `;` and `=` of each 64-byte
/// block are found as bitmasks, an entry's end is the next `;` that a tag follows, and its key
/// ends at the first `=` bit past its start. (Searching each entry's end and then its `=` with
/// `memchr` cost twice as much on these short entries.)
#[derive(Debug, Clone)]
pub struct CustomData<'a> {
    field: &'a [u8],
    tagged: bool,
    /// Length of the type tag the entry at `start` opens with (found when the entry before it
    /// ended; 0 in an untagged field).
    tag: usize,
    /// Where the next entry starts.
    start: usize,
    /// Offset of the block the masks come from.
    block: usize,
    /// `;` bits of that block not visited yet.
    semis: u64,
    /// `=` bits of that block at or after `start`.
    eqs: u64,
    done: bool,
}

impl<'a> CustomData<'a> {
    /// Moves to the next block; false past the end of the field.
    #[inline]
    fn next_block(&mut self) -> bool {
        self.block += 64;
        if self.block >= self.field.len() {
            return false;
        }
        [self.semis, self.eqs] = separators(self.field, self.block);
        true
    }

    /// The tag after the `;` at `semi` when that `;` ends an entry (a tag, or the very end,
    /// follows it in a tagged field; every `;` ends one in an untagged field), else `None`.
    fn tag_after(&self, semi: usize) -> Option<usize> {
        if !self.tagged || semi + 1 == self.field.len() {
            return Some(0);
        }
        parse_type_tag(&self.field[semi + 1..]).map(|(_, tag)| tag.len())
    }
}

impl<'a> Iterator for CustomData<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        while !self.done {
            let from = self.start;
            let mut eq = None;
            let (end, next_tag) = loop {
                if self.semis == 0 {
                    if eq.is_none() && self.eqs != 0 {
                        eq = Some(self.block + self.eqs.trailing_zeros() as usize);
                    }
                    if !self.next_block() {
                        self.done = true;
                        break (self.field.len(), 0);
                    }
                    continue;
                }
                let bit = self.semis.trailing_zeros() as usize;
                self.semis &= self.semis - 1;
                if eq.is_none() {
                    let before = self.eqs & !up_to(bit);
                    if self.eqs != before {
                        eq = Some(self.block + self.eqs.trailing_zeros() as usize);
                    }
                }
                if let Some(tag) = self.tag_after(self.block + bit) {
                    // The next entry starts after this `;`: its `=` bits are the later ones.
                    self.eqs &= !up_to(bit);
                    break (self.block + bit, tag);
                }
            };
            self.start = end + 1;
            let body = from + std::mem::replace(&mut self.tag, next_tag);
            if body >= end {
                continue;
            }
            // Tags hold no `=`, so the first `=` of the entry is the first of its body.
            return Some(match eq {
                Some(eq) => (&self.field[from..eq], Some(&self.field[eq + 1..end])),
                None => (&self.field[from..end], None),
            });
        }
        None
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
                pair("S:E2ELatency", "1.928"),
                pair("S:MsgRecipCount", "1"),
                pair("S:IncludeInSla", "True")
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
                pair("S:AMA", "SUM|action=p|error=|atch=0"),
                pair("S:CompCost", "|ETR=0"),
                pair("I32:X", "1"),
                pair("S:Odd", "a;b=c"),
                pair("S:OriginalFromAddress", "<>"),
            ]
        );
        assert_eq!(
            kv("S:Microsoft.Exchange.Transport.MailRecipient.RequiredTlsAuthLevel=Opportunistic;"),
            vec![pair(
                "S:Microsoft.Exchange.Transport.MailRecipient.RequiredTlsAuthLevel",
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

    use crate::fuzzing::custom_data_reference as reference;

    proptest::proptest! {
        #[test]
        fn one_pass_split_equals_the_reference(
            parts in proptest::collection::vec(
                proptest::sample::select(vec!["S:", "I32:", "Dbl:", "k", "Key", "=", ";", "|", "a=b", "1.5", ":", "é", " "]),
                0..60,
            )
        ) {
            let field = parts.concat();
            proptest::prop_assert_eq!(entries(field.as_bytes()).collect::<Vec<_>>(), reference(field.as_bytes()));
        }
    }

    #[test]
    fn long_fields_cross_blocks() {
        let long: String = (0..40).map(|i| format!("S:Key{i}=value {i};")).collect();
        assert_eq!(
            entries(long.as_bytes()).collect::<Vec<_>>(),
            reference(long.as_bytes())
        );
        assert_eq!(entries(long.as_bytes()).count(), 40);
    }

    #[test]
    fn untagged_and_degenerate() {
        assert_eq!(kv("a=1;b=2"), vec![pair("a", "1"), pair("b", "2")]);
        assert_eq!(kv("S:;S:flag;"), vec![("S:flag".to_string(), None)]);
        assert_eq!(kv(""), vec![]);
    }
}
