//! Diagnosis columns on the parser's batches: `diagnosis_code`, `diagnosis_category` and
//! `diagnosis_severity` (dictionary-encoded, null for rows with nothing to say) appended to
//! `message_tracking`, `smtp_protocol`, `connectivity`, `transport_events` and
//! `queue_snapshots`.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, GenericListArray, PrimitiveArray, RecordBatch, StringArray,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use crate::catalog::{TextField, default_fields, slot};
use crate::correlate::Names;
use crate::matcher::{Hit, Matcher, RowFacts};
use mailflow_parser::Table;

/// Version of the tables mailflow writes: the parser's tables plus the diagnosis columns, and
/// the derived tables. 3: the parser's version 2 (`custom_data` values are lists); the TLS
/// cipher suite of `smtp_sessions` normalised beside Schannel's names.
pub const SCHEMA_VERSION: u32 = 3;

/// Per table, the schema version that last changed a column's type: engines cannot read the
/// table's files written before it together with later ones (other changes add columns, which
/// DuckDB's `union_by_name` and Spark's `mergeSchema` read together).
pub const INCOMPATIBLE_BEFORE: &[(&str, u32)] = &[("message_tracking", 3)];

/// The columns enrichment appends.
pub const DIAGNOSIS_COLUMNS: [&str; 3] =
    ["diagnosis_code", "diagnosis_category", "diagnosis_severity"];

/// Whether a table gets diagnosis columns.
pub fn is_diagnosed(table: Table) -> bool {
    slot(table).is_some()
}

/// A table's schema with the diagnosis columns (unchanged for tables that get none).
pub fn enriched_schema(table: Table, schema: &SchemaRef) -> SchemaRef {
    if !is_diagnosed(table) {
        return Arc::clone(schema);
    }
    if schema.column_with_name(DIAGNOSIS_COLUMNS[0]).is_some() {
        return Arc::clone(schema);
    }
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    for name in DIAGNOSIS_COLUMNS {
        fields.push(Arc::new(Field::new(
            name,
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )));
    }
    let mut metadata = schema.metadata().clone();
    metadata.insert("mailflow.schema_version".into(), SCHEMA_VERSION.to_string());
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// Reads a text column whatever its Arrow shape.
pub(crate) enum Text<'a> {
    Plain(&'a StringArray),
    Dict(&'a DictionaryArray<Int32Type>, &'a StringArray),
    List(&'a GenericListArray<i32>, &'a StringArray),
    Missing,
}

impl<'a> Text<'a> {
    pub(crate) fn of(batch: &'a RecordBatch, name: &str) -> Self {
        let Some(col) = batch.column_by_name(name) else {
            return Text::Missing;
        };
        match col.data_type() {
            DataType::Utf8 => Text::Plain(col.as_string()),
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                let d = col.as_dictionary::<Int32Type>();
                Text::Dict(d, d.values().as_string())
            }
            DataType::List(f) if f.data_type() == &DataType::Utf8 => {
                let l = col.as_list::<i32>();
                Text::List(l, l.values().as_string())
            }
            _ => Text::Missing,
        }
    }

    /// The value of a row, or for a list each status in it: `recipient-status` is split on
    /// `;`, which also splits a reply like `550 5.1.1 RESOLVER.ADR.RecipNotFound; not found`, so
    /// an item that does not start a new reply is joined back to the one before.
    fn each(&self, row: usize, mut f: impl FnMut(u32, &str)) {
        match self {
            Text::Plain(a) => {
                if a.is_valid(row) {
                    f(0, a.value(row));
                }
            }
            Text::Dict(d, v) => {
                if let Some(k) = d.key(row) {
                    f(0, v.value(k));
                }
            }
            Text::List(l, v) => {
                if !l.is_valid(row) {
                    return;
                }
                let offsets = l.value_offsets();
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                let mut group: Option<(u32, std::borrow::Cow<'_, str>)> = None;
                let mut n = 0;
                for k in start..end {
                    if !v.is_valid(k) {
                        continue;
                    }
                    let item = v.value(k);
                    let starts_status = {
                        let t = item.trim_start_matches([' ', '"']);
                        t.starts_with("[{")
                            || mailflow_parser::fields::smtp_reply::parse_smtp_reply(t.as_bytes())
                                .is_ok()
                    };
                    match &mut group {
                        Some((_, text)) if !starts_status => {
                            let text = text.to_mut();
                            text.push(';');
                            text.push_str(item);
                        }
                        _ => {
                            if let Some((i, text)) = group.take() {
                                f(i, &text);
                            }
                            group = Some((n, std::borrow::Cow::Borrowed(item)));
                            n += 1;
                        }
                    }
                }
                if let Some((i, text)) = group {
                    f(i, &text);
                }
            }
            Text::Missing => {}
        }
    }

    /// For a dictionary column, which keys stand for `value` (compared once per batch).
    fn keys_equal(&self, value: &str) -> Vec<bool> {
        match self {
            Text::Dict(_, v) => (0..v.len())
                .map(|k| v.is_valid(k) && v.value(k) == value)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether a row's value is one of the keys [`Text::keys_equal`] marked.
    fn is(&self, row: usize, marked: &[bool]) -> bool {
        match self {
            Text::Dict(d, _) => d
                .key(row)
                .is_some_and(|k| marked.get(k).copied().unwrap_or(false)),
            _ => false,
        }
    }

    /// The value of a row; for a list, its first item.
    // Read several times per row by the classifier and the correlators, and not inlined on its
    // own (a match over three column shapes): the calls were a fifth of `classify`'s
    // instructions (callgrind, SMTP receive).
    #[inline(always)]
    pub(crate) fn first(&self, row: usize) -> Option<&'a str> {
        match self {
            Text::Plain(a) => a.is_valid(row).then(|| a.value(row)),
            Text::Dict(d, v) => d.key(row).map(|k| v.value(k)),
            Text::List(l, v) => {
                let offsets = l.value_offsets();
                let k = offsets[row] as usize;
                (l.is_valid(row) && k < offsets[row + 1] as usize && v.is_valid(k))
                    .then(|| v.value(k))
            }
            Text::Missing => None,
        }
    }
}

/// A text column whose values are numbered in a correlator's [`Names`]: a dictionary column's
/// values once per batch, so a row costs an index, not a hash of its text.
pub(crate) struct Interned<'a> {
    text: Text<'a>,
    /// For a dictionary column, the name id of each dictionary value.
    by_key: Vec<u32>,
}

impl<'a> Interned<'a> {
    pub(crate) fn of(batch: &'a RecordBatch, name: &str, names: &mut Names) -> Self {
        let text = Text::of(batch, name);
        let by_key = match &text {
            Text::Dict(_, values) => (0..values.len())
                .map(|k| {
                    names.id(if values.is_valid(k) {
                        values.value(k)
                    } else {
                        ""
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        Interned { text, by_key }
    }

    /// The row's name id (null and missing columns have none).
    #[inline]
    pub(crate) fn id(&self, row: usize, names: &mut Names) -> Option<u32> {
        match &self.text {
            Text::Dict(d, _) => d.key(row).and_then(|k| self.by_key.get(k).copied()),
            other => other.first(row).map(|s| names.id(s)),
        }
    }
}

impl Matcher {
    /// The diagnosis of every row of a batch of `table` (all `None` for other tables).
    pub fn classify(&self, table: Table, batch: &RecordBatch) -> Vec<Option<Hit>> {
        let mut out = vec![None; batch.num_rows()];
        if !is_diagnosed(table) {
            return out;
        }
        let event_id = Text::of(batch, "event_id");
        // A Windows event's ID is a number; rules name it in decimal.
        let event_number = batch
            .column_by_name("event_id")
            .and_then(|c| c.as_primitive_opt::<Int32Type>());
        let mut number = String::new();
        let provider = Text::of(batch, "provider");
        let direction = Text::of(batch, "direction");
        let event = Text::of(batch, "event");
        let information = event.keys_equal("information");
        let context = Text::of(batch, "context");
        // The parser has split the outer reply out of `data` already: a healthy command or reply
        // needs no second look.
        let replies = batch
            .column_by_name("smtp_reply_code")
            .and_then(|c| c.as_primitive_opt::<arrow_array::types::Int16Type>());
        // Exchange's remarks repeat ("Set Session Permissions", "Certificate subject", ...):
        // whether one names a failure is decided once per batch.
        let mut remarks: hashbrown::HashMap<&str, bool> = hashbrown::HashMap::new();
        let fields: Vec<(TextField, Text<'_>)> = default_fields(table)
            .iter()
            .map(|f| (*f, Text::of(batch, f.name())))
            .collect();
        let mut scratch = Vec::new();
        // Most tables have no rule on the row alone (an event ID): then no row needs the check.
        let row_rules = self.has_row_rules(table);
        for (row, slot) in out.iter_mut().enumerate() {
            if let Some(ids) = event_number {
                use std::fmt::Write as _;
                number.clear();
                if ids.is_valid(row) {
                    let _ = write!(number, "{}", ids.value(row));
                }
            }
            let facts = RowFacts {
                event_id: if event_number.is_some() {
                    Some(number.as_str()).filter(|n| !n.is_empty())
                } else {
                    event_id.first(row)
                },
                provider: provider.first(row),
                direction: direction.first(row),
                information: event.is(row, &information)
                    && context.first(row).is_none_or(str::is_empty),
            };
            let mut best: Option<(u32, Hit)> = row_rules
                .then(|| self.row_only(table, &facts))
                .flatten()
                .map(|(s, d)| {
                    (
                        s,
                        Hit {
                            diagnosis: d,
                            field: None,
                            item: 0,
                        },
                    )
                });
            for (f, text) in &fields {
                if *f == TextField::Data
                    && !facts.information
                    && let Some(replies) = replies
                {
                    let code = replies.is_valid(row).then(|| replies.value(row));
                    if code.is_none_or(|c| c < 400)
                        && !(self.searches_healthy(
                            table,
                            *f,
                            code.and_then(|c| u16::try_from(c).ok()),
                        ) && text.first(row).is_some_and(|v| self.in_healthy_line(v)))
                    {
                        continue;
                    }
                }
                // Most `*` lines of a session are remarks that say nothing: they show no
                // failure and name none (decided once per distinct text).
                if *f == TextField::Data
                    && facts.information
                    && let Some(value) = text.first(row)
                    && !self.remark_shows_failure(value, &facts)
                    && !*remarks
                        .entry(value)
                        .or_insert_with(|| self.names_failure(value))
                {
                    continue;
                }
                if *f == TextField::Context
                    && context.first(row).is_none_or(|value| {
                        value.is_empty()
                            || !*remarks
                                .entry(value)
                                .or_insert_with(|| self.names_failure(value))
                    })
                {
                    continue;
                }
                text.each(row, |item, value| {
                    if let Some((score, d)) = self.unit(table, *f, value, &facts, &mut scratch)
                        && best.is_none_or(|(s, _)| score > s)
                    {
                        best = Some((
                            score,
                            Hit {
                                diagnosis: d,
                                field: Some(*f),
                                item,
                            },
                        ));
                    }
                });
            }
            *slot = best.map(|(_, h)| h);
        }
        out
    }

    /// The batch with the diagnosis columns appended (unchanged for tables that get none).
    pub fn enrich(&self, table: Table, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        if !is_diagnosed(table) {
            return Ok(batch.clone());
        }
        let hits = self.classify(table, batch);
        self.enrich_with(table, batch, &hits)
    }

    /// [`Matcher::enrich`] with the rows' diagnoses already at hand (from
    /// [`Matcher::classify`], which session correlation needs too).
    pub fn enrich_with(
        &self,
        table: Table,
        batch: &RecordBatch,
        hits: &[Option<Hit>],
    ) -> Result<RecordBatch, ArrowError> {
        if !is_diagnosed(table) {
            return Ok(batch.clone());
        }
        let n = batch.num_rows();
        let schema = enriched_schema(table, &batch.schema());
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        if hits.iter().all(Option::is_none) {
            // Nearly every batch of healthy traffic: three all-null columns, no builders.
            for name in DIAGNOSIS_COLUMNS {
                let field = schema.field_with_name(name)?;
                columns.push(arrow_array::new_null_array(field.data_type(), n));
            }
            return RecordBatch::try_new(schema, columns);
        }
        // One key per row into the batch's distinct diagnoses; the three columns share the keys.
        let mut distinct: Vec<crate::matcher::Diagnosis> = Vec::new();
        let keys: PrimitiveArray<Int32Type> = hits
            .iter()
            .map(|h| {
                h.map(|h| {
                    let i = match distinct.iter().position(|d| *d == h.diagnosis) {
                        Some(i) => i,
                        None => {
                            distinct.push(h.diagnosis);
                            distinct.len() - 1
                        }
                    };
                    i32::try_from(i).unwrap_or(i32::MAX)
                })
            })
            .collect();
        let codes = StringArray::from_iter_values(distinct.iter().map(|d| self.code(*d)));
        let categories = StringArray::from_iter_values(distinct.iter().map(|d| self.category(*d)));
        let severities =
            StringArray::from_iter_values(distinct.iter().map(|d| self.severity(*d).name()));
        for values in [codes, categories, severities] {
            let dict = DictionaryArray::<Int32Type>::try_new(keys.clone(), Arc::new(values))?;
            columns.push(Arc::new(dict));
        }
        RecordBatch::try_new(schema, columns)
    }
}

/// Rows per diagnosis code in an enriched batch (nothing for batches without the column).
pub fn count_codes(batch: &RecordBatch, counts: &mut std::collections::BTreeMap<String, u64>) {
    let Some(col) = batch.column_by_name(DIAGNOSIS_COLUMNS[0]) else {
        return;
    };
    let Some(dict) = col.as_dictionary_opt::<Int32Type>() else {
        return;
    };
    let values = dict.values().as_string::<i32>();
    let mut per_key = vec![0u64; values.len()];
    for k in dict.keys().iter().flatten() {
        if let Some(n) = usize::try_from(k).ok().and_then(|k| per_key.get_mut(k)) {
            *n += 1;
        }
    }
    for (k, n) in per_key.into_iter().enumerate() {
        if n > 0 {
            *counts.entry(values.value(k).to_string()).or_default() += n;
        }
    }
}

/// A batch's `timestamp` and `source_offset` columns, when it has them in the lineage types.
pub(crate) fn lineage(
    batch: &RecordBatch,
) -> Option<(
    &PrimitiveArray<arrow_array::types::TimestampMillisecondType>,
    &PrimitiveArray<arrow_array::types::Int64Type>,
)> {
    Some((
        batch.column_by_name("timestamp")?.as_primitive_opt()?,
        batch.column_by_name("source_offset")?.as_primitive_opt()?,
    ))
}

/// The text of the unit a hit came from (for evidence).
pub fn hit_text(batch: &RecordBatch, row: usize, hit: &Hit) -> Option<String> {
    let name = hit.field?.name();
    let mut out = None;
    Text::of(batch, name).each(row, |i, s| {
        if i == hit.item {
            out = Some(s.to_string());
        }
    });
    out
}

/// A text column's value in a row (first item for lists).
pub fn text_at<'a>(batch: &'a RecordBatch, name: &str, row: usize) -> Option<&'a str> {
    Text::of(batch, name).first(row)
}
