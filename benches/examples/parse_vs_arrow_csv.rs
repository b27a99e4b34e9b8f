//! mailflow's typed parse against arrow-csv on the same bytes, measured in turns: each round
//! times one pass of each reader (alternating which goes first), and the ratio is the median of
//! the rounds' ratios. On a shared machine a load spike then hits both sides of a round, where
//! criterion's groups time one reader for seconds and then the other.
//!
//! `cargo run --release -p mailflow-benches --example parse_vs_arrow_csv -- [rounds] [MiB] [batch]`
//! (defaults: 30 rounds, 16 MiB per kind, batch 4096).

use std::hint::black_box;
use std::time::Instant;

use mailflow_benches::{
    BenchInput, PARSE_INPUTS, arrow_csv_parse, generated, mailflow_parse, strip_bom,
};

// The allocator `mailflow` itself runs with; arrow-csv shares it in the same process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (rounds, mib, batch) = (arg(1, 30).max(1), arg(2, 16), arg(3, 4096));
    println!("{rounds} rounds, {mib} MiB per kind, batch {batch}; times are medians");
    println!(
        "{:18} {:>13} {:>13} {:>12} {:>15}",
        "input", "mailflow ms", "arrow-csv ms", "ratio", "ratio min-max"
    );
    for BenchInput {
        kind,
        name,
        file_name,
        columns,
    } in PARSE_INPUTS
    {
        let input = generated(kind, mib << 20);
        let csv_input = strip_bom(&input);
        let (rows, rejects) = mailflow_parse(file_name, &input, batch);
        assert_eq!(rejects, 0, "generated {name} must parse cleanly");
        assert_eq!(arrow_csv_parse(csv_input, columns, batch), rows);
        let time_mailflow = || {
            let start = Instant::now();
            assert_eq!(mailflow_parse(file_name, black_box(&input), batch).0, rows);
            start.elapsed().as_secs_f64() * 1e3
        };
        let time_csv = || {
            let start = Instant::now();
            assert_eq!(arrow_csv_parse(black_box(csv_input), columns, batch), rows);
            start.elapsed().as_secs_f64() * 1e3
        };
        let (mut m, mut a, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (tm, ta) = if round % 2 == 0 {
                let tm = time_mailflow();
                (tm, time_csv())
            } else {
                let ta = time_csv();
                (time_mailflow(), ta)
            };
            m.push(tm);
            a.push(ta);
            ratios.push(ta / tm);
        }
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        println!(
            "{name:18} {:>13.2} {:>13.2} {:>11.2}x {:>7.2}-{:.2}x",
            median(&mut m),
            median(&mut a),
            median(&mut ratios),
            lo,
            hi
        );
    }
}
