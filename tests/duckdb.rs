//! Parquet written by `mailflow ingest` (the real binary) read back by real DuckDB. The engine
//! comes from the venv `.ci/run` builds (`MAILFLOW_PYTHON`), else `python3`; a missing engine fails
//! the test.

mod cli;

use cli::{data, mailflow, python_script};

#[test]
fn duckdb_reads_what_ingest_wrote() {
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
        data("samples").to_str().unwrap(),
        data("edge").to_str().unwrap(),
        data("diagnosis-linked").to_str().unwrap(),
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
    let samples = data("samples");
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

    python_script("duckdb_check.py", &[&out, &summary]);
}
