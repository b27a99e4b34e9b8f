//! The Arrow schema of every table mailflow writes, as golden text: a type, a name, a
//! nullability or a metadata change fails here, and the snapshot diff shows what readers of the
//! lake will see change (`cargo insta review` accepts a deliberate one).

use std::fmt::Write as _;

use arrow_schema::{DataType, Field};

fn field(out: &mut String, f: &Field, indent: usize) {
    let _ = write!(
        out,
        "{:indent$}{}: {}{}",
        "",
        f.name(),
        f.data_type(),
        if f.is_nullable() { "" } else { " NOT NULL" },
    );
    let mut meta: Vec<_> = f.metadata().iter().collect();
    meta.sort();
    for (k, v) in meta {
        let _ = write!(out, " [{k}={v}]");
    }
    out.push('\n');
    // Nested fields (list items, map entries) with their own nullability.
    match f.data_type() {
        DataType::List(item) => field(out, item, indent + 2),
        DataType::Map(entries, _) => field(out, entries, indent + 2),
        DataType::Struct(children) => children.iter().for_each(|c| field(out, c, indent + 2)),
        _ => {}
    }
}

#[test]
fn every_table_schema_is_as_recorded() {
    let mut out = String::new();
    let tables = mailflow::ingest::table_schemas();
    let names: Vec<&str> = tables.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "message_tracking",
            "smtp_protocol",
            "connectivity",
            "pop_imap_protocol",
            "agent_log",
            "transport_events",
            "queue_snapshots",
            "rejects",
            "smtp_sessions",
            "messages"
        ]
    );
    for (name, schema) in tables {
        let mut meta: Vec<_> = schema.metadata().iter().collect();
        meta.sort();
        let _ = writeln!(out, "== {name} {meta:?}");
        for f in schema.fields() {
            field(&mut out, f, 2);
        }
    }
    insta::assert_snapshot!(out);
}

mod cli;
mod common;

/// Every value a closed-set column takes on real and generated logs is one `mailflow schema`
/// lists for it: the documentation cannot fall behind what the code writes.
#[test]
fn closed_set_columns_hold_only_documented_values() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("logs");
    let lake = tmp.path().join("lake");
    cli::mailflow(&[
        "generate".as_ref(),
        "--bytes".as_ref(),
        "3000000".as_ref(),
        "--servers".as_ref(),
        "2".as_ref(),
        "--out".as_ref(),
        generated.as_os_str(),
    ]);
    cli::mailflow(&[
        "ingest".as_ref(),
        cli::data("samples").as_os_str(),
        cli::data("diagnosis").as_os_str(),
        cli::data("edge").as_os_str(),
        cli::data("windows").as_os_str(),
        generated.as_os_str(),
        "--parquet".as_ref(),
        lake.as_os_str(),
        "--quiet".as_ref(),
    ]);
    let out = cli::mailflow(&["schema", "--format", "json"]);
    let tables: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut checked = 0;
    for t in tables.as_array().unwrap() {
        let table = t["table"].as_str().unwrap();
        let batches = common::read_lake_table(&lake, table);
        for c in t["columns"].as_array().unwrap() {
            let allowed: Vec<&str> = c["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            if allowed.is_empty() || c["open"].as_bool().unwrap() {
                continue;
            }
            let name = c["name"].as_str().unwrap();
            let seen: std::collections::BTreeSet<String> =
                common::column_strings_all(&batches, name)
                    .into_iter()
                    .collect();
            for v in &seen {
                assert!(
                    v == "<null>" || allowed.contains(&v.as_str()),
                    "{table}.{name} holds {v:?}, not among {allowed:?}"
                );
            }
            checked += usize::from(seen.iter().any(|v| v != "<null>"));
        }
    }
    // Most closed-set columns are seen with values (a lake that lost a table passes nothing).
    assert!(
        checked >= 10,
        "only {checked} closed-set columns had values"
    );
}
