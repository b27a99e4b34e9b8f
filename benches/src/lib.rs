//! Inputs and baselines shared by mailflow's criterion benches: seeded generated logs and an
//! arrow-csv reader configured for the same bytes.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema};
use mailflow::generate::{Generator, LogFile};
use mailflow_parser::{DecoderBuilder, Flushed};

/// One kind of log the parse benches read: the generator's kind, the bench name, a file name
/// that tells the decoder the kind, and the column count arrow-csv is given.
#[derive(Debug, Clone, Copy)]
pub struct BenchInput {
    /// What to generate.
    pub kind: LogFile,
    /// Name in the bench output.
    pub name: &'static str,
    /// The file name the decoder sees.
    pub file_name: &'static str,
    /// Columns of the all-Utf8 schema arrow-csv reads into.
    pub columns: usize,
}

/// The inputs of the parse benches (criterion and `parse_vs_arrow_csv`).
pub const PARSE_INPUTS: [BenchInput; 3] = [
    BenchInput {
        kind: LogFile::MessageTracking,
        name: "message_tracking",
        file_name: "MSGTRK2024012500-1.LOG",
        columns: 30,
    },
    BenchInput {
        kind: LogFile::SmtpReceive,
        name: "smtp_receive",
        file_name: "RECV2024012500-1.LOG",
        columns: 9,
    },
    BenchInput {
        kind: LogFile::SmtpSend,
        name: "smtp_send",
        file_name: "SEND2024012500-1.LOG",
        columns: 9,
    },
];

/// About `bytes` of one generated log file (seed fixed, so every run measures the same input).
pub fn generated(kind: LogFile, bytes: usize) -> Vec<u8> {
    Generator::new(42, "EX01").file(kind, bytes)
}

/// Decodes a whole buffer with mailflow, the way `ingest` does; returns (data rows, rejects).
pub fn mailflow_parse(name: &str, input: &[u8], batch_size: usize) -> (usize, usize) {
    mailflow_parse_then(name, input, batch_size, |_, b| b.num_rows())
}

/// Like [`mailflow_parse`], handing every data batch to `then` (e.g. enrichment), which returns
/// the rows it kept.
pub fn mailflow_parse_then(
    name: &str,
    input: &[u8],
    batch_size: usize,
    mut then: impl FnMut(&str, RecordBatch) -> usize,
) -> (usize, usize) {
    let mut decoder = DecoderBuilder::new(name)
        .with_default_server("bench")
        .with_batch_size(batch_size)
        .build();
    let (mut rows, mut rejects) = (0, 0);
    let mut take = |f: Flushed| {
        rows += f.data.map_or(0, |d| then(d.table.name(), d.batch));
        rejects += f.rejects.map_or(0, |r| r.num_rows());
    };
    let mut rest = input;
    while !rest.is_empty() {
        let used = decoder.decode(rest).expect("decode");
        rest = &rest[used..];
        if decoder.needs_flush() {
            take(decoder.flush().expect("flush"));
        }
    }
    decoder.finish().expect("finish");
    take(decoder.flush().expect("flush"));
    (rows, rejects)
}

/// An all-Utf8 schema of `n` columns: what a generic CSV reader produces for these logs.
pub fn utf8_schema(n: usize) -> Arc<Schema> {
    Arc::new(Schema::new(
        (0..n)
            .map(|i| Field::new(format!("c{i}"), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// The input as arrow-csv can read it: no BOM (csv-core would take it as data), `#` lines as
/// comments.
pub fn strip_bom(input: &[u8]) -> &[u8] {
    input
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(input)
}

/// Reads the buffer with arrow-csv into all-Utf8 batches; returns rows.
pub fn arrow_csv_parse(input: &[u8], columns: usize, batch_size: usize) -> usize {
    let reader = arrow_csv::ReaderBuilder::new(utf8_schema(columns))
        .with_header(false)
        .with_comment(b'#')
        .with_batch_size(batch_size)
        .build_buffered(std::io::Cursor::new(input))
        .expect("arrow-csv reader");
    reader
        .map(|b: Result<RecordBatch, _>| b.expect("arrow-csv batch").num_rows())
        .sum()
}
