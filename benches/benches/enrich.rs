//! What diagnosis costs: parse alone against parse plus record-level diagnosis (the columns
//! `ingest` adds), on generated logs with about 2% failures. Target: at most 15% slower.
//!
//! Also message correlation alone (`correlate_messages`), which `ingest` runs on its own thread.
//!
//! `cargo bench -p mailflow-benches --bench enrich`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mailflow_benches::{
    BenchInput, PARSE_INPUTS, generated, group_with_parse, mailflow_parse_then,
};
use mailflow_enrich::messages::MessageCorrelator;
use mailflow_enrich::{Catalog, Matcher};
use std::hint::black_box;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INPUT_BYTES: usize = 16 << 20;

fn enrich(c: &mut Criterion) {
    let matcher = Matcher::new(Catalog::builtin()).expect("the built-in catalog compiles");
    for BenchInput {
        kind,
        name,
        file_name,
        ..
    } in PARSE_INPUTS
    {
        let input = generated(kind, INPUT_BYTES);
        let mut diagnosed = 0usize;
        let (rows, _) = mailflow_parse_then(file_name, &input, 4096, |table, b| {
            diagnosed += matcher.classify(table, &b).iter().flatten().count();
            b.num_rows()
        });
        assert!(
            diagnosed > 0,
            "{name}: the generated failures must be diagnosed"
        );
        eprintln!("{name}: {rows} rows, {diagnosed} diagnosed");

        let mut group = group_with_parse(c, format!("enrich_{name}"), file_name, &input, rows);
        group.bench_function(BenchmarkId::new("parse_enrich", 4096), |b| {
            b.iter(|| {
                let n = mailflow_parse_then(file_name, black_box(&input), 4096, |table, b| {
                    let e = matcher.enrich(table, &b).expect("enrich");
                    e.num_rows()
                })
                .0;
                assert_eq!(n, rows)
            })
        });
        group.finish();
    }
}

/// Message correlation as `ingest` runs it on its own thread: enriched tracking batches in, the
/// `messages` table out (every message closes at the end of the input).
fn correlate(c: &mut Criterion) {
    let matcher = Matcher::new(Catalog::builtin()).expect("the built-in catalog compiles");
    let tracking = PARSE_INPUTS[0];
    let input = generated(tracking.kind, INPUT_BYTES);
    let mut batches = Vec::new();
    mailflow_parse_then(tracking.file_name, &input, 4096, |table, b| {
        batches.push(matcher.enrich(table, &b).expect("enrich"));
        b.num_rows()
    });
    let correlate = || {
        let mut correlator = MessageCorrelator::new(Duration::from_secs(3600));
        for b in &batches {
            correlator.add(black_box(b));
        }
        correlator
            .finish()
            .expect("messages")
            .map_or(0, |b| b.num_rows())
    };
    let messages = correlate();
    assert!(messages > 1000, "{messages} messages");
    let mut group = c.benchmark_group("correlate_messages");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.sample_size(20);
    group.bench_function("add_finish", |b| {
        b.iter(|| assert_eq!(correlate(), messages))
    });
    group.finish();
}

criterion_group!(benches, enrich, correlate);
criterion_main!(benches);
