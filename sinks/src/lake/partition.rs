//! Hive partition values: which `date=…/server=…` folder a row belongs in, and how a value taken
//! from log data is written into a path without escaping the lake or breaking its layout.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, TimeUnit};

use super::Error;

/// The partition column that is also a column of the batches (the date comes from `timestamp`).
pub const SERVER: &str = "server";

/// The partition value Hive, Spark and DuckDB read back as NULL.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Longest escaped value kept whole; longer ones are cut and tagged with a hash of the whole, so
/// two long names stay apart and a path component stays under the usual 255-byte limit.
const MAX_VALUE_BYTES: usize = 160;

/// Escapes a partition value the way Hive does (`FileUtils.escapePathName`, which Spark's
/// `ExternalCatalogUtils` and DuckDB's hive reader undo): `/`, `=`, `%`, control characters and
/// the other characters that are special in paths or globs become `%XX`. The result is a single
/// path component that is never empty, `.` or `..` once prefixed with `key=`, so a server named
/// `../../etc` lands in `server=..%2F..%2Fetc`, inside the lake.
pub fn escape_value(value: &str) -> String {
    if value.is_empty() {
        return NULL_PARTITION.to_string();
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        let special = matches!(
            c,
            '"' | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '{'
                | '['
                | ']'
                | '^'
                | '<'
                | '>'
                | '|'
        ) || c.is_ascii_control();
        if special {
            // Every such character is ASCII, so one byte.
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    if out.len() > MAX_VALUE_BYTES {
        let mut cut = MAX_VALUE_BYTES - 17;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        // A `%XX` sequence cut in half would not unescape; drop the fragment.
        if let Some(p) = out[..cut].rfind('%').filter(|&p| p + 3 > cut) {
            cut = p;
        }
        let hash = xxhash_rust::xxh3::xxh3_64(value.as_bytes());
        out.truncate(cut);
        let _ = write!(out, "~{hash:016x}");
    }
    out
}

/// Undoes [`escape_value`]: `%XX` sequences back to their characters, the null partition to an
/// empty value. A value cut and tagged with a hash because it was long stays as it is.
pub fn unescape_value(value: &str) -> String {
    if value == NULL_PARTITION {
        return String::new();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_string())
}

/// The `date=` value for a timestamp in milliseconds since the epoch (UTC day). A row without a
/// timestamp (a reject of a line that had none) is filed under the UTC day it is written: a
/// NULL partition (`__HIVE_DEFAULT_PARTITION__`) reads back in DuckDB and Spark, but pandas'
/// default reader fails on it (it cannot unify a dictionary holding a null).
pub fn date_value(ms: Option<i64>) -> String {
    let day = |t: chrono::DateTime<chrono::Utc>| t.date_naive().to_string();
    match ms {
        Some(ms) => chrono::DateTime::from_timestamp_millis(ms)
            .map_or_else(|| NULL_PARTITION.to_string(), day),
        None => day(chrono::Utc::now()),
    }
}

/// A partition of one table: the escaped `date=` and `server=` values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// `YYYY-MM-DD`, or [`NULL_PARTITION`] for rows without a timestamp.
    pub date: String,
    /// The escaped server name.
    pub server: String,
}

impl PartitionKey {
    /// The folder under the table's folder: `date=…/server=…`.
    pub fn dir(&self) -> String {
        format!("date={}/server={}", self.date, self.server)
    }
}

/// Reads a row's day and server without allocating.
struct Keys<'a> {
    timestamps: &'a arrow_array::PrimitiveArray<TimestampMillisecondType>,
    server: ServerColumn<'a>,
}

enum ServerColumn<'a> {
    Dict {
        keys: &'a arrow_array::PrimitiveArray<Int32Type>,
        values: &'a arrow_array::StringArray,
    },
    Plain(&'a arrow_array::StringArray),
}

const DAY_MS: i64 = 86_400_000;

/// Groups found by a linear scan before [`split`] switches to a map.
const SCAN_GROUPS: usize = 8;

impl<'a> Keys<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self, Error> {
        let column = |name: &'static str| {
            batch.column_by_name(name).ok_or(Error::Schema {
                column: name,
                reason: "missing; every lake table starts with the lineage columns".into(),
            })
        };
        let ts = column("timestamp")?;
        let timestamps = match ts.data_type() {
            DataType::Timestamp(TimeUnit::Millisecond, _) => ts.as_primitive(),
            other => {
                return Err(Error::Schema {
                    column: "timestamp",
                    reason: format!("is {other}, not Timestamp(ms)"),
                });
            }
        };
        let sv = column(SERVER)?;
        let server = match sv.data_type() {
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                let dict = sv.as_dictionary::<Int32Type>();
                ServerColumn::Dict {
                    keys: dict.keys(),
                    values: dict.values().as_string(),
                }
            }
            DataType::Utf8 => ServerColumn::Plain(sv.as_string()),
            other => {
                return Err(Error::Schema {
                    column: "server",
                    reason: format!("is {other}, not Utf8 or Dictionary(Int32, Utf8)"),
                });
            }
        };
        Ok(Keys { timestamps, server })
    }

    fn day(&self, row: usize) -> Option<i64> {
        self.timestamps
            .is_valid(row)
            .then(|| self.timestamps.value(row).div_euclid(DAY_MS))
    }

    fn server(&self, row: usize) -> &'a str {
        match &self.server {
            ServerColumn::Dict { keys, values } => {
                if keys.is_null(row) {
                    return "";
                }
                let k = keys.value(row);
                usize::try_from(k)
                    .ok()
                    .filter(|&k| k < values.len() && values.is_valid(k))
                    .map_or("", |k| values.value(k))
            }
            ServerColumn::Plain(a) => {
                if a.is_valid(row) {
                    a.value(row)
                } else {
                    ""
                }
            }
        }
    }

    fn key(&self, row: usize) -> PartitionKey {
        PartitionKey {
            date: date_value(self.day(row).map(|d| d * DAY_MS)),
            server: escape_value(self.server(row)),
        }
    }
}

/// Splits a batch by partition, keeping row order within each part. A batch from one server and
/// one day (nearly all of them) is returned as it is, without copying.
pub fn split(batch: &RecordBatch) -> Result<Vec<(PartitionKey, RecordBatch)>, Error> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let keys = Keys::new(batch)?;
    let (day0, server0) = (keys.day(0), keys.server(0));
    let uniform = (1..batch.num_rows()).all(|r| keys.day(r) == day0 && keys.server(r) == server0);
    if uniform {
        return Ok(vec![(keys.key(0), batch.clone())]);
    }
    // (day, server) and the rows that have them.
    type Group<'a> = ((Option<i64>, &'a str), Vec<u32>);
    let mut groups: Vec<Group<'_>> = Vec::new();
    // Few groups per batch (a day boundary, a handful of servers): a scan beats a map. A batch
    // spread over many partitions (a hostile log naming a new day on every line) switches to a
    // map, so a row costs the same whatever the number of partitions.
    let mut index_of: HashMap<(Option<i64>, &str), usize> = HashMap::new();
    for row in 0..batch.num_rows() {
        let k = (keys.day(row), keys.server(row));
        let index = u32::try_from(row).map_err(|_| Error::Schema {
            column: "timestamp",
            reason: "batch has more than 2^32 rows".into(),
        })?;
        let found = if groups.len() <= SCAN_GROUPS {
            groups.iter().position(|(g, _)| *g == k)
        } else {
            if index_of.is_empty() {
                index_of.extend(groups.iter().enumerate().map(|(i, (g, _))| (*g, i)));
            }
            index_of.get(&k).copied()
        };
        match found {
            Some(i) => groups[i].1.push(index),
            None => {
                if !index_of.is_empty() {
                    index_of.insert(k, groups.len());
                }
                groups.push((k, vec![index]));
            }
        }
    }
    groups
        .into_iter()
        .map(|((day, server), rows)| {
            let indices = UInt32Array::from(rows);
            let part = arrow_select::take::take_record_batch(batch, &indices)
                .map_err(|e| Error::Arrow(Arc::new(e)))?;
            let key = PartitionKey {
                date: date_value(day.map(|d| d * DAY_MS)),
                server: escape_value(server),
            };
            Ok((key, part))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, DictionaryArray, Int64Array, TimestampMillisecondArray};
    use arrow_schema::{Field, Schema};

    #[test]
    fn hostile_values_stay_one_component() {
        for v in [
            "../../etc",
            "..",
            ".",
            "a/b",
            "x=y",
            "100%",
            "nul\0byte",
            "line\nbreak",
            "C:\\Windows",
            "*?[]{}^|<>\"'#:",
            "\u{7f}",
        ] {
            let e = escape_value(v);
            assert!(
                !e.contains('/') && !e.contains('\\') && !e.contains('='),
                "{v:?} -> {e}"
            );
            assert!(!e.chars().any(|c| c.is_control()), "{v:?} -> {e}");
            assert!(!e.is_empty());
            let dir = format!("server={e}");
            let p = std::path::Path::new(&dir);
            assert_eq!(p.components().count(), 1, "{v:?}");
        }
        assert_eq!(escape_value("../../etc"), "..%2F..%2Fetc");
        assert_eq!(escape_value("EX01"), "EX01");
        assert_eq!(escape_value("mail-01.contoso.com"), "mail-01.contoso.com");
        assert_eq!(escape_value("Ünïcode"), "Ünïcode");
        assert_eq!(escape_value(""), NULL_PARTITION);
        for v in ["../../etc", "EX01", "a%b=c:d", "Ünïcode\u{1}", "", "50%"] {
            assert_eq!(unescape_value(&escape_value(v)), v);
        }
        // Not an escape: kept as it is.
        assert_eq!(unescape_value("100%zz"), "100%zz");
    }

    #[test]
    fn long_values_are_cut_distinctly() {
        let a = "a".repeat(500);
        let b = format!("{}b", "a".repeat(499));
        let (ea, eb) = (escape_value(&a), escape_value(&b));
        assert!(ea.len() <= MAX_VALUE_BYTES && eb.len() <= MAX_VALUE_BYTES);
        assert_ne!(ea, eb);
        let slashes = "/".repeat(300);
        let e = escape_value(&slashes);
        let body = e.split('~').next().unwrap_or_default();
        assert_eq!(body.len() % 3, 0, "no half escape: {e}");
    }

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(date_value(Some(0)), "1970-01-01");
        assert_eq!(date_value(Some(1_736_899_199_999)), "2025-01-14");
        assert_eq!(date_value(Some(1_736_899_200_000)), "2025-01-15");
        assert_eq!(date_value(Some(-1)), "1969-12-31");
        let today = chrono::Utc::now().date_naive().to_string();
        let undated = date_value(None);
        // The test may straddle midnight.
        assert!(undated <= today, "{undated} is not today ({today})");
        assert_ne!(undated, NULL_PARTITION);
    }

    fn batch(ts: Vec<Option<i64>>, servers: Vec<&str>) -> RecordBatch {
        let n = ts.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new(
                "server",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                false,
            ),
            Field::new("source_offset", DataType::Int64, false),
        ]));
        let server: DictionaryArray<Int32Type> = servers.into_iter().collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
            Arc::new(server),
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
        ];
        RecordBatch::try_new(schema, cols).unwrap()
    }

    #[test]
    fn uniform_batch_is_not_copied() {
        let b = batch(vec![Some(1_000), Some(2_000)], vec!["EX01", "EX01"]);
        let parts = split(&b).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0.dir(), "date=1970-01-01/server=EX01");
        assert_eq!(parts[0].1.num_rows(), 2);
    }

    #[test]
    fn mixed_batch_splits_in_row_order() {
        let day = DAY_MS;
        let b = batch(
            vec![Some(day - 1), Some(day), None, Some(1), Some(day + 5)],
            vec!["EX01", "EX01", "EX01", "EX02", "EX01"],
        );
        let parts = split(&b).unwrap();
        let dirs: Vec<_> = parts.iter().map(|(k, b)| (k.dir(), b.num_rows())).collect();
        assert_eq!(
            dirs,
            vec![
                ("date=1970-01-01/server=EX01".to_string(), 1),
                ("date=1970-01-02/server=EX01".to_string(), 2),
                (format!("date={}/server=EX01", date_value(None)), 1),
                ("date=1970-01-01/server=EX02".to_string(), 1),
            ]
        );
        let offsets = parts[1]
            .1
            .column(2)
            .as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!(offsets.values().to_vec(), vec![1, 4]);
    }

    #[test]
    fn many_partitions_split_like_few() {
        // Rows cycle over 50 days: past the scan's reach, so the map takes over mid-batch.
        let ts: Vec<Option<i64>> = (0..500).map(|i| Some((i % 50) * DAY_MS + i)).collect();
        let b = batch(ts, vec!["EX01"; 500]);
        let parts = split(&b).unwrap();
        assert_eq!(parts.len(), 50);
        for (k, (key, part)) in parts.iter().enumerate() {
            assert_eq!(key.date, date_value(Some(k as i64 * DAY_MS)));
            let offsets = part
                .column(2)
                .as_primitive::<arrow_array::types::Int64Type>()
                .values()
                .to_vec();
            let want: Vec<i64> = (0..10).map(|j| k as i64 + 50 * j).collect();
            assert_eq!(offsets, want, "partition {k} keeps row order");
        }
    }

    #[test]
    fn missing_lineage_is_named() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let b = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef],
        )
        .unwrap();
        let err = split(&b).unwrap_err().to_string();
        assert!(err.contains("timestamp"), "{err}");
    }
}
