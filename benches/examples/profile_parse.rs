//! Parses generated logs in a loop, for `perf record`: `cargo run --release -p mailflow-benches
//! --example profile_parse -- <message_tracking|smtp_receive|smtp_send> [MiB] [loops] [batch]`.

// The allocator `mailflow` itself runs with; arrow-csv shares it in the same process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use mailflow_benches::{PARSE_INPUTS, generated, mailflow_parse};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let wanted = args.get(1).map_or("message_tracking", String::as_str);
    let spec = PARSE_INPUTS
        .into_iter()
        .find(|s| s.name == wanted)
        .unwrap_or(PARSE_INPUTS[0]);
    let (kind, name) = (spec.kind, spec.file_name);
    let mib: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let loops: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
    let batch: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(4096);
    let input = generated(kind, mib << 20);
    let start = std::time::Instant::now();
    let mut rows = 0;
    for _ in 0..loops {
        rows += mailflow_parse(name, &input, batch).0;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{rows} rows, {:.1} MiB/s",
        (input.len() * loops) as f64 / (1 << 20) as f64 / secs
    );
}
