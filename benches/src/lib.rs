//! Inputs and baselines shared by mailflow's criterion benches: seeded generated logs and an
//! arrow-csv reader configured for the same bytes.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema};
use mailflow::generate::{LogFile, fleet_log};
use mailflow_parser::{DecoderBuilder, LogReader, Table};

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

/// The inputs of the parse benches (criterion, `parse_vs_arrow_csv`, `profile_parse`), message
/// tracking first.
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

impl BenchInput {
    /// About `bytes` of this kind of log, checked before anything is timed: mailflow rejects
    /// none of it, and arrow-csv reads as many rows from it.
    pub fn prepare(self, bytes: usize) -> PreparedInput {
        let data = generated(self.kind, bytes);
        let (rows, rejects) = mailflow_parse(self.file_name, &data, 8192);
        assert_eq!(rejects, 0, "generated {} must parse cleanly", self.name);
        assert_eq!(
            arrow_csv_parse(strip_bom(&data), self.columns, 8192),
            rows,
            "arrow-csv must read the rows mailflow reads from {}",
            self.name
        );
        PreparedInput {
            spec: self,
            data,
            rows,
        }
    }
}

/// A parse bench's input, generated and checked ([`BenchInput::prepare`]).
#[derive(Debug)]
pub struct PreparedInput {
    /// What it is.
    pub spec: BenchInput,
    /// The log bytes, as mailflow reads them.
    pub data: Vec<u8>,
    /// Data rows both readers find.
    pub rows: usize,
}

impl PreparedInput {
    /// The bytes as arrow-csv reads them (no BOM).
    pub fn csv(&self) -> &[u8] {
        strip_bom(&self.data)
    }

    /// One mailflow parse at `batch` rows per batch, checked to find every row.
    pub fn parse_mailflow(&self, batch: usize) {
        let rows = mailflow_parse(self.spec.file_name, std::hint::black_box(&self.data), batch).0;
        assert_eq!(rows, self.rows);
    }

    /// One arrow-csv parse at `batch` rows per batch, checked to find every row.
    pub fn parse_arrow_csv(&self, batch: usize) {
        let rows = arrow_csv_parse(std::hint::black_box(self.csv()), self.spec.columns, batch);
        assert_eq!(rows, self.rows);
    }
}

/// About `bytes` of one generated log file (seed fixed, so every run measures the same input).
pub fn generated(kind: LogFile, bytes: usize) -> Vec<u8> {
    fleet_log(kind, bytes, 42).expect("generating bench input")
}

/// An SMTP protocol log with its sessions interleaved, `k` at a time, as a busy server writes
/// them: header lines first, then the lines of `k` sessions in turn, each session's own lines in
/// their order. The generator writes each session's lines together, which flatters whatever
/// takes consecutive lines of one session together.
pub fn interleave_sessions(input: &[u8], k: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut sessions: Vec<Vec<&[u8]>> = Vec::new();
    let mut last_id: Option<&[u8]> = None;
    for line in input.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'#') || line.starts_with(b"\xEF\xBB\xBF") {
            out.extend_from_slice(line);
            continue;
        }
        // The session id is the third field of a protocol log line.
        let id = line.split(|&b| b == b',').nth(2).unwrap_or_default();
        match sessions.last_mut() {
            Some(s) if last_id == Some(id) => s.push(line),
            _ => sessions.push(vec![line]),
        }
        last_id = Some(id);
    }
    for group in sessions.chunks(k.max(1)) {
        let longest = group.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..longest {
            for s in group {
                if let Some(line) = s.get(i) {
                    out.extend_from_slice(line);
                }
            }
        }
    }
    out
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
    mut then: impl FnMut(Table, RecordBatch) -> usize,
) -> (usize, usize) {
    let decoder = DecoderBuilder::new(name)
        .with_default_server("bench")
        .with_batch_size(batch_size)
        .build();
    let (mut rows, mut rejects) = (0, 0);
    // A slice is its own `BufRead`: the decoder parses it in place, as one chunk.
    for f in LogReader::new(decoder, input) {
        let f = f.expect("decode");
        rows += f.data.map_or(0, |d| then(d.table, d.batch));
        rejects += f.rejects.map_or(0, |r| r.num_rows());
    }
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

/// How much of what `ingest` does after the parse [`mailflow_parse_enrich`] runs, to tell the
/// stages' costs apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stages {
    /// Record diagnosis only ([`mailflow_enrich::Matcher::classify`]).
    Classify,
    /// And the three diagnosis columns appended.
    Enrich,
    /// And session and message correlation, every derived row built: all of it.
    All,
}

/// What `ingest` does to every batch after the parse, on one core, up to `stages`: record
/// diagnosis (the three columns appended), SMTP session correlation of protocol rows and message
/// correlation of tracking rows, every derived row built; returns (data rows, sessions,
/// messages).
pub fn mailflow_parse_enrich(
    name: &str,
    input: &[u8],
    batch_size: usize,
    matcher: &mailflow_enrich::Matcher,
    stages: Stages,
) -> (usize, usize, usize) {
    use mailflow_enrich::messages::MessageCorrelator;
    use mailflow_enrich::sessions::SessionCorrelator;
    use std::time::Duration;
    let mut sessions = SessionCorrelator::new(Duration::from_secs(600));
    let mut messages = MessageCorrelator::new(Duration::from_secs(3600));
    let (mut n_sessions, mut n_messages) = (0, 0);
    let (rows, _) = mailflow_parse_then(name, input, batch_size, |table, b| {
        let hits = matcher.classify(table, &b);
        if stages == Stages::Classify {
            return b.num_rows();
        }
        let e = matcher.enrich_with(table, &b, &hits).expect("enrich");
        if stages == Stages::Enrich {
            return e.num_rows();
        }
        match table {
            Table::SmtpProtocol => sessions.add(matcher, &e, &hits),
            Table::MessageTracking => messages.add(&e),
            _ => {}
        }
        n_sessions += sessions
            .take(matcher, 4096)
            .expect("sessions")
            .map_or(0, |s| s.num_rows());
        n_messages += messages
            .take(4096)
            .expect("messages")
            .map_or(0, |m| m.num_rows());
        e.num_rows()
    });
    n_sessions += sessions
        .finish(matcher)
        .expect("sessions")
        .map_or(0, |s| s.num_rows());
    n_messages += messages
        .finish()
        .expect("messages")
        .map_or(0, |m| m.num_rows());
    (rows, n_sessions, n_messages)
}

/// The median of a set of timings (sorts them).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Times `a` and `b` once per round, alternating which goes first (a load spike on a shared
/// machine then hits both sides of a round); returns each round's (a, b) in milliseconds.
pub fn in_turns(rounds: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> Vec<(f64, f64)> {
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        f();
        start.elapsed().as_secs_f64() * 1e3
    };
    (0..rounds)
        .map(|round| {
            if round % 2 == 0 {
                let ta = time(&mut a);
                (ta, time(&mut b))
            } else {
                let tb = time(&mut b);
                (time(&mut a), tb)
            }
        })
        .collect()
}

/// The `i`-th command-line argument as a number, or `default`.
pub fn arg(args: &[String], i: usize, default: usize) -> usize {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// A criterion group over `input` (throughput in its bytes, the settings the benches share)
/// with parse alone as its first bench, the baseline the group's other benches read against;
/// `rows` is what a parse of `input` (as `file_name`) yields, checked every iteration.
pub fn group_with_parse<'c>(
    c: &'c mut criterion::Criterion,
    group: String,
    file_name: &'static str,
    input: &'c [u8],
    rows: usize,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(group);
    g.throughput(criterion::Throughput::Bytes(input.len() as u64));
    g.sample_size(10)
        .measurement_time(std::time::Duration::from_secs(8))
        .warm_up_time(std::time::Duration::from_secs(1));
    g.bench_function(criterion::BenchmarkId::new("parse", 4096), |b| {
        b.iter(|| {
            let n = mailflow_parse_then(file_name, std::hint::black_box(input), 4096, |_, b| {
                b.num_rows()
            })
            .0;
            assert_eq!(n, rows)
        })
    });
    g
}
