//! What a writer resuming after a crash must not write again: the lake sink's idempotency.
//!
//! A runtime that restarts replays each source from its checkpoint, which may lie before what
//! the lake already holds: its correlators must see those lines again to make whole the
//! sessions and messages that were open at the checkpoint. [`Resume`] drops what the lake has:
//!
//! - **raw rows** (a log line each) of a source before the end offset the lake holds of it;
//! - **derived rows** (a session, a message) whose identity the lake holds: a session by its
//!   server and session id, a message by its key. Identity, not lineage: a replay that starts
//!   in the middle of a session that was closed and committed before the crash sees only its
//!   tail, which would make a new row with a new first line; its identity says it is held.
//!   With a span (first and last event), a row of a held identity is held only if it starts
//!   within a held row's span: a message deferred past the correlator's idle window comes out
//!   as two rows with one Message-ID, and the second is new, not a tail of the first.
//!
//! Only the partitions a replay can touch are read (the days it spans, the servers it reads),
//! so a restart costs what it replays, not what the lake holds.

use std::collections::HashMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::DataType;
use xxhash_rust::xxh3::Xxh3;

use super::{Error, Source, io_error};

/// How a derived table's rows are known: the columns that make a row's identity with its
/// server (a partition column), or one column that is an identity wherever the row is filed.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The table.
    pub table: String,
    /// Columns hashed with the row's server, in order (strings or integers; a null is a value
    /// too).
    pub columns: Vec<String>,
    /// A column that, when not null, identifies the row on its own (a message's Message-ID: a
    /// replay that starts after a message's first server may file it under another).
    pub global: Option<String>,
    /// The columns of a row's first and last event times, when one identity may have several
    /// rows over time.
    pub span: Option<(String, String)>,
}

/// The spans held of one identity (none known: any row of it is held).
type Spans = Vec<(i64, i64)>;

/// What the lake holds that a replay must not write again; see the module docs.
#[derive(Debug, Default)]
pub struct Resume {
    /// Per source fingerprint, the offset before which every line is held.
    ends: HashMap<String, u64>,
    /// Per derived table, how its rows are known and the identities held.
    derived: HashMap<String, (Identity, HashMap<u64, Spans>)>,
}

impl Resume {
    /// Raw rows before `ends[fingerprint]` are held.
    pub fn new(ends: HashMap<String, u64>) -> Self {
        Resume {
            ends,
            derived: HashMap::new(),
        }
    }

    /// Reads the identities of `identity.table`'s rows in the partitions `wanted(date, server)`
    /// accepts (the folder values, as the lake writes them).
    pub fn load(
        &mut self,
        root: &Path,
        identity: Identity,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> Result<(), Error> {
        let mut held = HashMap::new();
        let dir = root.join(&identity.table);
        for date in sub_values(&dir, "date=")? {
            let day = dir.join(format!("date={date}"));
            for server in sub_values(&day, "server=")? {
                if !wanted(&date, &server) {
                    continue;
                }
                let part = day.join(format!("server={server}"));
                // Servers are canonical names (letters, digits, `-`, `_`), which the
                // folder holds unescaped: the folder value is the rows' value.
                let shown = server.clone();
                for file in std::fs::read_dir(&part).map_err(io_error(&part))? {
                    let path = file.map_err(io_error(&part))?.path();
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    if name.is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet")) {
                        read_identities(&path, &shown, &identity, &mut held)?;
                    }
                }
            }
        }
        self.derived
            .insert(identity.table.clone(), (identity, held));
        Ok(())
    }

    /// [`Resume::load`] of a Delta lake's table: its current files (from its log) in the
    /// partitions `wanted` accepts.
    pub fn load_delta(
        &mut self,
        lake: &crate::object_lake::ObjectLake,
        identity: Identity,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> Result<(), Error> {
        let mut held = HashMap::new();
        for (key, _) in lake.files(&identity.table)? {
            // `<table>/date=…/server=…/part-….parquet`, as the lake commits them; the folder
            // values are the rows' (see `load`).
            let Some((date, server)) = crate::object_lake::partition_of(&key) else {
                continue;
            };
            if wanted(date, server) {
                let bytes = lake.read(&key)?;
                read_identities_in(bytes, Path::new(&key), server, &identity, &mut held)?;
            }
        }
        self.derived
            .insert(identity.table.clone(), (identity, held));
        Ok(())
    }

    /// Identities held of a derived table (for the run's log).
    pub fn held(&self, table: &str) -> usize {
        self.derived.get(table).map_or(0, |(_, h)| h.len())
    }

    /// `batch` of `table`, written for `source`, without what the lake holds; `None` if
    /// nothing is left. Returns the rows dropped too.
    pub fn filter(
        &self,
        table: &str,
        source: &Source<'_>,
        batch: &RecordBatch,
    ) -> Result<(Option<RecordBatch>, u64), Error> {
        let n = batch.num_rows();
        if let Some((identity, held)) = self.derived.get(table) {
            if held.is_empty() {
                return Ok((Some(batch.clone()), 0));
            }
            let rows = Identified::of(batch, identity)?;
            let starts = span_start(batch, identity);
            let keep: BooleanArray = (0..n)
                .map(|r| {
                    let spans = held.get(&rows.hasher(r).digest());
                    let start = starts.as_ref().and_then(|s| s.get(r).copied().flatten());
                    Some(!spans.is_some_and(|s| covered(s, start, true)))
                })
                .collect();
            let kept = arrow_select::filter::filter_record_batch(batch, &keep)
                .map_err(|e| Error::Arrow(std::sync::Arc::new(e)))?;
            let dropped = (n - kept.num_rows()) as u64;
            return Ok(((kept.num_rows() > 0).then_some(kept), dropped));
        }
        let end = self.ends.get(source.fingerprint).copied().unwrap_or(0);
        Ok(rows_from(batch.clone(), end))
    }
}

/// Whether a row starting at `start` is one of `spans`: within one (`from_start`: its first
/// event included), or anywhere when spans are not known.
fn covered(spans: &Spans, start: Option<i64>, from_start: bool) -> bool {
    let Some(t) = start else {
        return true;
    };
    spans.is_empty()
        || spans
            .iter()
            .any(|&(a, b)| (if from_start { t >= a } else { t > a }) && t <= b)
}

/// A batch's first-event times, when its identity has a span.
fn span_start(batch: &RecordBatch, identity: &Identity) -> Option<Vec<Option<i64>>> {
    let (first, _) = identity.span.as_ref()?;
    let col = batch.column_by_name(first)?;
    let t = col.as_primitive_opt::<arrow_array::types::TimestampMillisecondType>()?;
    Some(t.iter().collect())
}

impl Resume {
    /// `batch` of derived `table` without the tails of rows the lake holds: rows that start
    /// strictly inside a held row's span. Another sink than the lake uses this on a replay:
    /// such a tail exists only when the replay began after the row's first event, which the
    /// checkpoints allow only once every sink acknowledged the whole row. A row regenerated
    /// whole (it starts where the held one does) is kept: that sink may not have it.
    pub fn drop_tails(
        &self,
        table: &str,
        batch: RecordBatch,
    ) -> Result<Option<RecordBatch>, Error> {
        let Some((identity, held)) = self.derived.get(table) else {
            return Ok(Some(batch));
        };
        let Some(starts) = span_start(&batch, identity) else {
            return Ok(Some(batch));
        };
        if held.is_empty() {
            return Ok(Some(batch));
        }
        let rows = Identified::of(&batch, identity)?;
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|r| {
                let spans = held.get(&rows.hasher(r).digest());
                Some(!spans.is_some_and(|s| !s.is_empty() && covered(s, starts[r], false)))
            })
            .collect();
        let kept = arrow_select::filter::filter_record_batch(&batch, &keep)
            .map_err(|e| Error::Arrow(std::sync::Arc::new(e)))?;
        Ok((kept.num_rows() > 0).then_some(kept))
    }
}

/// The rows of `batch` at or after source offset `from`, and how many came before it (rows
/// are in source order, so those are a prefix). A batch without `source_offset` is kept whole.
pub fn rows_from(batch: RecordBatch, from: u64) -> (Option<RecordBatch>, u64) {
    if from == 0 {
        return (Some(batch), 0);
    }
    let Some(offsets) = batch
        .column_by_name("source_offset")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
    else {
        return (Some(batch), 0);
    };
    let from = i64::try_from(from).unwrap_or(i64::MAX);
    let k = offsets.values().partition_point(|&o| o < from);
    let n = batch.num_rows();
    if k == n {
        (None, n as u64)
    } else {
        (Some(batch.slice(k, n - k)), k as u64)
    }
}

/// The values after `prefix` of the sub-folders of `dir` named `prefix…` (none if `dir` is
/// missing).
fn sub_values(dir: &Path, prefix: &str) -> Result<Vec<String>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir)(e).into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry.map_err(io_error(dir))?.file_name();
        if let Some(v) = name.to_string_lossy().strip_prefix(prefix) {
            out.push(v.to_string());
        }
    }
    out.sort();
    Ok(out)
}

fn identity_columns(batch: &RecordBatch, names: &[String]) -> Result<Vec<ArrayRef>, Error> {
    names
        .iter()
        .map(|n| {
            batch.column_by_name(n).cloned().ok_or(Error::Schema {
                column: "identity",
                reason: format!("the batch has no column {n}"),
            })
        })
        .collect()
}

/// A cell as the bytes hashed into an identity: strings (plain or dictionary) and integers.
#[derive(Debug, PartialEq, Eq)]
enum Cell<'a> {
    Null,
    Text(&'a str),
    Int(i64),
    Other,
}

fn value(col: &ArrayRef, row: usize) -> Cell<'_> {
    if col.is_null(row) {
        return Cell::Null;
    }
    match col.data_type() {
        DataType::Utf8 => Cell::Text(col.as_string::<i32>().value(row)),
        DataType::Int64 => Cell::Int(col.as_primitive::<Int64Type>().value(row)),
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            let d = col.as_dictionary::<Int32Type>();
            match d.values().as_string_opt::<i32>() {
                Some(values) => Cell::Text(values.value(d.keys().value(row) as usize)),
                None => Cell::Other,
            }
        }
        _ => Cell::Other,
    }
}

fn global_column(batch: &RecordBatch, identity: &Identity) -> Result<Option<ArrayRef>, Error> {
    identity
        .global
        .as_ref()
        .map(|g| identity_columns(batch, std::slice::from_ref(g)).map(|mut v| v.remove(0)))
        .transpose()
}

/// A batch's identity columns, resolved once: what hashes its rows' identities (64 bits for
/// the lake's replay filter, 128 for a search cluster's document ids).
pub(crate) struct Identified {
    global: Option<ArrayRef>,
    server: Option<ArrayRef>,
    columns: Vec<ArrayRef>,
}

impl Identified {
    /// The identity columns of `batch` (an error if it lacks one).
    pub(crate) fn of(batch: &RecordBatch, identity: &Identity) -> Result<Self, Error> {
        Ok(Identified {
            global: global_column(batch, identity)?,
            server: batch.column_by_name("server").cloned(),
            columns: identity_columns(batch, &identity.columns)?,
        })
    }

    /// Row `row`'s identity, hashed.
    pub(crate) fn hasher(&self, row: usize) -> Xxh3 {
        identify(
            self.global.as_ref(),
            || self.server.as_ref().map(|s| value(s, row)),
            &self.columns,
            row,
        )
    }
}

/// A row's identity: its global column's value when it has one, else its server and columns.
fn identify<'a>(
    global: Option<&'a ArrayRef>,
    server: impl FnOnce() -> Option<Cell<'a>>,
    columns: &'a [ArrayRef],
    row: usize,
) -> Xxh3 {
    if let Some(g) = global
        && let Cell::Text(id) = value(g, row)
    {
        let mut h = Xxh3::new();
        h.update(b"\x04");
        h.update(id.as_bytes());
        return h;
    }
    hash_row(server(), columns, row)
}

fn hash_row(server: Option<Cell<'_>>, columns: &[ArrayRef], row: usize) -> Xxh3 {
    let mut h = Xxh3::new();
    let mut put = |c: Cell<'_>| match c {
        Cell::Null => h.update(b"\x00"),
        Cell::Text(s) => {
            h.update(b"\x01");
            h.update(s.as_bytes());
            h.update(b"\x00");
        }
        Cell::Int(i) => {
            h.update(b"\x02");
            h.update(&i.to_le_bytes());
        }
        Cell::Other => h.update(b"\x03"),
    };
    put(server.unwrap_or(Cell::Null));
    for c in columns {
        put(value(c, row));
    }
    h
}

/// Adds the identities of a committed file's rows (its partition's `server` besides), with
/// their spans.
fn read_identities(
    path: &Path,
    server: &str,
    identity: &Identity,
    into: &mut HashMap<u64, Spans>,
) -> Result<(), Error> {
    let file = std::fs::File::open(path).map_err(io_error(path))?;
    read_identities_in(file, path, server, identity, into)
}

/// [`read_identities`] of a file's contents (`path` names it in errors).
fn read_identities_in<R: parquet::file::reader::ChunkReader + 'static>(
    file: R,
    path: &Path,
    server: &str,
    identity: &Identity,
    into: &mut HashMap<u64, Spans>,
) -> Result<(), Error> {
    let mut names: Vec<String> = identity
        .columns
        .iter()
        .chain(identity.global.iter())
        .cloned()
        .collect();
    if let Some((a, b)) = &identity.span {
        names.push(a.clone());
        names.push(b.clone());
    }
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let footer = |reason: String| Error::Footer {
        path: path.to_path_buf(),
        reason,
    };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| footer(e.to_string()))?;
    let schema = builder.parquet_schema();
    let leaves: Vec<usize> = names
        .iter()
        .filter_map(|n| schema.columns().iter().position(|c| c.name() == n))
        .collect();
    if leaves.len() != names.len() {
        return Err(footer(format!(
            "lacks one of the identity columns {}",
            names.join(", ")
        )));
    }
    let mask = ProjectionMask::leaves(schema, leaves);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| footer(e.to_string()))?;
    for batch in reader {
        let batch = batch.map_err(|e| footer(e.to_string()))?;
        let columns = identity_columns(&batch, &identity.columns)?;
        let global = global_column(&batch, identity)?;
        let times = identity.span.as_ref().and_then(|(a, b)| {
            let t = |n: &str| {
                batch
                    .column_by_name(n)?
                    .as_primitive_opt::<arrow_array::types::TimestampMillisecondType>()
                    .cloned()
            };
            Some((t(a)?, t(b)?))
        });
        for r in 0..batch.num_rows() {
            let spans = into
                .entry(identify(global.as_ref(), || Some(Cell::Text(server)), &columns, r).digest())
                .or_default();
            if let Some((a, b)) = &times
                && !a.is_null(r)
            {
                let start = a.value(r);
                let end = if b.is_null(r) { start } else { b.value(r) };
                spans.push((start, end.max(start)));
            }
        }
    }
    Ok(())
}
