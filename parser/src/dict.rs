//! Dictionary-encoded text columns (`Dictionary(Int32, Utf8)`) for low-cardinality values.
//!
//! Consecutive rows of a transport log mostly repeat these values (same server, same connector,
//! same directionality), so a value equal to the previous row's reuses its key after one
//! comparison, before any hashing. Distinct values are stored once, in one buffer; the hash table
//! holds only keys and is kept (cleared, not freed) from one batch to the next.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{DictionaryArray, Int32Array, StringArray};
use arrow_buffer::{Buffer, NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::ArrowError;
use hashbrown::{DefaultHashBuilder, HashTable};

#[derive(Debug)]
pub(crate) struct DictBuilder {
    keys: Vec<i32>,
    nulls: Option<NullBufferBuilder>,
    values: Vec<u8>,
    offsets: Vec<i32>,
    table: HashTable<i32>,
    hasher: DefaultHashBuilder,
    last: Option<i32>,
    /// Keys by a cheap shape of their value (length, first and last byte): a value that
    /// alternates with a few others (event ids, sources) is found with one comparison instead
    /// of hashing it. -1 when empty.
    recent: [i32; RECENT],
    /// For columns of one-byte symbols stored by name (protocol events): the key of each symbol
    /// byte seen this batch, or -1. Empty unless asked for.
    symbols: Vec<i32>,
}

/// Slots of the shape cache.
pub(crate) const RECENT: usize = 64;

/// A cheap shape of a value (its length, first and last byte, mixed), under [`RECENT`]: the
/// slot of the dictionaries' key cache, and custom-data's repeated-key filter.
#[inline]
pub(crate) fn shape(v: &[u8]) -> usize {
    let (first, last) = (v.first().copied(), v.last().copied());
    (v.len() * 7 + usize::from(first.unwrap_or(0)) * 3 + usize::from(last.unwrap_or(0))) % RECENT
}

fn value<'a>(values: &'a [u8], offsets: &[i32], key: i32) -> &'a [u8] {
    let k = key as usize;
    &values[offsets[k] as usize..offsets[k + 1] as usize]
}

impl DictBuilder {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        DictBuilder {
            keys: Vec::with_capacity(rows),
            nulls: None,
            values: Vec::new(),
            offsets: vec![0],
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            last: None,
            recent: [-1; RECENT],
            symbols: Vec::new(),
        }
    }

    /// A builder for a column of one-byte symbols appended by name ([`DictBuilder::append_symbol`]).
    pub(crate) fn for_symbols(rows: usize) -> Self {
        DictBuilder {
            symbols: vec![-1; 256],
            ..DictBuilder::with_capacity(rows)
        }
    }

    /// Appends `name`, the value a one-byte `symbol` stands for. The five protocol events
    /// alternate row by row, so the last-value check rarely holds; a symbol's key is looked up
    /// by its byte instead of hashing its name.
    #[inline]
    pub(crate) fn append_symbol(&mut self, symbol: u8, name: &str) {
        match self.symbols.get(usize::from(symbol)) {
            Some(&key) if key >= 0 => self.push_key(key),
            Some(_) => {
                self.append(name);
                if let Some(key) = self.last {
                    self.symbols[usize::from(symbol)] = key;
                }
            }
            None => self.append(name),
        }
    }

    #[inline]
    pub(crate) fn append(&mut self, v: &str) {
        let v = v.as_bytes();
        if let Some(last) = self.last
            && value(&self.values, &self.offsets, last) == v
        {
            self.push_key(last);
            return;
        }
        let slot = shape(v);
        let cached = self.recent[slot];
        if cached >= 0 && value(&self.values, &self.offsets, cached) == v {
            self.last = Some(cached);
            self.push_key(cached);
            return;
        }
        let hash = self.hasher.hash_one(v);
        let (values, offsets) = (&self.values, &self.offsets);
        let key = match self.table.find(hash, |&k| value(values, offsets, k) == v) {
            Some(&k) => k,
            None => {
                let k = (self.offsets.len() - 1) as i32;
                self.values.extend_from_slice(v);
                // The decoder's per-batch byte budget keeps this far below i32::MAX.
                self.offsets.push(self.values.len() as i32);
                let (values, offsets, hasher) = (&self.values, &self.offsets, &self.hasher);
                self.table
                    .insert_unique(hash, k, |&k| hasher.hash_one(value(values, offsets, k)));
                k
            }
        };
        self.last = Some(key);
        self.recent[slot] = key;
        self.push_key(key);
    }

    #[inline]
    fn push_key(&mut self, key: i32) {
        self.keys.push(key);
        if let Some(n) = &mut self.nulls {
            n.append_non_null();
        }
    }

    /// A value, or null.
    pub(crate) fn append_option(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.append(v),
            None => self.append_null(),
        }
    }

    #[inline]
    pub(crate) fn append_null(&mut self) {
        let len = self.keys.len();
        self.nulls
            .get_or_insert_with(|| {
                let mut n = NullBufferBuilder::new(self.keys.capacity());
                n.append_n_non_nulls(len);
                n
            })
            .append_null();
        self.keys.push(0);
    }

    /// The column so far; the builder starts empty again, keeping its hash table's memory.
    pub(crate) fn finish(&mut self) -> Result<DictionaryArray<Int32Type>, ArrowError> {
        let rows = self.keys.len();
        let keys = std::mem::replace(&mut self.keys, Vec::with_capacity(rows));
        let nulls = self.nulls.take().and_then(|mut n| n.finish());
        let keys = Int32Array::new(ScalarBuffer::from(keys), nulls);
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let values = std::mem::take(&mut self.values);
        let values = StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Buffer::from_vec(values),
            None,
        )?;
        self.table.clear();
        self.last = None;
        self.recent = [-1; RECENT];
        self.symbols.fill(-1);
        DictionaryArray::try_new(keys, Arc::new(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;

    fn strings(d: &DictionaryArray<Int32Type>) -> Vec<Option<&str>> {
        d.downcast_dict::<StringArray>()
            .unwrap()
            .into_iter()
            .collect()
    }

    #[test]
    fn repeats_and_nulls() {
        let mut b = DictBuilder::with_capacity(4);
        for v in [Some("a"), Some("a"), None, Some("b"), Some("a"), None] {
            match v {
                Some(v) => b.append(v),
                None => b.append_null(),
            }
        }
        let d = b.finish().unwrap();
        assert_eq!(d.len(), 6);
        assert_eq!(d.values().len(), 2);
        assert_eq!(
            strings(&d),
            [Some("a"), Some("a"), None, Some("b"), Some("a"), None]
        );
        // Values of one shape (length, first and last byte) share a cache slot, and stay apart.
        let mut c = DictBuilder::with_capacity(4);
        assert_eq!(shape(b"Ab"), shape(b"\x01b"));
        for v in ["Ab", "\u{1}b", "Ab", "\u{1}b", "xy", "Ab"] {
            c.append(v);
        }
        let d = c.finish().unwrap();
        assert_eq!(d.keys().values().to_vec(), [0, 1, 0, 1, 2, 0]);
        assert_eq!(d.values().len(), 3);
        // Symbols: looked up by byte, reset with the dictionary.
        let mut e = DictBuilder::for_symbols(4);
        for (sym, name) in [(b'<', "receive"), (b'>', "send"), (b'<', "receive")] {
            e.append_symbol(sym, name);
        }
        e.append("other");
        let d = e.finish().unwrap();
        assert_eq!(
            strings(&d),
            [
                Some("receive"),
                Some("send"),
                Some("receive"),
                Some("other")
            ]
        );
        e.append_symbol(b'>', "send");
        let d = e.finish().unwrap();
        assert_eq!(d.values().as_string::<i32>().value(0), "send");
        assert_eq!(d.keys().value(0), 0);
        // Reused after finish, with a fresh dictionary.
        b.append("z");
        let d = b.finish().unwrap();
        assert_eq!(d.values().as_string::<i32>().value(0), "z");
        assert_eq!(d.null_count(), 0);
    }
}
