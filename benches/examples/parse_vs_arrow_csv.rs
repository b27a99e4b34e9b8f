//! mailflow's typed parse against arrow-csv on the same bytes, measured in turns: each round
//! times one pass of each reader (alternating which goes first), and the ratio is the median of
//! the rounds' ratios. On a shared machine a load spike then hits both sides of a round, where
//! criterion's groups time one reader for seconds and then the other.
//!
//! `cargo run --release -p mailflow-benches --example parse_vs_arrow_csv -- [rounds] [MiB] [batch]`
//! (defaults: 30 rounds, 16 MiB per kind, batch 4096).

use mailflow_benches::{PARSE_INPUTS, arg, in_turns, median};

// The allocator `mailflow` itself runs with; arrow-csv shares it in the same process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (rounds, mib, batch) = (
        arg(&args, 1, 30).max(1),
        arg(&args, 2, 16),
        arg(&args, 3, 4096),
    );
    println!("{rounds} rounds, {mib} MiB per kind, batch {batch}; times are medians");
    println!(
        "{:18} {:>13} {:>13} {:>12} {:>15}",
        "input", "mailflow ms", "arrow-csv ms", "ratio", "ratio min-max"
    );
    for spec in PARSE_INPUTS {
        let input = spec.prepare(mib << 20);
        let turns = in_turns(
            rounds,
            || input.parse_mailflow(batch),
            || input.parse_arrow_csv(batch),
        );
        let mut m: Vec<f64> = turns.iter().map(|t| t.0).collect();
        let mut a: Vec<f64> = turns.iter().map(|t| t.1).collect();
        let mut ratios: Vec<f64> = turns.iter().map(|(tm, ta)| ta / tm).collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        println!(
            "{:18} {:>13.2} {:>13.2} {:>11.2}x {:>7.2}-{:.2}x",
            spec.name,
            median(&mut m),
            median(&mut a),
            median(&mut ratios),
            lo,
            hi
        );
    }
}
