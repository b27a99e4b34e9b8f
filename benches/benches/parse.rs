//! Parse throughput: mailflow's typed decode against arrow-csv reading the same bytes into
//! all-Utf8 batches (the baseline; compare the two within one run, not across runs).
//!
//! `cargo bench -p mailflow-benches --bench parse`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

// The allocator `mailflow` itself runs with; arrow-csv shares it in the same process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use mailflow_benches::PARSE_INPUTS;
use std::time::Duration;

const INPUT_BYTES: usize = 16 << 20;

fn parse(c: &mut Criterion) {
    for spec in PARSE_INPUTS {
        let input = spec.prepare(INPUT_BYTES);
        let mut group = c.benchmark_group(spec.name);
        group.throughput(Throughput::Bytes(input.data.len() as u64));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(8))
            .warm_up_time(Duration::from_secs(1));
        // Both readers at the same batch sizes: batch size moves either by 5-10% here.
        for batch_size in [1024, 4096, 8192] {
            let id = |name| BenchmarkId::new(name, batch_size);
            group.bench_function(id("mailflow_typed"), |b| {
                b.iter(|| input.parse_mailflow(batch_size))
            });
            group.bench_function(id("arrow_csv_utf8"), |b| {
                b.iter(|| input.parse_arrow_csv(batch_size))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, parse);
criterion_main!(benches);
