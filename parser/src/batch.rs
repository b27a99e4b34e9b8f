//! One table's batch in progress, and how it becomes a `RecordBatch`.
//!
//! Rows are not appended column by column as they arrive. The decoder copies each row's bytes
//! into one buffer and its field bounds onto a tape ([`Tape`]), checking only what can reject a
//! row (field count, timestamp, integers). Every few dozen KiB, `absorb` moves the tape into the
//! column builders one column at a time: one `match` per column instead of one per field, one
//! UTF-8 check per chunk instead of one per row, and the rows still in cache from being copied
//! (a whole batch's tape, megabytes, would not be: building from it cost more than it saved).
//!
//! The tape is reused from chunk to chunk. Builders hand their memory to the arrays, so they are
//! created with capacities taken from the previous batch of the same table (rows and bytes per
//! text column), and a steady stream allocates each buffer once per batch instead of growing it.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder,
    MapFieldNames, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray};
use arrow_schema::ArrowError;

use crate::dict::{self, DictBuilder};
use crate::error::RejectReason;
use crate::fields::{
    custom_data,
    endpoint::parse_endpoint,
    event_symbol::event_name,
    multi_value,
    session_ref::session_ref,
    smtp_reply::{find_smtp_reply, leading_smtp_reply},
};
use crate::kind::Table;
use crate::mapping::FieldMap;
use crate::schema::{self, ColKind, ColumnDef};
use crate::tokenize::Fields;

/// Per-file values that are the same on every row of a batch.
#[derive(Debug, Clone)]
pub(crate) struct FileConstants {
    pub(crate) source_file: Arc<str>,
    /// The server that wrote the file.
    pub(crate) server: Arc<str>,
    pub(crate) direction: Option<&'static str>,
    pub(crate) protocol: Option<&'static str>,
    pub(crate) role: Option<&'static str>,
}

impl std::fmt::Debug for RejectBuilders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectBuilders")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

/// A map builder sized for `rows` rows holding `size` = [key bytes, value bytes, entries].
pub(crate) fn map_builder(
    rows: usize,
    size: [usize; 3],
) -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    };
    let keys = StringBuilder::with_capacity(size[2], size[0]);
    let values = StringBuilder::with_capacity(size[2], size[1]);
    MapBuilder::with_capacity(Some(names), keys, values, rows)
}

fn map_size(m: &arrow_array::MapArray) -> [usize; 3] {
    let (keys, values) = (m.keys().as_string::<i32>(), m.values().as_string::<i32>());
    [
        keys.value_data().len(),
        values.value_data().len(),
        keys.len(),
    ]
}

/// Sizes measured on a finished batch, used to size the next one: rows, and per column up to
/// three sizes (text bytes; for lists, item count; for maps, key bytes, value bytes, entries).
#[derive(Debug, Clone, Default)]
pub(crate) struct CapacityHints {
    pub(crate) rows: usize,
    sizes: Vec<[usize; 3]>,
    extra: [usize; 3],
}

/// Tape bytes after which the decoder has the builders absorb the tape: small enough to stay in
/// a core's L2 cache while every column's loop passes over it.
pub(crate) const CHUNK_BYTES: usize = 64 << 10;
/// Rows after which the tape is absorbed whatever its size (short SMTP lines).
pub(crate) const CHUNK_ROWS: usize = 512;

/// The rows of a batch in progress, row-major: every row's field bytes in `data`, and per row
/// exactly `width` field bounds (absolute offsets into `data`), plus the values already checked
/// when the row was taken. Kept by the decoder and reused for every batch.
#[derive(Debug, Default)]
pub(crate) struct Tape {
    pub(crate) data: Vec<u8>,
    pub(crate) bounds: Vec<(u32, u32)>,
    pub(crate) timestamps: Vec<i64>,
    pub(crate) offsets: Vec<i64>,
    /// Per row, the integer columns' values in [`FieldMap::ints`] order.
    pub(crate) ints: Vec<Option<i64>>,
}

/// Lengths of the tape before a row was put on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    data: usize,
    pub(crate) bounds: usize,
    ints: usize,
}

impl Tape {
    /// Where the next row starts, to look at it or take it back.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            data: self.data.len(),
            bounds: self.bounds.len(),
            ints: self.ints.len(),
        }
    }

    /// The fields of the row put on the tape since `mark`.
    pub(crate) fn row(&self, mark: Mark) -> Fields<'_> {
        Fields::over(&self.data, &self.bounds[mark.bounds..])
    }

    /// Takes back the row put on the tape since `mark` (it was rejected). Timestamps and offsets
    /// are pushed only once a row is accepted.
    pub(crate) fn rollback(&mut self, mark: Mark) {
        self.data.truncate(mark.data);
        self.bounds.truncate(mark.bounds);
        self.ints.truncate(mark.ints);
    }

    fn clear(&mut self) {
        self.data.clear();
        self.bounds.clear();
        self.timestamps.clear();
        self.offsets.clear();
        self.ints.clear();
        // One very long line must not pin its buffer for the rest of the file.
        if self.data.capacity() > 4 * CHUNK_BYTES {
            self.data.shrink_to(CHUNK_BYTES * 2);
        }
    }

    /// Makes `data` valid UTF-8: every row holding invalid bytes gets its fields rewritten with
    /// U+FFFD at the end of `data`, and its old bytes blanked. Returns the rows rewritten.
    fn repair_utf8(&mut self, width: usize) -> u64 {
        let mut lossy = 0;
        for r in 0..self.bounds.len() / width {
            let row = r * width..(r + 1) * width;
            let (first, last) = (self.bounds[row.start].0, self.bounds[row.end - 1].1);
            let span = first as usize..last as usize;
            if simdutf8::basic::from_utf8(&self.data[span.clone()]).is_ok() {
                continue;
            }
            lossy += 1;
            for i in row {
                let (s, e) = self.bounds[i];
                let fixed =
                    String::from_utf8_lossy(&self.data[s as usize..e as usize]).into_owned();
                let start = self.data.len() as u32;
                self.data.extend_from_slice(fixed.as_bytes());
                self.bounds[i] = (start, self.data.len() as u32);
            }
            self.data[span].fill(b' ');
        }
        lossy
    }
}

enum ColBuilder {
    Text(StringBuilder),
    /// Dictionary text; for event symbols (`Event`), stored by name (`+` → `connect`), an
    /// unknown symbol kept as written.
    Dict(DictBuilder, bool),
    I64(Int64Builder, Option<usize>),
    I32(Int32Builder, Option<usize>),
    /// A `;` list; `true`: a list of SMTP statuses, split only where a new status starts.
    List(ListBuilder<StringBuilder>, bool),
    Map(CustomDataBuilder),
    Endpoint(StringBuilder, Int32Builder),
    /// Reply code and enhanced code.
    Reply(Int16Builder, DictBuilder),
    /// The SMTP session id a tracking row's `source-context` names.
    SessionRef(StringBuilder),
    /// A per-file value, materialised at finish.
    Const(Option<&'static str>),
}

/// The builders of one table's batch in progress. Rows reach them from the tape in chunks
/// ([`TableBuilders::absorb`]), one column at a time.
pub(crate) struct TableBuilders {
    pub(crate) table: Table,
    defs: &'static [ColumnDef],
    constants: FileConstants,
    /// The header layout every row of the batch follows (a new one starts a new batch).
    pub(crate) map: Arc<FieldMap>,
    /// Rows of the batch, on the tape or already absorbed.
    pub(crate) rows: usize,
    timestamp: TimestampMillisecondBuilder,
    offset: Int64Builder,
    cols: Vec<ColBuilder>,
    extra: MapBuilder<StringBuilder, StringBuilder>,
    lossy: u64,
    batch_size: usize,
    /// False while the builders are placeholders that the first chunk of rows will size.
    sized: bool,
    /// The first error of a builder append (Arrow's map builder refuses keys and values of
    /// unequal length, which the paired appends rule out): kept, and returned by `finish`,
    /// rather than lost.
    fault: Option<ArrowError>,
}

// Arrow's dictionary builders do not implement Debug; rows and table are what matter here.
impl std::fmt::Debug for TableBuilders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableBuilders")
            .field("table", &self.table)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

/// `part`, a slice of `whole`'s bytes, as text.
#[inline]
fn sub<'a>(whole: &'a str, part: &[u8]) -> &'a str {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    whole.get(start..start + part.len()).unwrap_or_default()
}

impl TableBuilders {
    pub(crate) fn new(
        table: Table,
        constants: FileConstants,
        map: Arc<FieldMap>,
        hints: &CapacityHints,
        batch_size: usize,
    ) -> Self {
        let defs = schema::columns(table);
        // With no batch to go by, the builders wait for the first chunk of rows to size them
        // ([`TableBuilders::size_from`]).
        let rows = hints.rows.min(batch_size);
        let scale_size = |size: [usize; 3]| match hints.rows {
            0 => [0; 3],
            // Measured per row, times rows, plus 1/8 so a slightly larger batch fits.
            n => size.map(|m| m / n * rows + m / 8),
        };
        let sized = |i: usize| scale_size(hints.sizes.get(i).copied().unwrap_or_default());
        let int_slot = |c: usize| map.ints.iter().position(|&(col, _, _)| col == c);
        let cols = defs
            .iter()
            .enumerate()
            .map(|(i, d)| match d.kind {
                ColKind::Text => ColBuilder::Text(StringBuilder::with_capacity(rows, sized(i)[0])),
                ColKind::SessionRef => {
                    ColBuilder::SessionRef(StringBuilder::with_capacity(rows, sized(i)[0]))
                }
                ColKind::Dict => ColBuilder::Dict(DictBuilder::with_capacity(rows), false),
                ColKind::Event => ColBuilder::Dict(DictBuilder::for_symbols(rows), true),
                ColKind::Int64 => ColBuilder::I64(Int64Builder::with_capacity(rows), int_slot(i)),
                ColKind::Int32 => ColBuilder::I32(Int32Builder::with_capacity(rows), int_slot(i)),
                ColKind::List | ColKind::StatusList => ColBuilder::List(
                    ListBuilder::with_capacity(
                        StringBuilder::with_capacity(sized(i)[1], sized(i)[0]),
                        rows,
                    ),
                    d.kind == ColKind::StatusList,
                ),
                ColKind::CustomData => ColBuilder::Map(CustomDataBuilder::new(rows, sized(i))),
                ColKind::Endpoint => ColBuilder::Endpoint(
                    StringBuilder::with_capacity(rows, sized(i)[0]),
                    Int32Builder::with_capacity(rows),
                ),
                ColKind::Reply => ColBuilder::Reply(
                    Int16Builder::with_capacity(rows),
                    DictBuilder::with_capacity(rows),
                ),
                ColKind::FileDirection => ColBuilder::Const(constants.direction),
                ColKind::FileProtocol => ColBuilder::Const(constants.protocol),
                ColKind::FileRole => ColBuilder::Const(constants.role),
            })
            .collect();
        TableBuilders {
            table,
            defs,
            constants,
            map,
            rows: 0,
            timestamp: TimestampMillisecondBuilder::with_capacity(rows),
            offset: Int64Builder::with_capacity(rows),
            cols,
            extra: map_builder(rows, scale_size(hints.extra)),
            lossy: 0,
            batch_size,
            sized: hints.rows != 0,
            fault: None,
        }
    }

    /// Replaces the placeholder builders of a table's first batch with ones sized from the first
    /// chunk of rows, scaled to `batch_rows` (or the chunk, if larger): growing them by doubling
    /// instead copied each buffer several times over.
    fn size_from(&mut self, tape: &Tape, batch_rows: usize) {
        let width = self.map.width.max(1);
        let chunk_rows = tape.timestamps.len().max(1);
        let batch_rows = batch_rows.max(chunk_rows);
        let scale = |n: usize| n * batch_rows / chunk_rows;
        // Bytes of a source field over the chunk, and its `;`-separated items when `items`.
        let measure = |src: Option<usize>, items: bool| {
            let [mut bytes, mut count] = [0, 0];
            for row in tape.bounds.chunks_exact(width) {
                if let Some(&(s, e)) = src.and_then(|i| row.get(i)) {
                    let f = tape.data.get(s as usize..e as usize).unwrap_or_default();
                    bytes += f.len();
                    if items {
                        count += usize::from(!f.is_empty()) + memchr::memchr_iter(b';', f).count();
                    }
                }
            }
            (scale(bytes), scale(count))
        };
        let sizes = self
            .defs
            .iter()
            .zip(&self.map.sources)
            .map(|(d, srcs)| {
                let src = srcs.first().copied();
                match d.kind {
                    ColKind::Text | ColKind::Endpoint => [measure(src, false).0, 0, 0],
                    ColKind::List | ColKind::StatusList => {
                        let (bytes, items) = measure(src, true);
                        [bytes, items, 0]
                    }
                    // Keys and values together are the field less its separators.
                    ColKind::CustomData => {
                        let (bytes, entries) = measure(src, true);
                        [bytes, bytes, entries]
                    }
                    _ => [0; 3],
                }
            })
            .collect();
        let extra = self.map.extra.iter().fold([0; 3], |[k, v, n], (i, name)| {
            let (bytes, items) = measure(Some(*i), true);
            [k + items * name.len(), v + bytes, n + items]
        });
        let hints = CapacityHints {
            rows: batch_rows,
            sizes,
            extra,
        };
        let (rows, lossy) = (self.rows, self.lossy);
        *self = TableBuilders::new(
            self.table,
            self.constants.clone(),
            Arc::clone(&self.map),
            &hints,
            self.batch_size,
        );
        self.rows = rows;
        self.lossy = lossy;
    }

    pub(crate) fn constants(&self) -> &FileConstants {
        &self.constants
    }

    /// Moves the rows on the tape into the column builders, one column at a time, and empties
    /// the tape. Called every few dozen KiB, so the rows are still in cache when each column's
    /// loop reads them.
    pub(crate) fn absorb(&mut self, tape: &mut Tape) {
        if tape.timestamps.is_empty() {
            tape.clear();
            return;
        }
        if !self.sized {
            self.size_from(tape, self.batch_size);
        }
        let map = &*self.map;
        let width = map.width.max(1);
        let text = match simdutf8::basic::from_utf8(&tape.data) {
            Ok(text) => text,
            Err(_) => {
                self.lossy += tape.repair_utf8(width);
                // Valid after repair (every invalid row was rewritten); empty text otherwise
                // reads as nulls rather than panicking.
                simdutf8::basic::from_utf8(&tape.data).unwrap_or_default()
            }
        };
        let tape_rows = || tape.bounds.chunks_exact(width);
        let field = |row: &[(u32, u32)], i: usize| -> &str {
            let (s, e) = row[i];
            text.get(s as usize..e as usize).unwrap_or_default()
        };
        let rows = tape.timestamps.len();

        self.timestamp.append_slice(&tape.timestamps);
        self.offset.append_slice(&tape.offsets);
        let ints = map.ints.len();
        let int = |r: usize, k: Option<usize>| k.and_then(|k| tape.ints[r * ints + k]);
        // Several columns are empty in every row of most logs (tenant-id on premises, reference,
        // related-recipient-address): a chunk of them is appended as nulls at once.
        let empty = |i: usize| tape_rows().all(|row| row[i].0 == row[i].1);
        for (col, srcs) in self.cols.iter_mut().zip(&map.sources) {
            let src = srcs.first().copied();
            match col {
                ColBuilder::Text(b) => match src.filter(|&i| !empty(i)) {
                    Some(i) => {
                        for row in tape_rows() {
                            match field(row, i) {
                                "" => b.append_null(),
                                t => b.append_value(t),
                            }
                        }
                    }
                    None => b.append_nulls(rows),
                },
                ColBuilder::SessionRef(b) => match src.filter(|&i| !empty(i)) {
                    Some(i) => {
                        for row in tape_rows() {
                            b.append_option(session_ref(field(row, i)));
                        }
                    }
                    None => b.append_nulls(rows),
                },
                ColBuilder::Dict(b, event) => match src {
                    Some(i) => {
                        for row in tape_rows() {
                            match field(row, i) {
                                "" => b.append_null(),
                                t if *event => match (t.as_bytes(), event_name(t.as_bytes())) {
                                    (&[symbol], Some(name)) => b.append_symbol(symbol, name),
                                    _ => b.append(t),
                                },
                                t => b.append(t),
                            }
                        }
                    }
                    None => (0..rows).for_each(|_| b.append_null()),
                },
                ColBuilder::I64(b, k) => (0..rows).for_each(|r| b.append_option(int(r, *k))),
                // Checked to fit when the row was taken.
                ColBuilder::I32(b, k) => {
                    (0..rows).for_each(|r| b.append_option(int(r, *k).map(|v| v as i32)))
                }
                ColBuilder::List(b, _) if src.is_none_or(empty) => b.append_nulls(rows),
                ColBuilder::List(b, false) => {
                    for row in tape_rows() {
                        match src.map(|i| field(row, i)).unwrap_or_default() {
                            "" => b.append(false),
                            f => {
                                for item in multi_value::items(f.as_bytes()) {
                                    b.values().append_value(sub(f, item));
                                }
                                b.append(true);
                            }
                        }
                    }
                }
                ColBuilder::List(b, true) => {
                    for row in tape_rows() {
                        match src.map(|i| field(row, i)).unwrap_or_default() {
                            "" => b.append(false),
                            f => {
                                for item in multi_value::statuses(f.as_bytes()) {
                                    b.values().append_value(sub(f, item));
                                }
                                b.append(true);
                            }
                        }
                    }
                }
                ColBuilder::Map(b) => {
                    for row in tape_rows() {
                        let appended = match src.map(|i| field(row, i)).unwrap_or_default() {
                            "" => b.map.append(false),
                            f => b.append(f),
                        };
                        if let Err(e) = appended {
                            self.fault.get_or_insert(e);
                        }
                    }
                }
                ColBuilder::Endpoint(ip, port) => {
                    for row in tape_rows() {
                        match src.map(|i| field(row, i)).unwrap_or_default() {
                            "" => {
                                ip.append_null();
                                port.append_null();
                            }
                            f => {
                                let ep = parse_endpoint(f.as_bytes());
                                ip.append_value(sub(f, ep.ip));
                                port.append_option(ep.port.map(i32::from));
                            }
                        }
                    }
                }
                ColBuilder::Reply(code, enhanced) => {
                    // Only tracking `source-context` puts a reply after a ` = `; the search for
                    // it is not worth running on every protocol log line.
                    let find = if self.table == Table::MessageTracking {
                        find_smtp_reply
                    } else {
                        leading_smtp_reply
                    };
                    for row in tape_rows() {
                        let reply = srcs.iter().find_map(|&i| {
                            let f = field(row, i);
                            find(f.as_bytes()).map(|r| (f, r))
                        });
                        match reply {
                            Some((f, r)) => {
                                code.append_value(r.code as i16);
                                match r.enhanced {
                                    Some(e) => enhanced.append(sub(f, e)),
                                    None => enhanced.append_null(),
                                }
                            }
                            None => {
                                code.append_null();
                                enhanced.append_null();
                            }
                        }
                    }
                }
                ColBuilder::Const(_) => {}
            }
        }
        if map.extra.is_empty() {
            // A header with no unknown columns (nearly every log): all nulls at once.
            if let Err(e) = self.extra.append_nulls(rows) {
                self.fault.get_or_insert(e);
            }
        } else {
            for row in tape_rows() {
                let mut any = false;
                for (i, name) in &map.extra {
                    match field(row, *i) {
                        "" => {}
                        value => {
                            self.extra.keys().append_value(name);
                            self.extra.values().append_value(value);
                            any = true;
                        }
                    }
                }
                if let Err(e) = self.extra.append(any) {
                    self.fault.get_or_insert(e);
                }
            }
        }
        tape.clear();
    }

    /// Turns the rows into a batch, measures them for the next batch's capacities, and returns
    /// how many rows needed lossy UTF-8 replacement.
    pub(crate) fn finish(
        mut self,
        tape: &mut Tape,
        hints: &mut CapacityHints,
    ) -> Result<(RecordBatch, u64), ArrowError> {
        if !self.sized {
            // The whole batch is on the tape: size for it alone, not for a full batch.
            self.size_from(tape, 0);
        }
        self.absorb(tape);
        if let Some(e) = self.fault.take() {
            return Err(e);
        }
        let rows = self.rows;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.defs.len() + 8);
        arrays.push(Arc::new(self.timestamp.finish().with_timezone("UTC")));
        arrays.push(const_dict(Some(&self.constants.server), rows)?);
        arrays.push(const_dict(Some(&self.constants.source_file), rows)?);
        arrays.push(Arc::new(self.offset.finish()));
        hints.rows = rows;
        hints.sizes.clear();
        for col in &mut self.cols {
            match col {
                ColBuilder::Text(b) | ColBuilder::SessionRef(b) => {
                    let a = b.finish();
                    hints.sizes.push([a.value_data().len(), 0, 0]);
                    arrays.push(Arc::new(a));
                }
                ColBuilder::Dict(b, _) => {
                    hints.sizes.push([0; 3]);
                    arrays.push(Arc::new(b.finish()?));
                }
                ColBuilder::I64(b, _) => {
                    hints.sizes.push([0; 3]);
                    arrays.push(Arc::new(b.finish()));
                }
                ColBuilder::I32(b, _) => {
                    hints.sizes.push([0; 3]);
                    arrays.push(Arc::new(b.finish()));
                }
                ColBuilder::List(b, _) => {
                    let a = b.finish();
                    let items = a.values().as_string::<i32>();
                    hints.sizes.push([items.value_data().len(), items.len(), 0]);
                    arrays.push(Arc::new(a));
                }
                ColBuilder::Map(b) => {
                    let a = b.map.finish();
                    let (keys, values) = (a.keys().as_string::<i32>(), a.values().as_list::<i32>());
                    let items = values.values().as_string::<i32>();
                    hints.sizes.push([
                        keys.value_data().len(),
                        items.value_data().len(),
                        keys.len(),
                    ]);
                    arrays.push(Arc::new(a));
                }
                ColBuilder::Endpoint(ip, port) => {
                    let a = ip.finish();
                    hints.sizes.push([a.value_data().len(), 0, 0]);
                    arrays.push(Arc::new(a));
                    arrays.push(Arc::new(port.finish()));
                }
                ColBuilder::Reply(code, enhanced) => {
                    hints.sizes.push([0; 3]);
                    arrays.push(Arc::new(code.finish()));
                    arrays.push(Arc::new(enhanced.finish()?));
                }
                ColBuilder::Const(value) => {
                    hints.sizes.push([0; 3]);
                    arrays.push(const_dict(*value, rows)?);
                }
            }
        }
        let extra = self.extra.finish();
        hints.extra = map_size(&extra);
        arrays.push(Arc::new(extra));
        let batch = RecordBatch::try_new(schema::schema(self.table), arrays)?;
        Ok((batch, self.lossy))
    }
}

// A key's shape is a bit of one word.
const _: () = assert!(dict::RECENT <= 64);

/// Builds `custom_data`: a map from each key, as Exchange writes it (`S:AMA`), to the list of its
/// values in the order they appear. Exchange repeats some keys in one field
/// (`S:AMA=SUM|...;S:AMA=EV|...`), and Parquet readers (DuckDB) refuse a map whose keys repeat, so
/// a key is one entry and its repeats are more items of its list.
pub(crate) struct CustomDataBuilder {
    pub(crate) map: MapBuilder<StringBuilder, ListBuilder<StringBuilder>>,
    /// The row's entries as byte ranges of the field (key start, key end, value start, value
    /// end; `NO_VALUE` for an entry without `=`): reused from row to row.
    row: Vec<[u32; 4]>,
}

const NO_VALUE: u32 = u32::MAX;

impl CustomDataBuilder {
    /// A builder sized for `rows` rows holding `size` = [key bytes, value bytes, entries].
    fn new(rows: usize, size: [usize; 3]) -> Self {
        let names = MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        };
        let keys = StringBuilder::with_capacity(size[2], size[0]);
        let values =
            ListBuilder::with_capacity(StringBuilder::with_capacity(size[2], size[1]), size[2]);
        CustomDataBuilder {
            map: MapBuilder::with_capacity(Some(names), keys, values, rows),
            row: Vec::new(),
        }
    }

    /// Appends one row's non-empty field.
    fn append(&mut self, field: &str) -> Result<(), ArrowError> {
        let bytes = field.as_bytes();
        let at =
            |part: &[u8]| (part.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize) as u32;
        self.row.clear();
        // Which key shapes (the dictionaries' cache slot, as a bit) the row has had: a key whose
        // bit is new cannot repeat an earlier one, so keys are compared only on a likely repeat.
        let mut shapes = 0u64;
        let mut repeats = false;
        for (key, value) in custom_data::entries(bytes) {
            let shape = 1u64 << dict::shape(key);
            if shapes & shape != 0 && !repeats {
                repeats = self.row.iter().any(|e| range(bytes, e[0], e[1]) == key);
            }
            shapes |= shape;
            let (vs, ve) = value.map_or((NO_VALUE, NO_VALUE), |v| (at(v), at(v) + v.len() as u32));
            self.row.push([at(key), at(key) + key.len() as u32, vs, ve]);
        }
        for (i, e) in self.row.iter().enumerate() {
            let key = range(bytes, e[0], e[1]);
            if repeats
                && self.row[..i]
                    .iter()
                    .any(|p| range(bytes, p[0], p[1]) == key)
            {
                continue;
            }
            self.map.keys().append_value(sub(field, key));
            let items = self.map.values();
            let same = |p: &&[u32; 4]| !repeats || range(bytes, p[0], p[1]) == key;
            for p in self.row[i..].iter().filter(same) {
                match p[2] {
                    NO_VALUE => items.values().append_null(),
                    s => items
                        .values()
                        .append_value(sub(field, range(bytes, s, p[3]))),
                }
                if !repeats {
                    break;
                }
            }
            items.append(true);
        }
        self.map.append(true)
    }
}

/// Bytes `start..end` of `field` (empty if out of bounds, which the caller's own offsets never are).
fn range(field: &[u8], start: u32, end: u32) -> &[u8] {
    field.get(start as usize..end as usize).unwrap_or_default()
}

/// A dictionary column holding one value (or null) on every row.
pub(crate) fn const_dict(value: Option<&str>, rows: usize) -> Result<ArrayRef, ArrowError> {
    let keys = match value {
        Some(_) => Int32Array::from(vec![0; rows]),
        None => Int32Array::new_null(rows),
    };
    let values = StringArray::from_iter_values(value);
    Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
        keys,
        Arc::new(values),
    )?))
}

/// Builders for the rejects table.
pub(crate) struct RejectBuilders {
    timestamp: TimestampMillisecondBuilder,
    offset: Int64Builder,
    line: Int64Builder,
    table: DictBuilder,
    reason: DictBuilder,
    detail: StringBuilder,
    raw: BinaryBuilder,
    pub(crate) rows: usize,
}

impl RejectBuilders {
    pub(crate) fn new() -> Self {
        RejectBuilders {
            timestamp: TimestampMillisecondBuilder::new(),
            offset: Int64Builder::new(),
            line: Int64Builder::new(),
            table: DictBuilder::with_capacity(0),
            reason: DictBuilder::with_capacity(0),
            detail: StringBuilder::new(),
            raw: BinaryBuilder::new(),
            rows: 0,
        }
    }

    pub(crate) fn append(
        &mut self,
        timestamp_ms: Option<i64>,
        offset: u64,
        line: u64,
        table: Option<Table>,
        reason: &RejectReason,
        raw: &[u8],
    ) {
        self.timestamp.append_option(timestamp_ms);
        self.offset.append_value(offset as i64);
        self.line.append_value(line as i64);
        match table {
            Some(t) => self.table.append(t.name()),
            None => self.table.append_null(),
        }
        self.reason.append(reason.code());
        self.detail.append_value(reason.to_string());
        self.raw.append_value(raw);
        self.rows += 1;
    }

    pub(crate) fn finish(
        &mut self,
        source_file: &str,
        server: &str,
    ) -> Result<RecordBatch, ArrowError> {
        let rows = self.rows;
        self.rows = 0;
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish().with_timezone("UTC")),
            const_dict(Some(server), rows)?,
            const_dict(Some(source_file), rows)?,
            Arc::new(self.offset.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.table.finish()?),
            Arc::new(self.reason.finish()?),
            Arc::new(self.detail.finish()),
            Arc::new(self.raw.finish()),
        ];
        RecordBatch::try_new(schema::rejects_schema(), arrays)
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::{Array, MapArray};

    use super::*;

    fn custom_data(rows: &[&str]) -> MapArray {
        let mut b = CustomDataBuilder::new(0, [0; 3]);
        for row in rows {
            b.append(row).unwrap();
        }
        b.map.finish()
    }

    /// A row as `key=value,value` strings (`<null>` for an entry without `=`).
    fn entries(map: &MapArray, row: usize) -> Vec<String> {
        let entry = map.value(row);
        let (k, v) = (
            entry.column(0).as_string::<i32>(),
            entry.column(1).as_list::<i32>(),
        );
        (0..k.len())
            .map(|i| {
                let items = v.value(i);
                let items = items.as_string::<i32>();
                let items: Vec<_> = (0..items.len())
                    .map(|j| {
                        if items.is_valid(j) {
                            items.value(j)
                        } else {
                            "<null>"
                        }
                    })
                    .collect();
                format!("{}={}", k.value(i), items.join(","))
            })
            .collect()
    }

    #[test]
    fn repeated_custom_data_keys_become_one_entry_with_a_list() {
        let map = custom_data(&[
            "S:AMA=SUM|v=1;S:AMA=EV|v=2;S:E2ELatency=1.9;S:AMA=x",
            "S:AMA=again;S:flag",
            "S:A=1;S:B=2;S:C=3",
        ]);
        assert_eq!(
            entries(&map, 0),
            ["S:AMA=SUM|v=1,EV|v=2,x", "S:E2ELatency=1.9"]
        );
        // Each row starts afresh; a key without `=` has a null value.
        assert_eq!(entries(&map, 1), ["S:AMA=again", "S:flag=<null>"]);
        // Keys of one shape that differ are not merged.
        assert_eq!(entries(&map, 2), ["S:A=1", "S:B=2", "S:C=3"]);
    }

    #[test]
    fn constant_columns_and_rejects_carry_file_and_server() {
        let c = const_dict(Some("EX01"), 3).unwrap();
        let d = c.as_dictionary::<Int32Type>();
        assert_eq!((d.len(), d.values().len(), d.null_count()), (3, 1, 0));
        assert_eq!(const_dict(None, 2).unwrap().null_count(), 2);

        let mut r = RejectBuilders::new();
        let reason = RejectReason::LineTooLong { limit: 10 };
        r.append(
            Some(5),
            40,
            3,
            Some(Table::SmtpProtocol),
            &reason,
            b"\xff raw",
        );
        r.append(None, 90, 4, None, &reason, b"");
        let batch = r.finish("RECV1.LOG", "EX01").unwrap();
        assert_eq!(
            (batch.num_rows(), r.rows),
            (2, 0),
            "finish starts a new batch"
        );
        let raw = batch.column_by_name("raw").unwrap().as_binary::<i32>();
        assert_eq!(raw.value(0), b"\xff raw");
        let offsets = batch.column_by_name("source_offset").unwrap();
        assert_eq!(
            offsets
                .as_primitive::<arrow_array::types::Int64Type>()
                .value(1),
            90
        );
        assert!(batch.column_by_name("table").unwrap().is_null(1));
    }
}
