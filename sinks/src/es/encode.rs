//! Arrow batches to bulk-API NDJSON: one `create` action and one document per row, written
//! column by column into the caller's buffer.
//!
//! Nothing is built per row but the bytes themselves: a table's field names, index and action
//! prefix are encoded once per schema ([`Plan`]), a batch's columns are downcast once
//! ([`Prepared`]), and a row is a walk over those columns appending JSON. Field names are
//! dotted (`host.name`): Elasticsearch expands them into objects, so a document needs no
//! nesting of its own but where a column is itself nested (lists, maps).
//!
//! A document's `_id` is its lineage, hashed to 128 bits: a log line's is its table, source
//! fingerprint and offset; a derived row's (a session, a message) is its identity, as the
//! lake's replay filter knows it, with the time of its first event. A replay after a crash writes the same ids, and `create`
//! answers 409 for each one the cluster holds.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, DictionaryArray, GenericListArray, Int64Array,
    MapArray, PrimitiveArray, RecordBatch, StringArray,
};
use arrow_schema::{DataType, SchemaRef, TimeUnit};

use crate::lake::{Identified, Identity, Source};

/// Where a column goes in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldName {
    /// Under this (dotted) name.
    Field(String),
    /// A connection's peer, named by the row's `direction` (`receive` or `send`): the remote
    /// end of a receive session is ECS's `source`, of a send session its `destination`.
    Peer {
        /// The name on a received connection (and when the row has no direction).
        receive: String,
        /// The name on a sent one.
        send: String,
    },
}

/// How each table's columns are named in documents; a column not named here goes under
/// `exchange.<column>`.
#[derive(Debug, Clone, Default)]
pub struct FieldNames {
    tables: HashMap<String, HashMap<String, FieldName>>,
    /// Per table, a column whose values say ECS's `event.outcome`, and how.
    outcomes: HashMap<String, (String, Outcomes)>,
}

/// Values of a column and the `event.outcome` each means.
type Outcomes = Vec<(String, &'static str)>;

impl FieldNames {
    /// Names `column` of `table`.
    pub fn set(&mut self, table: &str, column: &str, name: FieldName) {
        self.tables
            .entry(table.to_string())
            .or_default()
            .insert(column.to_string(), name);
    }

    /// Writes `event.outcome` (`success`, `failure` or `unknown`) from `column` of `table`:
    /// a value listed in `map` becomes its outcome, any other value `unknown`.
    pub fn set_outcome(&mut self, table: &str, column: &str, map: &[(&str, &'static str)]) {
        self.outcomes.insert(
            table.to_string(),
            (
                column.to_string(),
                map.iter().map(|&(v, o)| (v.to_string(), o)).collect(),
            ),
        );
    }

    /// Whether `table`'s documents have an `event.outcome`.
    pub fn has_outcome(&self, table: &str) -> bool {
        self.outcomes.contains_key(table)
    }

    /// The name of `column` of `table`.
    pub fn get(&self, table: &str, column: &str) -> FieldName {
        self.tables
            .get(table)
            .and_then(|t| t.get(column))
            .cloned()
            .unwrap_or_else(|| FieldName::Field(format!("exchange.{column}")))
    }
}

/// The data stream a table's documents go to.
pub fn data_stream(table: &str, namespace: &str) -> String {
    format!("logs-exchange.{table}-{namespace}")
}

/// Encodes batches of any table; holds each table's [`Plan`].
#[derive(Debug)]
pub struct Encoder {
    namespace: String,
    fields: Arc<FieldNames>,
    identities: Arc<HashMap<String, Identity>>,
    plans: HashMap<String, Plan>,
    /// The last day formatted, and its `YYYY-MM-DD`.
    day: (i64, [u8; 10]),
}

/// A table's schema made into bytes once.
#[derive(Debug)]
struct Plan {
    schema: SchemaRef,
    /// `{"create":{"_index":"…","_id":"`
    action: Vec<u8>,
    /// `"}}\n{"event.dataset":"exchange.…"`: what follows the id up to the first column.
    open: Vec<u8>,
    /// Per column: `,"name":` (and the send-side name of a peer column), or `None` for a
    /// column whose value is in the document already (`timestamp` as `@timestamp` is one).
    keys: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    timestamp: Option<usize>,
    direction: Option<usize>,
    offset: Option<usize>,
    /// The column `event.outcome` is read from, and its values' outcomes.
    outcome: Option<(usize, Outcomes)>,
}

/// A batch ready to encode: its columns downcast.
pub(crate) struct Prepared<'a> {
    plan: &'a Plan,
    day: &'a mut (i64, [u8; 10]),
    columns: Vec<Col<'a>>,
    timestamps: Option<&'a PrimitiveArray<TimestampMillisecondType>>,
    sent: Option<BooleanArray>,
    id: Id<'a>,
    /// `@timestamp` of a row without one (the time it was written).
    now: i64,
}

enum Id<'a> {
    /// A log line: its offset, hashed with a seed of table and source.
    Line { seed: u64, offsets: &'a Int64Array },
    /// A derived row: its identity, and its first event's time when the identity has a span
    /// (one identity may have several rows over time: a message deferred past the
    /// correlator's idle window).
    Derived(
        Identified,
        Option<&'a PrimitiveArray<TimestampMillisecondType>>,
    ),
}

/// A column downcast to what its values are written from.
enum Col<'a> {
    Str(&'a StringArray),
    Dict(&'a DictionaryArray<Int32Type>, &'a StringArray),
    I16(&'a PrimitiveArray<Int16Type>),
    I32(&'a PrimitiveArray<Int32Type>),
    I64(&'a PrimitiveArray<Int64Type>),
    Bool(&'a BooleanArray),
    Time(&'a PrimitiveArray<TimestampMillisecondType>),
    Bytes(&'a BinaryArray),
    List(&'a GenericListArray<i32>, Box<Col<'a>>),
    Map(&'a MapArray, &'a StringArray, Box<Col<'a>>),
    /// A type no table has today: left out of the document.
    Unsupported,
}

impl<'a> Col<'a> {
    fn of(array: &'a ArrayRef) -> Col<'a> {
        match array.data_type() {
            DataType::Utf8 => Col::Str(array.as_string::<i32>()),
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                let d = array.as_dictionary::<Int32Type>();
                match d.values().as_string_opt::<i32>() {
                    Some(values) => Col::Dict(d, values),
                    None => Col::Unsupported,
                }
            }
            DataType::Int16 => Col::I16(array.as_primitive()),
            DataType::Int32 => Col::I32(array.as_primitive()),
            DataType::Int64 => Col::I64(array.as_primitive()),
            DataType::Boolean => Col::Bool(array.as_boolean()),
            DataType::Timestamp(TimeUnit::Millisecond, _) => Col::Time(array.as_primitive()),
            DataType::Binary => Col::Bytes(array.as_binary()),
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                Col::List(list, Box::new(Col::of(list.values())))
            }
            DataType::Map(_, _) => {
                let map = array.as_map();
                match map.keys().as_string_opt::<i32>() {
                    Some(keys) => Col::Map(map, keys, Box::new(Col::of(map.values()))),
                    None => Col::Unsupported,
                }
            }
            _ => Col::Unsupported,
        }
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            Col::Str(a) => a.is_null(row),
            Col::Dict(a, _) => a.is_null(row),
            Col::I16(a) => a.is_null(row),
            Col::I32(a) => a.is_null(row),
            Col::I64(a) => a.is_null(row),
            Col::Bool(a) => a.is_null(row),
            Col::Time(a) => a.is_null(row),
            Col::Bytes(a) => a.is_null(row),
            Col::List(a, _) => a.is_null(row),
            Col::Map(a, _, _) => a.is_null(row),
            Col::Unsupported => true,
        }
    }

    /// The string at `row` of a string column (plain or dictionary), if not null.
    fn text(&self, row: usize) -> Option<&str> {
        match self {
            Col::Str(a) if !a.is_null(row) => Some(a.value(row)),
            Col::Dict(a, values) if !a.is_null(row) => {
                Some(values.value(a.keys().value(row) as usize))
            }
            _ => None,
        }
    }

    /// Writes the value at `row` as JSON, `null` included (inside a list or map).
    fn write_or_null(&self, row: usize, day: &mut (i64, [u8; 10]), out: &mut Vec<u8>) {
        if self.is_null(row) {
            out.extend_from_slice(b"null");
        } else {
            self.write(row, day, out);
        }
    }

    /// Writes the value at `row` (not null) as JSON.
    fn write(&self, row: usize, day: &mut (i64, [u8; 10]), out: &mut Vec<u8>) {
        match self {
            Col::Str(a) => string(a.value(row).as_bytes(), out),
            Col::Dict(a, values) => {
                string(values.value(a.keys().value(row) as usize).as_bytes(), out)
            }
            Col::I16(a) => integer(i64::from(a.value(row)), out),
            Col::I32(a) => integer(i64::from(a.value(row)), out),
            Col::I64(a) => integer(a.value(row), out),
            Col::Bool(a) => out.extend_from_slice(if a.value(row) { b"true" } else { b"false" }),
            Col::Time(a) => {
                out.push(b'"');
                timestamp(a.value(row), day, out);
                out.push(b'"');
            }
            Col::Bytes(a) => string(String::from_utf8_lossy(a.value(row)).as_bytes(), out),
            Col::List(a, values) => {
                let offsets = a.value_offsets();
                let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
                out.push(b'[');
                for i in from..to {
                    if i > from {
                        out.push(b',');
                    }
                    values.write_or_null(i, day, out);
                }
                out.push(b']');
            }
            Col::Map(a, keys, values) => {
                let offsets = a.value_offsets();
                let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
                out.push(b'{');
                for i in from..to {
                    if i > from {
                        out.push(b',');
                    }
                    string(keys.value(i).as_bytes(), out);
                    out.push(b':');
                    values.write_or_null(i, day, out);
                }
                out.push(b'}');
            }
            Col::Unsupported => out.extend_from_slice(b"null"),
        }
    }
}

impl Encoder {
    /// An encoder for data streams of `namespace`, naming columns as `fields` says and
    /// identifying the rows of derived tables by `identities`.
    pub fn new(
        namespace: &str,
        fields: Arc<FieldNames>,
        identities: Arc<HashMap<String, Identity>>,
    ) -> Self {
        Encoder {
            namespace: namespace.to_string(),
            fields,
            identities,
            plans: HashMap::new(),
            day: (i64::MIN, [b'0'; 10]),
        }
    }

    /// Appends every row of `batch` (of `table`, from `source`) to `out` as bulk NDJSON; `now`
    /// is the `@timestamp` of rows without a time. Returns the rows written.
    pub fn encode(
        &mut self,
        table: &str,
        source: &Source<'_>,
        batch: &RecordBatch,
        now: i64,
        out: &mut Vec<u8>,
    ) -> Result<usize, String> {
        let mut p = self.prepare(table, source, batch, now)?;
        for row in 0..batch.num_rows() {
            p.write_row(row, out);
        }
        Ok(batch.num_rows())
    }

    /// Resolves `batch`'s columns for encoding; an error names what the batch lacks.
    pub(crate) fn prepare<'a>(
        &'a mut self,
        table: &str,
        source: &Source<'_>,
        batch: &'a RecordBatch,
        now: i64,
    ) -> Result<Prepared<'a>, String> {
        let schema = batch.schema();
        let stale = self
            .plans
            .get(table)
            .is_none_or(|p| !Arc::ptr_eq(&p.schema, &schema) && *p.schema != *schema);
        if stale {
            let plan = Plan::new(table, &schema, &self.namespace, &self.fields);
            self.plans.insert(table.to_string(), plan);
        }
        let plan = self
            .plans
            .get(table)
            .ok_or_else(|| format!("no plan for {table}"))?;
        let columns = batch.columns().iter().map(Col::of).collect();
        let timestamps = plan.timestamp.and_then(|i| {
            batch
                .column(i)
                .as_primitive_opt::<TimestampMillisecondType>()
        });
        let sent = plan.direction.map(|i| equals(batch.column(i), "send"));
        let id = match self.identities.get(table) {
            Some(identity) => {
                let start = identity.span.as_ref().and_then(|(first, _)| {
                    batch
                        .column_by_name(first)?
                        .as_primitive_opt::<TimestampMillisecondType>()
                });
                Id::Derived(
                    Identified::of(batch, identity).map_err(|e| e.to_string())?,
                    start,
                )
            }
            None => {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                h.update(table.as_bytes());
                h.update(b"\0");
                h.update(source.fingerprint.as_bytes());
                // Without its offset a line has no lineage: refuse rather than give every
                // batch's first row one id (the cluster would keep only the first).
                let offsets = plan
                    .offset
                    .and_then(|i| batch.column(i).as_primitive_opt::<Int64Type>())
                    .ok_or("no Int64 source_offset column: a line's document id is its offset")?;
                Id::Line {
                    seed: h.digest(),
                    offsets,
                }
            }
        };
        Ok(Prepared {
            plan,
            day: &mut self.day,
            columns,
            timestamps,
            sent,
            id,
            now,
        })
    }
}

/// Whether each value of a string column (plain or dictionary) is `value`.
fn equals(array: &ArrayRef, value: &str) -> BooleanArray {
    match Col::of(array) {
        Col::Str(a) => a.iter().map(|v| Some(v == Some(value))).collect(),
        Col::Dict(a, values) => {
            let hit: Vec<bool> = values.iter().map(|v| v == Some(value)).collect();
            a.keys()
                .iter()
                .map(|k| Some(k.is_some_and(|k| hit.get(k as usize).copied().unwrap_or(false))))
                .collect()
        }
        _ => BooleanArray::from(vec![false; array.len()]),
    }
}

impl Plan {
    fn new(table: &str, schema: &SchemaRef, namespace: &str, fields: &FieldNames) -> Self {
        let key = |name: &str| {
            let mut k = b",".to_vec();
            string(name.as_bytes(), &mut k);
            k.push(b':');
            k
        };
        let mut keys = Vec::with_capacity(schema.fields().len());
        let mut timestamp = None;
        for (i, f) in schema.fields().iter().enumerate() {
            match fields.get(table, f.name()) {
                FieldName::Field(name) if name == "@timestamp" => {
                    timestamp = Some(i);
                    keys.push((Vec::new(), None));
                }
                FieldName::Field(name) => keys.push((key(&name), None)),
                FieldName::Peer { receive, send } => keys.push((key(&receive), Some(key(&send)))),
            }
        }
        let mut action = br#"{"create":{"_index":"#.to_vec();
        string(data_stream(table, namespace).as_bytes(), &mut action);
        action.extend_from_slice(br#","_id":""#);
        let mut open = b"\"}}\n{\"event.dataset\":".to_vec();
        string(format!("exchange.{table}").as_bytes(), &mut open);
        Plan {
            schema: Arc::clone(schema),
            action,
            open,
            keys,
            timestamp,
            direction: schema.index_of("direction").ok(),
            offset: schema.index_of("source_offset").ok(),
            outcome: fields
                .outcomes
                .get(table)
                .and_then(|(c, map)| Some((schema.index_of(c).ok()?, map.clone()))),
        }
    }
}

impl Prepared<'_> {
    /// Appends row `row`'s action and document lines.
    pub(crate) fn write_row(&mut self, row: usize, out: &mut Vec<u8>) {
        let plan = self.plan;
        out.extend_from_slice(&plan.action);
        let id = match &self.id {
            Id::Line { seed, offsets } => {
                xxhash_rust::xxh3::xxh3_128_with_seed(&offsets.value(row).to_le_bytes(), *seed)
            }
            Id::Derived(identified, start) => {
                let mut h = identified.hasher(row);
                if let Some(ts) = start.filter(|t| !t.is_null(row)) {
                    h.update(&ts.value(row).to_le_bytes());
                }
                h.digest128()
            }
        };
        hex(id, out);
        out.extend_from_slice(&plan.open);
        out.extend_from_slice(br#","@timestamp":""#);
        let t = match self.timestamps {
            Some(ts) if !ts.is_null(row) => ts.value(row),
            _ => self.now,
        };
        timestamp(t, self.day, out);
        out.push(b'"');
        let sent = self.sent.as_ref().is_some_and(|s| s.value(row));
        for (col, (key, send_key)) in self.columns.iter().zip(&plan.keys) {
            if key.is_empty() || col.is_null(row) {
                continue;
            }
            match send_key {
                Some(k) if sent => out.extend_from_slice(k),
                _ => out.extend_from_slice(key),
            }
            col.write(row, self.day, out);
        }
        if let Some((i, map)) = &plan.outcome
            && let Some(v) = self.columns[*i].text(row)
        {
            let o = map
                .iter()
                .find(|(k, _)| k == v)
                .map_or("unknown", |(_, o)| o);
            out.extend_from_slice(br#","event.outcome":""#);
            out.extend_from_slice(o.as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"}\n");
    }
}

fn integer(v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Bytes JSON must escape inside a string: 0 for none, else the letter of a short escape or
/// `u` for `\u00XX`.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// `s` (valid UTF-8) as a JSON string.
fn string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let e = ESCAPE[b as usize];
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        if e == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.push(b'\\');
            out.push(e);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

fn hex(v: u128, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..32).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`; the date part is formatted once a day.
fn timestamp(ms: i64, day: &mut (i64, [u8; 10]), out: &mut Vec<u8>) {
    let d = ms.div_euclid(86_400_000);
    if d != day.0 {
        let date = chrono::DateTime::from_timestamp_millis(d * 86_400_000)
            .map(|t| t.date_naive().format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        if date.len() == 10 {
            day.1.copy_from_slice(date.as_bytes());
        } else {
            // Outside four-digit years: clamp, as a date field would refuse it anyway.
            day.1.copy_from_slice(b"0000-01-01");
        }
        day.0 = d;
    }
    out.extend_from_slice(&day.1);
    let r = ms.rem_euclid(86_400_000);
    let (h, m, s, f) = (r / 3_600_000, r / 60_000 % 60, r / 1000 % 60, r % 1000);
    let two = |v: i64, out: &mut Vec<u8>| {
        out.push(b'0' + (v / 10) as u8);
        out.push(b'0' + (v % 10) as u8);
    };
    out.push(b'T');
    two(h, out);
    out.push(b':');
    two(m, out);
    out.push(b':');
    two(s, out);
    out.push(b'.');
    out.push(b'0' + (f / 100) as u8);
    two(f % 100, out);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, ListArray, StringArray, TimestampMillisecondArray};
    use arrow_schema::Field;

    use super::*;

    fn batch() -> RecordBatch {
        let schema = crate::testing::lineage_schema(vec![
            Field::new("direction", DataType::Utf8, true),
            Field::new("remote_ip", DataType::Utf8, true),
            Field::new("data", DataType::Utf8, true),
            Field::new(
                "recipients",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
        ]);
        let recipients = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1)]),
            Some(vec![]),
        ]);
        // A list of strings, built from its parts.
        let recipients = GenericListArray::<i32>::new(
            Arc::new(Field::new("item", DataType::Utf8, true)),
            recipients.offsets().clone(),
            Arc::new(StringArray::from(vec!["a@contoso.com"])),
            None,
        );
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(1_706_195_679_460), None])
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec!["EX01", "EX01"])),
                Arc::new(Int64Array::from(vec![10, 20])),
                Arc::new(StringArray::from(vec![Some("receive"), Some("send")])),
                Arc::new(StringArray::from(vec![Some("10.0.0.1"), Some("10.0.0.2")])),
                Arc::new(StringArray::from(vec![Some("say \"hi\"\n\u{1}"), None])),
                Arc::new(recipients),
            ],
        )
        .expect("a valid batch")
    }

    fn names() -> Arc<FieldNames> {
        let mut f = FieldNames::default();
        f.set("t", "timestamp", FieldName::Field("@timestamp".into()));
        f.set("t", "server", FieldName::Field("host.name".into()));
        f.set(
            "t",
            "remote_ip",
            FieldName::Peer {
                receive: "source.ip".into(),
                send: "destination.ip".into(),
            },
        );
        f.set_outcome("t", "direction", &[("receive", "success")]);
        Arc::new(f)
    }

    fn encode(fingerprint: &str) -> Vec<serde_json::Value> {
        let mut enc = Encoder::new("default", names(), Arc::new(HashMap::new()));
        let b = batch();
        let source = Source {
            fingerprint,
            file: "a.log",
            end_offset: 30,
        };
        let mut out = Vec::new();
        let mut p = enc.prepare("t", &source, &b, 86_400_000).expect("prepared");
        for r in 0..b.num_rows() {
            p.write_row(r, &mut out);
        }
        let text = String::from_utf8(out).expect("UTF-8");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn rows_become_create_actions_and_documents_with_ecs_names() {
        let lines = encode("fp");
        assert_eq!(lines.len(), 4);
        let create = &lines[0]["create"];
        assert_eq!(create["_index"], "logs-exchange.t-default");
        assert_eq!(create["_id"].as_str().map(str::len), Some(32));
        let doc = &lines[1];
        assert_eq!(doc["@timestamp"], "2024-01-25T15:14:39.460Z");
        assert_eq!(doc["host.name"], "EX01");
        assert_eq!(doc["exchange.source_offset"], 10);
        assert_eq!(doc["source.ip"], "10.0.0.1", "the remote end of a receive");
        assert_eq!(doc["exchange.data"], "say \"hi\"\n\u{1}");
        assert_eq!(
            doc["exchange.recipients"],
            serde_json::json!(["a@contoso.com"])
        );
        assert_eq!(doc["event.dataset"], "exchange.t");
        assert_eq!(doc["event.outcome"], "success");
        assert_eq!(lines[3]["event.outcome"], "unknown", "a value not listed");
        let sent = &lines[3];
        assert_eq!(
            sent["destination.ip"], "10.0.0.2",
            "the remote end of a send"
        );
        assert!(sent.get("exchange.data").is_none(), "nulls are left out");
        assert_eq!(
            sent["@timestamp"], "1970-01-02T00:00:00.000Z",
            "a row without a time takes the write's"
        );
    }

    #[test]
    fn ids_are_the_lineage_the_same_on_every_replay() {
        let (a, b, c) = (encode("fp"), encode("fp"), encode("other"));
        assert_eq!(a[0], b[0]);
        assert_ne!(a[0]["create"]["_id"], a[2]["create"]["_id"]);
        assert_ne!(a[0]["create"]["_id"], c[0]["create"]["_id"]);
    }

    #[test]
    fn a_derived_row_is_known_by_its_identity_and_first_event_whatever_the_names() {
        let schema = crate::testing::lineage_schema(vec![
            Field::new("session_id", DataType::Utf8, true),
            Field::new(
                "end_time",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]);
        // The same session id twice, hours apart; then the first again at another offset.
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_000, 9_000_000, 1_000])
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec!["EX01"; 3])),
                Arc::new(Int64Array::from(vec![10, 20, 30])),
                Arc::new(StringArray::from(vec!["08DC"; 3])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![2_000, 9_001_000, 2_000])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .expect("a valid batch");
        let identity = Identity {
            table: "s".into(),
            columns: vec!["session_id".into()],
            global: None,
            span: Some(("timestamp".into(), "end_time".into())),
        };
        // No field names at all: the id must not depend on how columns are named.
        let mut enc = Encoder::new(
            "default",
            Arc::new(FieldNames::default()),
            Arc::new(HashMap::from([("s".to_string(), identity)])),
        );
        let source = Source {
            fingerprint: "fp",
            file: "a.log",
            end_offset: 40,
        };
        let mut out = Vec::new();
        enc.encode("s", &source, &b, 0, &mut out).expect("encoded");
        let ids: Vec<String> = String::from_utf8(out)
            .expect("UTF-8")
            .lines()
            .step_by(2)
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
                v["create"]["_id"].as_str().expect("an id").to_string()
            })
            .collect();
        assert_ne!(ids[0], ids[1], "two rows of one identity, hours apart");
        assert_eq!(ids[0], ids[2], "the same row, whatever its offset");
    }

    #[test]
    fn a_line_without_an_offset_is_refused_not_given_a_made_up_id() {
        let schema = Arc::new(arrow_schema::Schema::new(vec![Field::new(
            "server",
            DataType::Utf8,
            false,
        )]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["EX01"]))])
            .expect("a valid batch");
        let mut enc = Encoder::new("default", names(), Arc::new(HashMap::new()));
        let source = Source {
            fingerprint: "fp",
            file: "a.log",
            end_offset: 1,
        };
        let err = enc
            .encode("t", &source, &b, 0, &mut Vec::new())
            .expect_err("refused");
        assert!(err.contains("source_offset"), "{err}");
    }

    #[test]
    fn timestamps_cross_days_and_the_epoch() {
        let mut day = (i64::MIN, [0u8; 10]);
        let mut out = Vec::new();
        for ms in [0, 86_399_999, 86_400_000, -1, 253_402_300_799_999] {
            timestamp(ms, &mut day, &mut out);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).expect("ASCII"),
            "1970-01-01T00:00:00.000Z 1970-01-01T23:59:59.999Z 1970-01-02T00:00:00.000Z \
             1969-12-31T23:59:59.999Z 9999-12-31T23:59:59.999Z "
        );
    }
}
