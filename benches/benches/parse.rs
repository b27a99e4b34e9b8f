//! Parse throughput: mailflow's typed decode against arrow-csv reading the same bytes into
//! all-Utf8 batches (the baseline; compare the two within one run, not across runs).
//!
//! `cargo bench -p mailflow-benches --bench parse`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

// The allocator `mailflow` itself runs with; arrow-csv shares it in the same process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use mailflow_benches::{
    BenchInput, PARSE_INPUTS, arrow_csv_parse, generated, mailflow_parse, strip_bom,
};
use std::hint::black_box;
use std::time::Duration;

const INPUT_BYTES: usize = 16 << 20;

fn parse(c: &mut Criterion) {
    for BenchInput {
        kind,
        name,
        file_name,
        columns,
    } in PARSE_INPUTS
    {
        let input = generated(kind, INPUT_BYTES);
        let (expected_rows, rejects) = mailflow_parse(file_name, &input, 8192);
        assert_eq!(rejects, 0, "generated {name} must parse cleanly");
        let csv_input = strip_bom(&input);
        assert_eq!(arrow_csv_parse(csv_input, columns, 8192), expected_rows);

        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(8))
            .warm_up_time(Duration::from_secs(1));
        // Both readers at the same batch sizes: batch size moves either by 5-10% here.
        for batch_size in [1024, 4096, 8192] {
            let id = |name| BenchmarkId::new(name, batch_size);
            group.bench_function(id("mailflow_typed"), |b| {
                b.iter(|| {
                    let rows = mailflow_parse(file_name, black_box(&input), batch_size).0;
                    assert_eq!(rows, expected_rows)
                })
            });
            group.bench_function(id("arrow_csv_utf8"), |b| {
                b.iter(|| {
                    let rows = arrow_csv_parse(black_box(csv_input), columns, batch_size);
                    assert_eq!(rows, expected_rows)
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, parse);
criterion_main!(benches);
