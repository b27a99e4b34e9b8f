//! Row → field boundaries.
//!
//! Exchange quotes a field only when it holds a comma (and so whenever it holds a quote), with
//! quotes doubled inside. Most rows hold no quote at all, so there are two paths:
//!
//! * **plain** (no `"` anywhere in the line): field boundaries are the comma positions found by
//!   `memchr`; nothing is copied and fields borrow the line.
//! * **quoted**: fields are unescaped into one reusable buffer and borrow that.
//!
//! Both paths must agree on every quote-free line; a property test holds them to it. The quoted
//! path is lenient the way Exchange's readers are: text after a closing quote is kept, and a quote
//! inside an unquoted field is literal. Only an unterminated quote is an error, because transport
//! logs never continue a record onto the next line.

use memchr::{memchr, memchr_iter};

/// Reusable scratch for splitting rows: one byte buffer plus field bounds, reused for every row.
#[derive(Debug, Default)]
pub struct Tokenizer {
    unquoted: Vec<u8>,
    bounds: Vec<(u32, u32)>,
}

/// The fields of one row, borrowed from the line or from the tokenizer's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    data: &'a [u8],
    bounds: &'a [(u32, u32)],
}

impl<'a> Fields<'a> {
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    /// True when the row has no fields (never the case for a tokenized line).
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// Field `i`, if the row has it.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.bounds
            .get(i)
            .map(|&(s, e)| &self.data[s as usize..e as usize])
    }

    /// All fields in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let data = self.data;
        self.bounds
            .iter()
            .map(move |&(s, e)| &data[s as usize..e as usize])
    }
}

/// A row the tokenizer cannot split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnterminatedQuote {
    /// Offset within the line of the opening quote.
    pub at: usize,
}

impl Tokenizer {
    /// Splits `line` (no line terminator) into fields. Lines must be shorter than 4 GiB; the
    /// decoder's line-length cap guarantees it.
    pub fn tokenize<'a>(&'a mut self, line: &'a [u8]) -> Result<Fields<'a>, UnterminatedQuote> {
        if memchr(b'"', line).is_none() {
            self.split_plain(line);
            Ok(Fields {
                data: line,
                bounds: &self.bounds,
            })
        } else {
            self.split_quoted(line)?;
            Ok(Fields {
                data: &self.unquoted,
                bounds: &self.bounds,
            })
        }
    }

    /// The quoted path, whatever the line holds. Public so tests can hold the paths together.
    pub fn tokenize_quoted<'a>(
        &'a mut self,
        line: &'a [u8],
    ) -> Result<Fields<'a>, UnterminatedQuote> {
        self.split_quoted(line)?;
        Ok(Fields {
            data: &self.unquoted,
            bounds: &self.bounds,
        })
    }

    fn split_plain(&mut self, line: &[u8]) {
        self.bounds.clear();
        let mut start = 0u32;
        for comma in memchr_iter(b',', line) {
            self.bounds.push((start, comma as u32));
            start = comma as u32 + 1;
        }
        self.bounds.push((start, line.len() as u32));
    }

    fn split_quoted(&mut self, line: &[u8]) -> Result<(), UnterminatedQuote> {
        self.bounds.clear();
        self.unquoted.clear();
        let mut i = 0;
        loop {
            let field_start = self.unquoted.len() as u32;
            if line.get(i) == Some(&b'"') {
                let open = i;
                i += 1;
                loop {
                    let Some(q) = memchr(b'"', &line[i..]) else {
                        return Err(UnterminatedQuote { at: open });
                    };
                    self.unquoted.extend_from_slice(&line[i..i + q]);
                    i += q + 1;
                    if line.get(i) == Some(&b'"') {
                        self.unquoted.push(b'"');
                        i += 1;
                    } else {
                        break;
                    }
                }
            }
            let end = memchr(b',', &line[i..]).map_or(line.len(), |c| i + c);
            self.unquoted.extend_from_slice(&line[i..end]);
            self.bounds.push((field_start, self.unquoted.len() as u32));
            if end >= line.len() {
                return Ok(());
            }
            i = end + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(line: &str) -> Vec<String> {
        let mut t = Tokenizer::default();
        let f = t.tokenize(line.as_bytes()).unwrap();
        f.iter()
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn plain_fields_and_trailing_empty() {
        assert_eq!(split("a,,b,"), ["a", "", "b", ""]);
        assert_eq!(split(""), [""]);
        assert_eq!(split(" leading space,x"), [" leading space", "x"]);
    }

    #[test]
    fn quoted_fields() {
        assert_eq!(
            split(r#"1,"220 host ready at Thu, 25 Jan 2024",x"#),
            ["1", "220 host ready at Thu, 25 Jan 2024", "x"]
        );
        assert_eq!(
            split(r#""R=OK;Msg=""Proxy:H:1993;ProxySuccess""",x"#),
            [r#"R=OK;Msg="Proxy:H:1993;ProxySuccess""#, "x"]
        );
        assert_eq!(split(r#""""#), [""]);
        assert_eq!(split(r#""a""b","c""#), [r#"a"b"#, "c"]);
    }

    #[test]
    fn lenient_quotes() {
        assert_eq!(split(r#"ab"c,d"#), [r#"ab"c"#, "d"]);
        assert_eq!(split(r#""ab"cd,e"#), ["abcd", "e"]);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        let mut t = Tokenizer::default();
        assert_eq!(
            t.tokenize(br#"a,"bc,d"#).unwrap_err(),
            UnterminatedQuote { at: 2 }
        );
    }

    proptest! {
        // The plain path and the quoted path agree on every quote-free line.
        #[test]
        fn plain_path_equals_quoted_path(line in "[^\"\n]{0,200}") {
            let mut a = Tokenizer::default();
            let mut b = Tokenizer::default();
            let plain: Vec<Vec<u8>> = a.tokenize(line.as_bytes()).unwrap().iter().map(<[u8]>::to_vec).collect();
            let quoted: Vec<Vec<u8>> = b.tokenize_quoted(line.as_bytes()).unwrap().iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(plain, quoted);
        }

        // Quoting any field the way Exchange does reads back the original fields.
        #[test]
        fn exchange_quoting_round_trips(fields in proptest::collection::vec("[^\n]{0,20}", 1..12)) {
            let line = fields.iter().map(|f| {
                if f.contains(',') || f.contains('"') { format!("\"{}\"", f.replace('"', "\"\"")) } else { f.clone() }
            }).collect::<Vec<_>>().join(",");
            let mut t = Tokenizer::default();
            let got: Vec<String> = t.tokenize(line.as_bytes()).unwrap().iter().map(|s| String::from_utf8(s.to_vec()).unwrap()).collect();
            prop_assert_eq!(got, fields);
        }
    }
}
