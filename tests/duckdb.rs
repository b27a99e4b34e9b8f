//! Parquet written by `mailflow ingest` (the real binary) read back by real DuckDB. The engine
//! comes from the venv `.ci/run` builds (`MAILFLOW_PYTHON`), else `python3`; a missing engine fails
//! the test.

use std::path::Path;
use std::process::Command;

fn python() -> String {
    std::env::var("MAILFLOW_PYTHON").unwrap_or_else(|_| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        if venv.exists() {
            venv.to_string_lossy().into_owned()
        } else {
            "python3".into()
        }
    })
}

fn run_mailflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mailflow"))
        .args(args)
        .output()
        .expect("run mailflow")
}

/// Runs mailflow and requires it to succeed.
fn mailflow(args: &[&str]) -> std::process::Output {
    let out = run_mailflow(args);
    assert!(
        out.status.success(),
        "mailflow {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn duckdb_reads_what_ingest_wrote() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("gen");
    let out = tmp.path().join("out");
    let summary = tmp.path().join("summary.json");
    mailflow(&[
        "generate",
        "--kind",
        "mixed",
        "--bytes",
        "3M",
        "--seed",
        "7",
        "--servers",
        "2",
        "--out",
        generated.to_str().unwrap(),
    ]);
    let run = mailflow(&[
        "ingest",
        data.join("samples").to_str().unwrap(),
        data.join("edge").to_str().unwrap(),
        generated.to_str().unwrap(),
        "--parquet",
        out.to_str().unwrap(),
        "--summary-json",
        summary.to_str().unwrap(),
        "--quiet",
    ]);
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        text.contains("message_tracking") && text.contains("rejects"),
        "{text}"
    );

    // A second run over the same input adds nothing: the lake already holds every line.
    let samples = data.join("samples");
    let again = mailflow(&[
        "ingest",
        samples.to_str().unwrap(),
        "--parquet",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(
        text.contains("already in the lake, not written again: 10 files whole"),
        "{text}"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    for key in ["files", "bytes", "rows", "rejects", "seconds"] {
        assert!(json.get(key).is_some(), "summary lacks {key}: {json}");
    }
    assert!(
        json["rejects"].as_u64().unwrap() > 0,
        "edge cases must produce rejects"
    );
    assert_eq!(
        json["skipped"].as_array().unwrap().len(),
        5,
        "SOURCES.md, README.md, notes.txt, empty.log, HttpProxy: {json}"
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/duckdb_check.py");
    let check = Command::new(python())
        .arg(&script)
        .arg(&out)
        .arg(&summary)
        .output()
        .expect("python3 must be installed (bash .ci/run sets up the venv with duckdb)");
    assert!(
        check.status.success(),
        "DuckDB check failed (is duckdb installed? `bash .ci/run` installs it):\n{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
