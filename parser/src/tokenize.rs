//! Row → field boundaries.
//!
//! Exchange quotes a field only when it holds a comma (and so whenever it holds a quote), with
//! quotes doubled inside. There are two paths:
//!
//! * **masked**: commas and quotes are found together, 64 bytes at a time, as bitmasks (a loop
//!   LLVM turns into vector compares), and commas inside quotes are masked off by a prefix XOR of
//!   the quote bits. A line is read once whatever its field count; calling `memchr` per field
//!   costs more than the scan on lines of 30 short fields. Fields borrow the line; only those
//!   with doubled quotes are rebuilt. The decoder's tape path ([`Tokenizer::tokenize_into`]).
//! * **lenient**: fields are unescaped one by one into a reusable buffer, the way Exchange's
//!   readers take any quoting: text after a closing quote is kept, and a quote inside an unquoted
//!   field is literal. Lines the masked path finds not quoted the Exchange way come here.
//!
//! Property tests and a fuzz target hold the two paths to the same fields on every line. Only an
//! unterminated quote is an error, because transport logs never continue a record onto the next
//! line.

use memchr::memchr;

use crate::scan;

/// The bytes the masked pass finds, as bitmasks in this order.
const SEPARATORS: [u8; 2] = [b',', b'"'];

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
    /// Unescaped copies of the fields that held doubled quotes.
    scratch: &'a [u8],
    /// Field bounds; a start with [`IN_SCRATCH`] set indexes `scratch`, otherwise `data`.
    bounds: &'a [(u32, u32)],
}

/// Flag on a field's start offset: the field lives in the scratch buffer. Lines are capped far
/// below 2 GiB, so the bit is never part of an offset.
const IN_SCRATCH: u32 = 1 << 31;

impl<'a> Fields<'a> {
    /// A row of a batch tape: bounds absolute in `data`.
    pub(crate) fn over(data: &'a [u8], bounds: &'a [(u32, u32)]) -> Fields<'a> {
        Fields {
            data,
            scratch: &[],
            bounds,
        }
    }

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
        let &(s, e) = self.bounds.get(i)?;
        Some(if s & IN_SCRATCH == 0 {
            &self.data[s as usize..e as usize]
        } else {
            &self.scratch[(s & !IN_SCRATCH) as usize..e as usize]
        })
    }

    /// All fields in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let fields = *self;
        (0..self.bounds.len()).filter_map(move |i| fields.get(i))
    }
}

/// A row the tokenizer cannot split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnterminatedQuote {
    /// Offset within the line of the opening quote.
    pub at: usize,
}

impl Tokenizer {
    /// Splits `line` (no line terminator) into fields. Lines must be shorter than 2 GiB; the
    /// decoder's line-length cap guarantees it.
    pub fn tokenize<'a>(&'a mut self, line: &'a [u8]) -> Result<Fields<'a>, UnterminatedQuote> {
        self.bounds.clear();
        if let Split::Plain = split_masked(line, 0, &mut self.bounds) {
            Ok(Fields {
                data: line,
                scratch: &[],
                bounds: &self.bounds,
            })
        } else {
            self.tokenize_quoted(line)
        }
    }

    /// The quoted path, whatever the line holds. Public so tests can hold the paths together.
    pub fn tokenize_quoted<'a>(
        &'a mut self,
        line: &'a [u8],
    ) -> Result<Fields<'a>, UnterminatedQuote> {
        self.split_quoted(line)?;
        Ok(Fields {
            data: line,
            scratch: &self.unquoted,
            bounds: &self.bounds,
        })
    }

    /// Appends `line`'s fields to a batch tape: their bytes to `data`, their bounds (absolute in
    /// `data`) to `bounds`. The line is copied whole in one `memcpy` and split by one pass of
    /// bitmasks, quoted or not; only fields with doubled quotes are rebuilt, after it. A line not
    /// in Exchange's own quoting (a stray quote, text after a closing quote) takes the lenient
    /// path. On error nothing is appended. `data` must stay under 2 GiB (the decoder's batch
    /// byte budget plus one capped line keeps it there).
    pub(crate) fn tokenize_into(
        &mut self,
        line: &[u8],
        data: &mut Vec<u8>,
        bounds: &mut Vec<(u32, u32)>,
    ) -> Result<(), UnterminatedQuote> {
        let first = bounds.len();
        let base = data.len();
        match split_masked(line, base as u32, bounds) {
            Split::Plain => {
                data.extend_from_slice(line);
                return Ok(());
            }
            Split::Quoted { quotes } => {
                data.extend_from_slice(line);
                if unquote(line, base, quotes, data, &mut bounds[first..]) {
                    return Ok(());
                }
                data.truncate(base);
            }
            Split::Lenient => {}
        }
        bounds.truncate(first);
        for field in self.tokenize_quoted(line)?.iter() {
            let start = data.len() as u32;
            data.extend_from_slice(field);
            bounds.push((start, data.len() as u32));
        }
        Ok(())
    }

    /// Splits a line that holds quotes. A quoted field without doubled quotes is borrowed from
    /// the line, just inside its quotes; only a field with `""` (or text after its closing quote)
    /// is rebuilt in the scratch buffer.
    fn split_quoted(&mut self, line: &[u8]) -> Result<(), UnterminatedQuote> {
        self.bounds.clear();
        self.unquoted.clear();
        let mut i = 0;
        loop {
            let end;
            if line.get(i) == Some(&b'"') {
                let open = i;
                let content = i + 1;
                i = content;
                let mut escaped = false;
                loop {
                    let Some(q) = memchr(b'"', &line[i..]) else {
                        return Err(UnterminatedQuote { at: open });
                    };
                    i += q + 1;
                    if line.get(i) == Some(&b'"') {
                        escaped = true;
                        i += 1;
                    } else {
                        break;
                    }
                }
                let close = i - 1;
                end = memchr(b',', &line[i..]).map_or(line.len(), |c| i + c);
                if !escaped && end == i {
                    self.bounds.push((content as u32, close as u32));
                } else {
                    let start = self.unquoted.len() as u32 | IN_SCRATCH;
                    // Inside the quotes every `"` is the first of a pair: keep it, drop its twin.
                    let mut k = content;
                    while let Some(q) = memchr(b'"', &line[k..close]) {
                        self.unquoted.extend_from_slice(&line[k..=k + q]);
                        k += q + 2;
                    }
                    self.unquoted.extend_from_slice(&line[k..close]);
                    self.unquoted.extend_from_slice(&line[i..end]);
                    self.bounds.push((start, self.unquoted.len() as u32));
                }
            } else {
                end = memchr(b',', &line[i..]).map_or(line.len(), |c| i + c);
                self.bounds.push((i as u32, end as u32));
            }
            if end >= line.len() {
                return Ok(());
            }
            i = end + 1;
        }
    }
}

/// The fields `tokenize_into` puts on a tape already holding other bytes, as owned values: for
/// tests and fuzzing, which hold it to the quoted path.
pub(crate) fn tape_fields(line: &[u8]) -> Result<Vec<Vec<u8>>, UnterminatedQuote> {
    let mut data = b"earlier row,".to_vec();
    let mut bounds = vec![(0, 7)];
    Tokenizer::default().tokenize_into(line, &mut data, &mut bounds)?;
    Ok(bounds[1..]
        .iter()
        .map(|&(s, e)| data[s as usize..e as usize].to_vec())
        .collect())
}

/// What one masked pass made of a line.
enum Split {
    /// No quote: the bounds are final.
    Plain,
    /// Quotes, all paired: the bounds include the quotes and need [`unquote`].
    Quoted { quotes: u32 },
    /// An odd number of quotes: the bounds are not to be used.
    Lenient,
}

/// Bit i set when an odd number of bits 0..=i of `x` are set: for the quote mask, the bytes
/// inside a quoted field, from its opening quote up to (not including) its closing one. A
/// doubled quote toggles twice and leaves its field inside.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Splits a line at the commas outside quotes, pushing bounds shifted by `base` onto `out`.
fn split_masked(line: &[u8], base: u32, out: &mut Vec<(u32, u32)>) -> Split {
    let mut start = base;
    let mut at = base;
    let mut inside = 0u64;
    let mut quotes_seen = 0u32;
    let mut chunks = line.chunks_exact(64);
    let mut step = |commas: u64, quotes: u64, at: u32, start: &mut u32| {
        let mut separators = commas;
        if quotes | inside != 0 {
            let within = prefix_xor(quotes) ^ inside;
            separators &= !within;
            // All ones when the chunk ends inside quotes.
            inside = ((within as i64) >> 63) as u64;
            quotes_seen += quotes.count_ones();
        }
        push_commas(out, separators, at, start);
    };
    for chunk in &mut chunks {
        let [commas, quotes] = scan::masks(chunk, SEPARATORS);
        step(commas, quotes, at, &mut start);
        at += 64;
    }
    let tail = line.len() - chunks.remainder().len();
    let [commas, quotes] = scan::masks_at(line, tail, SEPARATORS);
    step(commas, quotes, at, &mut start);
    if inside != 0 {
        return Split::Lenient;
    }
    out.push((start, base + line.len() as u32));
    match quotes_seen {
        0 => Split::Plain,
        quotes => Split::Quoted { quotes },
    }
}

/// Strips the quotes of the fields of a masked split (`line` copied at `data[base..]`), and
/// rebuilds the fields holding doubled quotes at the end of `data`. False when the quoting is not
/// Exchange's (then the lenient path must read the line): a quote outside a quoted field, text
/// after a closing quote, or a lone quote inside one.
fn unquote(
    line: &[u8],
    base: usize,
    quotes: u32,
    data: &mut Vec<u8>,
    bounds: &mut [(u32, u32)],
) -> bool {
    let mut accounted = 0;
    for bound in bounds {
        let (s, e) = (bound.0 as usize - base, bound.1 as usize - base);
        let field = &line[s..e];
        if field.first() != Some(&b'"') {
            continue;
        }
        let [b'"', inner @ .., b'"'] = field else {
            return false;
        };
        accounted += 2;
        if memchr(b'"', inner).is_none() {
            *bound = (bound.0 + 1, bound.1 - 1);
            continue;
        }
        let start = data.len();
        let mut k = 0;
        while let Some(q) = memchr(b'"', &inner[k..]) {
            if inner.get(k + q + 1) != Some(&b'"') {
                return false;
            }
            data.extend_from_slice(&inner[k..=k + q]);
            k += q + 2;
            accounted += 2;
        }
        data.extend_from_slice(&inner[k..]);
        *bound = (start as u32, data.len() as u32);
    }
    accounted == quotes
}

#[inline]
fn push_commas(out: &mut Vec<(u32, u32)>, mut commas: u64, at: u32, start: &mut u32) {
    while commas != 0 {
        let comma = at + commas.trailing_zeros();
        out.push((*start, comma));
        *start = comma + 1;
        commas &= commas - 1;
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

    #[test]
    fn long_lines_cross_mask_chunks() {
        let fields: Vec<String> = (0..40).map(|i| "x".repeat(i % 7)).collect();
        let line = fields.join(",");
        assert!(line.len() > 128);
        assert_eq!(split(&line), fields);
        let quoted = format!("{line},\"late, quote\"");
        let mut expect = fields.clone();
        expect.push("late, quote".into());
        assert_eq!(split(&quoted), expect);
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

        // The tape path (one masked pass) reads every line as the quoted path does, stray and
        // unterminated quotes included.
        #[test]
        fn tape_path_equals_quoted_path(line in "[a\",;=\" é]{0,150}") {
            let mut t = Tokenizer::default();
            let quoted = t.tokenize_quoted(line.as_bytes()).map(|f| f.iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
            prop_assert_eq!(tape_fields(line.as_bytes()), quoted);
        }

        // Exchange's quoting, on long lines that cross mask chunks, through the tape path.
        #[test]
        fn tape_path_reads_exchange_quoting(fields in proptest::collection::vec("[a-z,\" ]{0,40}", 1..30)) {
            let line = fields.iter().map(|f| {
                if f.contains(',') || f.contains('"') { format!("\"{}\"", f.replace('"', "\"\"")) } else { f.clone() }
            }).collect::<Vec<_>>().join(",");
            let got = tape_fields(line.as_bytes()).unwrap();
            let want: Vec<Vec<u8>> = fields.iter().map(|f| f.as_bytes().to_vec()).collect();
            prop_assert_eq!(got, want);
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
