//! Helpers shared by the end-to-end tests: decode a file through the push API with any chunking,
//! and render batches as stable text for golden files.
// Test helpers, not #[test] functions: clippy does not see them as tests, but a panic here is
// a failed assertion like any other.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use mailflow_parser::{Decoder, DecoderBuilder, DecoderStats, LogReader, Note, Table};

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub fn files_in(sub: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir().join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|e| e != "md"))
        .collect();
    files.sort();
    files
}

#[derive(Debug, Default, PartialEq)]
pub struct Output {
    pub data: BTreeMap<Table, Vec<RecordBatch>>,
    pub rejects: Vec<RecordBatch>,
    pub stats: DecoderStats,
    pub notes: Vec<Note>,
}

impl Output {
    pub fn rows(&self, table: Table) -> usize {
        self.data
            .get(&table)
            .map_or(0, |b| b.iter().map(RecordBatch::num_rows).sum())
    }

    pub fn reject_count(&self) -> usize {
        self.rejects.iter().map(RecordBatch::num_rows).sum()
    }

    /// The reason code of every reject, in order.
    pub fn reject_codes(&self) -> Vec<String> {
        self.reject_reasons().into_iter().map(|r| r.0).collect()
    }

    /// The raw bytes of reject `i` (counting across reject batches).
    pub fn reject_raw(&self, mut i: usize) -> Vec<u8> {
        for b in &self.rejects {
            if i < b.num_rows() {
                let raw = b.column_by_name("raw").unwrap();
                let raw = raw
                    .as_any()
                    .downcast_ref::<arrow_array::BinaryArray>()
                    .unwrap();
                return raw.value(i).to_vec();
            }
            i -= b.num_rows();
        }
        panic!("no reject {i}");
    }

    /// (reason code, source_offset) of every reject, in order.
    pub fn reject_reasons(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for b in &self.rejects {
            let reason = column_strings(b, "reason");
            let offset = column_strings(b, "source_offset");
            for (r, o) in reason.into_iter().zip(offset) {
                out.push((r, o.parse().unwrap()));
            }
        }
        out
    }
}

pub fn builder(path: &Path) -> DecoderBuilder {
    // Server names in golden files must not depend on the machine running the tests.
    DecoderBuilder::new(path.file_name().unwrap().to_string_lossy()).with_default_server("testhost")
}

/// Decodes `bytes` in chunks of `chunk` through [`LogReader`], taking every batch.
pub fn decode_with(decoder: Decoder, bytes: &[u8], chunk: usize) -> Output {
    let mut out = Output::default();
    let mut reader = LogReader::new(decoder, BufReader::with_capacity(chunk.max(1), bytes));
    for f in reader.by_ref() {
        let f = f.unwrap();
        if let Some(d) = f.data {
            out.data.entry(d.table).or_default().push(d.batch);
        }
        if let Some(r) = f.rejects {
            out.rejects.push(r);
        }
    }
    out.stats = reader.decoder().stats();
    out.notes = reader.decoder().notes().to_vec();
    out
}

pub fn decode_file(path: &Path, chunk: usize, batch_size: usize) -> Output {
    let bytes = std::fs::read(path).unwrap();
    decode_with(
        builder(path)
            .with_head(&bytes)
            .with_batch_size(batch_size)
            .build(),
        &bytes,
        chunk,
    )
}

pub fn column_strings(batch: &RecordBatch, name: &str) -> Vec<String> {
    let col = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let fmt = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default().with_null("<null>"))
        .unwrap();
    (0..batch.num_rows())
        .map(|i| fmt.value(i).to_string())
        .collect()
}

/// One `column: value` line per non-null value, rows separated by a heading: diffable golden text.
pub fn render(batches: &[RecordBatch]) -> String {
    let mut s = String::new();
    let mut row = 0;
    for b in batches {
        let schema = b.schema();
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            s += &format!("--- row {row}\n");
            for (f, (field, col)) in fmts.iter().zip(schema.fields().iter().zip(b.columns())) {
                if col.is_valid(i) {
                    s += &format!("{}: {}\n", field.name(), f.value(i));
                }
            }
            row += 1;
        }
    }
    s
}

/// Every row of a lake table, read back with the Parquet reader (all its files, in path order).
pub fn read_lake_table(lake: &Path, table: &str) -> Vec<RecordBatch> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(lake.join(table))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(f).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap()
            .map(Result::unwrap)
        })
        .collect()
}

/// A column's values across batches, as text (`<null>` for nulls).
pub fn column_strings_all(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| column_strings(b, name))
        .collect()
}
