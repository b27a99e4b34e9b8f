//! What the Elasticsearch sink costs a writer: parse alone against parse, record diagnosis and
//! bulk NDJSON encoding (ECS names, lineage ids), and against that plus gzip level 1 (which the
//! sink's request workers do, on threads of their own). Throughput is of the input log bytes,
//! so the three read as shares of one parse; documents per second are printed besides.
//!
//! `cargo bench -p mailflow-benches --bench es`

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mailflow_benches::{
    BenchInput, PARSE_INPUTS, generated, group_with_parse, mailflow_parse_then,
};
use mailflow_enrich::{Catalog, Matcher};
use mailflow_sinks::es::Encoder;
use mailflow_sinks::lake::Source;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INPUT_BYTES: usize = 16 << 20;

fn es(c: &mut Criterion) {
    let matcher = Matcher::new(Catalog::builtin()).expect("the built-in catalog compiles");
    let fields = Arc::new(mailflow::es::field_names());
    let identities = Arc::new(mailflow::es::identities());
    let source = Source {
        fingerprint: "0123456789abcdef",
        file: "bench.log",
        end_offset: 0,
    };
    for BenchInput {
        kind,
        name,
        file_name,
        ..
    } in PARSE_INPUTS
    {
        let input = generated(kind, INPUT_BYTES);
        let mut encoder = Encoder::new("default", Arc::clone(&fields), Arc::clone(&identities));
        let mut body = Vec::with_capacity(8 << 20);
        // One batch diagnosed and encoded into `body` (cleared first): its documents.
        let mut encode =
            |table: mailflow_parser::Table, b: &arrow_array::RecordBatch, body: &mut Vec<u8>| {
                let e = matcher.enrich(table, b).expect("enrich");
                body.clear();
                encoder
                    .encode(table.name(), &source, &e, 0, body)
                    .expect("encoded")
            };
        let (rows, _) =
            mailflow_parse_then(file_name, &input, 4096, |t, b| encode(t, &b, &mut body));
        eprintln!("{name}: {rows} rows in {} MiB", input.len() >> 20);

        let mut group = group_with_parse(c, format!("es_{name}"), file_name, &input, rows);
        group.bench_function(BenchmarkId::new("parse_enrich_encode", 4096), |b| {
            b.iter(|| {
                let mut bytes = 0usize;
                let n = mailflow_parse_then(file_name, black_box(&input), 4096, |table, b| {
                    let n = encode(table, &b, &mut body);
                    bytes += body.len();
                    n
                })
                .0;
                assert_eq!(n, rows);
                black_box(bytes)
            })
        });
        let mut gz = Vec::with_capacity(2 << 20);
        group.bench_function(BenchmarkId::new("parse_enrich_encode_gzip", 4096), |b| {
            b.iter(|| {
                let n = mailflow_parse_then(file_name, black_box(&input), 4096, |table, b| {
                    let n = encode(table, &b, &mut body);
                    gz.clear();
                    let mut w = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
                    w.write_all(&body).expect("in memory");
                    w.finish().expect("in memory");
                    n
                })
                .0;
                assert_eq!(n, rows)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, es);
criterion_main!(benches);
