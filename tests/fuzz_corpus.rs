//! Replays the fuzz corpus and any saved crash artifacts through the fuzz harnesses as an ordinary
//! test, so a crash found once stays fixed (x509-parser's `run_all_fuzz_files`). The corpus is
//! committed; `cargo fuzz run <target>` grows it.

use std::path::Path;

type Harness = fn(&[u8]);

#[test]
fn fuzz_corpus_replays_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let targets: [(&str, Harness); 6] = [
        ("decode", mailflow_parser::fuzzing::decode),
        ("fields", mailflow_parser::fuzzing::fields),
        ("directive", mailflow_parser::fuzzing::directive),
        ("diagnose", mailflow_enrich::fuzzing::diagnose),
        ("catalog", mailflow_enrich::fuzzing::catalog),
        ("sessions", mailflow_enrich::fuzzing::sessions),
    ];
    let mut replayed = 0;
    for (target, harness) in targets {
        for dir in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let result = std::panic::catch_unwind(|| harness(&data));
                assert!(result.is_ok(), "{} panicked on {}", target, path.display());
                replayed += 1;
            }
        }
    }
    assert!(
        replayed >= 20,
        "the committed corpus went missing ({replayed} inputs)"
    );
}
