//! What diagnosis costs: parse alone against parse plus record-level diagnosis (the columns
//! `ingest` adds), on generated logs with about 2% failures. Target: at most 15% slower.
//!
//! `cargo bench -p mailflow-benches --bench enrich`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mailflow::generate::LogFile;
use mailflow_benches::{generated, mailflow_parse_then};
use mailflow_enrich::{Catalog, Matcher};
use std::hint::black_box;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INPUT_BYTES: usize = 16 << 20;

fn enrich(c: &mut Criterion) {
    let matcher = Matcher::new(Catalog::builtin()).expect("the built-in catalog compiles");
    for (kind, name, file_name) in [
        (
            LogFile::MessageTracking,
            "message_tracking",
            "MSGTRK2024012500-1.LOG",
        ),
        (LogFile::SmtpReceive, "smtp_receive", "RECV2024012500-1.LOG"),
        (LogFile::SmtpSend, "smtp_send", "SEND2024012500-1.LOG"),
    ] {
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

        let mut group = c.benchmark_group(format!("enrich_{name}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(8))
            .warm_up_time(Duration::from_secs(1));
        group.bench_function(BenchmarkId::new("parse", 4096), |b| {
            b.iter(|| {
                let n =
                    mailflow_parse_then(file_name, black_box(&input), 4096, |_, b| b.num_rows()).0;
                assert_eq!(n, rows)
            })
        });
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

criterion_group!(benches, enrich);
criterion_main!(benches);
