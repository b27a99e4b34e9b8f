//! What everything after the parse costs, measured in turns on one core: parse alone against
//! parse + record diagnosis + session and message correlation (every derived row built), as
//! `ingest` runs them on each batch. Each round times one pass of each (alternating which goes
//! first); the overhead is the median of the rounds' ratios. Target (enrich issue): within 25%
//! of parse alone on message tracking and SMTP receive.
//!
//! `cargo run --release -p mailflow-benches --example enrich_vs_parse -- [rounds] [MiB] [batch]`
//! (defaults: 20 rounds, 16 MiB per kind, batch 4096); a fourth argument keeps the inputs whose
//! name contains it (for profiling one kind); a fifth, `classify` or `enrich`, stops after that
//! stage, to tell the stages' costs apart.

use mailflow_benches::{
    PARSE_INPUTS, Stages, arg, generated, in_turns, interleave_sessions, mailflow_parse,
    mailflow_parse_enrich, median,
};
use mailflow_enrich::{Catalog, Matcher};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (rounds, mib, batch) = (
        arg(&args, 1, 20).max(1),
        arg(&args, 2, 16),
        arg(&args, 3, 4096),
    );
    let matcher = Matcher::new(Catalog::builtin()).expect("the built-in catalog compiles");
    println!("{rounds} rounds, {mib} MiB per kind, batch {batch}; times are medians");
    println!(
        "{:18} {:>9} {:>9} {:>9} {:>10} {:>10} {:>15}",
        "input", "sessions", "messages", "parse ms", "full ms", "overhead", "min-max"
    );
    let only = args.get(4).cloned().unwrap_or_default();
    let stages = match args.get(5).map(String::as_str) {
        Some("classify") => Stages::Classify,
        Some("enrich") => Stages::Enrich,
        _ => Stages::All,
    };
    for spec in PARSE_INPUTS.into_iter().filter(|s| s.name.contains(&only)) {
        let mut input = generated(spec.kind, mib << 20);
        // `MAILFLOW_BENCH_INTERLEAVE=K`: SMTP sessions interleaved K at a time, as on a busy
        // server, instead of each session's lines together as the generator writes them.
        if let Some(k) = std::env::var("MAILFLOW_BENCH_INTERLEAVE")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            && spec.name.starts_with("smtp")
        {
            input = interleave_sessions(&input, k);
        }
        let (rows, _) = mailflow_parse(spec.file_name, &input, batch);
        let (full_rows, sessions, messages) =
            mailflow_parse_enrich(spec.file_name, &input, batch, &matcher, stages);
        assert_eq!(rows, full_rows);
        let parse = || {
            assert_eq!(
                mailflow_parse(spec.file_name, std::hint::black_box(&input), batch).0,
                rows
            )
        };
        let full = || {
            let out = mailflow_parse_enrich(
                spec.file_name,
                std::hint::black_box(&input),
                batch,
                &matcher,
                stages,
            );
            assert_eq!(out, (rows, sessions, messages));
        };
        let turns = in_turns(rounds, parse, full);
        let mut p: Vec<f64> = turns.iter().map(|t| t.0).collect();
        let mut f: Vec<f64> = turns.iter().map(|t| t.1).collect();
        let mut ratios: Vec<f64> = turns.iter().map(|(tp, tf)| tf / tp - 1.0).collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        println!(
            "{:18} {:>9} {:>9} {:>9.2} {:>10.2} {:>+9.1}% {:>+6.1}-{:+.1}%",
            spec.name,
            sessions,
            messages,
            median(&mut p),
            median(&mut f),
            median(&mut ratios) * 100.0,
            lo * 100.0,
            hi * 100.0
        );
    }
}
