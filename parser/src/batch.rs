//! Column builders for one table: rows are appended field by field straight into Arrow builders,
//! and `finish` hands their memory to a `RecordBatch`.
//!
//! Builders are created with capacities taken from the previous batch of the same table (rows and
//! bytes per text column), so a steady stream allocates each buffer once per batch instead of
//! growing it by doubling.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder,
    MapFieldNames, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray};
use arrow_schema::ArrowError;

use crate::dict::DictBuilder;
use crate::error::RejectReason;
use crate::fields::{
    custom_data, endpoint::parse_endpoint, event_symbol::event_name, multi_value,
    smtp_reply::find_smtp_reply,
};
use crate::kind::Table;
use crate::mapping::FieldMap;
use crate::schema::{self, ColKind, ColumnDef};
use crate::tokenize::Fields;

/// Per-file values that are the same on every row of a batch.
#[derive(Debug, Clone)]
pub(crate) struct FileConstants {
    pub(crate) source_file: Arc<str>,
    /// The server when it does not vary by row.
    pub(crate) server: Arc<str>,
    /// Whether message tracking rows name their own server (`server-hostname`).
    pub(crate) server_from_rows: bool,
    pub(crate) direction: Option<&'static str>,
    pub(crate) protocol: Option<&'static str>,
    pub(crate) role: Option<&'static str>,
}

enum ColBuilder {
    Text(StringBuilder),
    Dict(DictBuilder),
    /// Event symbols, stored by name (`+` → `connect`); an unknown symbol is kept as written.
    Event(DictBuilder),
    I64(Int64Builder),
    I32(Int32Builder),
    List(ListBuilder<StringBuilder>),
    Map(MapBuilder<StringBuilder, StringBuilder>),
    Endpoint(StringBuilder, Int32Builder),
    Reply(Int16Builder, DictBuilder),
    /// A per-file value, materialised at finish.
    Const(Option<&'static str>),
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

impl std::fmt::Debug for RejectBuilders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RejectBuilders")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

/// A map builder sized for `rows` rows holding `size` = [key bytes, value bytes, entries].
fn map_builder(rows: usize, size: [usize; 3]) -> MapBuilder<StringBuilder, StringBuilder> {
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

/// Text of a slice of the row. The row was validated once as a whole; only a row holding invalid
/// UTF-8 pays per slice, and there invalid bytes become U+FFFD and flag the row as lossy.
#[inline]
fn text<'b>(fields: &Fields<'b>, bytes: &'b [u8], lossy: &mut bool) -> Cow<'b, str> {
    if let Some(s) = fields.text_of(bytes) {
        return Cow::Borrowed(s);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            *lossy = true;
            String::from_utf8_lossy(bytes)
        }
    }
}

/// Sizes measured on a finished batch, used to size the next one: rows, and per column up to
/// three sizes (text bytes; for lists, item count; for maps, key bytes, value bytes, entries).
#[derive(Debug, Clone, Default)]
pub(crate) struct CapacityHints {
    rows: usize,
    sizes: Vec<[usize; 3]>,
    extra: [usize; 3],
}

/// The builders of one table's batch in progress.
pub(crate) struct TableBuilders {
    pub(crate) table: Table,
    defs: &'static [ColumnDef],
    constants: FileConstants,
    timestamp: TimestampMillisecondBuilder,
    server: DictBuilder,
    offset: Int64Builder,
    cols: Vec<ColBuilder>,
    extra: MapBuilder<StringBuilder, StringBuilder>,
    pub(crate) rows: usize,
}

impl TableBuilders {
    pub(crate) fn new(
        table: Table,
        constants: FileConstants,
        hints: &CapacityHints,
        batch_size: usize,
    ) -> Self {
        let defs = schema::columns(table);
        // The first batch of a table has nothing to go by: guess modestly and let it grow.
        let rows = if hints.rows == 0 {
            batch_size.min(1024)
        } else {
            hints.rows.min(batch_size)
        };
        let scale_size = |size: [usize; 3]| {
            if hints.rows == 0 {
                [rows * 32, rows * 32, rows * 2]
            } else {
                // Measured per row, times rows, plus 1/8 so a slightly larger batch fits.
                size.map(|m| m / hints.rows * rows + m / 8)
            }
        };
        let scale = |i: usize| scale_size(hints.sizes.get(i).copied().unwrap_or_default())[0];
        let sized = |i: usize| scale_size(hints.sizes.get(i).copied().unwrap_or_default());
        let cols = defs
            .iter()
            .enumerate()
            .map(|(i, d)| match d.kind {
                ColKind::Text => ColBuilder::Text(StringBuilder::with_capacity(rows, scale(i))),
                ColKind::Dict => ColBuilder::Dict(DictBuilder::with_capacity(rows)),
                ColKind::Event => ColBuilder::Event(DictBuilder::with_capacity(rows)),
                ColKind::Int64 => ColBuilder::I64(Int64Builder::with_capacity(rows)),
                ColKind::Int32 => ColBuilder::I32(Int32Builder::with_capacity(rows)),
                ColKind::List => ColBuilder::List(ListBuilder::with_capacity(
                    StringBuilder::with_capacity(sized(i)[1], scale(i)),
                    rows,
                )),
                ColKind::CustomData => ColBuilder::Map(map_builder(rows, sized(i))),
                ColKind::Endpoint => ColBuilder::Endpoint(
                    StringBuilder::with_capacity(rows, scale(i)),
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
            timestamp: TimestampMillisecondBuilder::with_capacity(rows),
            server: DictBuilder::with_capacity(rows),
            offset: Int64Builder::with_capacity(rows),
            cols,
            extra: map_builder(rows, scale_size(hints.extra)),
            rows: 0,
        }
    }

    pub(crate) fn constants(&self) -> &FileConstants {
        &self.constants
    }

    /// Appends one row. `ints` holds the already validated integer values, by column index.
    /// Returns whether any field needed lossy UTF-8 replacement.
    pub(crate) fn append_row(
        &mut self,
        timestamp_ms: i64,
        offset: u64,
        fields: &Fields<'_>,
        map: &FieldMap,
        ints: &[Option<i64>],
    ) -> bool {
        let mut lossy = false;
        let get = |srcs: &[usize]| {
            srcs.first()
                .and_then(|&i| fields.get(i))
                .filter(|f| !f.is_empty())
        };
        // Whole fields by index: no pointer arithmetic to find them in the validated row.
        let get_text = |srcs: &[usize], lossy: &mut bool| {
            let i = *srcs.first()?;
            match fields.get_str(i) {
                Some("") => None,
                Some(s) => Some(Cow::Borrowed(s)),
                None => fields
                    .get(i)
                    .filter(|f| !f.is_empty())
                    .map(|f| text(fields, f, lossy)),
            }
        };
        self.timestamp.append_value(timestamp_ms);
        self.offset.append_value(offset as i64);
        if self.constants.server_from_rows {
            match map
                .server_hostname
                .and_then(|i| fields.get(i))
                .filter(|f| !f.is_empty())
            {
                Some(name) => self.server.append(&text(fields, name, &mut lossy)),
                None => self.server.append(&self.constants.server),
            }
        }
        for ((col, srcs), value) in self.cols.iter_mut().zip(&map.sources).zip(ints) {
            match col {
                ColBuilder::Text(b) => match get_text(srcs, &mut lossy) {
                    Some(t) => b.append_value(t),
                    None => b.append_null(),
                },
                ColBuilder::Dict(b) => match get_text(srcs, &mut lossy) {
                    Some(t) => b.append(&t),
                    None => b.append_null(),
                },
                ColBuilder::Event(b) => match get(srcs) {
                    Some(f) => match event_name(f) {
                        Some(name) => b.append(name),
                        None => b.append(&text(fields, f, &mut lossy)),
                    },
                    None => b.append_null(),
                },
                ColBuilder::I64(b) => b.append_option(*value),
                ColBuilder::I32(b) => b.append_option(value.map(|v| v as i32)),
                ColBuilder::List(b) => match get(srcs) {
                    Some(f) => {
                        for item in multi_value::items(f) {
                            b.values().append_value(text(fields, item, &mut lossy));
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                },
                ColBuilder::Map(b) => match get(srcs) {
                    Some(f) => append_custom_data(b, fields, f, &mut lossy),
                    None => b.append(false).unwrap_or_default(),
                },
                ColBuilder::Endpoint(ip, port) => match get(srcs) {
                    Some(f) => {
                        let ep = parse_endpoint(f);
                        ip.append_value(text(fields, ep.ip, &mut lossy));
                        port.append_option(ep.port.map(i32::from));
                    }
                    None => {
                        ip.append_null();
                        port.append_null();
                    }
                },
                ColBuilder::Reply(code, enhanced) => {
                    let reply = srcs
                        .iter()
                        .filter_map(|&i| fields.get(i))
                        .find_map(find_smtp_reply);
                    match reply {
                        Some(r) => {
                            code.append_value(r.code as i16);
                            match r.enhanced {
                                Some(e) => enhanced.append(&text(fields, e, &mut lossy)),
                                None => enhanced.append_null(),
                            }
                        }
                        None => {
                            code.append_null();
                            enhanced.append_null();
                        }
                    }
                }
                ColBuilder::Const(_) => {}
            }
        }
        let mut any_extra = false;
        for (i, name) in &map.extra {
            if let Some(f) = fields.get(*i).filter(|f| !f.is_empty()) {
                self.extra.keys().append_value(name);
                self.extra
                    .values()
                    .append_value(text(fields, f, &mut lossy));
                any_extra = true;
            }
        }
        // MapBuilder::append only fails when keys and values disagree in length, which the
        // paired appends above rule out.
        self.extra.append(any_extra).unwrap_or_default();
        self.rows += 1;
        lossy
    }

    /// Turns the rows into a batch, and measures them for the next batch's capacities.
    pub(crate) fn finish(mut self, hints: &mut CapacityHints) -> Result<RecordBatch, ArrowError> {
        let rows = self.rows;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.defs.len() + 8);
        arrays.push(Arc::new(self.timestamp.finish().with_timezone("UTC")));
        arrays.push(if self.constants.server_from_rows {
            Arc::new(self.server.finish()?)
        } else {
            const_dict(Some(&self.constants.server), rows)?
        });
        arrays.push(const_dict(Some(&self.constants.source_file), rows)?);
        arrays.push(Arc::new(self.offset.finish()));
        hints.rows = rows;
        hints.sizes.clear();
        for col in &mut self.cols {
            match col {
                ColBuilder::Text(b) => {
                    let a = b.finish();
                    hints.sizes.push([a.value_data().len(), 0, 0]);
                    arrays.push(Arc::new(a));
                }
                ColBuilder::Dict(b) | ColBuilder::Event(b) => {
                    hints.sizes.push([0; 3]);
                    arrays.push(Arc::new(b.finish()?));
                }
                ColBuilder::I64(b) => {
                    hints.sizes.push([0; 3]);
                    arrays.push(Arc::new(b.finish()));
                }
                ColBuilder::I32(b) => {
                    hints.sizes.push([0; 3]);
                    arrays.push(Arc::new(b.finish()));
                }
                ColBuilder::List(b) => {
                    let a = b.finish();
                    let items = a.values().as_string::<i32>();
                    hints.sizes.push([items.value_data().len(), items.len(), 0]);
                    arrays.push(Arc::new(a));
                }
                ColBuilder::Map(b) => {
                    let a = b.finish();
                    hints.sizes.push(map_size(&a));
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
                    arrays.push(const_dict(value.as_deref(), rows)?);
                }
            }
        }
        let extra = self.extra.finish();
        hints.extra = map_size(&extra);
        arrays.push(Arc::new(extra));
        RecordBatch::try_new(schema::schema(self.table), arrays)
    }
}

fn append_custom_data<'b>(
    b: &mut MapBuilder<StringBuilder, StringBuilder>,
    fields: &Fields<'b>,
    field: &'b [u8],
    lossy: &mut bool,
) {
    for (seen, (key, value)) in custom_data::entries(field).enumerate() {
        let key = text(fields, key, lossy);
        // Parquet readers (DuckDB) refuse maps with repeated keys, and Exchange repeats some
        // (`S:AMA=SUM|...;S:AMA=EV|...`): the second becomes `AMA#2`, the third `AMA#3`.
        let keys = b.keys();
        let start = keys.len() - seen;
        let repeats = (start..keys.len())
            .filter(|&i| same_key(stored_key(keys, i), key.as_bytes()))
            .count();
        if repeats == 0 {
            keys.append_value(&key);
        } else {
            // Written straight into the builder (cannot fail): no String per repeated key.
            let _ = write!(keys, "{key}#{}", repeats + 1);
            keys.append_value("");
        }
        match value {
            Some(v) => b.values().append_value(text(fields, v, lossy)),
            None => b.values().append_null(),
        }
    }
    b.append(true).unwrap_or_default();
}

/// The bytes of key `i` already appended: builders do not expose values, so read the buffers.
fn stored_key(keys: &StringBuilder, i: usize) -> &[u8] {
    let offsets = keys.offsets_slice();
    match (offsets.get(i), offsets.get(i + 1)) {
        (Some(&s), Some(&e)) => keys
            .values_slice()
            .get(s as usize..e as usize)
            .unwrap_or_default(),
        _ => &[],
    }
}

/// `stored` is `key` itself or a renamed repeat of it (`key#2`).
fn same_key(stored: &[u8], key: &[u8]) -> bool {
    stored == key
        || (stored.len() > key.len() && stored.starts_with(key) && stored[key.len()] == b'#')
}

/// A dictionary column holding one value (or null) on every row.
fn const_dict(value: Option<&str>, rows: usize) -> Result<ArrayRef, ArrowError> {
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
